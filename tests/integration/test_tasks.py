"""The tasks service (docs/tasks.md) against the real registry, PostgreSQL and
Redis, on the manual clock (tasks.clock = manual): time moves only by
clock.set and the scheduler runs only by scheduler.tick, so nothing sleeps.

Data lives in years 2031-2034 so that a system-clock scheduler of another
test file never finds anything of ours due, and uses a fresh county under
province 65 so that roll-ups see only what this file created."""
import hashlib
import random
import threading
import time

import bftest
from bftest import Client, Stack, check, eq, expect_error

S = None
R = None  # registry client
T = None  # tasks client
GEO = {}
ENT = {}
STREAM_START = "0-0"


def setup_module():
    global S, R, T, STREAM_START
    STREAM_START = bftest.stream_last_id(bftest.redis_client())
    S = Stack(["registry", "tasks"], extra_env={"BANGFU_TASKS_CLOCK": "manual"}).__enter__()
    R = S.client("registry")
    T = S.client("tasks")
    _geo()
    _org()


def teardown_module():
    S.__exit__(None, None, None)


# ---------------------------------------------------------------- fixtures

def _geo():
    R.call("region.put", {"code": "650000000000", "name": "新疆", "level": "province"})
    for _ in range(50):
        city = "65%02d" % random.randint(10, 99)
        county = city + "%02d" % random.randint(10, 99)
        try:
            R.call("region.get", {"code": county + "000000"})
            continue  # taken by an earlier run on this database: pick another
        except bftest.RpcError:
            break
    GEO["province"] = "650000000000"
    GEO["city"] = city + "00000000"
    GEO["county"] = county + "000000"
    GEO["towns"] = [county + "001000", county + "002000"]
    R.call("region.put", {"code": GEO["city"], "name": "市" + city, "level": "city",
                          "parent_code": GEO["province"]})
    R.call("region.put", {"code": GEO["county"], "name": "县" + county, "level": "county",
                          "parent_code": GEO["city"]})
    for i, t in enumerate(GEO["towns"]):
        R.call("region.put", {"code": t, "name": "乡%d" % i, "level": "township",
                              "parent_code": GEO["county"]})


def village(town=0):
    return R.call("village.create", {"region_code": GEO["towns"][town],
                                     "name": "村" + bftest.uid(), "category": "poor"})["id"]


def unit():
    return R.call("unit.create", {"name": "单位" + bftest.uid(), "kind": "department"})["id"]


def cadre(unit_id, rank="general"):
    return R.call("cadre.create", {"name": "干部" + bftest.uid()[:6], "rank": rank,
                                   "unit_id": unit_id, "party_member": True})["id"]


def team(unit_id, leader, members, villages):
    return R.call("team.create", {"name": "组" + bftest.uid(), "unit_id": unit_id,
                                  "leader_id": leader, "member_ids": members,
                                  "village_ids": villages, "starts_on": "2030-01-01"})["id"]


def pair(kind, helper, target):
    return R.call("pairing.create", {"kind": kind, "helper_id": helper, "target_id": target,
                                     "starts_on": "2030-01-01"})["id"]


def household(vid):
    return R.call("household.create", {
        "village_id": vid, "categories": ["dibao"], "causes": {"main": "illness"},
        "route": "safety_net", "income_fen": 100000,
        "members": [{"name": "户主" + bftest.uid()[:4], "id_number": bftest.fresh_id(),
                     "relation": "head"}]})["id"]


def _org():
    """One unit with a team of three cadres (leader + two members) working two
    villages, a household with a responsible cadre, and a second unit."""
    u = unit()
    leader, m1, m2 = cadre(u), cadre(u), cadre(u)
    v1, v2 = village(0), village(1)
    t = team(u, leader, [m1, m2], [v1, v2])
    pair("unit_village", u, v1)
    h = household(v1)
    pair("cadre_household", m1, h)
    u2 = unit()
    outsider = cadre(u2)
    ENT.update(unit=u, leader=leader, m1=m1, m2=m2, team=t, v1=v1, v2=v2, household=h,
               unit2=u2, outsider=outsider)


def set_clock(when):
    return T.call("clock.set", {"now": when})


def tick(client=None):
    return (client or T).call("scheduler.tick")


def new_task(owner=None, due="2031-12-31", **kw):
    p = {"title": "任务" + bftest.uid(), "owner": owner or {"kind": "cadre", "id": ENT["m1"]},
         "due": due}
    p.update(kw)
    return T.call("task.create", p)


def events(etype, subject=None, timeout=10, want=1):
    """Events of a type (and subject) in the Redis stream since this file started."""
    r = bftest.redis_client()

    def found():
        evs = [e for _, e in bftest.stream_events(r, STREAM_START)
               if e.get("type") == etype and (subject is None or e.get("subject") == subject)]
        return evs if len(evs) >= want else None
    return bftest.wait_for(found, timeout=timeout,
                           msg="no %d %s event(s) for %s in the stream" % (want, etype, subject))


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- basics

def test_methods_are_listed_with_their_writes():
    ms = {m["name"]: m for m in T.call("sys.methods", actor=None)}
    for name in ("plan.create", "plan.submit", "plan.sign", "plan.revise", "plan.get",
                 "task.create", "task.start", "task.submit", "task.verify", "task.reject",
                 "task.list", "schedule.create", "timeline.instantiate", "indicator.define",
                 "indicator.assign", "indicator.report", "progress.rollup", "problem.open",
                 "problem.list", "ledger.summary", "assessment.run", "assessment.get",
                 "help_request.create", "survey.record", "clock.set", "scheduler.tick"):
        check(name in ms, name + " missing from sys.methods")
    eq(ms["task.verify"]["writes"], True)
    eq(ms["task.list"]["writes"], False)
    h = T.call("sys.health", actor=None)
    eq(h["service"], "tasks")
    eq(h["db"], "ok")


def test_manual_clock_set_and_get():
    c = set_clock("2031-01-01T08:00:00+08:00")
    eq(c["now"], "2031-01-01T00:00:00Z")
    eq(c["now_local"], "2031-01-01T08:00:00+08:00")
    eq(c["mode"], "manual")
    eq(T.call("clock.get")["now"], "2031-01-01T00:00:00Z")
    expect_error(T, "clock.set", {"now": "2031-01-01"}, "invalid_argument", "now")
    expect_error(T, "clock.set", {"now": "yesterday"}, "invalid_argument", "now")
    e = T.request("clock.set", {"now": "2031-01-01T00:00:00Z"},
                  extra={"actor": "cadre:invented"})["error"]
    eq(e["code"], "permission_denied")


def test_clock_set_is_refused_with_the_system_clock():
    port = bftest.free_port()
    ep = "tcp://127.0.0.1:%d" % port
    S.start("tasks", env={"BANGFU_TASKS_BIND": ep, "BANGFU_TASKS_CLOCK": "system",
                          "BANGFU_RELAY_ENABLED": "false"}, name="tasks_sys")
    c = Client(ep)
    try:
        e = c.err("clock.set", {"now": "2031-01-01T00:00:00Z"})
        eq(e["code"], "permission_denied")
        eq(c.call("clock.get")["mode"], "system")
    finally:
        c.close()
        eq(S.stop("tasks_sys"), 0, "a system-clock instance exits 0 on SIGTERM")


# ---------------------------------------------------------------- create and registry

def test_task_create_checks_owner_and_target_in_the_registry():
    set_clock("2031-01-01T08:00:00+08:00")
    base = {"title": "核对", "due": "2031-03-01"}
    expect_error(T, "task.create", dict(base, owner={"kind": "cadre", "id": 987654321}),
                 "not_found", "owner.id")
    expect_error(T, "task.create", dict(base, owner={"kind": "team", "id": 987654321}),
                 "not_found", "owner.id")
    expect_error(T, "task.create", dict(base, owner={"kind": "unit", "id": 987654321}),
                 "not_found", "owner.id")
    own = {"kind": "cadre", "id": ENT["m1"]}
    expect_error(T, "task.create", dict(base, owner=own,
                                        target={"kind": "village", "id": 987654321}),
                 "not_found", "target.id")
    expect_error(T, "task.create", dict(base, owner=own,
                                        target={"kind": "household", "id": 987654321}),
                 "not_found", "target.id")
    expect_error(T, "task.create", dict(base, owner=own, team_id=987654321), "not_found",
                 "team_id")
    expect_error(T, "task.create", dict(base, owner=own,
                                        target={"kind": "region", "code": "659999999000"}),
                 "not_found", "target.code")
    expect_error(T, "task.create", dict(base, owner={"kind": "village", "id": ENT["v1"]}),
                 "invalid_argument", "owner.kind")
    expect_error(T, "task.create", dict(base, owner=dict(own, colour=1)), "invalid_argument",
                 "owner.colour")
    expect_error(T, "task.create", dict(base, owner=own, due="2031-02-30"), "invalid_argument",
                 "due")
    expect_error(T, "task.create", dict(base, owner=own, due="2031-02-01T10:00:00"),
                 "invalid_argument", "due")
    # a household target records the household's village (a copy, for ledgers)
    t = T.call("task.create", dict(base, owner=own,
                                   target={"kind": "household", "id": ENT["household"]}))
    eq(t["village_id"], ENT["v1"])
    eq(t["region_code"], GEO["towns"][0])
    eq(t["status"], "open")
    # projects belong to the funds service: accepted unchecked
    t = T.call("task.create", dict(base, owner=own, target={"kind": "project", "id": 424242}))
    eq(t["target"], {"kind": "project", "id": 424242})
    ev = events("bangfu.tasks.task.created", "task/%d" % t["id"])[0]
    eq(ev["data"]["owner"], own)
    eq(ev["data"]["due_local"], "2031-03-01T23:59:59+08:00")


def test_due_date_means_the_end_of_that_day_in_the_zone():
    t = new_task(due="2031-09-25")
    eq(t["due"], "2031-09-25T15:59:59Z")
    eq(t["due_local"], "2031-09-25T23:59:59+08:00")
    t = new_task(due="2031-09-25T10:30:00+08:00")
    eq(t["due"], "2031-09-25T02:30:00Z")
    t = new_task(due="2031-09-25T10:30:00Z")
    eq(t["due_local"], "2031-09-25T18:30:00+08:00")
    ref = "ref-" + bftest.uid()
    new_task(ref=ref)
    expect_error(T, "task.create", {"title": "x", "owner": {"kind": "unit", "id": ENT["unit"]},
                                    "due": "2031-09-25", "ref": ref}, "already_exists", "ref")


def test_task_list_filters_and_pages():
    u = unit()
    c = cadre(u)
    vx = village(1)
    own = {"kind": "cadre", "id": c}
    a = new_task(owner=own, due="2031-10-01")["id"]
    b = new_task(owner=own, due="2031-10-15", target={"kind": "village", "id": vx})["id"]
    d = new_task(owner=own, due="2031-11-01T08:00:00+08:00")["id"]

    def ids(**kw):
        return [t["id"] for t in T.call("task.list", dict(owner=own, **kw))["items"]]
    eq(ids(), [a, b, d])
    eq(ids(due_from="2031-10-01", due_to="2031-10-15"), [a, b], "date bounds are whole days")
    eq(ids(due_from="2031-10-02"), [b, d])
    eq(ids(due_to="2031-11-01T07:59:59+08:00"), [a, b])
    eq(ids(target={"kind": "village", "id": vx}), [b])
    eq([t["id"] for t in T.call("task.list", {"village_id": vx})["items"]], [b])
    T.call("task.start", {"id": b})
    eq(ids(status="in_progress"), [b])
    eq(ids(status="open"), [a, d])
    first = T.call("task.list", {"owner": own, "limit": 2})
    eq([t["id"] for t in first["items"]], [a, b])
    second = T.call("task.list", {"owner": own, "limit": 2, "cursor": first["next_cursor"]})
    eq([t["id"] for t in second["items"]], [d])
    eq(second["next_cursor"], None)
    expect_error(T, "task.list", {"status": "done"}, "invalid_argument", "status")
    expect_error(T, "task.list", {"cursor": "abc"}, "invalid_argument", "cursor")


# ---------------------------------------------------------------- status machine

EVIDENCE = {"text": "已入户走访, 见照片"}


def move(verb, tid, actor="admin", **kw):
    p = {"id": tid}
    p.update(kw)
    if verb == "submit" and "evidence" not in p:
        p["evidence"] = EVIDENCE
    if verb == "reject" and "reason" not in p:
        p["reason"] = "照片不清楚"
    return T.call("task." + verb, p, actor=actor)


def test_every_allowed_move():
    t = new_task()
    tid = t["id"]
    eq(move("start", tid)["status"], "in_progress")
    s = move("submit", tid, evidence={"text": "第一次"})
    eq(s["status"], "submitted")
    eq(s["submissions"], 1)
    r = move("reject", tid, reason="缺少图片")
    eq(r["status"], "rejected")
    eq(r["reject_reason"], "缺少图片")
    eq(move("start", tid)["status"], "in_progress")  # back to work after a rejection
    eq(move("submit", tid)["status"], "submitted")
    v = move("verify", tid, actor="cadre:%d" % ENT["leader"], note="核实无误")
    eq(v["status"], "closed")
    eq(v["closed_by"], "cadre:%d" % ENT["leader"])
    eq(v["submissions"], 2)
    eq([(h["from"], h["to"]) for h in v["history"]],
       [(None, "open"), ("open", "in_progress"), ("in_progress", "submitted"),
        ("submitted", "rejected"), ("rejected", "in_progress"), ("in_progress", "submitted"),
        ("submitted", "closed")])
    eq(len(v["evidence"]), 2)
    for verb in ("started", "submitted", "rejected", "verified"):
        evs = events("bangfu.tasks.task." + verb, "task/%d" % tid)
        check(evs[0]["data"]["task_id"] == tid)
    rej = events("bangfu.tasks.task.rejected", "task/%d" % tid)[0]
    eq(rej["data"]["reason"], "缺少图片")
    eq(rej["data"]["from"], "submitted")


def _task_in(status):
    tid = new_task()["id"]
    path = {"open": [], "in_progress": ["start"], "submitted": ["start", "submit"],
            "rejected": ["start", "submit", "reject"],
            "closed": ["start", "submit", "verify"]}[status]
    for verb in path:
        move(verb, tid)
    eq(T.call("task.get", {"id": tid})["status"], status)
    return tid


def test_every_refused_move_names_the_current_status():
    allowed = {"start": {"open", "rejected"}, "submit": {"in_progress"},
               "verify": {"submitted"}, "reject": {"submitted"}}
    refused = 0
    for status in ("open", "in_progress", "submitted", "rejected", "closed"):
        tid = _task_in(status)
        for verb, ok_from in allowed.items():
            if status in ok_from:
                continue
            p = {"id": tid}
            if verb == "submit":
                p["evidence"] = EVIDENCE
            if verb == "reject":
                p["reason"] = "x"
            e = expect_error(T, "task." + verb, p, "failed_precondition", "status")
            check(status in e["message"], "%s from %s: message %r names the status"
                  % (verb, status, e["message"]))
            refused += 1
        eq(T.call("task.get", {"id": tid})["status"], status, "a refused move changes nothing")
    eq(refused, 15)
    expect_error(T, "task.start", {"id": 987654321}, "not_found", "id")
    expect_error(T, "task.reject", {"id": _task_in("submitted")}, "invalid_argument", "reason")
    expect_error(T, "task.submit", {"id": _task_in("in_progress")}, "invalid_argument",
                 "evidence")


def test_the_closer_is_never_the_owner():
    # a cadre's own task
    tid = _task_in("submitted")  # owned by cadre m1
    e = expect_error(T, "task.verify", {"id": tid}, "permission_denied", "actor",
                     actor="cadre:%d" % ENT["m1"])
    check("owner" in e["message"])
    expect_error(T, "task.reject", {"id": tid, "reason": "自己退回"}, "permission_denied", "actor",
                 actor="cadre:%d" % ENT["m1"])
    eq(T.call("task.get", {"id": tid})["status"], "submitted")
    eq(move("verify", tid, actor="cadre:%d" % ENT["leader"])["status"], "closed")
    # a team's task: no member of the team, nor the team itself
    tid = new_task(owner={"kind": "team", "id": ENT["team"]})["id"]
    move("start", tid)
    move("submit", tid)
    for actor in ("cadre:%d" % ENT["m2"], "cadre:%d" % ENT["leader"], "team:%d" % ENT["team"]):
        expect_error(T, "task.verify", {"id": tid}, "permission_denied", "actor", actor=actor)
    eq(move("verify", tid, actor="cadre:%d" % ENT["outsider"])["status"], "closed")
    # a unit's task: not a cadre of that unit
    tid = new_task(owner={"kind": "unit", "id": ENT["unit"]})["id"]
    move("start", tid)
    move("submit", tid)
    expect_error(T, "task.verify", {"id": tid}, "permission_denied", "actor",
                 actor="cadre:%d" % ENT["m1"])
    expect_error(T, "task.verify", {"id": tid}, "permission_denied", "actor",
                 actor="unit:%d" % ENT["unit"])
    v = move("verify", tid, actor="unit:%d" % ENT["unit2"])
    eq(v["closed_by"], "unit:%d" % ENT["unit2"])


# ---------------------------------------------------------------- evidence

def test_evidence_limits_are_refused_naming_the_field():
    tid = _task_in("in_progress")
    mib = 1024 * 1024
    good = {"name": "照片.jpg", "content_type": "image/jpeg", "size": 1000, "sha256": "a" * 64}

    def submit_err(att, field, text="说明"):
        ev = {"text": text, "attachments": att} if att is not None else {"text": text}
        e = expect_error(T, "task.submit", {"id": tid, "evidence": ev}, "invalid_argument", field)
        return e

    e = submit_err([dict(good, size=10 * mib + 1)], "evidence.attachments[0].size")
    check("limit" in e["message"], e["message"])
    submit_err([dict(good, size=6 * mib), dict(good, size=5 * mib)],
               "evidence.attachments[1].size")
    e = submit_err([good, dict(good, content_type="application/x-msdownload")],
                   "evidence.attachments[1].content_type")
    check("not allowed" in e["message"], e["message"])
    submit_err([dict(good, sha256="xyz")], "evidence.attachments[0].sha256")
    data = b"\x89PNG fake picture bytes" * 10
    submit_err([{"name": "a.png", "content_type": "image/png", "size": len(data),
                 "sha256": sha(b"other"), "data": data}], "evidence.attachments[0].sha256")
    submit_err([{"name": "a.png", "content_type": "image/png", "size": len(data) + 1,
                 "sha256": sha(data), "data": data}], "evidence.attachments[0].size")
    submit_err([dict(good, name="")], "evidence.attachments[0].name")
    submit_err([dict(good, extra=1)], "evidence.attachments[0].extra")
    submit_err([good] * 21, "evidence.attachments")
    submit_err(None, "evidence", text="")
    eq(T.call("task.get", {"id": tid})["status"], "in_progress", "refused submissions change nothing")
    # within the limits: 10 MiB declared in total, one file with its bytes
    ok = T.call("task.submit", {"id": tid, "evidence": {"text": "月报", "attachments": [
        {"name": "报告.pdf", "content_type": "application/pdf", "size": 10 * mib - len(data),
         "sha256": "B" * 64},
        {"name": "a.png", "content_type": "image/png", "size": len(data), "sha256": sha(data),
         "data": data}]}})
    eq(ok["status"], "submitted")
    atts = ok["evidence"][0]["attachments"]
    eq([a["has_data"] for a in atts], [False, True])
    eq(atts[0]["sha256"], "b" * 64)
    got = T.call("attachment.get", {"id": atts[1]["id"]})
    eq(got["data"], data)
    eq(got["sha256"], sha(data))


def test_evidence_quota_per_task():
    """tasks.evidence_task_max_files (200) and tasks.evidence_task_max_bytes
    (100 MiB) count every submission of a task: each round here stays within
    the per-submission limits, and the round past the quota is refused with
    resource_exhausted naming evidence.attachments, changing nothing."""
    mib = 1024 * 1024

    def att(i, size):
        return {"name": "p%d.jpg" % i, "content_type": "image/jpeg", "size": size,
                "sha256": "c" * 64}

    def rounds(tid, n, attachments):
        for i in range(n):
            if i:
                move("reject", tid, actor="cadre:%d" % ENT["leader"])
                move("start", tid)
            eq(move("submit", tid, evidence={"text": "第%d次" % i,
                                             "attachments": attachments})["status"], "submitted")
        move("reject", tid, actor="cadre:%d" % ENT["leader"])
        move("start", tid)

    def refused(tid, attachments, what):
        before = len(T.call("task.get", {"id": tid})["evidence"])
        e = expect_error(T, "task.submit", {"id": tid, "evidence": {
            "text": "超额", "attachments": attachments}}, "resource_exhausted",
            "evidence.attachments")
        check(what in e["message"] and "quota" in e["message"], e["message"])
        t = T.call("task.get", {"id": tid})
        eq(t["status"], "in_progress", "a refused submission changes nothing")
        eq(len(t["evidence"]), before, "no evidence recorded")

    # files: 10 rounds of 20 = 200; one more file is over
    tid = _task_in("in_progress")
    rounds(tid, 10, [att(i, 1000) for i in range(20)])
    refused(tid, [att(0, 1)], "evidence_task_max_files")
    # text alone is still taken (the quota is on attachments)
    eq(move("submit", tid, evidence={"text": "只有说明"})["status"], "submitted")

    # bytes: 10 rounds of 10 MiB declared = 100 MiB; one more byte is over
    tid = _task_in("in_progress")
    rounds(tid, 9, [att(0, 10 * mib)])
    eq(move("submit", tid, evidence={"text": "差一字节", "attachments": [att(0, 10 * mib - 1)]})
       ["status"], "submitted")
    move("reject", tid, actor="cadre:%d" % ENT["leader"])
    move("start", tid)
    refused(tid, [att(0, 2)], "evidence_task_max_bytes")
    eq(move("submit", tid, evidence={"text": "正好", "attachments": [att(0, 1)]})["status"],
       "submitted", "up to the quota exactly is taken")
    # other tasks are not affected
    tid2 = _task_in("in_progress")
    eq(move("submit", tid2, evidence={"text": "别的任务", "attachments": [att(0, 10 * mib)]})
       ["status"], "submitted")


# ---------------------------------------------------------------- recurring

def test_recurring_tasks_once_per_period_with_two_instances_racing():
    u = unit()
    l1, l2, a, b = cadre(u), cadre(u), cadre(u), cadre(u)
    vx = village(0)
    t1 = team(u, l1, [a], [vx])
    t2 = team(u, l2, [b], [vx])
    set_clock("2031-01-02T09:00:00+08:00")
    one = T.call("schedule.create", {"title": "月报(图文)", "rule": "monthly", "day": 25,
                                     "owner": {"kind": "team", "id": t1},
                                     "target": {"kind": "village", "id": vx},
                                     "starts_on": "2031-01-01"})
    eq(one["next_period"], "2031-01")
    eq(one["next_due_local"], "2031-01-25T23:59:59+08:00")
    each = T.call("schedule.create", {"title": "每月驻村工作报告", "rule": "monthly", "day": 31,
                                      "each_team_of_unit": u, "starts_on": "2031-01-01"})
    half = T.call("schedule.create", {"title": "单位一把手到村调研", "rule": "half_yearly",
                                      "day": 30, "owner": {"kind": "unit", "id": u},
                                      "starts_on": "2031-01-01"})
    expect_error(T, "schedule.create", {"title": "x", "rule": "monthly", "day": 25},
                 "invalid_argument", "owner")
    expect_error(T, "schedule.create", {"title": "x", "rule": "weekly", "day": 25,
                                        "each_team_of_unit": u}, "invalid_argument", "rule")
    expect_error(T, "schedule.create", {"title": "x", "rule": "monthly", "day": 25,
                                        "each_team_of_unit": 987654321}, "not_found",
                 "each_team_of_unit")

    port = bftest.free_port()
    ep2 = "tcp://127.0.0.1:%d" % port
    S.start("tasks", env={"BANGFU_TASKS_BIND": ep2}, name="tasks2")
    created = []
    failures = []
    lock = threading.Lock()
    try:
        for month in range(1, 7):
            set_clock("2031-%02d-02T09:00:00+08:00" % month)
            barrier = threading.Barrier(4)

            def racer(endpoint):
                # a tick also works off every other test's schedules the jump of
                # the clock made due (up to 120 periods each): under the
                # sanitizers on a loaded machine that takes longer than the
                # default 30 s request timeout
                c = Client(endpoint, timeout_ms=240000)
                try:
                    barrier.wait()
                    for _ in range(2):
                        got = c.call("scheduler.tick")
                        with lock:
                            created.extend(got["items"]["created"])
                except Exception as e:  # noqa: BLE001 -- reported below
                    with lock:
                        failures.append("month %d, %s: %s" % (month, endpoint, e))
                finally:
                    c.close()
            threads = [threading.Thread(target=racer, args=(ep,))
                       for ep in (S.endpoint("tasks"), ep2, S.endpoint("tasks"), ep2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    finally:
        eq(S.stop("tasks2"), 0)
    eq(failures, [], "every racing scheduler.tick answered")
    eq(len(created), len(set(created)), "no task reported created twice")
    tasks_one = T.call("task.list", {"schedule_id": one["id"], "limit": 1000})["items"]
    eq(sorted(t["period"] for t in tasks_one), ["2031-%02d" % m for m in range(1, 7)])
    eq(tasks_one[0]["due_local"], "2031-01-25T23:59:59+08:00")
    eq(tasks_one[0]["owner"], {"kind": "team", "id": t1})
    eq(tasks_one[0]["kind"], "report")
    tasks_each = T.call("task.list", {"schedule_id": each["id"], "limit": 1000})["items"]
    eq(len(tasks_each), 12, "one per team per month")
    eq(sorted((t["owner"]["id"], t["period"]) for t in tasks_each),
       sorted((tm, "2031-%02d" % m) for tm in (t1, t2) for m in range(1, 7)))
    feb = [t for t in tasks_each if t["period"] == "2031-02"][0]
    eq(feb["due_local"], "2031-02-28T23:59:59+08:00", "day 31 is clipped to the month")
    tasks_half = T.call("task.list", {"schedule_id": half["id"]})["items"]
    eq([t["period"] for t in tasks_half], ["2031-H1"])
    eq(tasks_half[0]["due_local"], "2031-06-30T23:59:59+08:00")
    mine = {t["id"] for t in tasks_one + tasks_each + tasks_half}
    eq(len([c for c in created if c in mine]), len(mine), "every occurrence created once")
    events("bangfu.tasks.task.created", "task/%d" % tasks_one[0]["id"])


# ---------------------------------------------------------------- overdue

def test_overdue_escalates_step_by_step_on_the_manual_clock():
    set_clock("2031-05-01T09:00:00+08:00")
    t = new_task(owner={"kind": "cadre", "id": ENT["m1"]}, due="2031-05-10",
                 target={"kind": "village", "id": ENT["v1"]})
    tid = t["id"]
    quiet = new_task(due="2031-05-10")["id"]  # closed in time: never escalates
    move("start", quiet)
    move("submit", quiet)
    move("verify", quiet, actor="cadre:%d" % ENT["leader"])

    def step(now):
        set_clock(now)
        got = tick()
        return got, [e["step"] for e in got["items"]["escalated"] if e["task_id"] == tid]

    got, steps = step("2031-05-06T09:00:00+08:00")  # 4.6 days before: not yet due soon
    check(tid not in got["items"]["due_soon"])
    got, steps = step("2031-05-08T09:00:00+08:00")  # within 72 h
    check(tid in got["items"]["due_soon"], "due-soon reminder")
    got, steps = step("2031-05-09T09:00:00+08:00")
    check(tid not in got["items"]["due_soon"], "the reminder goes once")
    got, steps = step("2031-05-10T23:59:00+08:00")
    check(tid not in got["items"]["overdue"], "not overdue before the end of the day")
    eq(T.call("task.get", {"id": tid})["overdue"], False)
    got, steps = step("2031-05-11T00:00:01+08:00")
    check(tid in got["items"]["overdue"], "overdue the moment the day ends")
    eq(steps, [0])
    listed = T.call("task.list", {"overdue": True, "owner": {"kind": "cadre", "id": ENT["m1"]},
                                  "limit": 1000})["items"]
    check(tid in [x["id"] for x in listed] and all(x["overdue"] for x in listed))
    got, steps = step("2031-05-11T12:00:00+08:00")
    eq(steps, [], "nothing new before 24 h")
    check(tid not in got["items"]["overdue"], "overdue is marked once")
    got, steps = step("2031-05-12T00:00:01+08:00")
    eq(steps, [1])
    got, steps = step("2031-05-14T00:00:01+08:00")
    eq(steps, [2])
    got, steps = step("2031-05-18T00:00:01+08:00")
    eq(steps, [3])
    got, steps = step("2031-06-30T00:00:00+08:00")
    eq(steps, [], "the ladder ends")
    full = T.call("task.get", {"id": tid})
    eq([(e["step"], e["level"], e["recipient"]) for e in full["escalations"]],
       [(0, "owner", {"kind": "cadre", "id": ENT["m1"]}),
        (1, "team_leader", {"kind": "cadre", "id": ENT["leader"]}),
        (2, "helper_unit", {"kind": "unit", "id": ENT["unit"]}),
        (3, "org_department", {"kind": "org_department", "id": 0})])
    eq(full["escalation_steps"], 4)
    eq(T.call("task.get", {"id": quiet})["escalations"], [])
    evs = events("bangfu.tasks.task.escalated", "task/%d" % tid, want=4)
    eq(sorted(e["data"]["step"] for e in evs), [0, 1, 2, 3], "one event per step")
    d = [e for e in evs if e["data"]["step"] == 1][0]["data"]
    eq(d["recipient"], {"kind": "cadre", "id": ENT["leader"]})
    eq(d["owner"], {"kind": "cadre", "id": ENT["m1"]})
    eq(d["target"], {"kind": "village", "id": ENT["v1"]})
    eq(d["due"], "2031-05-10T15:59:59Z")
    eq(d["due_local"], "2031-05-10T23:59:59+08:00")
    eq(d["title"], t["title"])
    ov = events("bangfu.tasks.task.overdue", "task/%d" % tid)
    eq(len(ov), 1)
    eq(ov[0]["data"]["recipient"], {"kind": "cadre", "id": ENT["m1"]})
    ds = events("bangfu.tasks.task.due_soon", "task/%d" % tid)
    eq(len(ds), 1)
    # a team's task: the owner step goes to the team, the next to its leader
    tt = new_task(owner={"kind": "team", "id": ENT["team"]}, due="2031-06-01")["id"]
    set_clock("2031-06-03T00:00:00+08:00")
    tick()
    eq([e["recipient"] for e in T.call("task.get", {"id": tt})["escalations"]],
       [{"kind": "team", "id": ENT["team"]}, {"kind": "cadre", "id": ENT["leader"]}])


def test_task_get_has_history_escalations_and_evidence_in_one_reply():
    """task.get is one statement whose lists come back as JSON arrays turned
    into msgpack: the reply must keep the keys, their order and the msgpack
    types (ints stay ints, has_data a bool, nested recipient and attachments)
    of the lists, all three non-empty here, and a write's reply is the same."""
    set_clock("2031-06-03T00:00:00+08:00")
    tid = new_task(due="2031-06-01")["id"]
    tick()  # two days overdue: the owner and the team leader steps
    move("start", tid)
    data = b"\x89PNG one statement"
    sub = move("submit", tid, evidence={"text": "照片两张", "attachments": [
        {"name": "a.png", "content_type": "image/png", "size": len(data), "sha256": sha(data),
         "data": data},
        {"name": "b.pdf", "content_type": "application/pdf", "size": 12345, "sha256": "C" * 64}]})
    eq(sub["status"], "submitted")
    rej = move("reject", tid, reason="照片不清楚")
    got = T.call("task.get", {"id": tid})
    eq(got, rej, "a write's reply is task.get's")
    keys = list(got)
    check(keys.index("history") < keys.index("escalations") < keys.index("evidence"),
          "the lists come last, in this order: %r" % keys)
    eq([(h["from"], h["to"]) for h in got["history"]][-3:],
       [("open", "in_progress"), ("in_progress", "submitted"), ("submitted", "rejected")])
    eq(got["history"][-1]["note"], "照片不清楚")
    for h in got["history"]:
        eq(list(h), ["from", "to", "actor", "note", "at"])
        check(isinstance(h["at"], str) and h["at"].endswith("Z"), h["at"])
    eq(got["history"][-1]["actor"], "admin")
    eq([list(e) for e in got["escalations"]], [["step", "level", "recipient", "at"]] * 2)
    eq([(e["step"], e["level"], e["recipient"]) for e in got["escalations"]],
       [(0, "owner", {"kind": "cadre", "id": ENT["m1"]}),
        (1, "team_leader", {"kind": "cadre", "id": ENT["leader"]})])
    check(all(type(e["step"]) is int and type(e["recipient"]["id"]) is int
              for e in got["escalations"]))
    eq([list(e) for e in got["evidence"]],
       [["id", "text", "submitted_by", "submitted_at", "attachments"]] * 1)
    ev = got["evidence"][0]
    check(type(ev["id"]) is int, ev["id"])
    eq((ev["text"], ev["submitted_by"]), ("照片两张", "admin"))
    eq([list(a) for a in ev["attachments"]],
       [["id", "name", "content_type", "size", "sha256", "has_data"]] * 2)
    eq([(a["name"], a["size"], a["sha256"], a["has_data"]) for a in ev["attachments"]],
       [("a.png", len(data), sha(data), True), ("b.pdf", 12345, "c" * 64, False)])
    check(all(type(a["id"]) is int and type(a["size"]) is int for a in ev["attachments"]))
    eq(T.call("attachment.get", {"id": ev["attachments"][0]["id"]})["data"], data)


# ---------------------------------------------------------------- timeline

def test_seed_001_timeline_in_one_idempotent_call():
    set_clock("2031-08-01T09:00:00+08:00")
    p = {"template": "county_2015", "year": 2031, "region_code": GEO["county"],
         "owner": {"kind": "unit", "id": ENT["unit"]},
         "owners": {"teams_in_place": {"kind": "team", "id": ENT["team"]}}}
    tl = T.call("timeline.instantiate", p)
    eq(tl["created"], True)
    eq([(t["step"], t["due_local"]) for t in tl["tasks"]],
       [("teams_in_place", "2031-09-05T23:59:59+08:00"),
        ("household_data_township", "2031-09-15T23:59:59+08:00"),
        ("household_data_county", "2031-09-20T23:59:59+08:00"),
        ("plans_signed", "2031-09-25T23:59:59+08:00")])
    eq(tl["tasks"][0]["owner"], {"kind": "team", "id": ENT["team"]})
    eq(tl["tasks"][1]["owner"], {"kind": "unit", "id": ENT["unit"]})
    again = T.call("timeline.instantiate", p)
    eq(again["created"], False)
    eq([t["id"] for t in again["tasks"]], [t["id"] for t in tl["tasks"]])
    eq(len(T.call("task.list", {"timeline_id": tl["id"]})["items"]), 4)
    events("bangfu.tasks.timeline.instantiated", "timeline/%d" % tl["id"])
    expect_error(T, "timeline.instantiate", dict(p, region_code="659998000000", year=2032),
                 "not_found", "region_code")
    expect_error(T, "timeline.instantiate", dict(p, template="county_1999"), "invalid_argument",
                 "template")
    expect_error(T, "timeline.instantiate", dict(p, year=2033, owners={"nap": p["owner"]}),
                 "invalid_argument", "owners.nap")


# ---------------------------------------------------------------- plans

def test_plan_sign_off_needs_every_signer_and_signed_plans_change_by_revision():
    p = T.call("plan.create", {"kind": "three_year", "subject": {"kind": "unit", "id": ENT["unit"]},
                               "title": "三年帮扶规划", "year": 2031, "measures": [
                                   {"what": "发展特色种植", "owner": {"kind": "team", "id": ENT["team"]},
                                    "due": "2032-12-31", "cost_fen": 50000000},
                                   {"what": "修缮村道"}]})
    pid = p["id"]
    eq((p["status"], p["year_from"], p["year_to"], p["revision"]), ("draft", 2031, 2033, 1))
    eq(p["missing_signers"], ["township_secretary", "township_head", "county_leader"])
    # one statement, its lists JSON arrays turned into msgpack: keys, order and types kept
    eq(p["measures"], [{"seq": 1, "what": "发展特色种植", "owner": {"kind": "team", "id": ENT["team"]},
                        "due": "2032-12-31", "cost_fen": 50000000},
                       {"seq": 2, "what": "修缮村道", "owner": None, "due": None, "cost_fen": None}])
    eq([list(m) for m in p["measures"]], [["seq", "what", "owner", "due", "cost_fen"]] * 2)
    eq(list(p["measures"][0]["owner"]), ["kind", "id"])
    eq((p["signatures"], p["revisions"]), ([], [{"id": pid, "revision": 1, "status": "draft"}]))
    eq(list(p)[-4:], ["measures", "signatures", "missing_signers", "revisions"])
    eq(T.call("plan.get", {"id": pid}), p, "plan.get answers as plan.create did")
    expect_error(T, "plan.create", {"kind": "three_year", "subject": {"kind": "unit", "id": ENT["unit"]},
                                    "title": "重复", "year": 2031}, "already_exists", "subject")
    expect_error(T, "plan.create", {"kind": "household", "subject": {"kind": "unit", "id": ENT["unit"]},
                                    "title": "x", "year": 2031}, "invalid_argument", "subject.kind")
    expect_error(T, "plan.create", {"kind": "yearly", "subject": {"kind": "village", "id": 987654321},
                                    "title": "x", "year": 2031}, "not_found", "subject.id")
    expect_error(T, "plan.create", {"kind": "yearly", "subject": {"kind": "village", "id": ENT["v1"]},
                                    "title": "x", "year": 2031,
                                    "measures": [{"what": "y", "owner": {"kind": "cadre", "id": 987654321}}]},
                 "not_found", "measures[0].owner.id")
    expect_error(T, "plan.sign", {"id": pid, "role": "township_head"}, "failed_precondition",
                 "status", actor="cadre:%d" % ENT["leader"])
    eq(T.call("plan.submit", {"id": pid})["status"], "submitted")
    expect_error(T, "plan.submit", {"id": pid}, "failed_precondition", "status")
    expect_error(T, "plan.sign", {"id": pid, "role": "village_head"}, "invalid_argument", "role")
    s1 = T.call("plan.sign", {"id": pid, "role": "township_secretary"}, actor="cadre:9001")
    eq(s1["status"], "submitted")
    expect_error(T, "plan.sign", {"id": pid, "role": "township_secretary"}, "already_exists",
                 "role", actor="cadre:9002")
    expect_error(T, "plan.sign", {"id": pid, "role": "township_head"}, "failed_precondition",
                 "actor", actor="cadre:9001")
    T.call("plan.sign", {"id": pid, "role": "township_head"}, actor="cadre:9002")
    s3 = T.call("plan.sign", {"id": pid, "role": "county_leader", "note": "同意"},
                actor="cadre:9003")
    eq(s3["status"], "signed")
    eq(s3["missing_signers"], [])
    eq([(s["role"], s["actor"]) for s in s3["signatures"]],
       [("township_secretary", "cadre:9001"), ("township_head", "cadre:9002"),
        ("county_leader", "cadre:9003")])
    eq([list(s) for s in s3["signatures"]], [["role", "actor", "note", "signed_at"]] * 3)
    eq([s["note"] for s in s3["signatures"]], [None, None, "同意"])
    check(all(s["signed_at"].endswith("Z") for s in s3["signatures"]), s3["signatures"])
    events("bangfu.tasks.plan.signed", "plan/%d" % pid)
    eq(len(events("bangfu.tasks.plan.signature_added", "plan/%d" % pid, want=3)), 3)
    expect_error(T, "plan.submit", {"id": pid}, "failed_precondition", "status")
    expect_error(T, "plan.revise", {"id": pid}, "invalid_argument", "reason")
    rv = T.call("plan.revise", {"id": pid, "reason": "上级调整任务", "title": "三年帮扶规划(修订)"})
    eq((rv["status"], rv["revision"], rv["root_id"]), ("draft", 2, pid))
    eq(len(rv["measures"]), 2, "measures carried over")
    eq(rv["signatures"], [])
    old = T.call("plan.get", {"id": pid})
    eq((old["status"], old["current"], old["superseded_by"]), ("signed", False, rv["id"]))
    eq(len(old["signatures"]), 3, "the old revision keeps its sign-off")
    eq([(x["revision"], x["status"]) for x in old["revisions"]], [(1, "signed"), (2, "draft")])
    expect_error(T, "plan.revise", {"id": pid, "reason": "x"}, "failed_precondition", "id")
    expect_error(T, "plan.revise", {"id": rv["id"], "reason": "x"}, "failed_precondition",
                 "status")
    hh = T.call("plan.create", {"kind": "household",
                                "subject": {"kind": "household", "id": ENT["household"]},
                                "title": "一户一策", "year": 2031,
                                "measures": [{"what": "申请低保", "owner": {"kind": "cadre", "id": ENT["m1"]}}]})
    eq(hh["subject"], {"kind": "household", "id": ENT["household"]})


# ---------------------------------------------------------------- indicators

def test_rollup_sums_at_every_level():
    code1, code2 = "income_" + bftest.uid(), "branch_" + bftest.uid()
    i1 = T.call("indicator.define", {"code": code1, "name": "村集体经营性收入达到20万元",
                                     "unit": "fen", "target": 20000000, "direction": ">="})
    T.call("indicator.define", {"code": code2, "name": "五好党支部", "unit": "bool",
                                "target": 1, "direction": "=", "vetoing": True})
    expect_error(T, "indicator.define", {"code": code1, "name": "x", "unit": "fen", "target": 1,
                                         "direction": ">="}, "already_exists", "code")
    expect_error(T, "indicator.define", {"code": "x y", "name": "x", "unit": "fen", "target": 1,
                                         "direction": ">="}, "invalid_argument", "code")
    expect_error(T, "indicator.define", {"code": "z" + bftest.uid(), "name": "x", "unit": "fen",
                                         "target": 1, "direction": ">"}, "invalid_argument",
                 "direction")
    town0 = [village(0), village(0)]
    town1 = [village(1), village(1), village(1)]
    vs = town0 + town1
    a = T.call("indicator.assign", {"code": code1, "village_ids": vs, "year": 2031})
    eq((a["assigned"], a["existing"]), (5, 0))
    eq(a["assignments"][0]["region_code"], GEO["towns"][0])
    a2 = T.call("indicator.assign", {"code": code1, "village_ids": vs, "year": 2031})
    eq((a2["assigned"], a2["existing"]), (0, 5), "assigning again changes nothing")
    T.call("indicator.assign", {"code": code2, "village_ids": vs, "year": 2031})
    expect_error(T, "indicator.assign", {"code": code1, "village_ids": [vs[0], 987654321],
                                         "year": 2031}, "not_found", "village_ids[1]")
    expect_error(T, "indicator.assign", {"code": "nope" + bftest.uid(), "village_ids": vs},
                 "not_found", "code")
    # town0: v0 income met + branch met, v1 income not met; town1: v2 income met
    r = T.call("indicator.report", {"indicator_id": i1["id"], "village_id": vs[0], "year": 2031,
                                    "value": 25000000, "evidence": {"text": "账目"}})
    eq((r["met"], r["actual"]), (True, 25000000))
    T.call("indicator.report", {"code": code2, "village_id": vs[0], "year": 2031, "value": 1})
    r = T.call("indicator.report", {"code": code1, "village_id": vs[1], "year": 2031,
                                    "value": 19999999})
    eq(r["met"], False)
    T.call("indicator.report", {"code": code1, "village_id": vs[2], "year": 2031,
                                "value": 20000000})
    ev = events("bangfu.tasks.indicator.reported", want=4)
    check(any(e["data"]["village_id"] == vs[2] and e["data"]["met"] for e in ev))
    expect_error(T, "indicator.report", {"code": code1, "village_id": ENT["v2"], "year": 2031,
                                         "value": 1}, "not_found", "village_id")
    county = T.call("progress.rollup", {"region_code": GEO["county"], "year": 2031})
    eq((county["met"], county["total"], county["villages"]), (3, 10, 5))
    eq(county["percent_bp"], 3000)
    eq(county["child_level"], "township")
    kids = {c["region_code"]: c for c in county["children"]}
    eq((kids[GEO["towns"][0]]["met"], kids[GEO["towns"][0]]["total"]), (2, 4))
    eq(kids[GEO["towns"][0]]["percent_bp"], 5000)
    eq((kids[GEO["towns"][1]]["met"], kids[GEO["towns"][1]]["total"]), (1, 6))
    eq(kids[GEO["towns"][1]]["percent_bp"], 1666, "floored basis points")
    eq(sum(c["met"] for c in county["children"]), county["met"])
    eq(sum(c["total"] for c in county["children"]), county["total"])
    town = T.call("progress.rollup", {"region_code": GEO["towns"][1], "year": 2031})
    eq((town["met"], town["total"]), (1, 6))
    eq(sorted(c["village_id"] for c in town["children"]), sorted(town1))
    eq(sorted((c["met"], c["total"]) for c in town["children"]), [(0, 2), (0, 2), (1, 2)])
    city = T.call("progress.rollup", {"region_code": GEO["city"], "year": 2031})
    eq([(c["region_code"], c["met"], c["total"]) for c in city["children"]],
       [(GEO["county"], 3, 10)])
    one = T.call("progress.rollup", {"region_code": GEO["county"], "year": 2031, "code": code2})
    eq((one["met"], one["total"]), (1, 5))
    vil = T.call("progress.rollup", {"village_id": vs[0], "year": 2031})
    eq((vil["met"], vil["total"], vil["percent_bp"]), (2, 2, 10000))
    eq(sorted(i["code"] for i in vil["indicators"]), sorted([code1, code2]))
    expect_error(T, "progress.rollup", {"year": 2031}, "invalid_argument", "region_code")
    expect_error(T, "progress.rollup", {"region_code": "12345"}, "invalid_argument",
                 "region_code")


# ---------------------------------------------------------------- ledgers

def test_inspection_problems_ledgers_and_closing_one_by_one():
    set_clock("2031-07-01T09:00:00+08:00")
    vA, vB = village(0), village(1)
    u = unit()
    cx, cy = cadre(u), cadre(u)
    hh = household(vA)
    res = T.call("problem.open", {
        "inspection": {"title": "明查暗访第一轮", "kind": "unannounced", "held_on": "2031-06-30",
                       "ref": "insp-" + bftest.uid()},
        "problems": [
            {"title": "村务公开栏未更新", "village_id": vA, "responsible": [cx],
             "due": "2031-07-10"},
            {"title": "帮扶资金台账不全", "village_id": vB, "unit_id": u, "due": "2031-07-20"},
            {"title": "邻里纠纷未化解", "household_id": hh, "ledger": "stability",
             "responsible": [cx, cy],
             "tasks": [{"title": "入户调解", "owner": {"kind": "cadre", "id": cy}},
                       {"title": "回访", "owner": {"kind": "cadre", "id": cx},
                        "due": "2031-07-31"}]}]})
    iid = res["inspection"]["id"]
    pids = [p["id"] for p in res["problems"]]
    eq([len(p["task_ids"]) for p in res["problems"]], [1, 1, 2])
    p0 = T.call("problem.get", {"id": pids[0]})
    eq((p0["ledger"], p0["status"], p0["inspection_id"]), ("rectification", "open", iid))
    eq(p0["responsible"], [cx])
    eq(p0["tasks"][0]["owner"], {"kind": "cadre", "id": cx})
    eq(p0["tasks"][0]["kind"], "rectification")
    eq(len(p0["tasks"]), 1)
    full = T.call("task.get", {"id": p0["tasks"][0]["id"]})
    eq(list(p0["tasks"][0].items()),
       [kv for kv in full.items() if kv[0] not in ("history", "escalations", "evidence")],
       "a problem's task is packed as task.get packs it, less the lists")
    eq(list(p0)[-2:], ["responsible", "tasks"])
    p2 = T.call("problem.get", {"id": pids[2]})
    eq((p2["village_id"], p2["household_id"], p2["ledger"]), (vA, hh, "stability"))
    eq(T.call("problem.get", {"id": pids[1]})["tasks"][0]["owner"], {"kind": "unit", "id": u})
    p2t = [t["id"] for t in p2["tasks"]]
    eq((len(p2t), p2t, len(p2["responsible"])), (2, sorted(p2t), 2), "both tasks, in id order")
    # the bulk call is all or nothing, errors name the problem
    before = T.call("problem.list", {"inspection_id": iid})["items"]
    expect_error(T, "problem.open", {"inspection": {"title": "x"}, "problems": [
        {"title": "ok", "village_id": vA, "responsible": [cx]},
        {"title": "bad", "village_id": 987654321, "responsible": [cx]}]},
        "not_found", "problems[1].village_id")
    expect_error(T, "problem.open", {"inspection": {"title": "x"}, "problems": [
        {"title": "nobody", "village_id": vA}]}, "invalid_argument", "problems[0].responsible")
    expect_error(T, "problem.open", {"title": "x", "responsible": [987654321]}, "not_found",
                 "responsible[0]")
    eq(len(T.call("problem.list", {"inspection_id": iid})["items"]), len(before))
    # close problem 0 (销号 after verification); problem 2 needs both its tasks
    tid = p0["tasks"][0]["id"]
    for verb in ("start", "submit"):
        move(verb, tid, actor="cadre:%d" % cx)
    move("verify", tid, actor="cadre:%d" % cy)
    eq(T.call("problem.get", {"id": pids[0]})["status"], "closed")
    events("bangfu.tasks.problem.closed", "problem/%d" % pids[0])
    t2a, t2b = [t["id"] for t in p2["tasks"]]
    for verb in ("start", "submit"):
        move(verb, t2a)
    move("verify", t2a, actor="cadre:%d" % ENT["outsider"])
    eq(T.call("problem.get", {"id": pids[2]})["status"], "open", "one of two tasks is not enough")
    # after 20 July: problem 1 is overdue, problem 2 not yet (its due is 1 Aug by default)
    set_clock("2031-07-25T09:00:00+08:00")
    byv = T.call("ledger.summary", {"by": "village", "inspection_id": iid})
    rows = {x["village_id"]: x for x in byv["items"]}
    eq({k: (v["open"], v["overdue"], v["closed"]) for k, v in rows.items()},
       {vA: (1, 0, 1), vB: (0, 1, 0)})
    eq(byv["totals"], {"open": 1, "overdue": 1, "closed": 1, "total": 3})
    byu = T.call("ledger.summary", {"by": "unit", "inspection_id": iid})
    eq([(x["unit_id"], x["overdue"]) for x in byu["items"]], [(u, 1)])
    byp = T.call("ledger.summary", {"by": "person", "inspection_id": iid})
    eq({x["cadre_id"]: (x["open"], x["overdue"], x["closed"]) for x in byp["items"]},
       {cx: (1, 0, 1), cy: (1, 0, 0)})
    stab = T.call("ledger.summary", {"by": "village", "ledger": "stability",
                                     "inspection_id": iid})
    eq(stab["totals"]["total"], 1)
    eq([p["id"] for p in T.call("problem.list", {"inspection_id": iid, "overdue": True})["items"]],
       [pids[1]])
    eq([p["id"] for p in T.call("problem.list", {"cadre_id": cy})["items"]], [pids[2]])
    single = T.call("problem.open", {"title": "困难群众冬季取暖", "ledger": "difficulty",
                                     "village_id": vB, "responsible": [cy]})
    eq((single["ledger"], single["source"]), ("difficulty", "direct"))
    events("bangfu.tasks.problem.opened", "problem/%d" % single["id"])
    events("bangfu.tasks.inspection.recorded", "inspection/%d" % iid)


def test_help_request_becomes_a_task_for_the_responsible_cadre():
    set_clock("2031-07-01T09:00:00+08:00")
    p = T.call("help_request.create", {"household_id": ENT["household"], "channel": "wechat",
                                       "text": "家里老人生病, 需要办理临时救助",
                                       "ref": "wx-" + bftest.uid()})
    eq((p["ledger"], p["source"], p["channel"]), ("livelihood", "help_request", "wechat"))
    eq(p["village_id"], ENT["v1"])
    eq(len(p["tasks"]), 1)
    task = p["tasks"][0]
    eq(task["owner"], {"kind": "cadre", "id": ENT["m1"]})
    eq(task["kind"], "help_request")
    eq(task["target"], {"kind": "household", "id": ENT["household"]})
    eq(task["due_local"], "2031-07-04T09:00:00+08:00", "72 hours to answer")
    ev = events("bangfu.tasks.help_request.created", "problem/%d" % p["id"])[0]
    eq(ev["data"]["task_id"], task["id"])
    lonely = household(ENT["v2"])
    expect_error(T, "help_request.create", {"household_id": lonely, "text": "求助"},
                 "failed_precondition", "household_id")
    ok = T.call("help_request.create", {"household_id": lonely, "text": "求助",
                                        "owner": {"kind": "unit", "id": ENT["unit"]}})
    eq(ok["unit_id"], ENT["unit"])
    expect_error(T, "help_request.create", {"household_id": 987654321, "text": "求助"},
                 "not_found", "household_id")


# ---------------------------------------------------------------- assessment

def exit_household(vid, year):
    """A household of village vid leaves poverty in year by the registry's exit
    procedure (docs/registry.md "Exit"): review, verification with a public
    notice already over, county approval, each by another person."""
    import datetime
    day = lambda d: (datetime.date.today() + datetime.timedelta(days=d)).isoformat()  # noqa: E731
    hid = R.call("household.create", {
        "village_id": vid, "categories": ["dibao"], "causes": {"main": "illness"},
        "route": "safety_net", "income_fen": 5000000,
        "members": [{"name": "户主" + bftest.uid()[:4], "id_number": bftest.fresh_id(),
                     "relation": "head"}]})["id"]
    cid = R.call("household.exit_review", {
        "id": hid, "year": year, "review_date": day(-20), "votes_for": 30, "votes_against": 1,
        "note": "民主评议通过", "evidence": ["评议记录"],
        "assured": ["food", "clothing", "education", "medical", "housing", "water"]},
        actor="op.a")["case_id"]
    R.call("household.exit_verify", {"case_id": cid, "notice_start": day(-12), "note": "核实"},
           actor="op.b")
    R.call("household.exit_approve", {"case_id": cid, "approval_ref": "县[%d]1号" % year},
           actor="approver.c")
    return hid


def test_assessment_scores_veto_and_ranking():
    """Five units, each helping one village, in 2033. Unit 0 has the best
    numbers but misses a vetoing task: it fails and ranks last."""
    set_clock("2033-01-05T09:00:00+08:00")
    units = [unit() for _ in range(5)]
    vills = [village(i % 2) for i in range(5)]
    for u, v in zip(units, vills):
        pair("unit_village", u, v)
    code = "assess_" + bftest.uid()
    T.call("indicator.define", {"code": code, "name": "无零就业家庭", "unit": "households",
                                "target": 0, "direction": "<="})
    T.call("indicator.assign", {"code": code, "village_ids": vills, "year": 2033})
    # indicators met by villages 0, 1, 2
    for i in range(3):
        T.call("indicator.report", {"code": code, "village_id": vills[i], "year": 2033,
                                    "value": 0})
    T.call("indicator.report", {"code": code, "village_id": vills[3], "year": 2033, "value": 2})
    # tasks: each unit has two tasks due in March; unit i does (2 if i<2 else 1) on time;
    # unit 0 also has a vetoing task it never finishes
    due = "2033-03-01"
    on_time_counts = [2, 2, 1, 1, 1]
    for i, u in enumerate(units):
        for k in range(2):
            tid = new_task(owner={"kind": "unit", "id": u}, due=due)["id"]
            if k < on_time_counts[i]:
                move("start", tid)
                move("submit", tid)
                move("verify", tid, actor="unit:%d" % ENT["unit2"])
    veto = new_task(owner={"kind": "unit", "id": units[0]}, due=due, vetoing=True)["id"]
    late = new_task(owner={"kind": "unit", "id": units[4]}, due=due)["id"]
    set_clock("2033-03-05T09:00:00+08:00")  # submitted after due: not on time
    move("start", late)
    move("submit", late)
    move("verify", late, actor="unit:%d" % ENT["unit2"])
    for i, (u, score) in enumerate(zip(units, [90, 80, 70, 60, 50])):
        T.call("survey.record", {"unit_id": u, "year": 2033, "score": score})
    T.call("survey.record", {"unit_id": units[0], "year": 2033, "score": 100})
    expect_error(T, "survey.record", {"unit_id": units[0], "village_id": vills[0], "year": 2033,
                                      "score": 1}, "invalid_argument", "unit_id")
    expect_error(T, "survey.record", {"unit_id": units[0], "year": 2033, "score": 101},
                 "invalid_argument", "score")
    expect_error(T, "assessment.get", {"year": 2034}, "not_found", "year")
    # villages 0, 1 and 2 tie on score; the year's exits break the tie: village 2 has two
    # households exited in 2033, village 1 one, village 0 one in 2032 (another year)
    for k, year in ((2, 2033), (2, 2033), (1, 2033), (0, 2032)):
        exit_household(vills[k], year)
    set_clock("2034-01-10T09:00:00+08:00")
    res = T.call("assessment.run", {"year": 2033})
    eq(T.call("assessment.get", {"year": 2033})["run_id"], res["run_id"])
    ranking = res["units"]["ranking"]
    by_id = {x["id"]: x for x in ranking}
    # unit 1: indicators 10000, timeliness 2/2 = 10000, satisfaction 80 -> 8000
    # score = (50*10000 + 30*10000 + 20*8000) / 100 = 9600
    u1 = by_id[units[1]]
    eq((u1["indicators_bp"], u1["timeliness_bp"], u1["satisfaction_bp"]), (10000, 10000, 8000))
    eq(u1["score_bp"], 9600)
    eq((u1["passed"], u1["vetoed"], u1["rank"]), (True, False, 1))
    # unit 0: indicators 10000, timeliness 2/3 = 6666, satisfaction (90+100)/2 = 9500
    u0 = by_id[units[0]]
    eq(u0["timeliness_bp"], 6666)
    eq(u0["satisfaction_bp"], 9500)
    eq(u0["score_bp"], (50 * 10000 + 30 * 6666 + 20 * 9500) // 100)
    eq((u0["vetoed"], u0["passed"], u0["rank"]), (True, False, 5))
    check(any(str(veto) in r for r in u0["veto_reasons"]), u0["veto_reasons"])
    # unit 2: 10000, 5000, 7000 -> 7900; unit 3: 0, 5000, 6000 -> 2700;
    # unit 4 (no village report): 0, 1/3 -> 3333, 5000 -> 2000 (0 + 999.9 + 1000)
    eq(by_id[units[2]]["score_bp"], 7900)
    eq(by_id[units[3]]["score_bp"], 2700)
    eq(by_id[units[4]]["timeliness_bp"], 3333)
    eq(by_id[units[4]]["score_bp"], (30 * 3333 + 20 * 5000) // 100)
    eq(by_id[units[3]]["passed"], False)
    eq(res["units"]["top3"], [units[1], units[2], units[3]])
    eq(res["units"]["bottom3"], [units[0], units[4], units[3]])
    eq([x["id"] for x in ranking], [units[1], units[2], units[3], units[4], units[0]])
    vr = {x["id"]: x for x in res["villages"]["ranking"]}
    eq([vr[vills[k]]["exits"] for k in range(4)],
       [{"households": 0, "villages": 0}, {"households": 1, "villages": 0},
        {"households": 2, "villages": 0}, {"households": 0, "villages": 0}])
    eq([vr[vills[k]]["score_bp"] for k in range(3)], [10000] * 3)
    eq(res["villages"]["top3"], [vills[2], vills[1], vills[0]], "ties broken by exits")
    eq(by_id[units[2]]["exits"], {"households": 2, "villages": 0})
    eq(vr[vills[0]]["indicators_bp"], 10000)
    eq(vr[vills[3]]["indicators_bp"], 0)
    ev = events("bangfu.tasks.assessment.completed", "assessment/%d" % res["run_id"])[0]
    eq(ev["data"]["units"]["top3"], [units[1], units[2], units[3]])
    eq(ev["data"]["units"]["vetoed"], [units[0]])


def test_every_change_emitted_its_event():
    r = bftest.redis_client()
    want = {"task.created", "task.started", "task.submitted", "task.verified", "task.rejected",
            "task.due_soon", "task.overdue", "task.escalated", "plan.created", "plan.submitted",
            "plan.signature_added", "plan.signed", "plan.revised", "schedule.created",
            "timeline.instantiated", "indicator.defined", "indicator.assigned",
            "indicator.reported", "inspection.recorded", "problem.opened", "problem.closed",
            "help_request.created", "survey.recorded", "assessment.completed", "clock.set"}
    seen = {}

    def all_seen():  # the relay publishes after the reply: wait for the last ones
        for _, e in bftest.stream_events(r, STREAM_START):
            if e["source"] == "bangfu/tasks":
                seen.setdefault(e["type"], e)
        return all("bangfu.tasks." + w in seen for w in want)
    try:
        bftest.wait_for(all_seen, timeout=15)
    except bftest.TestFailure:
        pass  # the assertion below names what is missing
    eq(sorted(w for w in want if "bangfu.tasks." + w not in seen), [], "event types never seen")
    for t, e in seen.items():
        eq(e["specversion"], "1.0")
        check(e["subject"].split("/")[0] in ("task", "plan", "schedule", "timeline", "indicator",
                                             "indicator_assignment", "inspection", "problem",
                                             "survey", "assessment", "clock"), e["subject"])
        check(isinstance(e["data"], dict), t)


def test_no_errors_or_warnings_were_logged():
    for name in ("tasks",):
        out = S.procs[name].output()
        bad = [line for line in out.splitlines()
               if '"level":"error"' in line or '"level":"warn"' in line]
        eq(bad, [], "%s logged errors or warnings" % name)


def test_an_unreachable_registry_is_unavailable():
    # last: stops the registry of this stack
    eq(S.stop("registry"), 0)
    t0 = time.time()
    e = T.err("task.create", {"title": "x", "owner": {"kind": "unit", "id": 987654320},
                              "due": "2031-12-31"})
    eq(e["code"], "unavailable")
    check(time.time() - t0 < 15, "fails within the registry timeout")
    eq(T.call("sys.health", actor=None)["status"], "ok")
