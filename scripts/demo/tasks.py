#!/usr/bin/env python3
"""Demo data for the tasks service, on top of the registry demo (Dongli, seed 000).

For the demo villages and their helper units (read from the registry, whose
loader runs first):
- a 3-year plan (this year and the next two) and a yearly plan per unit, some
  signed off by the three signers of seed 001, some waiting for signatures;
  a household plan (一户一策) for the first households of three villages;
- the monthly report schedule of seed 001 (each work team, pictures and text
  by the 25th) and the half-yearly visit of each unit head;
- the seed 001 county timeline for the current year (teams in place by 5 Sep,
  household data to the township by 15 Sep and the county by 20 Sep, plans
  signed by 25 Sep);
- a set of Wuqing-style indicators (seed 002) for every village, with some
  progress reported;
- an inspection (明查暗访) with four problems, two of them already closed after
  verification (销号), and one household help request (求助直通车);
- relapse-risk monitoring (防返贫监测): two households flagged again, one case
  open (a hospital bill), one closed as assisted (a lost job, new work found);
- seed 002's yearly assessment: villages ranked (exits counted), a special
  reward paid by funds to the best three, the bottom three named in a notice
  with a rectification problem for their helper unit.

Idempotent: plans are unique per unit, kind and year; schedules, the
inspection and the help request carry refs; indicator codes are unique;
assignments are idempotent; values are reported only where none was. A second
run finds everything in place and changes nothing."""
import sys

from common import Client, RpcError

REG = Client("registry")
TASKS = Client("tasks")
DISTRICT = "120110000000"
SIGNERS = [("township_secretary", "cadre:township-secretary"),
           ("township_head", "cadre:township-head"),
           ("county_leader", "cadre:county-leader")]
VERIFIER = "cadre:district-supervisor"  # 区督导组: verifies, never owns
UNIT_NAMES = ["区建委", "区水务局", "滨丽公司", "公安东丽分局", "市委办公厅"]

# Wuqing tracked 73 indicator tasks per village (seed 002); a representative few.
# code, name, unit, target, direction, vetoing
INDICATORS = [
    ("demo.five_good_branch", "党支部达到五好党支部标准", "bool", 1, "=", True),
    ("demo.collective_income", "村集体经营性收入达到20万元以上", "fen", 20_000_000, ">=", False),
    ("demo.zero_employment", "零就业家庭户数", "households", 0, "<=", False),
    ("demo.beautiful_village", "达到美丽村庄建设标准", "bool", 1, "=", False),
    ("demo.party_service_center", "党群服务中心改造提升完成", "bool", 1, "=", False),
    ("demo.cameras", "公共安全视频监控点位", "points", 10, ">=", False),
]


def list_all(client, method, params):
    items, cursor = [], None
    while True:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        r = client.call(method, p)
        items += r["items"]
        cursor = r.get("next_cursor")
        if not cursor:
            return items


def ensure_plan(kind, subject, title, year, measures, sign):
    got = TASKS.ensure("plan.create", {"kind": kind, "subject": subject, "title": title,
                                       "year": year, "measures": measures})
    if got is None:
        found = [p for p in list_all(TASKS, "plan.list", {"subject": subject, "kind": kind})
                 if p["year_from"] == year]
        got = TASKS.call("plan.get", {"id": found[0]["id"]})
    if got["status"] == "draft" and got["revision"] == 1:
        got = TASKS.call("plan.submit", {"id": got["id"]})
    if sign and got["status"] == "submitted":
        for role, actor in SIGNERS:
            if role in got["missing_signers"]:
                got = TASKS.call("plan.sign", {"id": got["id"], "role": role}, actor=actor)
    return got


def main():
    now_local = TASKS.call("clock.get")["now_local"]
    year = int(now_local[:4])
    villages = list_all(REG, "village.list", {"region_code": DISTRICT})
    if not villages:
        sys.exit("tasks demo: no villages in %s (load the registry demo first)" % DISTRICT)
    units = {u["name"]: u for u in list_all(REG, "unit.list", {})}
    helper_units = [units[n] for n in UNIT_NAMES if n in units]
    teams = {u["id"]: list_all(REG, "team.list", {"unit_id": u["id"]}) for u in helper_units}

    # ---- plans
    plans = 0
    for i, u in enumerate(helper_units):
        subject = {"kind": "unit", "id": u["id"]}
        team_owner = ({"kind": "team", "id": teams[u["id"]][0]["id"]} if teams[u["id"]]
                      else {"kind": "unit", "id": u["id"]})
        ensure_plan("three_year", subject, "%s %d-%d年结对帮扶三年规划" % (u["name"], year, year + 2),
                    year, [
                        {"what": "培育村级特色产业项目, 壮大集体经济", "owner": team_owner,
                         "due": "%d-12-31" % (year + 2), "cost_fen": 3_000_000_00},
                        {"what": "村两委班子建设, 建成五好党支部", "owner": team_owner,
                         "due": "%d-12-31" % (year + 1)},
                        {"what": "美丽村庄基础设施建设", "owner": subject,
                         "due": "%d-12-31" % (year + 2), "cost_fen": 5_000_000_00}],
                    sign=i < 3)
        ensure_plan("yearly", subject, "%s %d年度帮扶计划" % (u["name"], year), year, [
            {"what": "每月25日前报送驻村工作图文信息", "owner": team_owner,
             "due": "%d-12-25" % year},
            {"what": "单位主要负责人每半年到村调研指导", "owner": subject,
             "due": "%d-12-31" % year}], sign=i < 2)
        plans += 2
    for v in villages[:3]:
        for h in list_all(REG, "household.list", {"village_id": v["id"]})[:2]:
            hh = REG.call("household.get", {"id": h["id"]})
            owner = ([{"what": "落实帮扶措施, 每月入户走访",
                       "owner": {"kind": "cadre", "id": hh["responsible_cadre_ids"][0]}}]
                     if hh.get("responsible_cadre_ids") else [{"what": "落实帮扶责任人"}])
            ensure_plan("household", {"kind": "household", "id": h["id"]},
                        "一户一策: %s户" % hh["members"][0]["name"], year, owner + [
                            {"what": "申请产业扶持或公益岗位", "due": "%d-12-31" % year}],
                        sign=True)
            plans += 1

    # ---- recurring duties
    for u in helper_units:
        TASKS.ensure("schedule.create", {
            "ref": "demo-monthly-report-%d" % u["id"], "title": "驻村工作图文信息月报",
            "description": "每月25日前上报工作开展图文信息 (seed 001)", "kind": "report",
            "rule": "monthly", "day": 25, "each_team_of_unit": u["id"]})
        TASKS.ensure("schedule.create", {
            "ref": "demo-unit-head-visit-%d" % u["id"], "title": "单位一把手到驻点村调研指导",
            "kind": "visit", "rule": "half_yearly", "day": 30,
            "owner": {"kind": "unit", "id": u["id"]}})

    # ---- the seed 001 timeline for this year
    coordinator = units.get("市委办公厅") or helper_units[0]
    TASKS.call("timeline.instantiate", {"template": "county_2015", "year": year,
                                        "region_code": DISTRICT,
                                        "owner": {"kind": "unit", "id": coordinator["id"]}})

    # ---- indicators with some progress
    for code, nm, unit, target, direction, vetoing in INDICATORS:
        TASKS.ensure("indicator.define", {"code": code, "name": nm, "unit": unit,
                                          "target": target, "direction": direction,
                                          "vetoing": vetoing, "category": "demo"})
        TASKS.call("indicator.assign", {"code": code, "village_ids": [v["id"] for v in villages],
                                        "year": year})
    reported = 0
    for k, v in enumerate(villages):
        have = TASKS.call("progress.rollup", {"village_id": v["id"], "year": year})
        for ind in have["indicators"]:
            if ind["actual"] is not None:
                continue
            # deterministic progress: about two thirds of the values meet their target
            good = (k + len(ind["code"])) % 3 != 0
            value = {"bool": 1 if good else 0, "fen": 23_500_000 if good else 15_000_000,
                     "households": 0 if good else 2, "points": 12 if good else 6}[ind["unit"]]
            TASKS.call("indicator.report", {"assignment_id": ind["id"], "value": value,
                                            "evidence": {"text": "驻村工作队核实"}})
            reported += 1

    # ---- an inspection: four problems, two closed after verification
    team_of = {}
    for u in helper_units:
        for t in teams[u["id"]]:
            team_of[u["id"]] = t
    pairs = []  # (village, unit, team leader)
    for u in helper_units:
        uv = REG.call("unit.get", {"id": u["id"]})
        for p in uv.get("villages", []):
            if u["id"] in team_of:
                pairs.append((p["village_id"], u["id"], team_of[u["id"]]["leader_id"]))
    pairs = pairs[:4]
    try:
        res = TASKS.call("problem.open", {
            "inspection": {"title": "%d年第一轮明查暗访" % year, "kind": "unannounced",
                           "ref": "demo-inspection-%d-1" % year},
            "problems": [
                {"title": t, "village_id": v, "unit_id": u, "responsible": [leader]}
                for (v, u, leader), t in zip(pairs, ["村务公开栏内容未及时更新",
                                                     "帮扶台账记录不完整",
                                                     "困难群众走访记录缺少图片",
                                                     "民生诉求答复超期"])]})
        for p in res["problems"][:2]:
            for tid in p["task_ids"]:
                task = TASKS.call("task.get", {"id": tid})
                owner = "%s:%d" % (task["owner"]["kind"], task["owner"]["id"])
                TASKS.call("task.start", {"id": tid}, actor=owner)
                TASKS.call("task.submit", {"id": tid, "evidence": {
                    "text": "已整改, 附整改前后照片", "attachments": [
                        {"name": "整改后.jpg", "content_type": "image/jpeg", "size": 204800,
                         "sha256": "0" * 64}]}}, actor=owner)
                TASKS.call("task.verify", {"id": tid, "note": "复查合格, 销号"}, actor=VERIFIER)
    except RpcError as e:
        if e.code != "already_exists":
            raise

    # ---- a household's help request
    hh_list = list_all(REG, "household.list", {"village_id": villages[0]["id"]})
    if hh_list:
        hh = REG.call("household.get", {"id": hh_list[0]["id"]})
        if hh.get("responsible_cadre_ids"):
            TASKS.ensure("help_request.create", {
                "ref": "demo-help-%d" % hh["id"], "household_id": hh["id"], "channel": "wechat",
                "text": "家中老人住院, 申请临时救助"})

    monitored = demo_monitoring(villages)
    demo_assessment(year)

    print("tasks demo: %d monitoring cases, %d plans, %d schedules, %d indicators on %d villages (%d values "
          "reported now), timeline %d" % (monitored, plans, 2 * len(helper_units), len(INDICATORS),
                                          len(villages), reported, year))


FUNDS_KEY = "demo-tasks-"


def demo_assessment(year):
    """Seed 002: the year's assessment ranks the villages (exits counted); the
    district pays a special reward (人居环境整治专项奖励) to the best three from a
    reward budget, and the bottom three are named in a notice (通报) with a
    rectification problem for their helper unit. The assessment is run once a
    year (a second load finds it); the reward carries request keys and the
    problems refs, so nothing is done twice."""
    try:
        res = TASKS.call("assessment.get", {"year": year})
    except RpcError as e:
        if e.code != "not_found":
            raise
        res = TASKS.call("assessment.run", {"year": year})
    top, bottom = res["villages"]["top3"], res["villages"]["bottom3"]
    if not top:
        return
    funds = Client("funds")

    def fcall(method, params, key):
        return funds.call(method, dict(params, request_key=FUNDS_KEY + key))
    src = next((x for x in list_all(funds, "source.list", {})
                if x["name"] == "东丽区对口帮扶专项资金"), None)
    if src:
        yuan = 100
        fcall("source.receive", {"source_id": src["id"], "amount_fen": 3_000_000 * yuan,
                                 "year": year, "note": "人居环境整治专项奖励资金"},
              "reward-receive-%d" % year)
        budget = fcall("budget.create", {"recipient": "program:人居环境整治奖励", "year": year,
                                         "funding": [{"source_id": src["id"],
                                                      "amount_fen": 3_000_000 * yuan}]},
                       "reward-budget-%d" % year)
        fcall("disbursement.batch", {
            "batch_key": "demo-reward-%d" % year, "budget_id": budget["id"],
            "purpose": "%d年度考核排名前三位村 专项奖励" % year,
            "lines": [{"line_key": "village-%d" % v, "recipient": "village:%d" % v,
                       "amount_fen": amount * yuan, "note": "第%d名" % (k + 1)}
                      for k, (v, amount) in enumerate(zip(top, (1_000_000, 600_000,
                                                                 400_000)))]},
            "reward-batch-%d" % year)
    for k, v in enumerate(bottom):
        helpers = [h["helper_id"] for h in REG.call("village.get", {"id": v}).get("helpers", [])
                   if h.get("kind") == "unit_village"]
        if not helpers:
            continue
        TASKS.ensure("problem.open", {
            "ref": "demo-assessment-%d-bottom-%d" % (year, v), "ledger": "rectification",
            "title": "%d年度考核排名后三位 (倒数第%d): 通报批评, 限期整改" % (year, k + 1),
            "village_id": v, "unit_id": helpers[0],
            "tasks": [{"title": "制定整改方案并报送整改情况", "owner": {"kind": "unit",
                                                            "id": helpers[0]}}]})


def demo_monitoring(villages):
    """防返贫监测: two households that left poverty are flagged again, one for a
    large hospital bill (open, its 15-day task running), one for a lost job
    (assisted: task done and verified, case closed). A household that already
    has a case is left alone, so a second run changes nothing."""
    picked = []
    for status in ("exited", "active"):
        for v in villages:
            for h in list_all(REG, "household.list", {"village_id": v["id"], "status": status}):
                hh = REG.call("household.get", {"id": h["id"]})
                if hh.get("responsible_cadre_ids") and len(picked) < 2:
                    picked.append(hh)
        if len(picked) == 2:
            break
    done = 0
    for k, hh in enumerate(picked):
        if TASKS.call("monitor.list", {"household_id": hh["id"]})["items"]:
            done += 1
            continue
        if k == 0:
            TASKS.call("monitor.report", {"household_id": hh["id"], "cause": "medical_spending",
                                          "spending_fen": 3_800_000,
                                          "note": "户主住院手术, 自付医疗费3.8万元"})
        else:
            r = TASKS.call("monitor.report", {"household_id": hh["id"], "cause": "job_lost",
                                              "note": "家中主要劳动力务工企业停产, 失去工作"})
            owner = "cadre:%d" % hh["responsible_cadre_ids"][0]
            TASKS.call("task.start", {"id": r["task_id"]}, actor=owner)
            TASKS.call("task.submit", {"id": r["task_id"], "evidence": {
                "text": "已推荐到区内企业就业, 签订劳动合同"}}, actor=owner)
            TASKS.call("task.verify", {"id": r["task_id"], "note": "入户核实已就业"},
                       actor=VERIFIER)
            TASKS.call("monitor.close", {"id": r["case_id"], "outcome": "assisted",
                                         "note": "稳定就业, 月收入3200元, 风险消除"})
        done += 1
    return done


if __name__ == "__main__":
    try:
        main()
    except RpcError as e:
        sys.exit("tasks demo failed: %s" % e)
