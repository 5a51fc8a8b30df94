"""Roles and region scoping (docs/security.md, "Roles and region scoping";
issue 9 item 2) against the real registry, funds, tasks and notify services.

The caller's roles, region and cadre come from the envelope's `auth` map
(bftest `auth=`), which the harness routes through a principal allowed to act
for others once CURVE authentication is on. Covered: every method of every
service declares its roles and sys.methods lists them (pinned by a table:
changing who may call a method means changing this file); a caller without
the role gets permission_denied naming the method and the roles; admin-only
methods refuse every other role; a subscriber reaches nothing but sys.health;
a county operator neither reads nor changes another county's tasks, problems,
timelines or projects; a cadre sees and reports only its own tasks; the
tranche requester never approves its own tranche."""
import random

import msgpack

import bftest
from bftest import Stack, check, eq, expect_error

S = None
C = {}  # service -> client
GEO = {}
ENT = {}
RUN = bftest.uid()

ROLES = ("admin", "county_operator", "finance", "approver", "auditor", "cadre", "service",
         "subscriber")
NON_ADMIN = ROLES[1:]

# Who may call what: admin plus these. STAFF = every reading role but cadre.
READERS = {"admin", "county_operator", "finance", "approver", "auditor", "cadre", "service"}
STAFF = READERS - {"cadre"}
A = {"admin"}
OP = {"admin", "county_operator"}
FIN = {"admin", "finance"}
AUD = {"admin", "auditor"}

EXPECTED = {
    "registry": {
        "region.put": A, "region.get": READERS, "region.list": READERS,
        "village.create": OP, "village.get": READERS, "village.list": READERS,
        "household.create": OP, "household.get": READERS, "household.update": OP,
        "household.list": READERS, "household.import": OP, "household.add_member": OP,
        "household.remove_member": OP, "household.reveal": AUD,
        # a cadre reads its own record, unit, teams and pairings (the registry scopes it)
        "unit.create": OP, "unit.get": READERS, "unit.list": STAFF, "unit.set_contact": OP,
        "cadre.create": OP, "cadre.get": READERS, "cadre.list": READERS,
        "team.create": OP, "team.get": READERS, "team.list": READERS,
        "pairing.create": OP, "pairing.end": OP, "pairing.get": READERS,
        "pairing.list": READERS,
        "coverage.report": STAFF,
        "unit.import": OP, "cadre.import": OP, "team.import": OP, "pairing.import": OP,
        "village.resolve": READERS, "region.figures": STAFF,
        "household.exit_review": OP | {"cadre"}, "household.exit_verify": OP,
        "household.exit_object": OP | {"cadre"}, "household.exit_resolve": OP,
        "household.exit_approve": {"admin", "approver"},
        "household.exit_reject": OP | {"approver"},
        "village.exit_review": OP, "village.exit_verify": OP, "village.exit_object": OP,
        "village.exit_resolve": OP, "village.exit_approve": {"admin", "approver"},
        "village.exit_reject": OP | {"approver"},
        "exit.get": READERS, "exit.list": READERS,
    },
    "funds": {
        "source.create": FIN, "source.receive": FIN, "source.get": STAFF, "source.list": STAFF,
        "budget.create": FIN, "budget.fund": FIN, "budget.get": STAFF, "budget.list": STAFF,
        "allocation.preview": STAFF, "allocation.apply": FIN,
        "project.create": FIN, "project.get": STAFF, "project.list": STAFF,
        "tranche.plan": FIN, "tranche.approve": {"admin", "approver"}, "tranche.disburse": FIN,
        "disbursement.batch": FIN, "transfer.reverse": FIN,
        "transfer.get": STAFF, "account.get": STAFF, "report.utilisation": STAFF,
        "trace.recipient": STAFF, "ledger.verify": STAFF,
        # the points supermarket (爱心超市): village operators record, another person
        # approves; corrections by an approver; reads by staff
        "points.rule.define": OP, "points.rule.list": STAFF, "points.earn": OP,
        "points.approve": OP | {"approver"}, "points.reject": OP | {"approver"},
        "goods.define": OP, "goods.stock_in": OP, "goods.list": STAFF, "points.redeem": OP,
        "points.reverse": {"admin", "approver"}, "points.account": STAFF,
        "points.statement": STAFF, "points.verify": STAFF,
    },
    "tasks": {
        "task.create": OP, "task.get": READERS, "task.list": READERS,
        "task.start": OP | {"cadre"}, "task.submit": OP | {"cadre"},
        "task.verify": OP, "task.reject": OP, "attachment.get": READERS,
        "plan.create": OP, "plan.submit": OP, "plan.sign": {"admin", "approver"},
        "plan.revise": OP, "plan.get": STAFF, "plan.list": STAFF,
        "schedule.create": OP, "schedule.get": STAFF, "schedule.list": STAFF,
        "timeline.instantiate": OP, "indicator.define": A, "indicator.list": STAFF,
        "indicator.assign": OP, "indicator.report": OP, "progress.rollup": STAFF,
        "problem.open": OP, "problem.get": STAFF, "problem.list": STAFF,
        "ledger.summary": STAFF, "help_request.create": OP, "survey.record": OP,
        "monitor.report": OP, "monitor.close": OP, "monitor.get": STAFF, "monitor.list": STAFF,
        "monitor.summary": STAFF,
        "assessment.run": A, "assessment.get": STAFF, "clock.set": A, "clock.get": READERS,
        "scheduler.tick": A,
    },
    "notify": {
        "subscription.create": A, "subscription.list": AUD, "subscription.update": A,
        "subscription.delete": A, "endpoint.create": A, "endpoint.get": AUD,
        "endpoint.list": AUD, "endpoint.update": A, "endpoint.rotate_secret": A,
        "endpoint.test": A, "endpoint.test_result": AUD, "inbox.list": READERS, "inbox.ack": READERS, "template.put": A,
        "template.list": STAFF, "delivery.get": AUD, "delivery.list": AUD,
        "queues.stats": AUD, "queues.dead.list": AUD, "queues.dead.show": AUD,
        "queues.dead.retry": A, "queues.dead.drop": A, "queues.pause": A, "queues.resume": A,
        "clock.set": A, "clock.get": READERS, "scheduler.tick": A,
    },
}
SYS = {"sys.health": set(ROLES), "sys.methods": READERS, "sys.stats": READERS}
# Methods other branches add (registry: household.reveal); checked when listed.
OPTIONAL = {}


def setup_module():
    global S
    S = Stack(["registry", "funds", "tasks", "notify"]).__enter__()
    for s in ("registry", "funds", "tasks", "notify"):
        C[s] = S.client(s)
    _geo()
    _org()


def teardown_module():
    if S is not None:
        S.__exit__(None, None, None)


def auth(*roles, region=None, cadre_id=None):
    a = {"roles": list(roles)}
    if region:
        a["region"] = region
    if cadre_id:
        a["cadre_id"] = cadre_id
    return a


# ---------------------------------------------------------------- fixtures

def _geo():
    """Province 63 with two fresh counties A and B, one township each."""
    R = C["registry"]
    R.call("region.put", {"code": "630000000000", "name": "青海", "level": "province"})
    counties = []
    while len(counties) < 2:
        city = "63%02d" % random.randint(10, 99)
        county = city + "%02d" % random.randint(10, 99)
        if county in [c[:6] for c in counties]:
            continue
        try:
            R.call("region.get", {"code": county + "000000"})
            continue  # taken by an earlier run on this database
        except bftest.RpcError:
            pass
        R.call("region.put", {"code": city + "00000000", "name": "市" + city, "level": "city",
                              "parent_code": "630000000000"})
        R.call("region.put", {"code": county + "000000", "name": "县" + county,
                              "level": "county", "parent_code": city + "00000000"})
        R.call("region.put", {"code": county + "001000", "name": "乡" + county,
                              "level": "township", "parent_code": county + "000000"})
        counties.append(county + "000000")
    GEO["A"], GEO["B"] = counties
    GEO["townA"] = GEO["A"][:6] + "001000"
    GEO["townB"] = GEO["B"][:6] + "001000"


def _org():
    R = C["registry"]
    u = R.call("unit.create", {"name": "单位" + bftest.uid(), "kind": "department"})["id"]
    cadres = [R.call("cadre.create", {"name": "干部" + bftest.uid()[:6], "rank": "general",
                                      "unit_id": u, "party_member": True})["id"]
              for _ in range(3)]
    va = R.call("village.create", {"region_code": GEO["townA"], "name": "村" + bftest.uid(),
                                   "category": "poor"})["id"]
    vb = R.call("village.create", {"region_code": GEO["townB"], "name": "村" + bftest.uid(),
                                   "category": "poor"})["id"]
    ENT.update(unit=u, c1=cadres[0], c2=cadres[1], c3=cadres[2], va=va, vb=vb)


def task(village, owner_cadre, **kw):
    p = {"title": "任务" + bftest.uid(), "owner": {"kind": "cadre", "id": owner_cadre},
         "due": "2032-12-31", "target": {"kind": "village", "id": village}}
    p.update(kw)
    return C["tasks"].call("task.create", p)


_REAL = {}  # (service, roles) -> client of a real principal holding exactly those roles


def real_client(service, roles):
    """A client authenticated as a real principal holding exactly roles (the
    harness principal, which acts for others, may not grant `service`, so a
    caller with that role is a principal of its own). Its actor is its name."""
    key = (service, tuple(sorted(roles)))
    if key not in _REAL:
        name = "roles.%s.%s" % (RUN[:6], "-".join(r[:4] for r in sorted(roles)))
        bftest.principal(name, roles=tuple(roles))
        _REAL[key] = S.client(service, principal=name)
    return _REAL[key]


def denied(service, method, params, roles, actor="admin", field="method", **kw):
    if "service" in roles and not kw:
        return expect_error(real_client(service, roles), method, params, "permission_denied",
                            field, actor=None)
    return expect_error(C[service], method, params, "permission_denied", field, actor=actor,
                        auth=auth(*roles, **kw))


# ---------------------------------------------------------------- the method table

def test_every_method_declares_roles_and_sys_methods_lists_them():
    for service, table in EXPECTED.items():
        ms = C[service].call("sys.methods", actor=None)
        listed = {m["name"]: m for m in ms}
        optional = OPTIONAL.get(service, {})
        eq(set(listed) - set(optional), set(table) | set(SYS),
           "%s: methods listed by sys.methods vs the roles table of this test" % service)
        table = dict(table, **{n: r for n, r in optional.items() if n in listed})
        for name, m in listed.items():
            roles = m.get("roles")
            check(isinstance(roles, list) and roles, "%s %s lists no roles" % (service, name))
            check(all(r in ROLES for r in roles), "%s %s: unknown role in %r" % (service, name,
                                                                                  roles))
            eq(len(roles), len(set(roles)), "%s %s roles repeat" % (service, name))
            check("admin" in roles, "%s %s: admin may call every method" % (service, name))
            want = table.get(name, SYS.get(name))
            eq(set(roles), want, "%s %s roles" % (service, name))
    # the listed order is the canonical one
    ms = {m["name"]: m for m in C["funds"].call("sys.methods", actor=None)}
    eq(ms["tranche.approve"]["roles"], ["admin", "approver"])
    eq(ms["tranche.plan"]["roles"], ["admin", "finance"])


def test_a_caller_without_the_role_is_denied_naming_method_and_roles():
    """Every method of every service, called by a principal holding every role
    but the ones allowed: permission_denied, field method, the message naming
    the method and each allowed role. The check runs before parameters, so
    empty params are enough."""
    for service, table in EXPECTED.items():
        for name, allowed in sorted(table.items()):
            others = [r for r in NON_ADMIN if r not in allowed]
            if not others:
                continue
            e = denied(service, name, {}, others)
            msg = e.get("message", "")
            check(name in msg, "%s: message does not name the method: %s" % (name, msg))
            for r in allowed:
                check(r in msg, "%s: message does not name role %s: %s" % (name, r, msg))


def test_only_admin_calls_the_admin_only_methods():
    admin_only = [(s, n) for s, t in EXPECTED.items() for n, roles in t.items() if roles == A]
    check(len(admin_only) >= 15, "expected the admin-only set to be large, got %d"
          % len(admin_only))
    for service, name in admin_only:
        e = denied(service, name, {}, NON_ADMIN)
        check("admin" in e["message"], e["message"])
    # notify's queue and dead-letter actions are admin-only by name
    for name in ("queues.dead.retry", "queues.dead.drop", "queues.pause", "queues.resume"):
        eq(EXPECTED["notify"][name], A, name)
    # admin passes the role check (then parameters are checked)
    expect_error(C["notify"], "queues.pause", {}, "invalid_argument", "queue",
                 auth=auth("admin"))
    expect_error(C["registry"], "region.put", {}, "invalid_argument", auth=auth("admin"))


def test_a_subscriber_reaches_only_sys_health():
    for service in EXPECTED:
        cl = C[service]
        eq(cl.call("sys.health", actor=None, auth=auth("subscriber"))["service"], service)
        for m in ("sys.methods", "sys.stats"):
            e = expect_error(cl, m, {}, "permission_denied", "method", actor=None,
                             auth=auth("subscriber"))
            check(m in e["message"] and "subscriber" in e["message"], e["message"])
        for name in sorted(EXPECTED[service])[:5]:
            denied(service, name, {}, ["subscriber"])


def test_the_denial_names_the_callers_roles():
    e = denied("funds", "tranche.approve", {"tranche_id": 1, "request_key": "x"},
               ["finance", "cadre"])
    check("tranche.approve" in e["message"], e["message"])
    check("approver" in e["message"], e["message"])
    check("caller holds: finance, cadre" in e["message"], e["message"])


def test_a_role_opens_its_methods():
    """A sample of allowed calls per service goes past the role check."""
    R, T, F, N = C["registry"], C["tasks"], C["funds"], C["notify"]
    op = auth("county_operator")
    # a cadre may list villages (the registry then shows only its own, which
    # for this cadre-without-households is none: the role check is what counts)
    R.call("village.list", {}, auth=auth("cadre"))
    real_client("registry", ["service"]).call("unit.get", {"id": ENT["unit"]}, actor=None)
    v = R.call("village.create", {"region_code": GEO["townA"], "name": "村" + bftest.uid(),
                                  "category": "weak"}, actor="op:1", auth=op)
    check(v["id"] > 0, "operator created a village")
    t = T.call("task.create", {"title": "op task", "owner": {"kind": "cadre", "id": ENT["c1"]},
                               "due": "2032-12-31",
                               "target": {"kind": "village", "id": ENT["va"]}},
               actor="op:1", auth=op)
    eq(t["status"], "open")
    T.call("clock.get", auth=auth("cadre"))
    src = F.call("source.create", {"name": "src-" + RUN + bftest.uid(), "kind": "central",
                                   "request_key": "k-" + bftest.uid()},
                 actor="fin:1", auth=auth("finance"))
    F.call("source.get", {"id": src["id"]}, auth=auth("auditor"))
    expect_error(F, "source.get", {"id": src["id"]}, "permission_denied", "method",
                 auth=auth("cadre"))
    N.call("queues.stats", auth=auth("auditor"))
    N.call("template.list", auth=auth("county_operator"))


# ---------------------------------------------------------------- region scoping (tasks)

def test_a_county_operator_sees_and_changes_only_its_county_tasks():
    T = C["tasks"]
    ta = task(ENT["va"], ENT["c1"])
    tb = task(ENT["vb"], ENT["c1"])
    opA = dict(roles=["county_operator"], region=GEO["A"])
    a = auth(*opA["roles"], region=opA["region"])
    # reads: its own county only; the other county's task does not exist for it
    eq(T.call("task.get", {"id": ta["id"]}, auth=a)["id"], ta["id"])
    e = expect_error(T, "task.get", {"id": tb["id"]}, "not_found", "id", auth=a)
    check(str(tb["id"]) in e["message"], e["message"])
    ids = []
    cursor = None
    while True:
        p = {"owner": {"kind": "cadre", "id": ENT["c1"]}, "limit": 1000}
        if cursor:
            p["cursor"] = cursor
        page = T.call("task.list", p, auth=a)
        ids += [(i["id"], i["region_code"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    check(ta["id"] in [i for i, _ in ids], "own-county task listed")
    check(tb["id"] not in [i for i, _ in ids], "other county's task listed")
    check(all(code.startswith(GEO["A"][:6]) for _, code in ids), "only county A codes")
    # the same list unbound shows both
    both = T.call("task.list", {"owner": {"kind": "cadre", "id": ENT["c1"]}, "limit": 1000})
    got = [i["id"] for i in both["items"]]
    check(ta["id"] in got and tb["id"] in got, "an unbound caller sees both")
    # writes: the other county's task is refused naming the field
    T.call("task.start", {"id": ta["id"]}, actor="op:a", auth=a)
    e = denied("tasks", "task.start", {"id": tb["id"]}, ["county_operator"], actor="op:a",
               field="id", region=GEO["A"])
    check("region" in e["message"], e["message"])
    eq(T.call("task.get", {"id": tb["id"]})["status"], "open", "refused write changed nothing")
    # creating work in the other county, or with no place at all
    denied("tasks", "task.create", {"title": "x", "owner": {"kind": "cadre", "id": ENT["c1"]},
                                    "due": "2032-12-31",
                                    "target": {"kind": "village", "id": ENT["vb"]}},
           ["county_operator"], actor="op:a", field="target", region=GEO["A"])
    denied("tasks", "task.create", {"title": "x", "owner": {"kind": "cadre", "id": ENT["c1"]},
                                    "due": "2032-12-31"},
           ["county_operator"], actor="op:a", field="target", region=GEO["A"])
    denied("tasks", "timeline.instantiate",
           {"template": "county_2015", "year": 2032, "region_code": GEO["B"],
            "owner": {"kind": "unit", "id": ENT["unit"]}},
           ["county_operator"], actor="op:a", field="region_code", region=GEO["A"])
    # a township-bound operator inside county A still does not see county B
    expect_error(T, "task.get", {"id": tb["id"]}, "not_found", "id",
                 auth=auth("county_operator", region=GEO["townA"]))
    eq(T.call("task.get", {"id": ta["id"]}, auth=auth("auditor", region=GEO["townA"]))["id"],
       ta["id"])


def test_problems_and_rollups_are_scoped_to_the_region():
    T = C["tasks"]
    a = auth("county_operator", region=GEO["A"])
    pa = T.call("problem.open", {"title": "问题A", "village_id": ENT["va"],
                                 "responsible": [ENT["c2"]]}, actor="op:a", auth=a)
    pb = T.call("problem.open", {"title": "问题B", "village_id": ENT["vb"],
                                 "responsible": [ENT["c2"]]})
    eq(T.call("problem.get", {"id": pa["id"]}, auth=a)["id"], pa["id"])
    expect_error(T, "problem.get", {"id": pb["id"]}, "not_found", "id", auth=a)
    listed = [p["id"] for p in T.call("problem.list", {"cadre_id": ENT["c2"], "limit": 1000},
                                      auth=a)["items"]]
    check(pa["id"] in listed and pb["id"] not in listed, "problem.list scoped: %r" % listed)
    summary = T.call("ledger.summary", {"by": "person"}, auth=a)
    mine = [i for i in summary["items"] if i["cadre_id"] == ENT["c2"]]
    eq(mine[0]["total"], 1, "ledger.summary counts only county A's problem of cadre c2")
    denied("tasks", "problem.open", {"title": "越界", "village_id": ENT["vb"]},
           ["county_operator"], actor="op:a", field="village_id", region=GEO["A"])
    expect_error(T, "progress.rollup", {"region_code": GEO["B"], "year": 2032}, "not_found",
                 "region_code", auth=a)
    T.call("progress.rollup", {"region_code": GEO["A"], "year": 2032}, auth=a)


def test_plans_are_scoped_by_their_subject():
    T = C["tasks"]
    a = auth("county_operator", region=GEO["A"])
    pl_a = T.call("plan.create", {"kind": "yearly", "subject": {"kind": "village", "id": ENT["va"]},
                                  "title": "规划A", "year": 2032}, actor="op:a", auth=a)
    pl_b = T.call("plan.create", {"kind": "yearly", "subject": {"kind": "village", "id": ENT["vb"]},
                                  "title": "规划B", "year": 2032})
    denied("tasks", "plan.create", {"kind": "yearly", "subject": {"kind": "village",
                                                                   "id": ENT["vb"]},
                                    "title": "越界", "year": 2033},
           ["county_operator"], actor="op:a", field="subject", region=GEO["A"])
    eq(T.call("plan.get", {"id": pl_a["id"]}, auth=a)["id"], pl_a["id"])
    expect_error(T, "plan.get", {"id": pl_b["id"]}, "not_found", "id", auth=a)
    denied("tasks", "plan.submit", {"id": pl_b["id"]}, ["county_operator"], actor="op:a",
           field="id", region=GEO["A"])
    denied("tasks", "plan.list", {}, ["county_operator"], field="subject", region=GEO["A"])
    got = T.call("plan.list", {"subject": {"kind": "village", "id": ENT["va"]}}, auth=a)
    eq([p["id"] for p in got["items"]], [pl_a["id"]])


# ---------------------------------------------------------------- cadres (tasks)

def test_a_cadre_sees_and_reports_only_its_own_tasks():
    T = C["tasks"]
    mine = task(ENT["va"], ENT["c3"])
    theirs = task(ENT["va"], ENT["c2"])
    me = auth("cadre", cadre_id=ENT["c3"])
    actor = "cadre:%d" % ENT["c3"]
    page = T.call("task.list", {"limit": 1000}, actor=actor, auth=me)
    owners = {(i["owner"]["kind"], i["owner"]["id"]) for i in page["items"]}
    eq(owners, {("cadre", ENT["c3"])}, "a cadre lists only its own tasks")
    check(mine["id"] in [i["id"] for i in page["items"]], "own task listed")
    # even when it asks for someone else's
    page = T.call("task.list", {"owner": {"kind": "cadre", "id": ENT["c2"]}}, actor=actor,
                  auth=me)
    eq(page["items"], [], "another cadre's tasks are invisible")
    expect_error(T, "task.get", {"id": theirs["id"]}, "not_found", "id", actor=actor, auth=me)
    eq(T.call("task.get", {"id": mine["id"]}, actor=actor, auth=me)["id"], mine["id"])
    # reporting: start and submit its own; another's is refused naming the field
    T.call("task.start", {"id": mine["id"]}, actor=actor, auth=me)
    done = T.call("task.submit", {"id": mine["id"], "evidence": {"text": "走访记录"}},
                  actor=actor, auth=me)
    eq(done["status"], "submitted")
    denied("tasks", "task.start", {"id": theirs["id"]}, ["cadre"], actor=actor, field="id",
           cadre_id=ENT["c3"])
    eq(T.call("task.get", {"id": theirs["id"]})["status"], "open")
    # a claimed actor does not widen what the cadre principal sees
    expect_error(T, "task.get", {"id": theirs["id"]}, "not_found", "id",
                 actor="cadre:%d" % ENT["c2"], auth=me)
    # a cadre neither creates, verifies nor reads other work
    denied("tasks", "task.verify", {"id": mine["id"]}, ["cadre"], actor=actor,
           cadre_id=ENT["c3"])
    denied("tasks", "task.create", {}, ["cadre"], actor=actor, cadre_id=ENT["c3"])
    denied("tasks", "problem.list", {}, ["cadre"], actor=actor, cadre_id=ENT["c3"])
    denied("funds", "ledger.verify", {}, ["cadre"], actor=actor, cadre_id=ENT["c3"])
    # the evidence attachment follows its task
    att = T.call("task.create", {"title": "附件", "owner": {"kind": "cadre", "id": ENT["c2"]},
                                 "due": "2032-12-31",
                                 "target": {"kind": "village", "id": ENT["va"]}})
    T.call("task.start", {"id": att["id"]})
    data = b"photo"
    import hashlib
    sub = T.call("task.submit", {"id": att["id"], "evidence": {"attachments": [{
        "name": "a.jpg", "content_type": "image/jpeg", "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "data": data}]}})
    aid = sub["evidence"][0]["attachments"][0]["id"]
    expect_error(T, "attachment.get", {"id": aid}, "not_found", "id", actor=actor, auth=me)
    eq(T.call("attachment.get", {"id": aid}, auth=auth("auditor"))["data"], data)


# ---------------------------------------------------------------- funds

def _budget(amount=1_000_000):
    F = C["funds"]
    src = F.call("source.create", {"name": "src-" + RUN + bftest.uid(), "kind": "central",
                                   "request_key": "sc-" + bftest.uid()})
    F.call("source.receive", {"source_id": src["id"], "amount_fen": amount, "year": 2032,
                              "request_key": "sr-" + bftest.uid()})
    return F.call("budget.create", {"recipient": "program:" + bftest.uid(), "year": 2032,
                                    "funding": [{"source_id": src["id"], "amount_fen": amount}],
                                    "request_key": "bc-" + bftest.uid()})


def _project(budget_id, location, amount=500_000, **kw):
    p = {"name": "项目-" + bftest.uid(), "kind": "education", "location": location,
         "unit_id": ENT["unit"], "beneficiaries": 100, "target": "建成", "budget_id": budget_id,
         "amount_fen": amount, "request_key": "pc-" + bftest.uid()}
    return C["funds"].call("project.create", p, **kw)


def test_the_tranche_requester_never_approves_it():
    F = C["funds"]
    pj = _project(_budget()["id"], GEO["townA"])
    fin = auth("finance", "approver")  # one principal holding both roles
    t = F.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 1000,
                                "request_key": "tp-" + bftest.uid()}, actor="fin:alice",
               auth=fin)
    # the requester, even holding the approver role, cannot approve
    e = expect_error(F, "tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" +
                                            bftest.uid()},
                     "permission_denied", "actor", actor="fin:alice", auth=fin)
    check("requester" in e["message"], e["message"])
    # nor can admin acting as the requester
    expect_error(F, "tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" +
                                        bftest.uid()},
                 "permission_denied", "actor", actor="fin:alice", auth=auth("admin"))
    # another finance principal without the approver role is refused by the table
    denied("funds", "tranche.approve", {"tranche_id": t["id"], "request_key": "x"},
           ["finance"], actor="fin:bob")
    eq(F.call("project.get", {"id": pj["id"]})["tranches"][0]["state"], "planned")
    ok = F.call("tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" + bftest.uid()},
                actor="appr:carol", auth=auth("approver"))
    eq(ok["approved_by"], "appr:carol")
    # the approver cannot disburse (finance does)
    denied("funds", "tranche.disburse", {"tranche_id": t["id"], "request_key": "x"},
           ["approver"], actor="appr:carol")
    d = F.call("tranche.disburse", {"tranche_id": t["id"], "request_key": "td-" + bftest.uid()},
               actor="fin:bob", auth=auth("finance"))
    eq(d["state"], "disbursed")


def test_funds_projects_are_scoped_to_the_region():
    F = C["funds"]
    bud = _budget()
    pa = _project(bud["id"], GEO["townA"], amount=100_000)
    pb = _project(bud["id"], GEO["townB"], amount=100_000)
    finA = auth("finance", region=GEO["A"])
    eq(F.call("project.get", {"id": pa["id"]}, auth=finA)["id"], pa["id"])
    expect_error(F, "project.get", {"id": pb["id"]}, "not_found", "id", auth=finA)
    denied("funds", "tranche.plan", {"project_id": pb["id"], "seq": 1, "amount_fen": 1,
                                     "request_key": "tp-" + bftest.uid()},
           ["finance"], actor="fin:a", field="project_id", region=GEO["A"])
    denied("funds", "tranche.plan", {"budget_id": bud["id"], "seq": 1, "amount_fen": 1,
                                     "recipient": "unit:1", "request_key": "tp-" + bftest.uid()},
           ["finance"], actor="fin:a", field="budget_id", region=GEO["A"])
    e = expect_error(F, "project.create", {
        "name": "越界-" + bftest.uid(), "kind": "education", "location": GEO["townB"],
        "unit_id": ENT["unit"], "beneficiaries": 1, "target": "t", "budget_id": bud["id"],
        "amount_fen": 1, "request_key": "pc-" + bftest.uid()},
        "permission_denied", "location", actor="fin:a", auth=finA)
    check(GEO["townB"] in e["message"], e["message"])
    t = F.call("tranche.plan", {"project_id": pa["id"], "seq": 1, "amount_fen": 500,
                                "request_key": "tp-" + bftest.uid()}, actor="fin:a", auth=finA)
    tb = F.call("tranche.plan", {"project_id": pb["id"], "seq": 1, "amount_fen": 500,
                                 "request_key": "tp-" + bftest.uid()}, actor="fin:z")
    denied("funds", "tranche.approve", {"tranche_id": tb["id"], "request_key": "x"},
           ["approver"], actor="appr:a", field="tranche_id", region=GEO["A"])
    F.call("tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" + bftest.uid()},
           actor="appr:a", auth=auth("approver", region=GEO["A"]))


# ---------------------------------------------------------------- real principals (CURVE)

def _named(tag, roles, **kw):
    name = "%s.%s" % (tag, bftest.uid()[:8])
    bftest.principal(name, roles=roles, **kw)
    return name


def test_real_principals_requester_never_approves_even_claiming_another_actor():
    F = C["funds"]
    pj = _project(_budget()["id"], GEO["townA"])
    alice = _named("fin", ("finance", "approver"))
    carol = _named("appr", ("approver",))
    fa, fc = S.client("funds", principal=alice), S.client("funds", principal=carol)
    t = fa.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 700,
                                 "request_key": "tp-" + bftest.uid()}, actor=None)
    tr = F.call("project.get", {"id": pj["id"]})["tranches"][0]
    eq(tr["requested_by"], alice, "the principal is the requester")
    # as itself: the four-eyes rule
    e = expect_error(fa, "tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" +
                                             bftest.uid()}, "permission_denied", "actor",
                     actor=None)
    check("requester" in e["message"], e["message"])
    # claiming another actor in the envelope, on alice's own connection: refused
    # before the method runs (bftest would route actor= through that principal's
    # socket, so the frame is sent raw)
    for claimed in (carol, "cadre:2", "admin"):
        body = msgpack.packb({"v": 1, "id": bftest.uid(), "method": "tranche.approve",
                              "actor": claimed,
                              "params": {"tranche_id": t["id"],
                                         "request_key": "ta-" + bftest.uid()}},
                             use_bin_type=True)
        got = fa.raw(body, sock=fa.sock)
        check(got is not None, "no reply to a spoofed approval")
        reply = got[0]
        eq(reply.get("ok"), False, "a spoofed approval as %s succeeded" % claimed)
        eq(reply["error"]["code"], "permission_denied", reply["error"]["message"])
        eq(reply["error"]["field"], "actor", reply["error"]["message"])
        check(alice in reply["error"]["message"], reply["error"]["message"])
    eq(F.call("project.get", {"id": pj["id"]})["tranches"][0]["state"], "planned")
    ok = fc.call("tranche.approve", {"tranche_id": t["id"], "request_key": "ta-" +
                                     bftest.uid()}, actor=None)
    eq(ok["approved_by"], carol)


def test_real_principals_region_and_cadre_scoping():
    T = C["tasks"]
    ta = task(ENT["va"], ENT["c1"])
    tb = task(ENT["vb"], ENT["c1"])
    op = S.client("tasks", principal=_named("op", ("county_operator",), region=GEO["A"]))
    eq(op.call("task.get", {"id": ta["id"]}, actor=None)["id"], ta["id"])
    expect_error(op, "task.get", {"id": tb["id"]}, "not_found", "id", actor=None)
    expect_error(op, "task.start", {"id": tb["id"]}, "permission_denied", "id", actor=None)
    # a cadre principal: only its own tasks, whatever it asks for
    mine = task(ENT["va"], ENT["c3"])
    cad = S.client("tasks", principal=_named("cadre", ("cadre",), cadre_id=ENT["c3"]))
    items = cad.call("task.list", {"limit": 1000}, actor=None)["items"]
    check(items and all(i["owner"] == {"kind": "cadre", "id": ENT["c3"]} for i in items),
          "cadre principal lists only its own tasks")
    check(mine["id"] in [i["id"] for i in items], "own task listed")
    expect_error(cad, "task.get", {"id": ta["id"]}, "not_found", "id", actor=None)
    expect_error(cad, "task.create", {}, "permission_denied", "method", actor=None)
    eq(T.call("task.get", {"id": tb["id"]})["status"], "open")


def test_real_subscriber_reaches_only_sys_health():
    for service in EXPECTED:
        sub = S.client(service, principal=bftest.SUBSCRIBER)
        eq(sub.call("sys.health", actor=None)["service"], service)
        expect_error(sub, "sys.methods", {}, "permission_denied", "method", actor=None)
        name = sorted(n for n, r in EXPECTED[service].items() if not r & {"subscriber"})[0]
        expect_error(sub, name, {}, "permission_denied", "method", actor=None)
