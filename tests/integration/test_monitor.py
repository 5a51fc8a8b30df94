"""Relapse-risk monitoring (防返贫监测, docs/tasks.md "Monitoring") against the
real registry: a rule-checked report flags a household, opens a case and a
15-day assistance task for its responsible cadre; further reports add causes;
the case closes once, after its task is verified, with an outcome; cases are
listed and summarised by region; the database keeps the history.

Manual clock in 2035, a fresh county of its own, so nothing else is counted."""
import bftest
from bftest import Stack, check, eq, expect_error

S = None
R = None
T = None
G = {}
CADRE = {}
START = "0-0"


def setup_module():
    global S, R, T, START
    START = bftest.stream_last_id(bftest.redis_client())
    S = Stack(["registry", "tasks"], extra_env={"BANGFU_TASKS_CLOCK": "manual"}).__enter__()
    R = S.client("registry")
    T = S.client("tasks")
    town = bftest.fresh_town(R)
    county = town[:6] + "000000"
    town2 = town[:6] + "%03d000" % ((int(town[6:9]) % 900) + 1)
    R.call("region.put", {"code": town2, "name": "乡二" + bftest.uid()[:4], "level": "township",
                          "parent_code": county})
    G.update(town=town, town2=town2, county=county)
    u = R.call("unit.create", {"name": "单位" + bftest.uid(), "kind": "department"})["id"]
    G["unit"] = u
    G["cadre"] = cadre()
    G["v1"] = village(town)
    G["v2"] = village(town2)
    T.call("clock.set", {"now": "2035-03-01T09:00:00+08:00"})


def teardown_module():
    S.__exit__(None, None, None)


def cadre():
    return R.call("cadre.create", {"name": "干部" + bftest.uid()[:6], "rank": "general",
                                   "unit_id": G["unit"], "party_member": True})["id"]


def village(town):
    return R.call("village.create", {"region_code": town, "name": "监测村" + bftest.uid(),
                                     "category": "poor"})["id"]


def household(vid=None, income=100000, persons=1, responsible=True):
    members = [{"name": "成员" + bftest.uid()[:4], "id_number": bftest.fresh_id(),
                "relation": "head" if i == 0 else "child"} for i in range(persons)]
    hid = R.call("household.create", {
        "village_id": vid or G["v1"], "categories": ["dibao"], "causes": {"main": "illness"},
        "route": "safety_net", "income_fen": income, "members": members})["id"]
    if responsible:  # a cadre of each household: a general cadre answers for 2 at most
        CADRE[hid] = cadre()
        R.call("pairing.create", {"kind": "cadre_household", "helper_id": CADRE[hid],
                                  "target_id": hid, "starts_on": "2030-01-01"})
    return hid


def report(hid, cause="income_low", **kw):
    p = {"household_id": hid, "cause": cause, "note": "入户核查: 收入下降"}
    p.update(kw)
    return T.call("monitor.report", p)


def events(etype, subject, want=1):
    r = bftest.redis_client()

    def found():
        evs = [e for _, e in bftest.stream_events(r, START)
               if e["type"] == etype and e["subject"] == subject]
        return evs if len(evs) >= want else None
    return bftest.wait_for(found, msg="no %d %s for %s" % (want, etype, subject))


def verify_task(tid):
    T.call("task.start", {"id": tid})
    T.call("task.submit", {"id": tid, "evidence": {"text": "落实临时救助和公益岗位"}})
    T.call("task.verify", {"id": tid, "note": "核实"})


def test_income_below_the_line_opens_a_case_and_a_task():
    hid = household(income=900000, persons=2)  # 4,500 yuan a person < 6,000
    r = report(hid)
    eq((r["opened"], r["state"]), (True, "open"))
    task = T.call("task.get", {"id": r["task_id"]})
    eq(task["kind"], "monitoring")
    eq(task["owner"], {"kind": "cadre", "id": CADRE[hid]})
    eq(task["target"], {"kind": "household", "id": hid})
    eq(task["due_local"][:10], "2035-03-16", "15 days for assistance measures")
    ev = events("bangfu.tasks.monitor.flagged", "household/%d" % hid)[0]
    eq((ev["data"]["case_id"], ev["data"]["cause"], ev["data"]["task_id"]),
       (r["case_id"], "income_low", r["task_id"]))
    eq(ev["data"]["region_code"], G["town"])
    # a second cause on the open case: no second case, no second task
    r2 = report(hid, "medical_spending", spending_fen=2500000, note="住院花费2.5万元")
    eq((r2["case_id"], r2["task_id"], r2["opened"]), (r["case_id"], r["task_id"], False))
    events("bangfu.tasks.monitor.reported", "household/%d" % hid)
    got = T.call("monitor.get", {"id": r["case_id"]})
    eq(got["causes"], ["income_low", "medical_spending"])
    eq([(x["cause"], x["income_fen"], x["persons"], x["spending_fen"]) for x in got["reports"]],
       [("income_low", 900000, 2, None), ("medical_spending", None, None, 2500000)])
    # the reports come from the same statement as the case (a JSON array turned
    # into msgpack): keys, their order and int types as packed before
    eq([list(x) for x in got["reports"]],
       [["id", "cause", "income_fen", "persons", "spending_fen", "note", "reported_by",
         "reported_at"]] * 2)
    eq(list(got)[-1], "reports")
    check(all(type(x["id"]) is int for x in got["reports"]))
    eq(type(got["reports"][0]["income_fen"]), int, "money stays integer fen")
    eq(got["reports"][1]["note"], "住院花费2.5万元")
    eq((got["household_id"], got["village_id"], got["region_code"], got["state"]),
       (hid, G["v1"], G["town"], "open"))
    eq(len(T.call("task.list", {"kind": "monitoring", "target": {"kind": "household",
                                                                  "id": hid}})["items"]), 1)


def test_each_rule_refuses_what_it_does_not_cover():
    rich = household(income=5000000, persons=1)
    e = expect_error(T, "monitor.report", {"household_id": rich, "cause": "income_low",
                                           "note": "x"}, "failed_precondition", "income_fen")
    check("600000" in e["message"], e["message"])
    # a newer income figure from a visit counts instead of the registry's
    eq(report(rich, income_fen=300000)["opened"], True)
    h = household()
    expect_error(T, "monitor.report", {"household_id": h, "cause": "medical_spending",
                                       "note": "x", "spending_fen": 999999},
                 "failed_precondition", "spending_fen")
    expect_error(T, "monitor.report", {"household_id": h, "cause": "disaster_spending",
                                       "note": "x"}, "invalid_argument", "spending_fen")
    expect_error(T, "monitor.report", {"household_id": h, "cause": "income_low", "note": "x",
                                       "spending_fen": 5}, "invalid_argument", "spending_fen")
    expect_error(T, "monitor.report", {"household_id": h, "cause": "bored", "note": "x"},
                 "invalid_argument", "cause")
    for note in ("", "   ", "\u3000\n"):
        expect_error(T, "monitor.report", {"household_id": h, "cause": "job_lost", "note": note},
                     "invalid_argument", "note")
    expect_error(T, "monitor.report", {"household_id": h, "cause": "job_lost", "note": "x",
                                       "spending_fen": -1}, "invalid_argument", "spending_fen")
    expect_error(T, "monitor.report", {"household_id": 987654321, "cause": "job_lost",
                                       "note": "x"}, "not_found", "household_id")
    lonely = household(responsible=False)
    expect_error(T, "monitor.report", {"household_id": lonely, "cause": "job_lost",
                                       "note": "务工返乡"}, "failed_precondition", "household_id")
    ok = report(lonely, "job_lost", note="务工返乡", owner={"kind": "unit", "id": G["unit"]})
    eq(T.call("task.get", {"id": ok["task_id"]})["owner"], {"kind": "unit", "id": G["unit"]})
    # nothing was written by the refused reports
    eq(T.call("monitor.list", {"household_id": h})["items"], [])


def test_a_case_closes_once_after_its_task_is_verified():
    hid = household()
    r = report(hid, "job_lost", note="厂子倒闭失业")
    e = expect_error(T, "monitor.close", {"id": r["case_id"], "outcome": "assisted",
                                          "note": "x"}, "failed_precondition", "id")
    check("open" in e["message"], e["message"])
    verify_task(r["task_id"])
    expect_error(T, "monitor.close", {"id": r["case_id"], "outcome": "fine", "note": "x"},
                 "invalid_argument", "outcome")
    expect_error(T, "monitor.close", {"id": r["case_id"], "outcome": "assisted", "note": " "},
                 "invalid_argument", "note")
    expect_error(T, "monitor.close", {"id": 987654321, "outcome": "assisted", "note": "x"},
                 "not_found", "id")
    c = T.call("monitor.close", {"id": r["case_id"], "outcome": "assisted",
                                 "note": "安排公益岗位, 月收入1500元"}, actor="op.zhou")
    eq((c["state"], c["outcome"]), ("closed", "assisted"))
    got = T.call("monitor.get", {"id": r["case_id"]})
    eq((got["state"], got["outcome"], got["closed_by"], got["task_status"]),
       ("closed", "assisted", "op.zhou", "closed"))
    ev = events("bangfu.tasks.monitor.closed", "household/%d" % hid)[0]
    eq((ev["data"]["case_id"], ev["data"]["outcome"]), (r["case_id"], "assisted"))
    expect_error(T, "monitor.close", {"id": r["case_id"], "outcome": "relapsed", "note": "x"},
                 "failed_precondition", "id")
    # a later risk opens a new case
    again = report(hid, "disaster_spending", spending_fen=3000000, note="洪水冲毁房屋")
    check(again["opened"] and again["case_id"] != r["case_id"], "a new case: %r" % again)


def test_list_and_summary_by_region():
    a = [household(G["v1"]) for _ in range(2)]
    b = household(G["v2"])
    ca = [report(h)["case_id"] for h in a]
    cb = report(b, "medical_spending", spending_fen=1000000, note="大病")["case_id"]
    verify_task(T.call("monitor.get", {"id": ca[0]})["task_id"])
    T.call("monitor.close", {"id": ca[0], "outcome": "risk_removed", "note": "收入恢复"})
    listed = T.call("monitor.list", {"region_code": G["town2"]})["items"]
    eq([x["id"] for x in listed], [cb])
    eq(listed[0]["causes"], ["medical_spending"])
    ids = [x["id"] for x in T.call("monitor.list", {"region_code": G["county"], "state": "open",
                                                      "cause": "income_low"})["items"]]
    check(ca[1] in ids and ca[0] not in ids and cb not in ids, "open income_low: %r" % ids)
    eq([x["id"] for x in T.call("monitor.list", {"region_code": G["county"],
                                                  "outcome": "risk_removed"})["items"]], [ca[0]])
    expect_error(T, "monitor.list", {"region_code": "12345"}, "invalid_argument", "region_code")
    # the county summary: one row per township, every case of this file counted once
    s = T.call("monitor.summary", {"region_code": G["county"], "year": 2035})
    rows = {x["region_code"]: x for x in s["items"]}
    eq(set(rows), {G["town"], G["town2"]})
    eq(rows[G["town2"]]["flagged"], 1)
    eq(rows[G["town2"]]["causes"], {"medical_spending": 1})
    t1 = rows[G["town"]]
    eq(t1["flagged"], t1["open"] + t1["closed"])
    check(t1["risk_removed"] >= 1 and t1["causes"]["income_low"] >= 2, repr(t1))
    eq(s["total"]["flagged"], sum(x["flagged"] for x in s["items"]))
    # below a township the rows are villages
    sv = T.call("monitor.summary", {"region_code": G["town2"]})
    eq([(x["village_id"], x["flagged"]) for x in sv["items"]], [(G["v2"], 1)])
    eq(T.call("monitor.summary", {"region_code": G["county"], "year": 2034})["items"], [])
    # overdue: the clock passes the 15 days with the task still open
    T.call("clock.set", {"now": "2035-04-01T09:00:00+08:00"})
    try:
        od = [x["id"] for x in T.call("monitor.list", {"region_code": G["town2"],
                                                        "overdue": True})["items"]]
        eq(od, [cb])
        later = {x["region_code"]: x for x in
                 T.call("monitor.summary", {"region_code": G["county"]})["items"]}
        eq(later[G["town2"]]["overdue"], 1)
    finally:
        T.call("clock.set", {"now": "2035-03-01T09:00:00+08:00"})


def test_region_bound_callers_stay_in_their_region():
    hid = household(G["v2"])
    far = "%s000000" % ("65%04d" % (int(G["county"][2:6]) % 9000 + 1000))
    e = T.err("monitor.report", {"household_id": hid, "cause": "job_lost", "note": "x"},
              "op.far", auth={"roles": ["county_operator"], "region": far})
    eq((e["code"], e["field"]), ("permission_denied", "household_id"))
    cid = report(hid, "job_lost", note="失业")["case_id"]
    e = T.err("monitor.get", {"id": cid}, "aud.far", auth={"roles": ["auditor"], "region": far})
    eq((e["code"], e["field"]), ("not_found", "id"))
    e = T.err("monitor.summary", {"region_code": G["county"]}, "aud.far",
              auth={"roles": ["auditor"], "region": far})
    eq((e["code"], e["field"]), ("not_found", "region_code"))
    mine = T.call("monitor.get", {"id": cid}, "aud.near",
                  auth={"roles": ["auditor"], "region": G["county"]})
    eq(mine["household_id"], hid)
    e = T.err("monitor.report", {"household_id": hid, "cause": "job_lost", "note": "x"},
              "cadre:%d" % G["cadre"], auth={"roles": ["cadre"], "cadre_id": G["cadre"]})
    eq(e["code"], "permission_denied")


def test_history_cannot_be_rewritten_in_the_database():
    hid = household()
    r = report(hid)
    db = bftest.pg()
    cur = db.cursor()
    for sql in ("UPDATE tasks.monitor_report SET note = 'x' WHERE case_id = %s",
                "DELETE FROM tasks.monitor_report WHERE case_id = %s",
                "UPDATE tasks.monitor_case SET household_id = 1 WHERE id = %s",
                "DELETE FROM tasks.monitor_case WHERE id = %s"):
        try:
            cur.execute(sql, (r["case_id"],))
            raise bftest.TestFailure("the database allowed: " + sql)
        except bftest.TestFailure:
            raise
        except Exception as e:  # noqa: BLE001 -- psycopg2's error
            check("monitor_" in str(e), str(e))
            db.rollback()
    verify_task(r["task_id"])
    T.call("monitor.close", {"id": r["case_id"], "outcome": "relapsed", "note": "返贫, 重新纳入"})
    try:
        cur.execute("UPDATE tasks.monitor_case SET outcome = 'assisted' WHERE id = %s",
                    (r["case_id"],))
        raise bftest.TestFailure("a closed case was rewritten")
    except bftest.TestFailure:
        raise
    except Exception as e:  # noqa: BLE001
        check("only an open case" in str(e), str(e))
        db.rollback()
    db.close()
