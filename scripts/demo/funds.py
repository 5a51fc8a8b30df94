#!/usr/bin/env python3
"""Demo data for the funds service: seed 003, Dongli district's aid to three
counties (东丽区对口帮扶实施方案, 2017).

- One source, the district's special aid fund (区财政局), receiving 40 M yuan a
  year for 2016-2020, and a social-donation source.
- The yearly budgets of seed 003, through their carrier units:
  承德县 (Hebei) 20 M yuan a year via 东丽开发区, 临潭县 and 甘谷县 (Gansu)
  10 M a year each via 东丽湖街 and 华明街.
- The first batch of named projects of seed 003 (a Dongli primary school and
  a Dongli health centre in 承德县, labour training, an agricultural products
  exhibition and trading centre, the 甘谷一中/二中 student dormitories), each
  with a performance target, funded from the 2017 budgets, with tranches in
  every state: disbursed, approved, planned, and one disbursement reversed.
- An allocation of 承德县's 2018 budget across townships weighted by their
  poor population (seed 001's rule), and a public-welfare-job payroll batch:
  1000 yuan a person a month (seed 002), for 200 generated people.
- Seed 004's points supermarket (爱心超市) in 小北村: behaviour rules (三项评议,
  三项讨论, 环境整洁, 发展产业), goods donated by its helper unit 公安东丽分局 and by
  the public, five of the village's registered households earning points
  (proposed by the village operator, approved by the village committee, one
  rejected) and redeeming them, and one redemption reversed.

Division codes of the three counties are the real ones; the townships' codes
are illustrative. Idempotent through request keys: every write carries a key
derived from what it does, so a second run replays the first results and
changes nothing."""
import sys

from common import Client, RpcError

FUNDS = Client("funds")
PLANNER = "system:demo"          # requests tranches
APPROVER = "cadre:finance-bureau"  # 区财政局 approves them
YUAN = 100                       # fen

COUNTIES = [
    # county, division code, carrier unit, yearly budget in yuan
    ("承德县", "130821000000", "东丽开发区", 20_000_000),
    ("临潭县", "623021000000", "东丽湖街", 10_000_000),
    ("甘谷县", "620523000000", "华明街", 10_000_000),
]
YEARS = range(2016, 2021)

# seed 003, 具体目标 and 重点工作: project, county, kind, lead unit, amount (yuan),
# beneficiaries, performance target, tranches (yuan, state)
PROJECTS = [
    ("东丽小学", "承德县", "education", "区教育局", 6_000_000, 600,
     "2018年秋季开学前建成1所完全小学，容纳600名学生",
     [(2_400_000, "disbursed"), (2_400_000, "approved"), (1_200_000, "planned")]),
    ("东丽卫生院", "承德县", "health", "区卫生计生委", 4_000_000, 12_000,
     "建成1所乡镇卫生院，服务1.2万人，每年接诊不少于2万人次",
     [(2_000_000, "disbursed"), (2_000_000, "planned")]),
    ("劳动力培训就业", "承德县", "training", "区人力社保局", 1_000_000, 500,
     "培训500人次，其中300人稳定就业6个月以上", [(500_000, "reversed"), (500_000, "planned")]),
    ("农产品展示交易中心", "临潭县", "industry", "区商务委", 3_000_000, 2_000,
     "在东丽区建成展示交易中心，年销售受援地区农产品不少于500万元",
     [(1_500_000, "disbursed"), (1_500_000, "approved")]),
    ("东丽小学（临潭）", "临潭县", "education", "区教育局", 5_000_000, 480,
     "在“东丽小镇”建成1所小学，容纳480名学生", [(2_500_000, "planned")]),
    ("甘谷一中、二中学生公寓楼", "甘谷县", "infrastructure", "华明街", 6_000_000, 1_600,
     "建成学生公寓楼2栋，解决1600名学生住宿", [(3_000_000, "disbursed"), (3_000_000, "planned")]),
    ("腾达职业技术学校合作培训", "甘谷县", "training", "区人力社保局", 1_500_000, 300,
     "合作培训300人，落实就业不少于200人", [(750_000, "approved")]),
]

# 承德县 townships for the 2018 allocation (illustrative codes), weight = poor population
TOWNSHIPS = [("130821100000", 1830), ("130821101000", 1215), ("130821102000", 2046),
             ("130821103000", 987), ("130821104000", 1502), ("130821200000", 764),
             ("130821201000", 1333), ("130821202000", 1120)]
PAYROLL_PEOPLE = 200


def call(method, params, key, actor="system:demo"):
    params = dict(params, request_key="demo-funds-" + key)
    return FUNDS.call(method, params, actor)


def unit_ids():
    """The registry ids of the units named above (created there if missing).
    The registry runs before this loader (scripts/stack.sh starts it first)."""
    names = {"东丽开发区": "department", "东丽湖街": "street", "华明街": "street",
             "区教育局": "department", "区卫生计生委": "department",
             "区人力社保局": "department", "区商务委": "department",
             "公安东丽分局": "department"}
    reg = Client("registry")
    found, cursor = {}, None
    while True:
        page = reg.call("unit.list", {"limit": 1000, "cursor": cursor} if cursor else
                        {"limit": 1000})
        for u in page["items"]:
            found[u["name"]] = u["id"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    for name, kind in names.items():
        if name not in found:
            found[name] = reg.call("unit.create", {"name": name, "kind": kind},
                                   "system:demo")["id"]
    return found


def main():
    units = unit_ids()
    fund = call("source.create", {"name": "东丽区对口帮扶专项资金", "kind": "county",
                                  "provider": "东丽区财政局"}, "source-district")
    donation = call("source.create", {"name": "东丽区社会帮扶捐赠", "kind": "donation",
                                      "provider": "区工商联"}, "source-donation")
    yearly = sum(c[3] for c in COUNTIES)
    for y in YEARS:
        call("source.receive", {"source_id": fund["id"], "amount_fen": yearly * YUAN, "year": y,
                                "note": "东丽政办〔2017〕23号 %d年度帮扶资金" % y},
             "receive-%d" % y)
    call("source.receive", {"source_id": donation["id"], "amount_fen": 800_000 * YUAN,
                            "year": 2020, "note": "企业捐赠"}, "receive-donation-2020")

    budgets = {}
    for county, code, carrier, amount in COUNTIES:
        for y in YEARS:
            b = call("budget.create", {"recipient": "region:" + code, "year": y,
                                       "carrier": carrier,
                                       "funding": [{"source_id": fund["id"],
                                                    "amount_fen": amount * YUAN}]},
                     "budget-%s-%d" % (code, y))
            budgets[(county, y)] = b["id"]

    for i, (name, county, kind, lead, amount, people, target, tranches) in enumerate(PROJECTS):
        code = next(c[1] for c in COUNTIES if c[0] == county)
        location = "120110000000" if kind == "industry" else code  # the centre is in Dongli
        p = call("project.create", {"name": name, "kind": kind, "location": location,
                                    "unit_id": units[lead], "beneficiaries": people,
                                    "target": target, "budget_id": budgets[(county, 2017)],
                                    "amount_fen": amount * YUAN}, "project-%d" % i)
        for seq, (t_amount, state) in enumerate(tranches, 1):
            t = call("tranche.plan", {"project_id": p["id"], "seq": seq,
                                      "amount_fen": t_amount * YUAN,
                                      "purpose": "第%d期拨付" % seq},
                     "tranche-%d-%d" % (i, seq), actor=PLANNER)
            if state == "planned":
                continue
            call("tranche.approve", {"tranche_id": t["id"], "note": "区财政局审核同意"},
                 "approve-%d-%d" % (i, seq), actor=APPROVER)
            if state == "approved":
                continue
            d = call("tranche.disburse", {"tranche_id": t["id"]}, "disburse-%d-%d" % (i, seq))
            if state == "reversed":
                call("transfer.reverse", {"transfer_id": d["transfer_id"],
                                          "reason": "培训班未按期开班，资金退回"},
                     "reverse-%d-%d" % (i, seq))

    alloc = call("allocation.apply", {
        "budget_id": budgets[("承德县", 2018)], "rule": "weights",
        "amount_fen": 8_000_000 * YUAN,
        "recipients": [{"recipient": "region:" + code, "weight": w} for code, w in TOWNSHIPS]},
        "allocation-chengde-2018")

    # public-welfare jobs, paid from a program budget funded by both sources
    jobs = call("budget.create", {"recipient": "program:公益岗位", "year": 2020,
                                  "carrier": "华明街",
                                  "funding": [{"source_id": donation["id"],
                                               "amount_fen": 600_000 * YUAN}]},
                "budget-jobs-2020")
    lines = [{"line_key": "person-%04d" % n, "recipient": "person:%d" % (900000 + n),
              "amount_fen": 1000 * YUAN} for n in range(1, PAYROLL_PEOPLE + 1)]
    pay = call("disbursement.batch", {"batch_key": "demo-公益岗位-2020-06",
                                      "budget_id": jobs["id"],
                                      "purpose": "公益岗位工资 2020年6月，每人每月1000元",
                                      "lines": lines}, "payroll-2020-06")
    points = demo_points(units)
    verify = FUNDS.call("ledger.verify", {}, None)
    print("funds demo: %d budgets, %d projects, allocation %d across %d townships, "
          "payroll %d people (%d yuan), ledger %d entries %s"
          % (len(budgets) + 1, len(PROJECTS), alloc["id"], len(TOWNSHIPS), pay["paid"]
             + pay["duplicates"], pay["paid_fen"] // YUAN, verify["entries"],
             "verified" if verify["ok"] else "DOES NOT VERIFY"))
    if points:
        print(points)
    pv = FUNDS.call("points.verify", {}, None)
    return 0 if verify["ok"] and pv["ok"] else 1


# ---- the points supermarket (爱心超市, seed 004) in 小北村 (120110004201)
POINTS_VILLAGE = ("小北村", "120110004201", "120110004000")
POINTS_OPERATOR = "operator.xiaobei"        # the village's operator: records
POINTS_APPROVER = "approver.xiaobei-committee"  # the village committee: approves
POINTS_CORRECTOR = "approver.district"      # corrects (reversal), another person
POINT_RULES = [  # code, behaviour (seed 004: 三项讨论, 三项评议, 扶贫+扶志), points
    ("sanxiang_pingyi", "参加三项评议(自我、相互、组织评议)", 5),
    ("sanxiang_taolun", "参加三项讨论", 5),
    ("huanjing_zhengjie", "庭院环境整洁", 10),
    ("fazhan_chanye", "发展庭院产业、自立自强", 20),
]
GOODS = [  # name, unit, price in points, quantity, donor ("unit" = 公安东丽分局)
    ("大米 10kg", "袋", 40, 20, "unit"),
    ("食用油 5L", "桶", 30, 15, "unit"),
    ("洗衣粉 2kg", "袋", 10, 30, "东丽区工商联爱心捐赠"),
    ("毛巾", "条", 5, 50, "爱心人士张某"),
]
# per household (by position among the village's households): earned rule codes,
# then redemptions (goods index, quantity)
EARNINGS = [
    (["sanxiang_pingyi", "sanxiang_taolun", "huanjing_zhengjie", "fazhan_chanye"], [(0, 1)]),
    (["sanxiang_pingyi", "huanjing_zhengjie", "huanjing_zhengjie"], [(2, 1), (3, 2)]),
    (["sanxiang_pingyi", "fazhan_chanye", "fazhan_chanye"], [(1, 1)]),
    (["sanxiang_taolun", "huanjing_zhengjie"], []),
    (["sanxiang_pingyi"], [(3, 1)]),
]


def demo_points(units):
    """Idempotent like the rest: every write carries a key derived from what
    it does. Needs the registry demo's households of 小北村; without them it
    says so and does nothing."""
    vname, vcode, street = POINTS_VILLAGE
    reg = Client("registry")
    vid = next((v["id"] for v in reg.call("village.list", {"region_code": street,
                                                          "limit": 1000})["items"]
                if v["code"] == vcode), None)
    hhs = []
    if vid:
        hhs = sorted(h["id"] for h in reg.call("household.list", {"village_id": vid,
                                                                  "limit": 1000})["items"])
    if len(hhs) < len(EARNINGS):
        return "points demo: %s has no registered households (load the registry demo)" % vname

    def pcall(method, params, k, actor=POINTS_OPERATOR):
        return call(method, params, "points-" + k, actor=actor)

    for code, name, pts in POINT_RULES:
        pcall("points.rule.define", {"region": vcode, "code": code, "name": name,
                                     "points": pts}, "rule-" + code)
    goods = []
    for i, (name, unit, price, qty, donor) in enumerate(GOODS):
        g = pcall("goods.define", {"region": vcode, "name": name, "unit": unit,
                                   "price_points": price}, "goods-%d" % i)
        donor = "unit:%d" % units["公安东丽分局"] if donor == "unit" else donor
        pcall("goods.stock_in", {"goods_id": g["id"], "quantity": qty, "donor": donor,
                                 "note": "2020年第二季度爱心捐赠"}, "stock-%d" % i)
        goods.append(g)
    earned = redeemed = 0
    for n, (codes, buys) in enumerate(EARNINGS):
        hh = hhs[n]
        for j, code in enumerate(codes):
            e = pcall("points.earn", {"region": vcode, "household_id": hh, "rule_code": code,
                                      "note": "2020年第二季度"}, "earn-%d-%d" % (n, j))
            a = pcall("points.approve", {"earning_id": e["earning_id"],
                                         "note": "村两委审核同意"},
                      "approve-%d-%d" % (n, j), actor=POINTS_APPROVER)
            earned += a["points"]
        for j, (gi, qty) in enumerate(buys):
            rd = pcall("points.redeem", {"household_id": hh, "goods_id": goods[gi]["id"],
                                         "quantity": qty}, "redeem-%d-%d" % (n, j))
            redeemed += rd["points"]
    # one proposal the committee turns down, one redemption corrected
    e = pcall("points.earn", {"region": vcode, "household_id": hhs[3],
                              "rule_code": "fazhan_chanye", "note": "无佐证材料"}, "earn-rejected")
    pcall("points.reject", {"earning_id": e["earning_id"], "reason": "无佐证材料,不予认定"},
          "reject", actor=POINTS_APPROVER)
    rd = pcall("points.redeem", {"household_id": hhs[3], "goods_id": goods[2]["id"],
                                 "quantity": 1}, "redeem-corrected")
    pcall("points.reverse", {"entry_id": rd["entry_ids"][0], "reason": "登记错户,冲正"},
          "reverse-redeem", actor=POINTS_CORRECTOR)
    stock = {g["name"]: g["stock"] for g in FUNDS.call(
        "goods.list", {"region": vcode}, None)["items"]}
    return ("points demo: %s supermarket, %d rules, %d goods (stock %s), %d households "
            "earned %d points and redeemed %d" % (vname, len(POINT_RULES), len(GOODS),
                                                   ", ".join("%s %d" % kv for kv in stock.items()),
                                                   len(EARNINGS), earned, redeemed))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RpcError as e:
        sys.exit("funds demo: %s" % e)
