#!/usr/bin/env python3
"""Demo data for the registry: the Dongli round of seed 000 as it stands.

Dongli district (Tianjin), 2017-2020: 10 difficult villages in 6 streets; four
district units each helping two villages with a team of three stationed cadres
(one division-level party-member leader, two section-level members), the city
party office's team for the other two villages, the two enterprises the city
assigned to co-assist, and generated low-income households, each with a
responsible cadre within the per-rank caps. Codes below the district are
illustrative 12-digit codes (the district's own, 120110, is real); people's
names and ID numbers are generated, never the seed's. Idempotent: a second run
finds everything in place and changes nothing."""
import csv
import os
import random
import sys

from common import Client, RpcError

REG = Client("registry")
START = "2017-08-01"

PROVINCE = ("120000000000", "天津市", "province", None)
DISTRICT = ("120110000000", "东丽区", "county", "120000000000")
STREETS = {
    "无瑕街道": "120110004000",
    "万新街道": "120110003000",
    "新立街道": "120110005000",
    "金钟街道": "120110007000",
    "华明街道": "120110006000",
    "金桥街道": "120110009000",
}
# village, street, code, reasons (seed 000: weak branch, urbanisation, security, infrastructure)
VILLAGES = [
    ("小北村", "无瑕街道", "120110004201", ["治安形势比较复杂"]),
    ("官房村", "无瑕街道", "120110004202", ["城市化建设任务比较重"]),
    ("增兴窑村", "万新街道", "120110003201", ["城市化建设任务比较重"]),
    ("稻地村", "新立街道", "120110005201", ["党组织软弱涣散"]),
    ("务本二村", "新立街道", "120110005202", ["城市化建设任务比较重"]),
    ("窑上村", "新立街道", "120110005203", ["基础设施建设相对滞后"]),
    ("欢坨村", "金钟街道", "120110007201", ["治安形势比较复杂"]),
    ("新中村", "金钟街道", "120110007202", ["基础设施建设相对滞后"]),
    ("朱庄村", "华明街道", "120110006201", ["城市化建设任务比较重"]),
    ("穆家台村", "金桥街道", "120110009201", ["党组织软弱涣散"]),
]
# helper unit, kind, the villages the seed assigns to it
UNITS = [
    ("区建委", "department", ["务本二村", "增兴窑村"]),
    ("区水务局", "department", ["新中村", "朱庄村"]),
    ("滨丽公司", "enterprise", ["官房村", "窑上村"]),
    ("公安东丽分局", "department", ["欢坨村", "小北村"]),
    ("市委办公厅", "party_office", ["稻地村", "穆家台村"]),
]
# assigned by the city to co-assist the other eight villages; the seed names
# no village for either, so they are registered without pairings
CO_ASSIST = [("天津市建城基业集团", "enterprise"), ("天津市精美伟业集团", "enterprise")]

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国春梅海燕文志红玉兰"
CATEGORIES = ["low_income", "dibao", "left_behind_elderly", "disabled", "serious_illness",
              "extreme_poverty", "left_behind_child"]
CAUSES = ["illness", "disability", "lack_of_labour", "education", "lack_of_skills"]
ROUTES = ["employment", "industry", "safety_net"]
HOUSEHOLDS_PER_VILLAGE = 8

_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def make_id(rng, region6="120110"):
    y = rng.randint(1940, 2010)
    m = rng.randint(1, 12)
    d = rng.randint(1, 28)
    first17 = "%s%04d%02d%02d%03d" % (region6, y, m, d, rng.randint(0, 999))
    return first17 + "10X98765432"[sum(int(a) * w for a, w in zip(first17, _W)) % 11]


def name(rng):
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))


def list_all(method, params):
    items, cursor = [], None
    while True:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        r = REG.call(method, p)
        items += r["items"]
        cursor = r.get("next_cursor")
        if not cursor:
            return items


def find(items, **kv):
    for it in items:
        if all(it.get(k) == v for k, v in kv.items()):
            return it
    return None


def ensure_unit(uname, kind, region_code=DISTRICT[0]):
    r = REG.ensure("unit.create", {"name": uname, "kind": kind, "region_code": region_code})
    if r:
        return r["id"]
    return find(list_all("unit.list", {}), name=uname)["id"]


def ensure_cadre(unit_id, cname, rank, party=True):
    found = find(list_all("cadre.list", {"unit_id": unit_id}), name=cname)
    if found:
        return found["id"]
    return REG.call("cadre.create", {"name": cname, "rank": rank, "unit_id": unit_id,
                                     "party_member": party})["id"]


def ensure_pairing(kind, helper_id, target_id):
    REG.ensure("pairing.create", {"kind": kind, "helper_id": helper_id, "target_id": target_id,
                                  "starts_on": START})


def main():
    rng = random.Random(2017)  # deterministic: same people every run
    for code, nm, level, parent in (PROVINCE, DISTRICT):
        REG.call("region.put", {"code": code, "name": nm, "level": level, "parent_code": parent})
    for nm, code in STREETS.items():
        REG.call("region.put", {"code": code, "name": nm, "level": "township",
                                "parent_code": DISTRICT[0]})

    existing = list_all("village.list", {"region_code": DISTRICT[0]})
    village_ids = {}
    for vname, street, code, reasons in VILLAGES:
        found = find(existing, code=code)
        if found:
            village_ids[vname] = found["id"]
        else:
            village_ids[vname] = REG.call("village.create", {
                "region_code": STREETS[street], "name": vname, "category": "difficult",
                "code": code, "reasons": reasons})["id"]

    street_units = {}
    for street, code in STREETS.items():
        street_units[street] = ensure_unit(street + "办事处", "street", code)
    for uname, kind in CO_ASSIST:
        ensure_unit(uname, kind)

    cadres_by_village = {}  # village -> [(cadre_id, cap)]
    for uname, kind, villages in UNITS:
        unit_id = ensure_unit(uname, kind)
        for v in villages:
            ensure_pairing("unit_village", unit_id, village_ids[v])
        leader_rank = "division"
        leader = ensure_cadre(unit_id, "%s驻村工作组组长" % uname, leader_rank)
        members = [ensure_cadre(unit_id, "%s驻村干部%s" % (uname, k), "section") for k in "甲乙"]
        team_name = "%s驻村工作组" % uname
        r = REG.ensure("team.create", {"name": team_name, "unit_id": unit_id, "leader_id": leader,
                                       "member_ids": members,
                                       "village_ids": [village_ids[v] for v in villages]})
        if r is None:
            team = find(list_all("team.list", {}), name=team_name)
            for v in villages:
                ensure_pairing("team_village", team["id"], village_ids[v])
        # the team's three cadres take households in their two villages (caps 3 each)
        pool = [(leader, 3), (members[0], 3), (members[1], 3)]
        for i, v in enumerate(villages):
            cadres_by_village[v] = [pool[i]] + ([pool[2]] if i == 0 else [])
        cadres_by_village[villages[1]].append(pool[1])

    # village cadres (no cap by default) from each street office cover the rest
    for vname, street, code, _ in VILLAGES:
        vc = ensure_cadre(street_units[street], "%s村官" % vname, "village")
        cadres_by_village.setdefault(vname, []).append((vc, 0))

    total = 0
    for vname, street, code, _ in VILLAGES:
        vid = village_ids[vname]
        have = list_all("household.list", {"village_id": vid})
        if len(have) < HOUSEHOLDS_PER_VILLAGE:
            for h in range(HOUSEHOLDS_PER_VILLAGE):
                hh_rng = random.Random("%s-%d" % (code, h))
                members = [{"name": name(hh_rng), "id_number": make_id(hh_rng), "relation": "head"}]
                for rel in hh_rng.sample(["spouse", "child", "parent"], hh_rng.randint(0, 2)):
                    members.append({"name": name(hh_rng), "id_number": make_id(hh_rng),
                                    "relation": rel})
                REG.ensure("household.create", {
                    "village_id": vid,
                    "categories": hh_rng.sample(CATEGORIES, hh_rng.randint(1, 2)),
                    "causes": {"main": hh_rng.choice(CAUSES), "secondary": []},
                    "route": hh_rng.choice(ROUTES),
                    "income_fen": hh_rng.randint(300000, 1500000),
                    "members": members})
            have = list_all("household.list", {"village_id": vid})
        # a responsible cadre for every household; the registry enforces the
        # per-rank caps, so a refusal (failed_precondition) means "next cadre"
        pool = cadres_by_village[vname]
        for hh in sorted(have, key=lambda x: x["id"]):
            active = REG.call("pairing.list", {"kind": "cadre_household", "target_id": hh["id"],
                                               "active": True})["items"]
            if active:
                continue
            for cadre_id, _cap in pool:
                try:
                    REG.call("pairing.create", {"kind": "cadre_household", "helper_id": cadre_id,
                                                "target_id": hh["id"], "starts_on": START})
                    break
                except RpcError as e:
                    if e.code != "failed_precondition":
                        raise
        total += len(have)
    exited = demo_exits(village_ids)
    print("registry demo: %d villages, %d units, %d households (%d exited by the procedure)" %
          (len(VILLAGES), len(UNITS) + len(CO_ASSIST) + len(STREETS), total, exited))
    demo_bulk(village_ids)


# the example import files (examples/import, docs/cli.md) loaded as an operator
# would with `bangfu import`: the CSV's Chinese titles map to the rows' keys
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                        "import")
TITLES = {"单位名称": "name", "类型": "kind", "区划代码": "region_code", "姓名": "name",
          "职级": "rank", "单位": "unit", "党员": "party_member", "电话": "phone",
          "队名": "name", "队长": "leader", "队员": "members", "村": "villages",
          "帮扶方": "helper", "帮扶人单位": "helper_unit", "帮扶对象": "target",
          "开始日期": "starts_on", "结束日期": "ends_on"}


def _rows(kind):
    with open(os.path.join(EXAMPLES, kind + ".csv"), encoding="utf-8") as f:
        return [{TITLES[k]: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def demo_bulk(village_ids):
    """units, cadres, teams, pairings from the example files; the pairings'
    households 1-3 stand for the first three active households of 稻地村. A
    second run finds every row existing (the imports are idempotent)."""
    active = [h["id"] for h in sorted(list_all("household.list", {"village_id":
                                                                  village_ids["稻地村"]}),
                                      key=lambda x: x["id"]) if h["status"] == "active"]
    said = []
    for kind, method in (("units", "unit.import"), ("cadres", "cadre.import"),
                         ("teams", "team.import"), ("pairings", "pairing.import")):
        rows = _rows(kind)
        if kind == "pairings":
            for row in rows:
                if row["kind"].endswith("_household"):
                    row["target"] = str(active[int(row["target"]) - 1])
        res = REG.call(method, {"rows": rows})
        said.append("%s %d new/%d existing/%d refused" % (kind, res["accepted"], res["existing"],
                                                          len(res["rejected"])))
    fig = REG.call("region.figures", {"region_code": DISTRICT[0], "level": "township"})
    print("registry demo: bulk imports from examples/import: %s (the refused pairing is a "
          "general cadre's third household: the cap); region.figures: %d households, %d "
          "persons in %d streets" % ("; ".join(said), fig["households"], fig["persons"],
                                     len(fig["groups"])))


# households that left poverty in 2019 by the exit procedure (docs/registry.md
# "Exit"): per village, up to this many whose income per person clears the line
EXITS_PER_VILLAGE = {"小北村": 2, "稻地村": 1, "朱庄村": 1}
EXIT_LINE_FEN = 400000  # registry.exit_income_line_fen's default
ALL_ASSURED = ["food", "clothing", "education", "medical", "housing", "water"]


def demo_exits(village_ids):
    """Review (the village's cadre), township verification with a 7-day notice
    (the street office), county approval (the district's approver): three
    different people, as the procedure wants. Idempotent: households with a
    case already are left alone."""
    done = 0
    for vname, want in EXITS_PER_VILLAGE.items():
        vid = village_ids[vname]
        cases = {c["household_id"]: c for c in list_all("exit.list", {"kind": "household"})}
        picked = 0
        for hh in sorted(list_all("household.list", {"village_id": vid}), key=lambda x: x["id"]):
            if picked >= want:
                break
            if hh["id"] in cases:
                picked += 1
                done += cases[hh["id"]]["state"] == "exited"
                continue
            persons = len(REG.call("household.get", {"id": hh["id"]})["members"])
            if hh["status"] != "active" or hh["income_fen"] < EXIT_LINE_FEN * persons:
                continue
            case = REG.call("household.exit_review", {
                "id": hh["id"], "year": 2019, "review_date": "2019-10-12", "votes_for": 27,
                "votes_against": 1, "note": "%s村民代表会议民主评议,同意退出" % vname,
                "assured": ALL_ASSURED, "evidence": ["%s民主评议会议记录" % vname]},
                actor="operator.village-review")["case_id"]
            REG.call("household.exit_verify", {
                "case_id": case, "notice_start": "2019-10-20",
                "note": "街道入户核实:收入稳定超过标准,两不愁三保障达标",
                "evidence": ["入户核实表"]}, actor="operator.street")
            REG.call("household.exit_approve", {
                "case_id": case, "approval_ref": "东丽区扶贫办〔2019〕38号"},
                actor="approver.district")
            picked += 1
            done += 1
    return done


if __name__ == "__main__":
    try:
        main()
    except RpcError as e:
        sys.exit("registry demo failed: %s" % e)
