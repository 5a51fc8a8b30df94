"""Request keys for every write of every service (docs/protocol.md, "Request
keys"; libcommon/bf_idem.h): a retried write with the same request_key and
params replays the first reply and changes nothing more; other params get
conflict naming request_key; concurrent requests with one key do the write
once; a failed write is not remembered, so its retry runs afresh; the key, the
change and the stored reply commit together."""
import threading
import time

import bftest
from bftest import Stack, check, eq, expect_error

S = None
TOWN = None


def setup_module():
    global S, TOWN
    S = Stack(["registry", "tasks", "notify"]).__enter__()
    TOWN = bftest.fresh_town(S.client("registry"))


def teardown_module():
    S.__exit__(None, None, None)


def villages_named(name):
    with bftest.pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM registry.village WHERE name = %s", (name,))
        return cur.fetchone()[0]


def test_retry_replays_the_first_reply_and_writes_once():
    reg = S.client("registry")
    name = "村" + bftest.uid()
    key = "create-" + bftest.uid()
    p = {"region_code": TOWN, "name": name, "category": "poor", "request_key": key}
    first = reg.call("village.create", p)
    again = reg.call("village.create", p)
    eq(again, first, "the retry's reply")
    # key order in the params does not matter
    again2 = reg.call("village.create", dict(reversed(list(p.items()))))
    eq(again2, first, "the retry's reply with params in another order")
    eq(villages_named(name), 1, "villages written")
    stats = reg.call("sys.stats")
    check(stats["replays"] >= 2, "sys.stats counts replays: %r" % stats)


def test_household_create_takes_a_request_key():
    """household.create checks its params' keys itself (they are also an
    import row's): the request key must pass that check, replay, and not
    register the household twice."""
    cl = S.client("registry")
    vid = cl.call("village.create", {"region_code": TOWN, "name": "键村", "category": "poor"})["id"]
    key = "hh-%d" % time.time_ns()
    p = {"village_id": vid, "categories": ["dibao"], "causes": {"main": "illness"},
         "route": "employment", "income_fen": 100, "request_key": key,
         "members": [{"name": "钱七", "id_number": bftest.fresh_id(TOWN[:6]), "relation": "head"}]}
    first = cl.call("household.create", p)
    eq(cl.call("household.create", p)["id"], first["id"], "the retry replays the first id")
    with bftest.pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM registry.household WHERE village_id = %s", (vid,))
        eq(cur.fetchone()[0], 1, "one household registered")


def test_other_params_with_a_used_key_is_conflict():
    reg = S.client("registry")
    key = "k-" + bftest.uid()
    reg.call("village.create", {"region_code": TOWN, "name": "村" + bftest.uid(),
                                "category": "poor", "request_key": key})
    e = expect_error(reg, "village.create", {"region_code": TOWN, "name": "别的村",
                                             "category": "poor", "request_key": key},
                     "conflict", "request_key")
    check("different params" in e["message"], e["message"])
    eq(villages_named("别的村"), 0, "nothing written by the conflicting request")


def test_a_failed_write_is_not_remembered():
    reg = S.client("registry")
    key = "fail-" + bftest.uid()
    name = "村" + bftest.uid()
    expect_error(reg, "village.create", {"region_code": TOWN, "name": name,
                                         "category": "nonsense", "request_key": key},
                 "invalid_argument", "category")
    # the same key with corrected params runs, as if first
    v = reg.call("village.create", {"region_code": TOWN, "name": name, "category": "poor",
                                    "request_key": key})
    check(v["id"] > 0)
    eq(villages_named(name), 1)


def test_bad_request_keys_are_refused_by_name():
    reg = S.client("registry")
    base = {"region_code": TOWN, "name": "村" + bftest.uid(), "category": "poor"}
    for bad in ("", "x" * 129, 42):
        expect_error(reg, "village.create", dict(base, request_key=bad), "invalid_argument",
                     "request_key")
    # reads take no request key
    expect_error(reg, "village.list", {"request_key": "x"}, "invalid_argument", "request_key")


def test_concurrent_requests_with_one_key_write_once():
    name = "村" + bftest.uid()
    key = "race-" + bftest.uid()
    p = {"region_code": TOWN, "name": name, "category": "weak", "request_key": key}
    replies, errors = [], []

    def worker():
        cl = bftest.Client(S.endpoint("registry"))
        try:
            replies.append(cl.call("village.create", p))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)
        finally:
            cl.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(errors, [], "errors")
    eq(len({r["id"] for r in replies}), 1, "every reply names the same village")
    eq(villages_named(name), 1, "villages written")


def test_event_of_a_retried_write_is_emitted_once():
    reg = S.client("registry")
    r = bftest.redis_client()
    start = bftest.stream_last_id(r)
    key = "ev-" + bftest.uid()
    p = {"region_code": TOWN, "name": "村" + bftest.uid(), "category": "poor", "request_key": key}
    v = reg.call("village.create", p)
    reg.call("village.create", p)
    reg.call("village.create", p)

    def created():
        evs = [e for _, e in bftest.stream_events(r, since=start)
               if e.get("type") == "bangfu.registry.village.created"
               and str(e.get("subject", "")).endswith(str(v["id"]))]
        return evs or None

    bftest.wait_for(created, msg="village.created in the stream")
    import time
    time.sleep(0.5)
    eq(len(created()), 1, "village.created events for one village")


def test_tasks_and_notify_writes_take_request_keys():
    reg = S.client("registry")
    u = reg.call("unit.create", {"name": "单位" + bftest.uid(), "kind": "department"})
    t = S.client("tasks")
    key = "task-" + bftest.uid()
    p = {"title": "走访 " + bftest.uid(), "owner": {"kind": "unit", "id": u["id"]},
         "due": "2031-06-30", "request_key": key}
    first = t.call("task.create", p)
    eq(t.call("task.create", p), first, "tasks replay")
    with bftest.pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tasks.task WHERE title = %s", (p["title"],))
        eq(cur.fetchone()[0], 1, "tasks written")
    n = S.client("notify")
    key = "tpl-" + bftest.uid()
    tp = {"type": "bangfu.test.%s" % bftest.uid(), "subject": "s", "body": "b",
          "request_key": key}
    first = n.call("template.put", tp)
    eq(n.call("template.put", tp), first, "notify replay")
    expect_error(n, "template.put", dict(tp, body="other"), "conflict", "request_key")
