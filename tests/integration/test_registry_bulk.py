"""Bulk operations (docs/registry.md "Bulk imports"): unit/cadre/team/
pairing.import by names and codes, with per-row rejects, the per-rank caps
applied row by row, and re-runs that create nothing twice; village.resolve
(names, codes, REGION/NAME, ambiguous names refused); region.figures against
what was imported; household.import naming villages by name or code and
saying "already imported" on a re-run; funds allocations weighted by the
registry's figures (weights_from)."""
import json
import os
import subprocess

import bftest
from bftest import Stack, check, eq, expect_error

S = None
G = {}
START = None
OTHER = "450199000000"  # a valid county code no test registers


def setup_module():
    global S, START
    S = Stack(["registry", "funds"]).__enter__()
    START = bftest.stream_last_id(bftest.redis_client())
    cl = c()
    town = bftest.fresh_town(cl)
    county = town[:6] + "000000"
    town2 = town[:6] + "002000"
    cl.call("region.put", {"code": town2, "name": "二镇" + bftest.uid()[:4], "level": "township",
                           "parent_code": county})
    G.update(town=town, town2=town2, county=county, tag=bftest.uid()[:6])
    # the same village name in two townships; one village with a code
    G["twin"] = "同名村" + G["tag"]
    G["twin1"] = cl.call("village.create", {"region_code": town, "name": G["twin"],
                                            "category": "poor"})["id"]
    G["twin2"] = cl.call("village.create", {"region_code": town2, "name": G["twin"],
                                            "category": "poor"})["id"]
    G["vcode"] = town[:9] + "201"
    G["coded"] = cl.call("village.create", {"region_code": town, "name": "有码村" + G["tag"],
                                            "category": "weak", "code": G["vcode"]})["id"]


def teardown_module():
    S.__exit__(None, None, None)


def c():
    return S.client("registry")


def members(n, region=None):
    region = region or G["town"][:6]
    return [{"name": "人" + bftest.uid()[:4], "id_number": bftest.fresh_id(region),
             "relation": "head" if i == 0 else "child"} for i in range(n)]


def hh_row(village, n=2, cats=("dibao",), **kw):
    row = {"categories": list(cats), "causes": {"main": "illness"}, "route": "employment",
           "income_fen": 500000, "members": members(n)}
    if isinstance(village, int):
        row["village_id"] = village
    else:
        row["village"] = village
    row.update(kw)
    return row


def rejects(res):
    return {r["row"]: (r["field"], r["code"], r["message"]) for r in res["rejected"]}


# ---------------------------------------------------------------- village.resolve

def test_resolve_by_name_code_and_region():
    cl = c()
    eq(cl.call("village.resolve", {"ref": "有码村" + G["tag"]})["id"], G["coded"])
    got = cl.call("village.resolve", {"ref": G["vcode"]})
    eq(got["id"], G["coded"])
    eq(got["code"], G["vcode"])
    eq(cl.call("village.resolve", {"ref": G["town2"] + "/" + G["twin"]})["id"], G["twin2"])
    eq(cl.call("village.resolve", {"ref": G["town"] + "/" + G["twin"]})["id"], G["twin1"])
    eq(cl.call("village.resolve", {"ref": G["town"] + "/" + G["vcode"]})["id"], G["coded"])


def test_resolve_ambiguous_and_missing():
    cl = c()
    e = cl.err("village.resolve", {"ref": G["twin"]})
    eq(e["code"], "conflict")
    eq(e["field"], "ref")
    m = e["message"]
    check("ambiguous" in m and "id %d" % G["twin1"] in m and "id %d" % G["twin2"] in m,
          "the ambiguity names both candidates: %s" % m)
    expect_error(cl, "village.resolve", {"ref": "没有这个村" + G["tag"]}, "not_found", "ref")
    expect_error(cl, "village.resolve", {"ref": G["town"][:9] + "999"}, "not_found", "ref")
    expect_error(cl, "village.resolve", {"ref": "/x"}, "invalid_argument", "ref")
    # a caller bound to another county does not see these villages
    other = {"roles": ["county_operator"], "region": OTHER}
    expect_error(cl, "village.resolve", {"ref": G["vcode"]}, "not_found", "ref", auth=other)


# ---------------------------------------------------------------- units, cadres

def test_unit_import_rejects_and_rerun():
    cl = c()
    t = G["tag"]
    rows = [{"name": "甲单位" + t, "kind": "department", "region_code": G["county"]},
            {"name": "乙单位" + t, "kind": "enterprise"},
            {"name": "", "kind": "department"},
            {"name": "丙单位" + t, "kind": "spaceship"},
            {"name": "丁单位" + t, "kind": "department", "region_code": OTHER},
            {"name": "爱心协会" + t, "kind": "social"}]
    res = cl.call("unit.import", {"rows": rows})
    eq(res["accepted"], 3)
    eq(res["existing"], 0)
    rj = rejects(res)
    eq(sorted(rj), [2, 3, 4])
    eq(rj[2][:2], ("name", "invalid_argument"))
    eq(rj[3][:2], ("kind", "invalid_argument"))
    eq(rj[4][:2], ("region_code", "not_found"))
    eq(res["ids"][2], None)
    G["unit_a"], G["unit_b"], G["social"] = res["ids"][0], res["ids"][1], res["ids"][5]
    eq(cl.call("unit.get", {"id": G["unit_a"]})["region_code"], G["county"])
    # a re-run creates nothing; the same ids come back; a kind mismatch is named
    rows[1] = {"name": "乙单位" + t, "kind": "street"}
    again = cl.call("unit.import", {"rows": rows})
    eq(again["accepted"], 0)
    eq(again["existing"], 2)
    eq(again["existing_rows"], [0, 5])
    eq(again["ids"][0], G["unit_a"])
    eq(rejects(again)[1][:2], ("kind", "already_exists"))
    eq(cl.call("unit.list", {"limit": 1000})["items"].__len__() > 0, True)


def test_cadre_import_rejects_and_rerun():
    cl = c()
    t = G["tag"]
    ua, ub = "甲单位" + t, "乙单位" + t
    rows = [{"name": "张组长", "rank": "section", "unit": ua, "party_member": "是"},
            {"name": "李干部", "rank": "general", "unit": ua, "party_member": "no",
             "phone": "13800138000"},
            {"name": "王干部", "rank": "general", "unit": ua, "party_member": False},
            {"name": "赵干部", "rank": "general", "unit": "无此单位" + t, "party_member": "yes"},
            {"name": "钱干部", "rank": "general", "unit": ub, "party_member": "maybe"},
            {"name": "孙干部", "rank": "general", "unit": ub, "party_member": "1",
             "phone": "12345"},
            {"name": "周干部", "rank": "general", "unit": ub, "party_member": "true"}]
    res = cl.call("cadre.import", {"rows": rows})
    eq(res["accepted"], 4)
    rj = rejects(res)
    eq(rj[3][:2], ("unit", "not_found"))
    eq(rj[4][:2], ("party_member", "invalid_argument"))
    eq(rj[5][:2], ("phone", "invalid_argument"))
    G["leader"], G["li"], G["wang"], G["zhou"] = (res["ids"][0], res["ids"][1], res["ids"][2],
                                                  res["ids"][6])
    got = cl.call("cadre.get", {"id": G["li"]})
    eq((got["name"], got["rank"], got["unit_id"], got["party_member"]),
       ("李干部", "general", G["unit_a"], False))
    eq(cl.call("cadre.get", {"id": G["leader"]})["party_member"], True)
    again = cl.call("cadre.import", {"rows": rows})
    eq(again["accepted"], 0)
    eq(again["existing"], 4)
    eq([again["ids"][i] for i in (0, 1, 2, 6)], [G["leader"], G["li"], G["wang"], G["zhou"]])
    eq(cl.call("cadre.list", {"unit_id": G["unit_a"], "limit": 100})["items"].__len__(), 3)


# ---------------------------------------------------------------- teams

def test_team_import():
    cl = c()
    t = G["tag"]
    ua = "甲单位" + t
    rows = [{"name": "一队" + t, "unit": ua, "leader": "张组长", "members": "李干部；王干部",
             "villages": G["town"] + "/" + G["twin"] + ";" + G["vcode"]},
            {"name": "二队" + t, "unit": ua, "leader": "李干部", "members": "", "villages": ""},
            {"name": "三队" + t, "unit": ua, "leader": "张组长", "villages": G["twin"]},
            {"name": "四队" + t, "unit": ua, "leader": "张组长",
             "members": ["乙单位" + t + "/周干部", "张组长"]},
            {"name": "五队" + t, "unit": ua, "leader": "无此人"}]
    res = cl.call("team.import", {"rows": rows})
    eq(res["accepted"], 1, res)
    rj = rejects(res)
    eq(rj[1][:2], ("leader", "failed_precondition"))
    eq(rj[2][:2], ("villages[0]", "conflict"))
    eq(rj[3][:2], ("members[1]", "invalid_argument"))
    eq(rj[4][:2], ("leader", "not_found"))
    team = cl.call("team.get", {"id": res["ids"][0]})
    eq(team["leader_id"], G["leader"])
    eq(sorted(team["member_ids"]), sorted([G["li"], G["wang"]]))
    eq(sorted(team["village_ids"]), sorted([G["twin1"], G["coded"]]))
    G["team"] = res["ids"][0]
    again = cl.call("team.import", {"rows": rows[:1]})
    eq((again["accepted"], again["existing"], again["ids"]), (0, 1, [G["team"]]))
    eq(len(cl.call("team.get", {"id": G["team"]})["village_ids"]), 2)


# ---------------------------------------------------------------- pairings

def test_pairing_import_caps_row_by_row_and_rerun():
    cl = c()
    t = G["tag"]
    v = G["coded"]
    heads = []
    hids = []
    for _ in range(4):
        m = members(2)
        hids.append(cl.call("household.create", {"village_id": v, "categories": ["dibao"],
                                                 "causes": {"main": "illness"},
                                                 "route": "employment", "income_fen": 1,
                                                 "members": m})["id"])
        heads.append(m[0]["id_number"])
    G["pair_hids"] = hids
    ua, ub = "甲单位" + t, "乙单位" + t
    # 李干部 is general: cap 2 (registry.cap_general default)
    rows = [{"kind": "cadre_household", "helper_unit": ua, "helper": "李干部", "target": heads[0]},
            {"kind": "cadre_household", "helper": ua + "/李干部", "target": str(hids[1])},
            {"kind": "cadre_household", "helper_unit": ua, "helper": "李干部", "target": heads[2],
             "starts_on": "2024-01-01"},
            {"kind": "cadre_household", "helper": "李干部", "target": heads[3]},
            {"kind": "unit_village", "helper": ub, "target": G["vcode"], "starts_on": "2024-03-01",
             "ends_on": "2025-12-31"},
            {"kind": "unit_village", "helper": ub, "target": G["twin"]},
            {"kind": "team_village", "helper": "一队" + t, "target": G["town2"] + "/" + G["twin"]},
            {"kind": "helper_household", "helper": ub, "target": heads[3]},
            {"kind": "helper_household", "helper": "爱心协会" + t, "target": heads[3]},
            {"kind": "district_county", "helper": ua, "target": G["county"]},
            {"kind": "cadre_household", "helper_unit": ua, "helper": "王干部",
             "target": heads[0][:17] + ("0" if heads[0][17] != "0" else "1")},
            {"kind": "cadre_household", "helper_unit": ua, "helper": "王干部", "target": heads[2],
             "starts_on": "2024-02-30"}]
    res = cl.call("pairing.import", {"rows": rows})
    rj = rejects(res)
    eq(sorted(rj), [2, 3, 5, 7, 10, 11], rj)
    eq(rj[2][:2], ("helper", "failed_precondition"))
    check("cap" in rj[2][2], rj[2][2])
    eq(rj[3][:2], ("helper_unit", "invalid_argument"))
    eq(rj[5][:2], ("target", "conflict"))
    eq(rj[7][:2], ("helper", "not_found"))
    eq(rj[10][:2], ("target", "invalid_argument"))
    eq(rj[11][:2], ("starts_on", "invalid_argument"))
    for r in res["rejected"]:
        for h in heads:
            check(h not in r["message"], "no ID number in a reject message")
    eq(res["accepted"], 6)
    li = cl.call("cadre.get", {"id": G["li"]})
    eq(li["households"], 2)
    p = cl.call("pairing.get", {"id": res["ids"][4]})
    eq((p["kind"], p["helper_id"], p["target_id"], p["starts_on"], p["ends_on"]),
       ("unit_village", G["unit_b"], G["coded"], "2024-03-01", "2025-12-31"))
    eq(cl.call("pairing.get", {"id": res["ids"][9]})["target_code"], G["county"])
    eq(cl.call("pairing.get", {"id": res["ids"][6]})["target_id"], G["twin2"])
    # a re-run: the same pairings are existing, the cap still refuses row 2
    again = cl.call("pairing.import", {"rows": rows})
    eq(again["accepted"], 0)
    eq(again["existing"], 6)
    eq([again["ids"][i] for i in again["existing_rows"]],
       [res["ids"][i] for i in again["existing_rows"]])
    eq(rejects(again)[2][:2], ("helper", "failed_precondition"))
    eq(cl.call("cadre.get", {"id": G["li"]})["households"], 2)
    # after one ends, the capped row goes through
    cl.call("pairing.end", {"id": res["ids"][0], "reason": "调整", "approval_ref": "组发[2024]1号"})
    third = cl.call("pairing.import", {"rows": rows[2:3]})
    eq(third["accepted"], 1, third)
    # every accepted pairing emitted pairing.created
    r = bftest.redis_client()
    want = {"pairing/%d" % i for i in res["ids"] if i} | {"pairing/%d" % third["ids"][0]}
    bftest.wait_for(lambda: want <= {e["subject"] for _, e in bftest.stream_events(r, START)
                                     if e["type"] == "bangfu.registry.pairing.created"},
                    timeout=20, msg="pairing.created for every imported pairing")


def test_import_limits_and_roles():
    cl = c()
    expect_error(cl, "unit.import", {"rows": [{"name": "x", "kind": "social"}] * 1001},
                 "invalid_argument", "rows")
    res = cl.call("unit.import", {"rows": [5, {"name": "y" + G["tag"], "kind": "social",
                                                "extra": 1}]})
    eq(res["accepted"], 0)
    eq([r["code"] for r in res["rejected"]], ["invalid_argument", "invalid_argument"])
    expect_error(cl, "pairing.import", {"rows": []}, "permission_denied",
                 auth={"roles": ["auditor"]})


# ---------------------------------------------------------------- households

def test_household_import_by_village_name_and_reimport():
    cl = c()
    rows = [hh_row(G["vcode"]), hh_row(G["town2"] + "/" + G["twin"]), hh_row(G["twin"]),
            hh_row("无此村" + G["tag"]), hh_row(G["coded"]),
            dict(hh_row(G["coded"]), village=G["vcode"]),
            hh_row(G["twin"]), hh_row(G["vcode"])]  # names looked up once per call
    res = cl.call("household.import", {"rows": rows})
    rj = rejects(res)
    eq(sorted(rj), [2, 3, 5, 6])
    eq(rj[6][:2], ("village", "conflict"))
    eq(cl.call("household.get", {"id": res["ids"][7]})["village_id"], G["coded"])
    eq(rj[2][:2], ("village", "conflict"))
    eq(rj[3][:2], ("village", "not_found"))
    eq(rj[5][:2], ("village", "invalid_argument"))
    eq(cl.call("household.get", {"id": res["ids"][0]})["village_id"], G["coded"])
    eq(cl.call("household.get", {"id": res["ids"][1]})["village_id"], G["twin2"])
    again = cl.call("household.import", {"rows": rows[:2] + [rows[4]]})
    eq(again["accepted"], 0)
    rj = rejects(again)
    for i, hid in ((0, res["ids"][0]), (1, res["ids"][1]), (2, res["ids"][4])):
        eq(rj[i][1], "already_exists")
        check(rj[i][2].startswith("already imported") and str(hid) in rj[i][2], rj[i][2])
    # a person moved to a new household is not "already imported"
    moved = hh_row(G["coded"])
    moved["members"].append(dict(rows[0]["members"][1], relation="child"))
    msg = rejects(cl.call("household.import", {"rows": [moved]}))[0]
    eq(msg[:2], ("members[2].id_number", "already_exists"))
    check("another household" in msg[2], msg[2])


# ---------------------------------------------------------------- figures

def test_region_figures_match_import():
    cl = c()
    town = bftest.fresh_town(cl)
    county = town[:6] + "000000"
    town2 = town[:6] + "002000"
    cl.call("region.put", {"code": town2, "name": "乙镇", "level": "township",
                           "parent_code": county})
    va = cl.call("village.create", {"region_code": town, "name": "甲村", "category": "poor"})["id"]
    vb = cl.call("village.create", {"region_code": town2, "name": "乙村",
                                    "category": "poor"})["id"]
    plan = [(va, 3, ["dibao", "disabled"]), (va, 1, ["dibao"]), (va, 2, ["orphan"]),
            (vb, 4, ["low_income", "dibao"]), (vb, 2, ["serious_illness"])]
    rows = []
    for vid, n, cats in plan:
        r = hh_row(vid, n=n, cats=cats)
        r["members"] = members(n, region=town[:6])
        rows.append(r)
    res = cl.call("household.import", {"rows": rows})
    eq(res["accepted"], 5, res)
    # one exits: it no longer counts
    cl.call("household.update", {"id": res["ids"][4], "status": "exited"})
    f = cl.call("region.figures", {"region_code": county})
    eq((f["households"], f["persons"]), (4, 10))
    eq((f["categories"]["dibao"], f["categories"]["disabled"], f["categories"]["orphan"],
        f["categories"]["low_income"], f["categories"]["serious_illness"]), (3, 1, 1, 1, 0))
    eq(len(f["groups"]), 1)
    eq(f["groups"][0]["code"], county)
    by_town = cl.call("region.figures", {"region_code": county, "level": "township"})
    got = {g["code"]: (g["households"], g["persons"], g["categories"]["dibao"], g["name"])
           for g in by_town["groups"]}
    eq(got, {town: (3, 6, 2, "镇"), town2: (1, 4, 1, "乙镇")})
    by_village = cl.call("region.figures", {"region_code": town, "level": "village"})
    eq([(g["village_id"], g["households"], g["persons"]) for g in by_village["groups"]],
       [(va, 3, 6)])
    eq(sum(g["households"] for g in by_town["groups"]), f["households"])
    G.update(fig_county=county, fig_town=town, fig_town2=town2, fig_va=va)
    expect_error(cl, "region.figures", {"region_code": town, "level": "county"},
                 "invalid_argument", "level")
    expect_error(cl, "region.figures", {"region_code": town[:6] + "009000"}, "not_found",
                 "region_code")
    # a caller bound to another county does not see this one
    expect_error(cl, "region.figures", {"region_code": county}, "not_found", "region_code",
                 auth={"roles": ["county_operator"], "region": OTHER})
    # finance staff may read them (and the service role: test_roles)
    eq(cl.call("region.figures", {"region_code": county}, auth={"roles": ["finance"]})
       ["households"], 4)


# ---------------------------------------------------------------- the CLI

BANGFU = os.path.join(bftest.BUILD, "bin", "bangfu")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "import")


def bangfu(*args):
    env = dict(S.env)
    env.pop("BANGFU_ACTOR", None)
    p = subprocess.run([BANGFU] + list(args), env=env, capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write(name, text):
    path = os.path.join(bftest.TMP, "%s-%s.csv" % (name, G["tag"]))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def test_cli_import_org_files():
    t = "C" + G["tag"]
    units = write("units", "单位名称,类型,区划代码\n教育局%s,department,%s\n坏单位%s,nope,\n"
                  % (t, G["county"], t))
    cadres = write("cadres", "姓名,职级,单位,党员,电话\n孙队长,division,教育局%s,是,13800000001\n"
                   "吴干部,general,教育局%s,否,\n周干部,general,无此单位%s,否,\n" % (t, t, t))
    teams = write("teams", "队名,单位,队长,队员,村\n教育局队%s,教育局%s,孙队长,吴干部,%s/%s\n"
                  % (t, t, G["town"], G["twin"]))
    rc, out, err = bangfu("import", "units", units)
    eq(rc, 1, err)
    check("1 created, 0 existing, 1 rejected" in err, err)
    check('3,"类型","invalid_argument"' in err, err)
    rc, out, err = bangfu("import", "units", units)
    check("0 created, 1 existing, 1 rejected" in err, err)
    rc, out, err = bangfu("import", "cadres", cadres)
    eq(rc, 1, err)
    check("2 created" in err and '4,"单位","not_found"' in err, err)
    rc, out, err = bangfu("import", "teams", teams)
    eq(rc, 0, err)
    check("1 created" in err, err)
    team = c().call("team.list", {"limit": 1000})["items"]
    mine = [x for x in team if x["name"] == "教育局队" + t]
    eq(len(mine), 1)
    eq(mine[0]["village_ids"], [G["twin1"]])
    # cap 2 for a general cadre: the third row is refused, named by its line
    hids = G["pair_hids"]
    pairings = write("pairings", "类型,帮扶方,帮扶人单位,帮扶对象\n" + "".join(
        "cadre_household,吴干部,教育局%s,%d\n" % (t, h) for h in hids[:3]))
    rejects = os.path.join(bftest.TMP, "rejects-%s.csv" % G["tag"])
    rc, out, err = bangfu("import", "pairings", pairings, "--rejects", rejects)
    eq(rc, 1, err)
    check("2 created, 0 existing, 1 rejected" in err, err)
    with open(rejects, encoding="utf-8") as f:
        lines = f.read().splitlines()
    eq(lines[0], "line,field,code,message")
    check(lines[1].startswith('4,"帮扶方","failed_precondition"'), lines)
    rc, out, err = bangfu("import", "pairings", pairings, "--rejects", rejects)
    check("0 created, 2 existing, 1 rejected" in err, err)
    # usage
    eq(bangfu("import", "teams", write("bad", "队名,颜色\nx,y\n"))[0], 2)
    eq(bangfu("import", "teams", write("bad2", "队名,单位\nx,y\n"))[0], 2)
    eq(bangfu("import", "pairings", pairings, "--batch", "1001")[0], 2)


def test_cli_examples_parse():
    rc, out, _ = bangfu("import", "pairings", "--help")
    eq(rc, 0)
    check(out.startswith("usage: bangfu import units|cadres|teams|pairings") and "帮扶对象" in out,
          out)
    for kind in ("units", "cadres", "teams", "pairings"):
        rc, out, err = bangfu("import", kind, os.path.join(EXAMPLES, kind + ".csv"), "--dry-run")
        eq(rc, 0, err)
        check("0 rejected (dry run" in err, err)


def test_cli_household_import_by_village_name():
    idn = bftest.fresh_id(G["town"][:6])
    path = write("hh", "户编号,村,类别,主要致贫原因,帮扶路径,年收入（元）,姓名,身份证号,与户主关系\n"
                 "H1,%s/%s,低保,因病,就业,10,甲,%s,户主\n" % (G["town2"], G["twin"], idn))
    rc, out, err = bangfu("import", "households", path, "--json")
    eq(rc, 0, err)
    hid = json.loads(out)["accepted"]
    eq(hid, 1)
    got = c().call("household.list", {"village_id": G["twin2"], "limit": 100})["items"]
    check(len(got) >= 2, got)
    rc, out, err = bangfu("import", "households", path, "--json")
    eq(rc, 1)
    check("already imported" in err, err)
    check(idn not in err and idn not in out, "no ID number printed")


# ---------------------------------------------------------------- funds: weights_from

def test_funds_allocation_weights_from_registry():
    f = S.client("funds")
    k = bftest.uid()
    src = f.call("source.create", {"name": "权重源" + k, "kind": "central", "provider": "区财政局",
                                   "request_key": "s" + k})
    f.call("source.receive", {"source_id": src["id"], "amount_fen": 1_000_000, "year": 2020,
                              "request_key": "r" + k})
    bud = f.call("budget.create", {"recipient": "program:w" + k, "year": 2020,
                                   "funding": [{"source_id": src["id"], "amount_fen": 1_000_000}],
                                   "request_key": "b" + k})
    county, town, town2 = G["fig_county"], G["fig_town"], G["fig_town2"]
    base = {"budget_id": bud["id"], "rule": "weights", "amount_fen": 1000}
    # households by township: 3 and 1 (the exited one does not count)
    p = f.call("allocation.preview", dict(base, weights_from={
        "region_code": county, "level": "township", "measure": "households"}), actor=None)
    eq(p["parts"], [{"recipient": "region:" + town, "weight": 3, "amount_fen": 750},
                    {"recipient": "region:" + town2, "weight": 1, "amount_fen": 250}])
    # persons: 6 and 4
    p = f.call("allocation.preview", dict(base, weights_from={
        "region_code": county, "level": "township", "measure": "persons"}), actor=None)
    eq([x["amount_fen"] for x in p["parts"]], [600, 400])
    # one category, by village: only 甲村 has orphans
    p = f.call("allocation.preview", dict(base, weights_from={
        "region_code": county, "level": "village", "measure": "orphan"}), actor=None)
    eq(p["parts"], [{"recipient": "village:%d" % G["fig_va"], "weight": 1, "amount_fen": 1000}])
    # applied: child budgets per township with those parts
    a = f.call("allocation.apply", dict(base, request_key="a" + k, weights_from={
        "region_code": county, "level": "township", "measure": "households"}))
    eq((a["recipients"], a["transfers"]), (2, 2))
    again = f.call("allocation.apply", dict(base, request_key="a" + k, weights_from={
        "region_code": county, "level": "township", "measure": "households"}))
    eq(again["id"], a["id"])
    bud_now = f.call("budget.get", {"id": bud["id"]}, actor=None)
    eq((bud_now["balance_fen"], bud_now["allocated_fen"], bud_now["children"]),
       (1_000_000 - 1000, 1000, 2))
    # errors
    expect_error(f, "allocation.preview", dict(base, weights_from={
        "region_code": county, "measure": "smiles"}), "invalid_argument", "weights_from.measure",
        actor=None)
    expect_error(f, "allocation.preview", dict(base, weights_from={
        "region_code": county[:4] + "99000000", "measure": "persons"}), "not_found",
        "weights_from", actor=None)
    expect_error(f, "allocation.preview", dict(base, weights_from={
        "region_code": county, "measure": "registered_poor"}), "failed_precondition",
        "weights_from", actor=None)
    expect_error(f, "allocation.preview", dict(base, rule="fixed", weights_from={
        "region_code": county, "measure": "persons"}), "invalid_argument", "weights_from",
        actor=None)
    expect_error(f, "allocation.preview", dict(base, recipients=[
        {"recipient": "village:1", "weight": 1}], weights_from={
        "region_code": county, "measure": "persons"}), "invalid_argument", "recipients",
        actor=None)
    expect_error(f, "allocation.preview", dict(base, weights_from={"region_code": county}),
                 "invalid_argument", "weights_from.measure", actor=None)
