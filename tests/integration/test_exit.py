"""The exit procedure (docs/registry.md "Exit"): a household or a village
leaves poverty by democratic review, township verification with a public
notice, objections, and county approval, each step by a different person;
the figures the review rests on are checked; every step is an event; the
case keeps its history (the database refuses to rewrite it); an exited
household stays listed with status exited."""
import datetime
import random

import bftest
from bftest import Stack, check, eq, expect_error

S = None
START = None
G = {}

OPERATOR = "op.li"
OPERATOR2 = "op.wang"
APPROVER = "approver.zhao"
ALL_ASSURED = ["food", "clothing", "education", "medical", "housing", "water"]


def setup_module():
    global S, START
    S = Stack(["registry"]).__enter__()
    START = bftest.stream_last_id(bftest.redis_client())
    cl = c()
    town = bftest.fresh_town(cl)
    G["town"] = town
    G["county"] = town[:6] + "000000"
    G["village"] = cl.call("village.create", {"region_code": town, "name": "出列村" + bftest.uid(),
                                              "category": "poor"})["id"]


def teardown_module():
    S.__exit__(None, None, None)


def c():
    return S.client("registry")


def today(delta=0):
    china = datetime.timezone(datetime.timedelta(hours=8))
    return (datetime.datetime.now(china).date() + datetime.timedelta(days=delta)).isoformat()


def op(who=OPERATOR):
    return {"actor": who, "auth": {"roles": ["county_operator"], "region": G["county"]}}


def approver(who=APPROVER):
    return {"actor": who, "auth": {"roles": ["approver"], "region": G["county"]}}


def call(method, params, who):
    return c().call(method, params, **who)


def household(village=None, n=2, income=1000000):
    members = [{"name": "成员" + bftest.uid()[:4], "id_number": bftest.fresh_id(G["town"][:6]),
                "relation": "head" if i == 0 else "child"} for i in range(n)]
    return c().call("household.create", {"village_id": village or G["village"],
                                         "categories": ["dibao"], "causes": {"main": "illness"},
                                         "route": "employment", "income_fen": income,
                                         "members": members})["id"]


def review(hid, who=None, **kw):
    p = {"id": hid, "year": 2020, "review_date": today(-20), "votes_for": 31,
         "votes_against": 2, "note": "村民代表大会评议通过", "assured": ALL_ASSURED,
         "evidence": ["评议会议记录 2020-03"]}
    p.update(kw)
    return call("household.exit_review", p, who or op())


def events_for(subject, until):
    """The subject's events in the stream, once one of type `until` is there
    (the relay publishes after the commit, so the reply may come first)."""
    def got():
        evs = [e for _, e in bftest.stream_events(bftest.redis_client(), START)
               if e["subject"] == subject]
        return evs if any(e["type"] == until for e in evs) else None
    return bftest.wait_for(got, msg="no %s event for %s" % (until, subject))


def test_household_exits_through_every_step_and_stays_listed():
    hid = household()
    r = review(hid)
    eq(r["state"], "reviewed")
    cid = r["case_id"]
    # the same person cannot verify what they recorded
    expect_error(c(), "household.exit_verify",
                 {"case_id": cid, "notice_start": today(-12), "note": "核实"},
                 "permission_denied", "actor", **op())
    # approval before the notice is refused by state
    expect_error(c(), "household.exit_approve", {"case_id": cid, "approval_ref": "县扶贫办[2020]1号"},
                 "failed_precondition", "case_id", **approver())
    v = call("household.exit_verify", {"case_id": cid, "notice_start": today(-12),
                                       "note": "乡镇入户核实,收入达标", "evidence": ["核实表"]},
             op(OPERATOR2))
    eq(v["state"], "notice")
    eq(v["notice_until"], today(-6), "7 days of notice")
    # an objection during the notice blocks approval until resolved
    o = call("household.exit_object", {"case_id": cid, "objection": "收入未核实外出务工",
                                       "raised_by": "村民张某"}, op())
    expect_error(c(), "household.exit_approve", {"case_id": cid, "approval_ref": "县[2020]1号"},
                 "failed_precondition", "case_id", **approver())
    expect_error(c(), "household.exit_resolve",
                 {"case_id": cid, "objection_id": o["objection_id"] + 999, "upheld": False,
                  "note": "x"}, "not_found", "objection_id", **op())
    call("household.exit_resolve", {"case_id": cid, "objection_id": o["objection_id"],
                                    "upheld": False, "note": "复核务工收入属实"}, op(OPERATOR2))
    # neither the reviewer nor the verifier may approve
    expect_error(c(), "household.exit_approve", {"case_id": cid, "approval_ref": "县[2020]1号"},
                 "permission_denied", "actor",
                 actor=OPERATOR2, auth={"roles": ["approver"], "region": G["county"]})
    # a village method on a household case is refused, naming the case
    expect_error(c(), "village.exit_approve", {"case_id": cid, "approval_ref": "县[2020]1号"},
                 "invalid_argument", "case_id", **approver())
    a = call("household.exit_approve", {"case_id": cid, "approval_ref": "县扶贫办[2020]12号"},
             approver())
    eq(a["state"], "exited")
    h = c().call("household.get", {"id": hid})
    eq(h["status"], "exited")
    listed = c().call("household.list", {"village_id": G["village"], "status": "exited"})
    check(hid in [x["id"] for x in listed["items"]], "an exited household stays listed")
    got = c().call("exit.get", {"id": cid})
    eq((got["state"], got["reviewed_by"], got["verified_by"], got["decided_by"]),
       ("exited", OPERATOR, OPERATOR2, APPROVER))
    eq(got["notice_start"], today(-12))
    eq([(x["outcome"], x["raised_by"]) for x in got["objections"]], [("dismissed", "村民张某")])
    eq(got["income_fen"], 1000000)
    eq(got["persons"], 2)
    types = [e["type"] for e in events_for("household/%d" % hid,
                                            "bangfu.registry.household.exited")]
    for t in ("exit_reviewed", "exit_verified", "exit_objected", "exit_objection_resolved",
              "exited"):
        check("bangfu.registry.household." + t in types, "event %s in %r" % (t, types))
    ex = [e for e in events_for("household/%d" % hid, "bangfu.registry.household.exited")
          if e["type"] == "bangfu.registry.household.exited"][0]
    eq((ex["data"]["case_id"], ex["actor"]), (cid, APPROVER))
    # the exit is done once: a new review is refused
    expect_error(c(), "household.exit_review", {"id": hid, "year": 2021, "review_date": today(),
                                                "votes_for": 3, "votes_against": 0, "note": "x",
                                                "assured": ALL_ASSURED},
                 "failed_precondition", "id", **op())


def test_notice_must_run_out_before_approval():
    hid = household()
    cid = review(hid)["case_id"]
    call("household.exit_verify", {"case_id": cid, "notice_start": today(), "note": "核实"},
         op(OPERATOR2))
    e = expect_error(c(), "household.exit_approve", {"case_id": cid, "approval_ref": "县[2020]2号"},
                     "failed_precondition", "case_id", **approver())
    check(today(6) in e["message"], "the message says until when: %s" % e["message"])
    # notice dates: not before the review, not in the future
    hid2 = household()
    cid2 = review(hid2, review_date=today(-3))["case_id"]
    for start in (today(-4), today(1)):
        expect_error(c(), "household.exit_verify",
                     {"case_id": cid2, "notice_start": start, "note": "核实"},
                     "invalid_argument", "notice_start", **op(OPERATOR2))


def test_upheld_objection_rejects_and_a_new_case_may_follow():
    hid = household()
    cid = review(hid)["case_id"]
    call("household.exit_verify", {"case_id": cid, "notice_start": today(-10), "note": "核实"},
         op(OPERATOR2))
    oid = call("household.exit_object", {"case_id": cid, "objection": "家中有人重病"},
               op())["objection_id"]
    r = call("household.exit_resolve", {"case_id": cid, "objection_id": oid, "upheld": True,
                                        "note": "属实,暂缓退出"}, op(OPERATOR2))
    eq(r["state"], "rejected")
    eq(c().call("household.get", {"id": hid})["status"], "active")
    expect_error(c(), "household.exit_approve", {"case_id": cid, "approval_ref": "县[2020]3号"},
                 "failed_precondition", "case_id", **approver())
    events_for("household/%d" % hid, "bangfu.registry.household.exit_rejected")
    # one open case at a time; after a rejection a new one may open
    cid2 = review(hid, year=2021)["case_id"]
    expect_error(c(), "household.exit_review", {"id": hid, "year": 2021, "review_date": today(),
                                                "votes_for": 3, "votes_against": 0, "note": "x",
                                                "assured": ALL_ASSURED},
                 "already_exists", "id", **op())
    r = call("household.exit_reject", {"case_id": cid2, "reason": "材料不全"}, approver())
    eq(r["state"], "rejected")
    listed = c().call("exit.list", {"kind": "household", "state": "rejected",
                                    "region_code": G["county"]})["items"]
    check({cid, cid2} <= {x["id"] for x in listed}, "both rejected cases listed")


def test_review_checks_the_figures_and_the_votes():
    poor = household(income=500000, n=2)  # 2,500 yuan a person: below 4,000
    e = expect_error(c(), "household.exit_review", {"id": poor, "year": 2020,
                                                    "review_date": today(-1), "votes_for": 9,
                                                    "votes_against": 1, "note": "x",
                                                    "assured": ALL_ASSURED},
                     "failed_precondition", "income_fen", **op())
    check("400000" in e["message"], e["message"])
    hid = household()
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(-1), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED[:-1]},
                 "failed_precondition", "assured", **op())
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(-1), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED + ["fun"]},
                 "invalid_argument", "assured", **op())
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(-1), "votes_for": 4,
                  "votes_against": 4, "note": "x", "assured": ALL_ASSURED},
                 "failed_precondition", "votes_for", **op())
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(2), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED},
                 "invalid_argument", "review_date", **op())
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 1999, "review_date": today(-1), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED},
                 "invalid_argument", "year", **op())
    # an operator of another county does not see the household
    other = "%02d%02d%02d000000" % (random.choice([31, 32]), random.randint(1, 99),
                                    random.randint(1, 99))
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(-1), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED},
                 "not_found", "id", actor=OPERATOR,
                 auth={"roles": ["county_operator"], "region": other})
    # a finance principal holds no role for it
    expect_error(c(), "household.exit_review",
                 {"id": hid, "year": 2020, "review_date": today(-1), "votes_for": 9,
                  "votes_against": 1, "note": "x", "assured": ALL_ASSURED},
                 "permission_denied", "method", actor="fin.qian", auth={"roles": ["finance"]})
    # the status is changed by the procedure, not by an operator's update
    expect_error(c(), "household.update", {"id": hid, "status": "exited"},
                 "permission_denied", "status", **op())


def test_village_exits_only_below_the_incidence_threshold():
    cl = c()
    vid = cl.call("village.create", {"region_code": G["town"], "name": "出列村" + bftest.uid(),
                                     "category": "poor"})["id"]
    for _ in range(3):
        household(village=vid, n=2)  # 6 poor persons
    # 6 / 200 = 3 % is not below 2 % (this test's provinces are not western)
    e = expect_error(cl, "village.exit_review",
                     {"id": vid, "year": 2020, "review_date": today(-30), "votes_for": 40,
                      "votes_against": 1, "note": "村民代表会议", "population": 200},
                     "failed_precondition", "population", **op())
    check("3.0%" in e["message"] and "2.0%" in e["message"], e["message"])
    # 6 / 400 = 1.5 %
    cid = call("village.exit_review", {"id": vid, "year": 2020, "review_date": today(-30),
                                       "votes_for": 40, "votes_against": 1,
                                       "note": "村民代表会议", "population": 400}, op())["case_id"]
    call("village.exit_verify", {"case_id": cid, "notice_start": today(-20), "note": "乡镇核实"},
         op(OPERATOR2))
    # three more poor households registered meanwhile: 12 / 400 = 3 %, refused at approval
    extra = [household(village=vid, n=2) for _ in range(3)]
    expect_error(cl, "village.exit_approve", {"case_id": cid, "approval_ref": "县[2020]9号"},
                 "failed_precondition", "case_id", **approver())
    # the three exit as households: 6 / 400 again
    for hid in extra:
        hc = review(hid)["case_id"]
        call("household.exit_verify", {"case_id": hc, "notice_start": today(-10), "note": "核实"},
             op(OPERATOR2))
        call("household.exit_approve", {"case_id": hc, "approval_ref": "县[2020]8号"}, approver())
    a = call("village.exit_approve", {"case_id": cid, "approval_ref": "县[2020]9号"}, approver())
    eq(a["state"], "exited")
    v = cl.call("village.get", {"id": vid})
    eq(v["status"], "exited")
    got = cl.call("exit.get", {"id": cid})
    eq((got["kind"], got["population"], got["poor_persons"], got["household_id"]),
       ("village", 400, 6, None))
    events_for("village/%d" % vid, "bangfu.registry.village.exited")


def test_history_cannot_be_rewritten_in_the_database():
    hid = household()
    cid = review(hid)["case_id"]
    call("household.exit_verify", {"case_id": cid, "notice_start": today(-9), "note": "核实"},
         op(OPERATOR2))
    call("household.exit_approve", {"case_id": cid, "approval_ref": "县[2020]4号"}, approver())
    db = bftest.pg()
    cur = db.cursor()
    for sql in ("UPDATE registry.exit_case SET decided_by = 'someone' WHERE id = %s",
                "UPDATE registry.exit_case SET state = 'notice' WHERE id = %s",
                "DELETE FROM registry.exit_case WHERE id = %s"):
        try:
            cur.execute(sql, (cid,))
            raise bftest.TestFailure("the database allowed: " + sql)
        except bftest.TestFailure:
            raise
        except Exception as e:  # noqa: BLE001 -- psycopg2's error
            check("exit" in str(e), str(e))
            db.rollback()
    # an open case's review columns cannot change either
    cid2 = review(household())["case_id"]
    try:
        cur.execute("UPDATE registry.exit_case SET votes_for = 99 WHERE id = %s", (cid2,))
        raise bftest.TestFailure("the review was rewritten")
    except bftest.TestFailure:
        raise
    except Exception as e:  # noqa: BLE001
        check("review" in str(e), str(e))
        db.rollback()
    db.close()
