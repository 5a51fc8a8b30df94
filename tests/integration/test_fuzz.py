"""Bad input never crashes a service and never surfaces as `internal`.

For every method of every service (from sys.methods), requests with the
declared parameters filled with random values of random types (strings,
integers at the edges, floats, bools, nil, lists and maps nested a few levels,
with the names of real fields inside) must each get a reply: ok, or an error
with one of the documented codes other than `internal` (which would mean a
bug). The service must still be healthy afterwards; the sanitizer run of this
file catches memory errors on those paths."""
import random

from bftest import Stack, check, eq

CODES = {"invalid_argument", "not_found", "already_exists", "conflict", "failed_precondition",
         "permission_denied", "unauthenticated", "resource_exhausted", "unavailable"}
SKIP = {"clock.set", "scheduler.tick"}  # manual-clock only; refused with the system clock
FIELD_NAMES = ["id", "name", "kind", "code", "village_id", "members", "id_number", "relation",
               "amount_fen", "recipient", "weight", "lines", "line_key", "main", "secondary",
               "value", "rows", "type_prefix", "scope", "channels", "attachments", "sha256",
               "size", "data", "owner", "target", "due", "year", "ms"]
S = None


def setup_module():
    global S
    S = Stack(["registry", "funds", "tasks", "notify"]).__enter__()


def teardown_module():
    S.__exit__(None, None, None)


def _value(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.45:
        return rng.choice([
            0, 1, -1, 2**63 - 1, -2**63, 2**64 - 1, 1.5, -0.0, True, False, None, "", "x",
            "长" * rng.randint(1, 50), "120110005201", "110105194912310021", "2026-02-30",
            "2026-11-25", "cadre:1", "a" * 5000, "\u0000", rng.randint(-10**6, 10**6),
            b"\xff\xfe".decode("latin-1"),
        ])
    if r < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELD_NAMES): _value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _typed(rng, ptype):
    """A value of the declared type, so the request passes the dispatcher and
    reaches the handler's own checks."""
    if ptype == "string":
        return rng.choice(["", "x", "长" * rng.randint(1, 20), "120110005201", "2026-11-25",
                           "110105194912310021", "11010519491231002X", "cadre:1", "admin",
                           "employment", "head", "poor", "unit_village", "monthly", "webhook",
                           "bangfu.tasks.", "region:120110000000", "village:1", "zh-CN"])
    if ptype == "integer":
        return rng.choice([0, 1, 2, -1, 7, 1000, 2**62, -2**63, 2**63 - 1, rng.randint(1, 50)])
    if ptype == "boolean":
        return rng.random() < 0.5
    if ptype == "list":
        return [rng.choice([_value(rng, 1), {k: _value(rng, 2) for k in
                                             rng.sample(FIELD_NAMES, rng.randint(1, 6))}])
                for _ in range(rng.randint(0, 4))]
    if ptype == "map":
        return {k: _value(rng, 1) for k in rng.sample(FIELD_NAMES, rng.randint(0, 6))}
    return _value(rng)


def _fuzz(service, rounds):
    c = S.client(service)
    methods = c.call("sys.methods", actor=None)
    rng = random.Random("fuzz-" + service)
    seen = 0
    tally = {}
    for m in methods:
        if m["name"] in SKIP:
            continue
        decl = [(p["name"], p["type"]) for p in m["params"]]
        for i in range(rounds):
            if i % 2:
                params = {n: _value(rng) for n, _ in decl if rng.random() < 0.8}
            else:
                params = {n: _typed(rng, t) for n, t in decl if rng.random() < 0.9}
            r = c.request(m["name"], params, actor="admin")
            seen += 1
            outcome = "ok" if r.get("ok") else r["error"]["code"]
            tally[outcome] = tally.get(outcome, 0) + 1
            if not r.get("ok"):
                code = r["error"]["code"]
                check(code in CODES, "%s.%s answered %s: %s (params %r)" % (
                    service, m["name"], code, r["error"]["message"], params))
    h = c.call("sys.health", actor=None)
    eq(h["status"], "ok", service + " healthy after fuzzing")
    check(seen > 0, "fuzzed something")
    print("# %s: %s" % (service, ", ".join("%s %d" % kv for kv in sorted(tally.items()))))


def test_fuzz_registry():
    _fuzz("registry", 40)


def test_fuzz_funds():
    _fuzz("funds", 40)


def test_fuzz_tasks():
    _fuzz("tasks", 40)


def test_fuzz_notify():
    _fuzz("notify", 40)
