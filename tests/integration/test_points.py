"""The points supermarket (爱心超市, seed 004; docs/funds.md, "Points
supermarket") over the wire against real PostgreSQL: rules per village,
earnings proposed by a village operator and credited only once someone else
approves them, goods donated onto the shelf, redemption refused when points or
stock are short (naming the field) and never below zero under concurrency,
reversals, the monthly statement (台账) whose figures add up, points.verify
catching a row changed behind the service, and region scoping. After every
test the points books must verify."""
import random
import threading

import bftest
from bftest import Stack, check, eq, expect_error

S = None
RUN = bftest.uid()
USED = set()


def setup_module():
    global S
    S = Stack(["funds"]).__enter__()


def teardown_module():
    if S is not None:
        S.__exit__(None, None, None)


def c():
    return S.client("funds", timeout_ms=120000)


def key(tag=""):
    return "%s-%s-%s" % (RUN, tag, bftest.uid())


def auth(*roles, region=None):
    a = {"roles": list(roles)}
    if region:
        a["region"] = region
    return a


def county():
    """A fresh county code under province 62 (unused by earlier runs: the
    database may be shared)."""
    while True:
        code = "62%04d000000" % random.randint(1000, 9999)
        if code in USED:
            continue
        USED.add(code)
        conn = bftest.pg()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM funds.points_account WHERE region LIKE %s LIMIT 1",
                        (code[:6] + "%",))
            if cur.fetchone() is None:
                return code
        finally:
            conn.close()


def village(cty, n=1):
    return cty[:6] + "101%03d" % n


def household():
    return random.randint(10**12, 10**13)


OP1, OP2, APPR = "op:wang-" + RUN[:6], "op:li-" + RUN[:6], "appr:zhao-" + RUN[:6]


def op(cty):
    return auth("county_operator", region=cty)


def books_verify(cl=None):
    v = (cl or c()).call("points.verify", actor=None)
    check(v["ok"], "points.verify: %r" % v)
    return v


def setup_village(cl, cty, v, rules=(("pingyi", "参加三项评议", 5), ("zhengjie", "环境整洁", 10),
                                       ("big", "脱贫争先", 50))):
    for code, name, pts in rules:
        cl.call("points.rule.define", {"region": v, "code": code, "name": name, "points": pts,
                                       "request_key": key("rule")}, actor=OP1, auth=op(cty))


def credit(cl, cty, v, hh, rule="zhengjie", times=1):
    """Points for hh, proposed by OP1 and approved by OP2."""
    last = None
    for _ in range(times):
        e = cl.call("points.earn", {"region": v, "household_id": hh, "rule_code": rule,
                                    "request_key": key("earn")}, actor=OP1, auth=op(cty))
        last = cl.call("points.approve", {"earning_id": e["earning_id"],
                                          "request_key": key("appr")}, actor=OP2, auth=op(cty))
    return last


def goods(cl, cty, v, name, price, stock=0, donor="unit:7", unit="袋"):
    g = cl.call("goods.define", {"region": v, "name": name, "unit": unit, "price_points": price,
                                 "request_key": key("goods")}, actor=OP1, auth=op(cty))
    if stock:
        cl.call("goods.stock_in", {"goods_id": g["id"], "quantity": stock, "donor": donor,
                                   "request_key": key("stock")}, actor=OP1, auth=op(cty))
    return g


def events_of(start, type_, subject):
    def got():
        evs = [e for _, e in bftest.stream_events(bftest.redis_client(), start)
               if e.get("type") == type_ and e.get("subject") == subject]
        return evs or None
    return bftest.wait_for(got, msg="no %s event for %s" % (type_, subject))


# ---------------------------------------------------------------- earning

def test_earning_is_credited_only_when_another_person_approves():
    cl = c()
    cty = county()
    v = village(cty)
    start = bftest.stream_last_id(bftest.redis_client())
    setup_village(cl, cty, v)
    rules = cl.call("points.rule.list", {"region": v}, actor=None)
    eq(sorted((x["code"], x["points"]) for x in rules["items"]),
       [("big", 50), ("pingyi", 5), ("zhengjie", 10)])
    # a rule never changes: the same code again is already_exists
    expect_error(cl, "points.rule.define", {"region": v, "code": "pingyi", "name": "x",
                                            "points": 9, "request_key": key()},
                 "already_exists", "code", actor=OP1, auth=op(cty))
    expect_error(cl, "points.rule.define", {"region": v, "code": "neg", "name": "x",
                                            "points": 0, "request_key": key()},
                 "invalid_argument", "points", actor=OP1, auth=op(cty))
    expect_error(cl, "points.rule.define", {"region": v, "code": "f", "name": "x",
                                            "points": 2.5, "request_key": key()},
                 "invalid_argument", "points", actor=OP1, auth=op(cty))
    expect_error(cl, "points.rule.define", {"region": "62x", "code": "f", "name": "x",
                                            "points": 2, "request_key": key()},
                 "invalid_argument", "region", actor=OP1, auth=op(cty))

    hh = household()
    e = cl.call("points.earn", {"region": v, "household_id": hh, "rule_code": "pingyi",
                                "note": "第二季度三项评议", "request_key": key()},
                actor=OP1, auth=op(cty))
    eq((e["state"], e["points"], e["proposed_by"], e["rule_name"]),
       ("proposed", 5, OP1, "参加三项评议"))
    # nothing is credited yet
    expect_error(cl, "points.account", {"household_id": hh}, "not_found", "household_id",
                 actor=None)
    expect_error(cl, "points.earn", {"region": v, "household_id": hh, "rule_code": "nope",
                                     "request_key": key()},
                 "not_found", "rule_code", actor=OP1, auth=op(cty))
    # the proposer never approves, even holding the approver role, nor as admin
    ap = {"earning_id": e["earning_id"], "request_key": key()}
    er = expect_error(cl, "points.approve", ap, "permission_denied", "actor", actor=OP1,
                      auth=auth("county_operator", "approver", region=cty))
    check("proposer" in er["message"], er["message"])
    expect_error(cl, "points.approve", dict(ap, request_key=key()), "permission_denied",
                 "actor", actor=OP1, auth=auth("admin"))
    expect_error(cl, "points.reject", {"earning_id": e["earning_id"], "reason": "撤回",
                                       "request_key": key()},
                 "permission_denied", "actor", actor=OP1, auth=op(cty))
    a = cl.call("points.approve", ap, actor=OP2, auth=op(cty))
    eq((a["state"], a["points"], a["balance"], a["approved_by"]), ("approved", 5, 5, OP2))
    # a retry with the same key replays, without a second credit; other params conflict
    eq(cl.call("points.approve", ap, actor=OP2, auth=op(cty)), a)
    expect_error(cl, "points.approve", dict(ap, note="again"), "conflict", "request_key",
                 actor=OP2, auth=op(cty))
    # decided once
    er = expect_error(cl, "points.approve", {"earning_id": e["earning_id"],
                                             "request_key": key()},
                      "failed_precondition", "earning_id", actor=APPR, auth=auth("approver"))
    check("approved" in er["message"], er["message"])
    acc = cl.call("points.account", {"household_id": hh}, actor=None)
    eq((acc["balance"], acc["earned"], acc["redeemed"], acc["region"]), (5, 5, 0, v))
    eq([(x["kind"], x["amount"], x["earning_id"]) for x in acc["entries"]],
       [("earn", 5, e["earning_id"])])
    eq(acc["entries"][0]["actor"], OP2)
    # one statement, the entries joined on the account: keys, order, last page
    eq(list(acc), ["account_id", "household_id", "region", "balance", "earned", "redeemed",
                   "pending", "entries", "next_cursor"])
    eq(list(acc["entries"][0]), ["id", "kind", "amount", "goods_id", "earning_id",
                                 "redemption_id", "reverses_id", "reversed_by", "donor", "note",
                                 "actor", "created_at"])
    eq((acc["next_cursor"], cl.call("points.account", {"household_id": hh, "limit": 1},
                                    actor=None)["next_cursor"]), (None, None))

    # rejected: never credited, cannot be approved afterwards
    e2 = cl.call("points.earn", {"region": v, "household_id": hh, "rule_code": "big",
                                 "request_key": key()}, actor=OP1, auth=op(cty))
    eq(cl.call("points.account", {"household_id": hh}, actor=None)["pending"], 1)
    rj = cl.call("points.reject", {"earning_id": e2["earning_id"], "reason": "未经村民评议",
                                   "request_key": key()}, actor=APPR, auth=auth("approver"))
    eq((rj["state"], rj["rejected_by"]), ("rejected", APPR))
    expect_error(cl, "points.approve", {"earning_id": e2["earning_id"], "request_key": key()},
                 "failed_precondition", "earning_id", actor=OP2, auth=op(cty))
    acc = cl.call("points.account", {"household_id": hh}, actor=None)
    eq((acc["balance"], acc["pending"]), (5, 0))
    expect_error(cl, "points.approve", {"earning_id": 10**15, "request_key": key()},
                 "not_found", "earning_id", actor=OP2, auth=op(cty))
    # a household's points are in one village
    expect_error(cl, "points.earn", {"region": village(cty, 2), "household_id": hh,
                                     "rule_code": "pingyi", "request_key": key()},
                 "not_found", "rule_code", actor=OP1, auth=op(cty))
    setup_village(cl, cty, village(cty, 2), rules=(("pingyi", "参加三项评议", 5),))
    expect_error(cl, "points.earn", {"region": village(cty, 2), "household_id": hh,
                                     "rule_code": "pingyi", "request_key": key()},
                 "failed_precondition", "household_id", actor=OP1, auth=op(cty))

    ev = events_of(start, "bangfu.funds.points.approved",
                   "points_earning/%d" % e["earning_id"])[0]
    eq((ev["data"]["household_id"], ev["data"]["points"], ev["actor"]), (hh, 5, OP2))
    events_of(start, "bangfu.funds.points.proposed", "points_earning/%d" % e2["earning_id"])
    events_of(start, "bangfu.funds.points.rejected", "points_earning/%d" % e2["earning_id"])
    books_verify(cl)


# ---------------------------------------------------------------- redemption

def test_redeem_is_refused_when_points_or_stock_are_short():
    cl = c()
    cty = county()
    v = village(cty)
    setup_village(cl, cty, v)
    start = bftest.stream_last_id(bftest.redis_client())
    rice = goods(cl, cty, v, "大米 10kg", 30)
    st = cl.call("goods.stock_in", {"goods_id": rice["id"], "quantity": 2, "donor": "unit:7",
                                    "note": "东丽开发区捐赠", "request_key": key()},
                 actor=OP1, auth=op(cty))
    eq((st["stock"], st["quantity"], st["donor"]), (2, 2, "unit:7"))
    events_of(start, "bangfu.funds.goods.stocked", "goods/%d" % rice["id"])
    for bad, field in (({"quantity": 0}, "quantity"), ({"quantity": 1.5}, "quantity"),
                       ({"donor": "unit:x"}, "donor"), ({"donor": ""}, "donor")):
        p = dict({"goods_id": rice["id"], "quantity": 1, "donor": "张三",
                  "request_key": key()}, **bad)
        expect_error(cl, "goods.stock_in", p, "invalid_argument", field, actor=OP1,
                     auth=op(cty))
    expect_error(cl, "goods.define", {"region": v, "name": "大米 10kg", "unit": "袋",
                                      "price_points": 3, "request_key": key()},
                 "already_exists", "name", actor=OP1, auth=op(cty))
    expect_error(cl, "goods.define", {"region": v, "name": "油", "unit": "桶",
                                      "price_points": 0, "request_key": key()},
                 "invalid_argument", "price_points", actor=OP1, auth=op(cty))

    hh = household()
    # no points at all
    expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": rice["id"],
                                       "quantity": 1, "request_key": key()},
                 "failed_precondition", "household_id", actor=OP1, auth=op(cty))
    credit(cl, cty, v, hh, "zhengjie", times=5)  # 50 points
    e = expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": rice["id"],
                                           "quantity": 2, "request_key": key()},
                     "failed_precondition", "household_id", actor=OP1, auth=op(cty))
    check("50" in e["message"] and "60" in e["message"], e["message"])
    expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": rice["id"],
                                       "quantity": 0, "request_key": key()},
                 "invalid_argument", "quantity", actor=OP1, auth=op(cty))
    expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": 10**15,
                                       "quantity": 1, "request_key": key()},
                 "not_found", "goods_id", actor=OP1, auth=op(cty))
    rk = key()
    rd = cl.call("points.redeem", {"household_id": hh, "goods_id": rice["id"], "quantity": 1,
                                   "request_key": rk}, actor=OP1, auth=op(cty))
    eq((rd["points"], rd["balance"], rd["stock"]), (30, 20, 1))
    eq(cl.call("points.redeem", {"household_id": hh, "goods_id": rice["id"], "quantity": 1,
                                 "request_key": rk}, actor=OP1, auth=op(cty)), rd)
    events_of(start, "bangfu.funds.points.redeemed", "points_redemption/%d" % rd["redemption_id"])
    credit(cl, cty, v, hh, "big", times=2)  # 120 points
    e = expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": rice["id"],
                                           "quantity": 2, "request_key": key()},
                     "failed_precondition", "quantity", actor=OP1, auth=op(cty))
    check("stock" in e["message"], e["message"])
    acc = cl.call("points.account", {"household_id": hh}, actor=None)
    eq((acc["balance"], acc["earned"], acc["redeemed"]), (120, 150, 30))
    eq(acc["entries"][-1]["kind"], "earn")
    page = cl.call("points.account", {"household_id": hh, "limit": 1}, actor=None)
    eq((len(page["entries"]), page["entries"][0]["id"]), (1, acc["entries"][0]["id"]))
    check(page["next_cursor"] is not None, "a second page exists")
    nxt = cl.call("points.account", {"household_id": hh, "limit": 1,
                                     "cursor": page["next_cursor"]}, actor=None)
    eq(nxt["entries"][0]["id"], acc["entries"][1]["id"])
    # goods of another village are not for this household's points
    v2 = village(cty, 2)
    oil = goods(cl, cty, v2, "食用油 5L", 10, stock=5, donor="爱心人士李某", unit="桶")
    expect_error(cl, "points.redeem", {"household_id": hh, "goods_id": oil["id"],
                                       "quantity": 1, "request_key": key()},
                 "failed_precondition", "household_id", actor=OP1, auth=op(cty))
    gl = cl.call("goods.list", {"region": cty}, actor=None)["items"]
    eq([(g["name"], g["stock"], g["stocked_in"], g["handed_out"]) for g in gl],
       [("大米 10kg", 1, 2, 1), ("食用油 5L", 5, 5, 0)])
    eq([g["name"] for g in cl.call("goods.list", {"region": v2}, actor=None)["items"]],
       ["食用油 5L"])
    page = cl.call("goods.list", {"region": cty, "limit": 1}, actor=None)
    eq(len(page["items"]), 1)
    nxt = cl.call("goods.list", {"region": cty, "limit": 1, "cursor": page["next_cursor"]},
                  actor=None)
    eq((nxt["items"][0]["name"], nxt["next_cursor"]), ("食用油 5L", None))
    books_verify(cl)


def test_stock_never_goes_negative_under_concurrent_redeems():
    cty = county()
    v = village(cty)
    cl = c()
    setup_village(cl, cty, v)
    flour = goods(cl, cty, v, "面粉 5kg", 10, stock=5)
    hhs = [household() for _ in range(12)]
    for hh in hhs:
        credit(cl, cty, v, hh, "zhengjie")  # 10 points each: one bag
    results = []
    lock = threading.Lock()

    def redeem(hh):
        cli = c()
        try:
            rep = cli.request("points.redeem", {"household_id": hh, "goods_id": flour["id"],
                                                "quantity": 1, "request_key": key("cc")},
                              actor=OP1, auth=op(cty))
        finally:
            cli.close()
        with lock:
            results.append(rep)

    ts = [threading.Thread(target=redeem, args=(hh,)) for hh in hhs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok = [x for x in results if x.get("ok")]
    bad = [x["error"] for x in results if not x.get("ok")]
    eq(len(ok), 5, "as many redemptions as bags on the shelf")
    eq(sorted(set((e["code"], e["field"]) for e in bad)), [("failed_precondition", "quantity")])
    eq(sorted(x["result"]["stock"] for x in ok), [0, 1, 2, 3, 4])
    g = [x for x in cl.call("goods.list", {"region": v}, actor=None)["items"]
         if x["id"] == flour["id"]][0]
    eq((g["stock"], g["handed_out"]), (0, 5))

    # one household, ten concurrent redemptions, points for three
    hh = household()
    credit(cl, cty, v, hh, "zhengjie", times=3)
    cl.call("goods.stock_in", {"goods_id": flour["id"], "quantity": 20, "donor": "区工商联",
                               "request_key": key()}, actor=OP1, auth=op(cty))
    results.clear()
    ts = [threading.Thread(target=redeem, args=(hh,)) for _ in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    eq(sum(1 for x in results if x.get("ok")), 3)
    eq(sorted(set((x["error"]["code"], x["error"]["field"]) for x in results
                  if not x.get("ok"))), [("failed_precondition", "household_id")])
    eq(cl.call("points.account", {"household_id": hh}, actor=None)["balance"], 0)
    books_verify(cl)


# ---------------------------------------------------------------- reversal

def test_reversal_entries_correct_without_rewriting():
    cl = c()
    cty = county()
    v = village(cty)
    setup_village(cl, cty, v)
    soap = goods(cl, cty, v, "洗衣粉", 5, stock=10)
    hh = household()
    a = credit(cl, cty, v, hh, "zhengjie", times=2)  # 20
    start = bftest.stream_last_id(bftest.redis_client())
    # the reverser is not who made the entry (the approver OP2), and needs the approver role
    expect_error(cl, "points.reverse", {"entry_id": a["entry_id"], "reason": "重复登记",
                                        "request_key": key()},
                 "permission_denied", "actor", actor=OP2, auth=auth("approver"))
    expect_error(cl, "points.reverse", {"entry_id": a["entry_id"], "reason": "重复登记",
                                        "request_key": key()},
                 "permission_denied", "method", actor=OP1, auth=op(cty))
    expect_error(cl, "points.reverse", {"entry_id": a["entry_id"], "reason": "",
                                        "request_key": key()},
                 "invalid_argument", "reason", actor=APPR, auth=auth("approver"))
    rv = cl.call("points.reverse", {"entry_id": a["entry_id"], "reason": "重复登记",
                                    "request_key": key()}, actor=APPR, auth=auth("approver"))
    eq((rv["reversed_kind"], len(rv["entries"]), rv["entries"][0]["amount"]), ("earn", 1, 10))
    events_of(start, "bangfu.funds.points.reversed", "points_entry/%d" % rv["entries"][0]["entry_id"])
    acc = cl.call("points.account", {"household_id": hh}, actor=None)
    eq((acc["balance"], acc["earned"]), (10, 10))
    eq(acc["entries"][0]["kind"], "reversal")
    eq(acc["entries"][0]["amount"], -10)
    eq(acc["entries"][1]["reversed_by"], rv["entries"][0]["entry_id"])
    expect_error(cl, "points.reverse", {"entry_id": a["entry_id"], "reason": "再次",
                                        "request_key": key()},
                 "failed_precondition", "entry_id", actor=APPR, auth=auth("approver"))
    expect_error(cl, "points.reverse", {"entry_id": rv["entries"][0]["entry_id"],
                                        "reason": "撤销冲正", "request_key": key()},
                 "failed_precondition", "entry_id", actor="appr:other", auth=auth("approver"))
    expect_error(cl, "points.reverse", {"entry_id": 10**15, "reason": "x",
                                        "request_key": key()},
                 "not_found", "entry_id", actor=APPR, auth=auth("approver"))

    # a redemption is reversed whole: points back to the household, goods back on the shelf
    rd = cl.call("points.redeem", {"household_id": hh, "goods_id": soap["id"], "quantity": 2,
                                   "request_key": key()}, actor=OP1, auth=op(cty))
    eq((rd["balance"], rd["stock"]), (0, 8))
    rv = cl.call("points.reverse", {"entry_id": rd["entry_ids"][1], "reason": "登记错户",
                                    "request_key": key()}, actor=APPR, auth=auth("approver"))
    eq(sorted(x["reverses_id"] for x in rv["entries"]), sorted(rd["entry_ids"]))
    eq(cl.call("points.account", {"household_id": hh}, actor=None)["balance"], 10)
    g = [x for x in cl.call("goods.list", {"region": v}, actor=None)["items"]][0]
    eq((g["stock"], g["handed_out"]), (10, 0))
    # points already spent cannot be taken back
    a2 = credit(cl, cty, v, hh, "pingyi")  # 15
    cl.call("points.redeem", {"household_id": hh, "goods_id": soap["id"], "quantity": 3,
                              "request_key": key()}, actor=OP1, auth=op(cty))  # 0 left
    e = expect_error(cl, "points.reverse", {"entry_id": a2["entry_id"], "reason": "x",
                                            "request_key": key()},
                     "failed_precondition", "entry_id", actor=APPR, auth=auth("approver"))
    check("insufficient points" in e["message"], e["message"])
    # stock given away cannot be un-stocked below zero either
    chalk = goods(cl, cty, v, "粉笔", 1, stock=1)
    hh2 = household()
    credit(cl, cty, v, hh2, "pingyi")
    cl.call("points.redeem", {"household_id": hh2, "goods_id": chalk["id"], "quantity": 1,
                              "request_key": key()}, actor=OP1, auth=op(cty))
    stock_entry = [x for x in cl.call("points.account", {"household_id": hh2}, actor=None)
                   ["entries"]]
    check(stock_entry, "entries")
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT id FROM funds.points_entry WHERE goods_id = %s AND kind = 'stock_in'",
                    (chalk["id"],))
        sid = cur.fetchone()[0]
        # nothing is rewritten: UPDATE and DELETE are refused
        import psycopg2
        for sql in ("UPDATE funds.points_entry SET amount = 2 WHERE id = %s",
                    "DELETE FROM funds.points_entry WHERE id = %s"):
            try:
                cur.execute(sql, (sid,))
                raise bftest.TestFailure("not refused: " + sql)
            except psycopg2.Error as err:
                check("append-only" in str(err), str(err))
                conn.rollback()
        try:
            cur.execute("UPDATE funds.points_account SET floor = NULL WHERE goods_id = %s",
                        (chalk["id"],))
            raise bftest.TestFailure("account floor change not refused")
        except psycopg2.Error:
            conn.rollback()
    finally:
        conn.close()
    e = expect_error(cl, "points.reverse", {"entry_id": sid, "reason": "x",
                                            "request_key": key()},
                     "failed_precondition", "entry_id", actor=APPR, auth=auth("approver"))
    check("stock" in e["message"], e["message"])
    books_verify(cl)


# ---------------------------------------------------------------- statement

def test_monthly_statement_figures_add_up():
    cl = c()
    cty = county()
    v = village(cty)
    setup_village(cl, cty, v)
    rice = goods(cl, cty, v, "大米", 20, stock=6, donor="unit:11")
    cl.call("goods.stock_in", {"goods_id": rice["id"], "quantity": 4, "donor": "爱心人士王某",
                               "request_key": key()}, actor=OP1, auth=op(cty))
    oil = goods(cl, cty, v, "食用油", 15, stock=3, donor="unit:11", unit="桶")
    hs = [household() for _ in range(3)]
    credit(cl, cty, v, hs[0], "big")          # 50
    credit(cl, cty, v, hs[1], "zhengjie", 3)  # 30
    a = credit(cl, cty, v, hs[2], "pingyi", 2)  # 10
    cl.call("points.earn", {"region": v, "household_id": hs[2], "rule_code": "big",
                            "request_key": key()}, actor=OP1, auth=op(cty))  # pending
    r0 = cl.call("points.redeem", {"household_id": hs[0], "goods_id": rice["id"], "quantity": 2,
                                   "request_key": key()}, actor=OP1, auth=op(cty))  # -40
    cl.call("points.redeem", {"household_id": hs[1], "goods_id": oil["id"], "quantity": 2,
                              "request_key": key()}, actor=OP1, auth=op(cty))  # -30
    cl.call("points.reverse", {"entry_id": a["entry_id"], "reason": "x", "request_key": key()},
            actor=APPR, auth=auth("approver"))  # hs[2] -5
    cl.call("points.reverse", {"entry_id": r0["entry_ids"][0], "reason": "退货",
                               "request_key": key()}, actor=APPR, auth=auth("approver"))
    month = cl.call("points.account", {"household_id": hs[0]}, actor=None)["entries"][0][
        "created_at"][:7]
    st = cl.call("points.statement", {"region": v, "month": month}, actor=None,
                 auth=auth("auditor"))
    byh = {h["household_id"]: h for h in st["households"]}
    eq(sorted(byh), sorted(hs))
    eq([(byh[h]["opening"], byh[h]["earned"], byh[h]["redeemed"], byh[h]["closing"])
        for h in hs], [(0, 50, 0, 50), (0, 30, 30, 0), (0, 5, 0, 5)])
    eq(byh[hs[2]]["proposals"], 3)
    for h in hs:
        eq(byh[h]["closing"], cl.call("points.account", {"household_id": h},
                                      actor=None)["balance"], "closing = balance")
    t = st["totals"]
    eq((t["households"], t["opening"], t["earned"], t["redeemed"], t["closing"]),
       (3, 0, 85, 30, 55))
    eq(t["closing"], sum(h["closing"] for h in st["households"]))
    gs = {g["name"]: g for g in st["goods"]}
    eq((gs["大米"]["stocked_in"], gs["大米"]["handed_out"], gs["大米"]["closing"]), (10, 0, 10))
    eq((gs["食用油"]["stocked_in"], gs["食用油"]["handed_out"], gs["食用油"]["closing"]), (3, 2, 1))
    listed = {g["name"]: g["stock"] for g in cl.call("goods.list", {"region": v},
                                                      actor=None)["items"]}
    eq(listed, {"大米": 10, "食用油": 1}, "closing = stock on hand")
    eq(sorted((d["donor"], d["name"], d["quantity"]) for d in st["donations"]),
       [("unit:11", "大米", 6), ("unit:11", "食用油", 3), ("爱心人士王某", "大米", 4)])
    # next month opens with this month's closing; nothing moved in it
    y, m = int(month[:4]), int(month[5:])
    nxt = "%04d-%02d" % (y + m // 12, m % 12 + 1)
    st2 = cl.call("points.statement", {"region": v, "month": nxt}, actor=None)
    eq([(h["opening"], h["earned"], h["redeemed"], h["closing"]) for h in st2["households"]],
       [(byh[h["household_id"]]["closing"], 0, 0, byh[h["household_id"]]["closing"])
        for h in st2["households"]])
    eq({g["name"]: (g["opening"], g["closing"]) for g in st2["goods"]},
       {"大米": (10, 10), "食用油": (1, 1)})
    eq(st2["donations"], [])
    # the township's statement covers its villages
    st3 = cl.call("points.statement", {"region": v[:9] + "000", "month": month}, actor=None)
    eq(st3["totals"]["closing"], 55)
    for bad in ("2026-13", "26-01", "2026/01", "1999-12"):
        expect_error(cl, "points.statement", {"region": v, "month": bad}, "invalid_argument",
                     "month", actor=None)
    books_verify(cl)


# ---------------------------------------------------------------- verify

def test_verify_catches_a_row_changed_in_the_database():
    cl = c()
    cty = county()
    v = village(cty)
    setup_village(cl, cty, v)
    hh = household()
    a = credit(cl, cty, v, hh, "big")
    credit(cl, cty, v, hh, "pingyi")
    victim = a["entry_id"]
    books_verify(cl)
    conn = bftest.pg()
    cur = conn.cursor()
    conn.autocommit = True
    cur.execute("SELECT amount, hash FROM funds.points_entry WHERE id = %s", (victim,))
    orig_amount, orig_hash = cur.fetchone()
    try:
        cur.execute("ALTER TABLE funds.points_entry DISABLE TRIGGER points_entry_append_only")
        cur.execute("UPDATE funds.points_entry SET amount = amount + 500 WHERE id = %s",
                    (victim,))
        cur.execute("ALTER TABLE funds.points_entry ENABLE TRIGGER points_entry_append_only")
        vr = cl.call("points.verify", actor=None)
        eq(vr["ok"], False)
        eq((vr["first_bad"]["id"], vr["first_bad"]["problem"]), (victim, "altered"))
        eq(vr["books_ok"], False)  # the cached balance no longer matches, nor the earning
        check(a["earning_id"] in vr["bad_earnings"], "the earning is named: %r" % vr)
        # the points chain is separate from the money ledger, which still verifies
        check(cl.call("ledger.verify", actor=None)["ok"], "the money ledger is untouched")
        # a forger who rewrites the hash too breaks the next entry's link
        cur.execute("ALTER TABLE funds.points_entry DISABLE TRIGGER points_entry_append_only")
        cur.execute("UPDATE funds.points_entry SET hash = decode(md5('x') || md5('y'), 'hex') "
                    "WHERE id = %s", (victim,))
        cur.execute("ALTER TABLE funds.points_entry ENABLE TRIGGER points_entry_append_only")
        vr = cl.call("points.verify", actor=None)
        eq(vr["first_bad"]["id"], victim)
    finally:
        cur.execute("ALTER TABLE funds.points_entry DISABLE TRIGGER points_entry_append_only")
        cur.execute("UPDATE funds.points_entry SET amount = %s, hash = %s WHERE id = %s",
                    (orig_amount, orig_hash, victim))
        cur.execute("ALTER TABLE funds.points_entry ENABLE TRIGGER points_entry_append_only")
    # a cached balance changed behind the service is named too
    cur.execute("SELECT id FROM funds.points_account WHERE kind = 'household' "
                "AND household_id = %s", (hh,))
    acct = cur.fetchone()[0]
    try:
        cur.execute("UPDATE funds.points_account SET balance = balance + 1000 WHERE id = %s",
                    (acct,))
        vr = cl.call("points.verify", actor=None)
        eq((vr["ok"], vr["first_bad"]), (False, None))
        eq([(b["id"], b["balance"] - b["ledger"]) for b in vr["bad_accounts"]], [(acct, 1000)])
    finally:
        cur.execute("UPDATE funds.points_account SET balance = balance - 1000 WHERE id = %s",
                    (acct,))
        conn.close()
    books_verify(cl)


# ---------------------------------------------------------------- scoping

def test_a_village_operator_works_only_in_its_region():
    cl = c()
    ca, cb = county(), county()
    va, vb = village(ca), village(cb)
    setup_village(cl, ca, va)
    setup_village(cl, cb, vb)
    ga = goods(cl, ca, va, "毛巾", 2, stock=3)
    gb = goods(cl, cb, vb, "毛巾", 2, stock=3)
    ha, hb = household(), household()
    credit(cl, ca, va, ha, "zhengjie")
    credit(cl, cb, vb, hb, "zhengjie")
    opa = op(ca)
    expect_error(cl, "points.rule.define", {"region": vb, "code": "x", "name": "x", "points": 1,
                                            "request_key": key()},
                 "permission_denied", "region", actor=OP1, auth=opa)
    expect_error(cl, "points.earn", {"region": vb, "household_id": hb, "rule_code": "pingyi",
                                     "request_key": key()},
                 "permission_denied", "region", actor=OP1, auth=opa)
    eb = cl.call("points.earn", {"region": vb, "household_id": hb, "rule_code": "pingyi",
                                 "request_key": key()}, actor=OP1, auth=op(cb))
    expect_error(cl, "points.approve", {"earning_id": eb["earning_id"], "request_key": key()},
                 "permission_denied", "earning_id", actor=OP2, auth=opa)
    expect_error(cl, "points.approve", {"earning_id": eb["earning_id"], "request_key": key()},
                 "permission_denied", "earning_id", actor=APPR,
                 auth=auth("approver", region=ca))
    expect_error(cl, "goods.stock_in", {"goods_id": gb["id"], "quantity": 1, "donor": "x",
                                        "request_key": key()},
                 "permission_denied", "goods_id", actor=OP1, auth=opa)
    expect_error(cl, "points.redeem", {"household_id": hb, "goods_id": gb["id"], "quantity": 1,
                                       "request_key": key()},
                 "permission_denied", "goods_id", actor=OP1, auth=opa)
    expect_error(cl, "points.account", {"household_id": hb}, "not_found", "household_id",
                 actor=OP1, auth=opa)
    eq(cl.call("points.account", {"household_id": ha}, actor=OP1, auth=opa)["balance"], 10)
    expect_error(cl, "points.statement", {"region": vb, "month": "2030-01"}, "not_found",
                 "region", actor=OP1, auth=opa)
    expect_error(cl, "points.rule.list", {"region": vb}, "not_found", "region", actor=OP1,
                 auth=opa)
    mine = cl.call("goods.list", {"region": "620000000000"}, actor=OP1, auth=opa)["items"]
    eq([g["id"] for g in mine if g["id"] in (ga["id"], gb["id"])], [ga["id"]])
    # reading roles that are not region-bound see both; a cadre sees none
    eq(cl.call("points.account", {"household_id": hb}, actor="aud:x",
               auth=auth("auditor"))["balance"], 10)
    expect_error(cl, "points.account", {"household_id": hb}, "permission_denied", "method",
                 actor="cadre:1", auth=auth("cadre"))
    # finance (money) does not write points
    expect_error(cl, "points.earn", {"region": va, "household_id": ha, "rule_code": "pingyi",
                                     "request_key": key()},
                 "permission_denied", "method", actor="fin:x", auth=auth("finance"))
    books_verify(cl)
