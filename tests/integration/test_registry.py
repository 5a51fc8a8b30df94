"""The registry service (docs/registry.md), against real processes: households
and their members (ID check digit, masking, household.reveal and its record,
duplicates), units, cadres, teams, every pairing rule (caps per rank, the race between
concurrent requests, duplicates, ending with reason and approval, history),
the coverage report, a small import, and for each write its event on the bus
and in the Redis stream, never with a full ID number.

Tests share the database with other files: everything here lives under a
fresh county code and uses ID numbers from that county, so counts are exact.
"""
import datetime
import random
import re
import threading

import msgpack

import bftest
from bftest import (Client, Stack, Subscriber, check, eq, expect_error, TestFailure)

S = None
SUB = None
STREAM_START = None
GEO = {}
_SEQ = [0]

ID_RE = re.compile(rb"[0-9]{17}[0-9Xx]")


def setup_module():
    global S, SUB, STREAM_START
    S = Stack(["registry"]).__enter__()
    STREAM_START = bftest.stream_last_id(bftest.redis_client())
    SUB = Subscriber(S, prefix="bangfu.registry.")
    GEO.update(fresh_county(c()))


def teardown_module():
    if SUB:
        SUB.close()
    S.__exit__(None, None, None)


def c():
    return S.client("registry")


# ---------------------------------------------------------------- helpers

def fresh_county(cl):
    """A county code no other test uses, with its province, city, township."""
    while True:
        prov = random.choice(["13", "14", "15", "21", "22", "23", "41", "42", "43"])
        city = "%s%02d" % (prov, random.randint(1, 99))
        county = "%s%02d" % (city, random.randint(1, 99))
        code = county + "000000"
        try:
            cl.call("region.get", {"code": code})
        except bftest.RpcError as e:
            if e.code == "not_found":
                break
            raise
    cl.call("region.put", {"code": prov + "0" * 10, "name": "省" + prov, "level": "province"})
    cl.call("region.put", {"code": city + "0" * 8, "name": "市" + city, "level": "city",
                           "parent_code": prov + "0" * 10})
    cl.call("region.put", {"code": code, "name": "县" + county, "level": "county",
                           "parent_code": city + "0" * 8})
    towns = []
    for t in (1, 2):
        tcode = "%s%03d000" % (county, t)
        cl.call("region.put", {"code": tcode, "name": "镇%d" % t, "level": "township",
                               "parent_code": code})
        towns.append(tcode)
    return {"county": code, "prefix": county, "towns": towns}


def person_id(n=None, lower=False):
    """A valid ID number from this run's county, unique for each call."""
    if n is None:
        _SEQ[0] += 1
        n = _SEQ[0]
    day = datetime.date(1950, 1, 1) + datetime.timedelta(days=n // 1000)
    first17 = "%s%s%03d" % (GEO["prefix"], day.strftime("%Y%m%d"), n % 1000)
    idn = first17 + bftest.id_check_digit(first17)
    return idn.lower() if lower else idn


def id_with_x():
    while True:
        idn = person_id()
        if idn.endswith("X"):
            return idn


def bad_check(idn):
    d = "0123456789X"
    return idn[:17] + d[(d.index(idn[17]) + 1) % 11]


def village(cl, town=0, category="poor", name=None):
    return cl.call("village.create", {"region_code": GEO["towns"][town],
                                      "name": name or "村" + bftest.uid(),
                                      "category": category})["id"]


def member(relation="other", idn=None, **kw):
    m = {"name": "成员" + bftest.uid()[:4], "id_number": idn or person_id(),
         "relation": relation}
    m.update(kw)
    return m


def household_params(vid, n=3, **kw):
    p = {"village_id": vid, "categories": ["registered_poor", "dibao"],
         "causes": {"main": "illness", "secondary": ["lack_of_labour"]},
         "route": "safety_net", "income_fen": 1234500,
         "members": [member("head")] + [member("child") for _ in range(n - 1)]}
    p.update(kw)
    return p


def household(cl, vid, n=3, **kw):
    return cl.call("household.create", household_params(vid, n, **kw))


def unit(cl, kind="department"):
    return cl.call("unit.create", {"name": "单位" + bftest.uid(), "kind": kind})["id"]


def cadre(cl, unit_id, rank="general", party=True):
    return cl.call("cadre.create", {"name": "干部" + bftest.uid()[:6], "rank": rank,
                                    "unit_id": unit_id, "party_member": party})["id"]


def pair(cl, kind, helper, target, **kw):
    p = {"kind": kind, "helper_id": helper, "target_id": target, "starts_on": "2017-08-01"}
    p.update(kw)
    return cl.call("pairing.create", p)


def wait_event(etype, subject, pred=None, timeout=10):
    """The event of this type and subject, from the bus and from the stream;
    checks both copies are the same event."""
    def match(e):
        return e.get("type") == etype and e.get("subject") == subject and (pred is None or pred(e))

    events = SUB.collect(lambda evs: any(match(e) for _, e in evs), timeout=timeout)
    found = [e for t, e in events if match(e)]
    check(found, "no %s for %s on the bus" % (etype, subject))
    bus = found[-1]
    eq(bus["specversion"], "1.0")
    eq(bus["source"], "bangfu/registry")
    r = bftest.redis_client()
    in_stream = bftest.wait_for(
        lambda: [e for _, e in bftest.stream_events(r, STREAM_START) if e["id"] == bus["id"]],
        msg="event %s not in the Redis stream" % bus["id"])
    eq(in_stream[0], bus, "stream and bus copies")
    return bus


def raw_stream_events():
    r = bftest.redis_client()
    start = "(" + STREAM_START if STREAM_START != "0-0" else "-"
    out = []
    while True:
        batch = r.xrange("bangfu:events", min=start, max="+", count=10000)
        if not batch:
            return out
        out.extend(fields[b"event"] for _, fields in batch)
        start = "(" + batch[-1][0].decode()


def assert_no_id_in(blob, ids=()):
    check(not ID_RE.search(blob), "a full ID number in %r" % blob[:200])
    for idn in ids:
        check(idn.encode() not in blob and idn[:17].encode() not in blob,
              "ID number leaked")


# ---------------------------------------------------------------- methods

def test_methods_are_listed():
    ms = {m["name"]: m for m in c().call("sys.methods", actor=None)}
    for name in ("household.create", "household.get", "household.reveal", "household.update",
                 "household.list",
                 "household.import", "household.add_member", "household.remove_member",
                 "unit.create", "unit.get",
                 "unit.list", "unit.set_contact", "cadre.create", "cadre.get", "cadre.list",
                 "team.create", "team.get", "team.list", "pairing.create", "pairing.end",
                 "pairing.get", "pairing.list", "coverage.report"):
        check(name in ms, name + " missing from sys.methods")
    eq(ms["household.import"]["writes"], True)
    eq(ms["household.get"]["writes"], False)
    eq(ms["household.reveal"]["writes"], True)
    rows = [p for p in ms["household.import"]["params"] if p["name"] == "rows"][0]
    eq(rows["max"], 5000)


# ---------------------------------------------------------------- households

def test_household_create_get_masks_and_emits():
    cl = c()
    vid = village(cl)
    head = person_id()
    params = household_params(vid, 3, address="新立街道1号", phone="13800138000")
    params["members"][0]["id_number"] = head
    params["members"][1].update(gender="female" if int(params["members"][1]["id_number"][16]) % 2 == 0
                                else "male", phone="13900139000", disability=True,
                                labour="weak")
    res = cl.call("household.create", params)
    hid = res["id"]
    eq(res["village_id"], vid)
    eq(res["categories"], ["dibao", "registered_poor"], "categories in code-list order")
    eq(len(res["members"]), 3)
    eq(res["members"][0]["id_number"], head[:6] + "*" * 12)

    h = cl.call("household.get", {"id": hid})
    eq(h["id"], hid)
    eq(h["village_id"], vid)
    eq(h["route"], "safety_net")
    eq(h["income_fen"], 1234500)
    eq(h["causes"], {"main": "illness", "secondary": ["lack_of_labour"]})
    eq(h["address"], "新立街道1号")
    eq(h["status"], "active")
    eq(h["id_numbers_revealed"], False)
    eq(h["responsible_cadre_ids"], [])
    eq(h["members"][0]["relation"], "head")
    for m, given in zip(h["members"], params["members"]):
        idn = given["id_number"]
        eq(m["id_number"], idn[:6] + "*" * 12, "masked: the region only")
        check("birth_date" not in m, "no birth date in an unrevealed member")
        eq(m["gender"], "male" if int(idn[16]) % 2 else "female")
    eq(h["members"][1]["disability"], True)
    eq(h["members"][1]["labour"], "weak")

    ev = wait_event("bangfu.registry.household.created", "household/%d" % hid)
    eq(ev["data"]["id"], hid)
    eq(ev["actor"], "admin")
    eq(len(ev["data"]["members"]), 3)
    assert_no_id_in(msgpack.packb(ev), [g["id_number"] for g in params["members"]])


def test_bad_check_digit_names_the_member_field():
    cl = c()
    vid = village(cl)
    p = household_params(vid, 4)
    wrong = bad_check(p["members"][2]["id_number"])
    p["members"][2]["id_number"] = wrong
    e = expect_error(cl, "household.create", p, "invalid_argument", "members[2].id_number")
    check(wrong not in e["message"] and wrong[:17] not in e["message"],
          "the error message must not contain the number")
    check("check" in e["message"].lower(), "message says what is wrong: " + e["message"])
    # and nothing landed
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.person WHERE id_number = %s",
                (p["members"][0]["id_number"],))
    eq(cur.fetchone()[0], 0)
    conn.close()


def test_other_id_errors():
    cl = c()
    vid = village(cl)
    for bad, why in (("12345", "length"), ("11010519491231002", "length"),
                     ("1101051949123100A2", "char"), ("110105194913310025", "date")):
        p = household_params(vid, 2)
        p["members"][1]["id_number"] = bad
        e = expect_error(cl, "household.create", p, "invalid_argument", "members[1].id_number")
        check(bad not in e["message"], "no number in the message (%s)" % why)


def test_lower_case_x_is_accepted_and_stored_upper_case():
    cl = c()
    vid = village(cl)
    idn = id_with_x()
    p = household_params(vid, 1)
    p["members"][0]["id_number"] = idn.lower()
    hid = cl.call("household.create", p)["id"]
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT id_number FROM registry.person WHERE household_id = %s", (hid,))
    eq(cur.fetchone()[0], idn)
    conn.close()
    h = cl.call("household.reveal", {"id": hid, "reason": "核对身份"})
    eq(h["members"][0]["id_number"], idn)
    # the same person with an upper-case X is the same person
    p2 = household_params(vid, 1)
    p2["members"][0]["id_number"] = idn
    expect_error(cl, "household.create", p2, "already_exists", "members[0].id_number")


def test_household_validation_errors():
    cl = c()
    vid = village(cl)
    p = household_params(vid, 2)
    p["members"][0]["relation"] = "spouse"
    expect_error(cl, "household.create", p, "invalid_argument", "members")
    p = household_params(vid, 3)
    p["members"][2]["relation"] = "head"
    expect_error(cl, "household.create", p, "invalid_argument", "members[2].relation")
    expect_error(cl, "household.create", household_params(vid, 1, members=[]),
                 "invalid_argument", "members")
    expect_error(cl, "household.create", household_params(vid, 1, categories=["rich"]),
                 "invalid_argument", "categories[0]")
    expect_error(cl, "household.create", household_params(vid, 1, categories=[]),
                 "invalid_argument", "categories")
    expect_error(cl, "household.create",
                 household_params(vid, 1, causes={"main": "illness", "secondary": ["illness"]}),
                 "invalid_argument", "causes.secondary[0]")
    expect_error(cl, "household.create", household_params(vid, 1, causes={"secondary": []}),
                 "invalid_argument", "causes.main")
    expect_error(cl, "household.create", household_params(vid, 1, causes={"main": "x"}),
                 "invalid_argument", "causes.main")
    expect_error(cl, "household.create", household_params(vid, 1, route="walk"),
                 "invalid_argument", "route")
    expect_error(cl, "household.create", household_params(vid, 1, income_fen=-1),
                 "invalid_argument", "income_fen")
    expect_error(cl, "household.create", household_params(vid, 1, phone="12345"),
                 "invalid_argument", "phone")
    p = household_params(vid, 2)
    p["members"][1]["colour"] = "red"
    expect_error(cl, "household.create", p, "invalid_argument", "members[1].colour")
    p = household_params(vid, 2)
    p["members"][1]["relation"] = "cousin"
    expect_error(cl, "household.create", p, "invalid_argument", "members[1].relation")
    p = household_params(vid, 2)
    idn = p["members"][1]["id_number"]
    p["members"][1]["gender"] = "female" if int(idn[16]) % 2 else "male"
    expect_error(cl, "household.create", p, "invalid_argument", "members[1].gender")
    p = household_params(vid, 2)
    p["members"][1]["name"] = ""
    expect_error(cl, "household.create", p, "invalid_argument", "members[1].name")
    expect_error(cl, "household.create", household_params(987654321, 1), "not_found",
                 "village_id")
    p = household_params(vid, 1)
    p["members"] = [member("head")] + [member("child") for _ in range(30)]
    expect_error(cl, "household.create", p, "invalid_argument", "members")


def test_duplicate_person_is_already_exists():
    cl = c()
    vid = village(cl)
    first = household_params(vid, 3)
    household(cl, vid, members=first["members"])
    again = household_params(vid, 3)
    again["members"][1]["id_number"] = first["members"][2]["id_number"]
    e = expect_error(cl, "household.create", again, "already_exists", "members[1].id_number")
    check(first["members"][2]["id_number"] not in e["message"], "no number in the message")
    twice = household_params(vid, 3)
    twice["members"][2]["id_number"] = twice["members"][1]["id_number"]
    expect_error(cl, "household.create", twice, "already_exists", "members[2].id_number")
    # nothing of the refused households landed
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.person WHERE id_number = ANY(%s)",
                ([again["members"][0]["id_number"], twice["members"][0]["id_number"]],))
    eq(cur.fetchone()[0], 0)
    conn.close()


def test_get_refuses_reveal_and_reveal_cannot_claim_another_actor():
    cl = c()
    hid = household(cl, village(cl), 1)["id"]
    e = expect_error(cl, "household.get", {"id": hid, "reveal": True}, "invalid_argument",
                     "reveal")
    check("household.reveal" in e["message"], "points to household.reveal: " + e["message"])
    expect_error(cl, "household.get", {"id": hid, "reveal": False}, "invalid_argument", "reveal")
    # the principal is the actor; claiming another is refused (docs/protocol.md)
    e = cl.request("household.reveal", {"id": hid, "reason": "核对"},
                   extra={"actor": "auditor:invented"})["error"]
    eq(e["code"], "permission_denied")
    eq(e["field"], "actor")
    # a masked read needs none
    h = cl.call("household.get", {"id": hid}, actor=None)
    check("*" in h["members"][0]["id_number"], "masked")


def test_reveal_is_recorded_and_emitted_without_the_number():
    cl = c()
    params = household_params(village(cl), 3)
    hid = cl.call("household.create", params)["id"]
    rid = "reveal-" + bftest.uid()
    reply = cl.request("household.reveal", {"id": hid, "reason": "低保复核"}, actor="auditor:77",
                       rid=rid)
    check(reply["ok"], repr(reply))
    h = reply["result"]
    eq(h["id_numbers_revealed"], True)
    eq(sorted(m["id_number"] for m in h["members"]),
       sorted(m["id_number"] for m in params["members"]))
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT r.person_id, r.actor, r.request_id, r.method, r.reason, "
                "  r.principal IS NOT NULL AND r.principal <> '', r.at IS NOT NULL "
                "FROM registry.id_reveal r JOIN registry.person p ON p.id = r.person_id "
                "WHERE p.household_id = %s ORDER BY r.person_id", (hid,))
    rows = cur.fetchall()
    conn.close()
    eq(len(rows), 3, "one reveal row per person")
    eq(sorted(r[0] for r in rows), sorted(m["id"] for m in h["members"]))
    for row in rows:
        eq(row[1:], ("auditor:77", rid, "household.reveal", "低保复核", True, True))
    for m in h["members"]:
        ev = wait_event("bangfu.registry.person.revealed", "person/%d" % m["id"])
        eq(ev["data"]["person_id"], m["id"])
        eq(ev["data"]["household_id"], hid)
        eq(ev["data"]["actor"], "auditor:77")
        assert_no_id_in(msgpack.packb(ev), [m["id_number"]])
    # a masked read records nothing
    cl.call("household.get", {"id": hid}, actor="cadre:78")
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.id_reveal WHERE actor = 'cadre:78'")
    eq(cur.fetchone()[0], 0)
    conn.close()


def test_household_update_emits_old_and_new():
    cl = c()
    hid = household(cl, village(cl), 2)["id"]
    res = cl.call("household.update", {"id": hid, "route": "employment", "income_fen": 500,
                                       "categories": ["low_income"], "address": "一号"})
    eq(sorted(res["changed"]), ["address", "categories", "income_fen", "route"])
    ev = wait_event("bangfu.registry.household.updated", "household/%d" % hid)
    ch = ev["data"]["changes"]
    eq(ch["route"], {"old": "safety_net", "new": "employment"})
    eq(ch["income_fen"], {"old": 1234500, "new": 500})
    eq(ch["categories"], {"old": ["dibao", "registered_poor"], "new": ["low_income"]})
    eq(ch["address"], {"old": None, "new": "一号"})
    eq(set(ch), {"route", "income_fen", "categories", "address"})
    h = cl.call("household.get", {"id": hid})
    eq(h["route"], "employment")
    eq(h["income_fen"], 500)
    eq(h["categories"], ["low_income"])
    # the same values again: nothing changes, no event
    eq(cl.call("household.update", {"id": hid, "route": "employment"})["changed"], [])
    res = cl.call("household.update", {"id": hid, "causes": {"main": "disaster"},
                                       "status": "exited", "address": ""})
    eq(sorted(res["changed"]), ["address", "causes", "status"])
    ev = wait_event("bangfu.registry.household.updated", "household/%d" % hid,
                    pred=lambda e: "status" in e["data"]["changes"])
    eq(ev["data"]["changes"]["causes"]["new"], {"main": "disaster", "secondary": []})
    eq(ev["data"]["changes"]["address"], {"old": "一号", "new": None})
    h = cl.call("household.get", {"id": hid})
    eq(h["status"], "exited")
    eq(h["address"], None)
    expect_error(cl, "household.update", {"id": hid}, "invalid_argument")
    expect_error(cl, "household.update", {"id": 987654321, "route": "industry"}, "not_found", "id")
    expect_error(cl, "household.update", {"id": hid, "status": "gone"}, "invalid_argument",
                 "status")


def test_add_member():
    cl = c()
    hid = household(cl, village(cl), 1)["id"]
    m = member("spouse")
    res = cl.call("household.add_member", {"household_id": hid, "member": m})
    pid = res["person_id"]
    h = cl.call("household.get", {"id": hid})
    eq(len(h["members"]), 2)
    ev = wait_event("bangfu.registry.household.member_added", "household/%d" % hid)
    eq(ev["data"]["person_id"], pid)
    assert_no_id_in(msgpack.packb(ev), [m["id_number"]])
    expect_error(cl, "household.add_member", {"household_id": hid, "member": m},
                 "already_exists", "member.id_number")
    expect_error(cl, "household.add_member", {"household_id": hid, "member": member("head")},
                 "failed_precondition", "member.relation")
    expect_error(cl, "household.add_member",
                 {"household_id": hid, "member": member("child", idn=bad_check(person_id()))},
                 "invalid_argument", "member.id_number")


def test_remove_member_keeps_history_and_frees_the_person():
    cl = c()
    vid = village(cl)
    params = household_params(vid, 3)
    res = cl.call("household.create", params)
    hid = res["id"]
    head_id, leaving = res["members"][0]["id"], res["members"][2]["id"]
    leaving_idn = params["members"][2]["id_number"]
    cl.call("household.reveal", {"id": hid, "reason": "迁出核对"}, actor="auditor:5")  # a record
    expect_error(cl, "household.remove_member", {"household_id": hid, "person_id": head_id,
                                                 "reason": "x"}, "failed_precondition",
                 "person_id")
    expect_error(cl, "household.remove_member", {"household_id": hid, "person_id": 987654321,
                                                 "reason": "x"}, "not_found", "person_id")
    expect_error(cl, "household.remove_member", {"household_id": 987654321,
                                                 "person_id": leaving, "reason": "x"},
                 "not_found", "household_id")
    expect_error(cl, "household.remove_member", {"household_id": hid, "person_id": leaving,
                                                 "reason": " "}, "invalid_argument", "reason")
    out = cl.call("household.remove_member", {"household_id": hid, "person_id": leaving,
                                              "reason": "婚出"})
    eq(out, {"household_id": hid, "person_id": leaving, "removed": True})
    ev = wait_event("bangfu.registry.household.member_removed", "household/%d" % hid)
    eq(ev["data"], {"household_id": hid, "person_id": leaving, "relation": "child",
                    "reason": "婚出"})
    eq([m["id"] for m in cl.call("household.get", {"id": hid})["members"]],
       [m["id"] for m in res["members"][:2]])
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT household_id, id_number, removed_by, reason FROM registry.person_removed "
                "WHERE id = %s", (leaving,))
    eq(cur.fetchone(), (hid, leaving_idn, "admin", "婚出"))
    cur.execute("SELECT count(*) FROM registry.id_reveal WHERE person_id = %s", (leaving,))
    eq(cur.fetchone()[0], 1, "the reveal record stays")
    conn.close()
    # the person may now be registered in another household
    other = household_params(vid, 2)
    other["members"][1]["id_number"] = leaving_idn
    cl.call("household.create", other)
    expect_error(cl, "household.remove_member", {"household_id": hid, "person_id": leaving,
                                                 "reason": "again"}, "not_found", "person_id")


def test_household_list_pages_filters_and_masks():
    cl = c()
    vid = village(cl)
    ids = [household(cl, vid, 2, route="industry" if i % 2 else "employment")["id"]
           for i in range(5)]
    u = unit(cl)
    cid = cadre(cl, u, "village")
    pair(cl, "cadre_household", cid, ids[0])
    got, cursor = [], None
    while True:
        p = {"village_id": vid, "limit": 2}
        if cursor:
            p["cursor"] = cursor
        page = cl.call("household.list", p)
        check(len(page["items"]) <= 2, "limit")
        got.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    eq([h["id"] for h in got], ids)
    for h in got:
        eq(len(h["members"]), 2)
        for m in h["members"]:
            check("********" in m["id_number"], "masked in lists")
    eq([h["covered"] for h in got], [True, False, False, False, False])
    eq([h["id"] for h in cl.call("household.list", {"village_id": vid, "uncovered": True})["items"]],
       ids[1:])
    eq([h["id"] for h in cl.call("household.list", {"village_id": vid, "uncovered": False})["items"]],
       ids[:1])
    eq([h["id"] for h in cl.call("household.list", {"village_id": vid, "route": "industry"})["items"]],
       [ids[1], ids[3]])
    eq(len(cl.call("household.list", {"village_id": vid, "category": "dibao"})["items"]), 5)
    eq(len(cl.call("household.list", {"village_id": vid, "category": "orphan"})["items"]), 0)
    expect_error(cl, "household.list", {"cursor": "abc"}, "invalid_argument", "cursor")
    expect_error(cl, "household.list", {"limit": 0}, "invalid_argument", "limit")


# ---------------------------------------------------------------- units, cadres, teams

def test_unit_cadre_team_contracts():
    cl = c()
    name = "区建委" + bftest.uid()
    uid_ = cl.call("unit.create", {"name": name, "kind": "department",
                                   "region_code": GEO["county"]})["id"]
    wait_event("bangfu.registry.unit.created", "unit/%d" % uid_)
    expect_error(cl, "unit.create", {"name": name, "kind": "department"}, "already_exists", "name")
    expect_error(cl, "unit.create", {"name": "x" + name, "kind": "shop"}, "invalid_argument", "kind")
    expect_error(cl, "unit.create", {"name": "y" + name, "kind": "street",
                                     "region_code": "130000000099"}, "not_found", "region_code")
    expect_error(cl, "cadre.create", {"name": "a", "rank": "general", "unit_id": 987654321,
                                      "party_member": True}, "not_found", "unit_id")
    expect_error(cl, "cadre.create", {"name": "a", "rank": "king", "unit_id": uid_,
                                      "party_member": True}, "invalid_argument", "rank")
    leader = cl.call("cadre.create", {"name": "组长", "rank": "section", "unit_id": uid_,
                                      "party_member": True, "phone": "13800000001"})
    eq(leader["cap"], 3)
    wait_event("bangfu.registry.cadre.created", "cadre/%d" % leader["id"])
    m1 = cadre(cl, uid_, "general", party=False)
    m2 = cadre(cl, uid_, "general", party=False)
    v1, v2 = village(cl), village(cl, 1)
    base = {"name": "工作组" + bftest.uid(), "unit_id": uid_, "leader_id": leader["id"],
            "member_ids": [m1, m2], "village_ids": [v1, v2]}
    expect_error(cl, "team.create", dict(base, leader_id=m1, member_ids=[leader["id"], m2]),
                 "failed_precondition", "leader_id")
    expect_error(cl, "team.create", dict(base, member_ids=[m1, leader["id"]]),
                 "invalid_argument", "member_ids[1]")
    expect_error(cl, "team.create", dict(base, member_ids=[m1, 987654321]),
                 "not_found", "member_ids[1]")
    expect_error(cl, "team.create", dict(base, leader_id=987654321), "not_found", "leader_id")
    expect_error(cl, "team.create", dict(base, village_ids=[v1, 987654321]),
                 "not_found", "village_ids[1]")
    expect_error(cl, "team.create", dict(base, member_ids=[m1, m1]), "invalid_argument",
                 "member_ids[1]")
    expect_error(cl, "team.create", dict(base, unit_id=987654321), "not_found", "unit_id")
    team = cl.call("team.create", base)
    tid = team["id"]
    eq(len(team["pairing_ids"]), 2)
    expect_error(cl, "team.create", base, "already_exists", "name")
    t = cl.call("team.get", {"id": tid})
    eq(t["leader_id"], leader["id"])
    eq(sorted(t["member_ids"]), sorted([m1, m2]))
    eq(t["village_ids"], [v1, v2])
    eq([m["role"] for m in t["members"]], ["leader", "member", "member"])
    ev = wait_event("bangfu.registry.team.created", "team/%d" % tid)
    eq(ev["data"]["leader_id"], leader["id"])
    for pid in team["pairing_ids"]:
        ev = wait_event("bangfu.registry.pairing.created", "pairing/%d" % pid)
        eq(ev["data"]["kind"], "team_village")
        eq(ev["data"]["helper_id"], tid)
    v = cl.call("village.get", {"id": v1})
    eq([(x["kind"], x["helper_id"], x["contact_cadre_id"]) for x in v["helpers"]],
       [("team_village", tid, leader["id"])])
    lst = cl.call("team.list", {"unit_id": uid_})["items"]
    eq([(x["id"], x["leader_id"], sorted(x["member_ids"]), x["village_ids"]) for x in lst],
       [(tid, leader["id"], sorted([m1, m2]), [v1, v2])])
    # the unit's contact
    u = cl.call("unit.get", {"id": uid_})
    eq(u["contact_cadre_id"], None)
    other = cadre(cl, unit(cl))
    expect_error(cl, "unit.set_contact", {"id": uid_, "cadre_id": other}, "failed_precondition",
                 "cadre_id")
    expect_error(cl, "unit.set_contact", {"id": uid_, "cadre_id": 987654321}, "not_found",
                 "cadre_id")
    eq(cl.call("unit.set_contact", {"id": uid_, "cadre_id": leader["id"]})["changed"], True)
    ev = wait_event("bangfu.registry.unit.updated", "unit/%d" % uid_)
    eq(ev["data"]["changes"]["contact_cadre_id"], {"old": None, "new": leader["id"]})
    u = cl.call("unit.get", {"id": uid_})
    eq(u["contact_cadre_id"], leader["id"])
    eq(u["contact"]["name"], "组长")
    eq(u["cadres"], 3)
    cg = cl.call("cadre.get", {"id": leader["id"]})
    eq((cg["rank"], cg["cap"], cg["households"], cg["unit_id"]), ("section", 3, 0, uid_))
    eq(cg["teams"], [{"team_id": tid, "name": base["name"], "role": "leader"}])
    eq(sorted(x["id"] for x in cl.call("cadre.list", {"unit_id": uid_})["items"]),
       sorted([leader["id"], m1, m2]))
    eq([x["id"] for x in cl.call("unit.list", {"region_code": GEO["county"]})["items"]], [uid_])
    for m in ("unit.get", "cadre.get", "team.get"):
        expect_error(cl, m, {"id": 987654321}, "not_found", "id")


# ---------------------------------------------------------------- pairings

def test_pairing_checks_helper_and_target_kinds():
    cl = c()
    u = unit(cl)
    social = unit(cl, "social")
    cid = cadre(cl, u)
    vid = village(cl)
    hid = household(cl, vid, 1)["id"]
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": 987654321,
                                        "target_id": vid, "starts_on": "2017-08-01"},
                 "not_found", "helper_id")
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": u,
                                        "target_id": 987654321, "starts_on": "2017-08-01"},
                 "not_found", "target_id")
    expect_error(cl, "pairing.create", {"kind": "cadre_household", "helper_id": 987654321,
                                        "target_id": hid, "starts_on": "2017-08-01"},
                 "not_found", "helper_id")
    expect_error(cl, "pairing.create", {"kind": "cadre_household", "helper_id": cid,
                                        "target_id": 987654321, "starts_on": "2017-08-01"},
                 "not_found", "target_id")
    expect_error(cl, "pairing.create", {"kind": "team_village", "helper_id": 987654321,
                                        "target_id": vid, "starts_on": "2017-08-01"},
                 "not_found", "helper_id")
    expect_error(cl, "pairing.create", {"kind": "helper_household", "helper_id": u,
                                        "target_id": hid, "starts_on": "2017-08-01"},
                 "not_found", "helper_id")
    expect_error(cl, "pairing.create", {"kind": "marriage", "helper_id": u, "target_id": hid,
                                        "starts_on": "2017-08-01"}, "invalid_argument", "kind")
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": u, "target_id": vid,
                                        "starts_on": "2017-02-30"}, "invalid_argument", "starts_on")
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": u, "target_id": vid,
                                        "starts_on": "2017-08-01", "ends_on": "2017-07-01"},
                 "invalid_argument", "ends_on")
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": u,
                                        "starts_on": "2017-08-01"}, "invalid_argument", "target_id")
    p = pair(cl, "helper_household", social, hid)
    ev = wait_event("bangfu.registry.pairing.created", "pairing/%d" % p["id"])
    eq(ev["data"]["kind"], "helper_household")
    h = cl.call("household.get", {"id": hid})
    eq([x["unit_id"] for x in h["helpers"]], [social])
    eq(cl.call("unit.get", {"id": social})["household_ids"], [hid])
    p = pair(cl, "unit_village", u, vid, ends_on="2020-12-31")
    eq(cl.call("unit.get", {"id": u})["villages"][0]["village_id"], vid)
    eq(cl.call("pairing.get", {"id": p["id"]})["ends_on"], "2020-12-31")


def test_district_county_by_code():
    cl = c()
    carrier = unit(cl, "street")
    code = GEO["county"]
    p = cl.call("pairing.create", {"kind": "district_county", "helper_id": carrier,
                                   "target_code": code, "starts_on": "2016-01-01",
                                   "ends_on": "2020-12-31"})
    eq(p["target_code"], code)
    eq(p["target_id"], int(code))
    ev = wait_event("bangfu.registry.pairing.created", "pairing/%d" % p["id"])
    eq(ev["data"]["target_code"], code)
    expect_error(cl, "pairing.create", {"kind": "district_county", "helper_id": carrier,
                                        "target_id": int(code), "starts_on": "2016-01-01"},
                 "already_exists", "target_code")
    expect_error(cl, "pairing.create", {"kind": "district_county", "helper_id": carrier,
                                        "target_code": GEO["towns"][0], "starts_on": "2016-01-01"},
                 "not_found", "target_code")
    expect_error(cl, "pairing.create", {"kind": "district_county", "helper_id": 987654321,
                                        "target_code": code, "starts_on": "2016-01-01"},
                 "not_found", "helper_id")
    eq(cl.call("unit.get", {"id": carrier})["counties"][0]["code"], code)
    eq([x["id"] for x in cl.call("pairing.list", {"target_code": code})["items"]], [p["id"]])


def test_caps_per_rank():
    cl = c()
    u = unit(cl)
    vid = village(cl)
    for rank, cap in (("county", 3), ("division", 3), ("section", 3), ("general", 2),
                      ("village", 0)):
        cid = cadre(cl, u, rank)
        allowed = cap if cap else 5
        hids = [household(cl, vid, 1)["id"] for _ in range(allowed + 1)]
        for h in hids[:allowed]:
            pair(cl, "cadre_household", cid, h)
        g = cl.call("cadre.get", {"id": cid})
        eq((g["households"], g["cap"]), (allowed, cap), rank)
        eq(g["household_ids"], sorted(hids[:allowed]))
        if cap:
            e = expect_error(cl, "pairing.create",
                             {"kind": "cadre_household", "helper_id": cid, "target_id": hids[-1],
                              "starts_on": "2017-08-01"}, "failed_precondition", "helper_id")
            check(str(cap) in e["message"], e["message"])
        else:
            pair(cl, "cadre_household", cid, hids[-1])  # village cadres: no cap
        h = cl.call("household.get", {"id": hids[0]})
        eq(h["responsible_cadre_ids"], [cid])
        eq(h["responsible"][0]["rank"], rank)


def test_cap_holds_under_concurrent_requests():
    cl = c()
    u = unit(cl)
    vid = village(cl)
    cid = cadre(cl, u, "general")  # cap 2
    hids = [household(cl, vid, 1)["id"] for _ in range(10)]
    results = [None] * len(hids)
    barrier = threading.Barrier(len(hids))

    def attempt(i):
        own = Client(S.endpoint("registry"), timeout_ms=120000)  # sanitizers on a busy machine
        try:
            barrier.wait()
            reply = own.request("pairing.create", {"kind": "cadre_household", "helper_id": cid,
                                                   "target_id": hids[i],
                                                   "starts_on": "2017-08-01"}, actor="admin")
            results[i] = "ok" if reply["ok"] else reply["error"]["code"]
        finally:
            own.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(hids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(results.count("ok"), 2, "exactly the cap succeeds: %r" % results)
    eq(results.count("failed_precondition"), len(hids) - 2, repr(results))
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.pairing WHERE kind = 'cadre_household' "
                "AND helper_id = %s AND ended_at IS NULL", (cid,))
    eq(cur.fetchone()[0], 2)
    conn.close()


def test_duplicate_active_pairing_is_already_exists():
    cl = c()
    u = unit(cl)
    vid = village(cl)
    p = pair(cl, "unit_village", u, vid)
    expect_error(cl, "pairing.create", {"kind": "unit_village", "helper_id": u, "target_id": vid,
                                        "starts_on": "2018-01-01"}, "already_exists", "target_id")
    cid = cadre(cl, u)
    hid = household(cl, vid, 1)["id"]
    pair(cl, "cadre_household", cid, hid)
    expect_error(cl, "pairing.create", {"kind": "cadre_household", "helper_id": cid,
                                        "target_id": hid, "starts_on": "2018-01-01"},
                 "already_exists", "target_id")
    # after it ends, the same pair may start again: a new row, history kept
    cl.call("pairing.end", {"id": p["id"], "reason": "调动", "approval_ref": "东组干〔2018〕7号"})
    p2 = pair(cl, "unit_village", u, vid, starts_on="2018-03-01")
    check(p2["id"] != p["id"], "a new pairing")
    items = cl.call("pairing.list", {"helper_id": u, "target_id": vid,
                                     "kind": "unit_village"})["items"]
    eq([(x["id"], x["active"]) for x in items], [(p["id"], False), (p2["id"], True)])


def test_end_needs_reason_and_approval_and_keeps_history():
    cl = c()
    u = unit(cl)
    vid = village(cl)
    cid = cadre(cl, u, "general")
    h1, h2, h3 = (household(cl, vid, 1)["id"] for _ in range(3))
    p1 = pair(cl, "cadre_household", cid, h1)
    pair(cl, "cadre_household", cid, h2)
    expect_error(cl, "pairing.create", {"kind": "cadre_household", "helper_id": cid,
                                        "target_id": h3, "starts_on": "2017-08-01"},
                 "failed_precondition", "helper_id")
    expect_error(cl, "pairing.end", {"id": p1["id"], "approval_ref": "x"}, "invalid_argument",
                 "reason")
    expect_error(cl, "pairing.end", {"id": p1["id"], "reason": "x"}, "invalid_argument",
                 "approval_ref")
    expect_error(cl, "pairing.end", {"id": p1["id"], "reason": "", "approval_ref": "x"},
                 "invalid_argument", "reason")
    expect_error(cl, "pairing.end", {"id": p1["id"], "reason": "x", "approval_ref": "  "},
                 "invalid_argument", "approval_ref")
    expect_error(cl, "pairing.end", {"id": 987654321, "reason": "x", "approval_ref": "y"},
                 "not_found", "id")
    e = cl.request("pairing.end", {"id": p1["id"], "reason": "x", "approval_ref": "y"},
                   extra={"actor": "cadre:invented"})["error"]
    eq(e["code"], "permission_denied")
    still = cl.call("pairing.get", {"id": p1["id"]})
    eq(still["active"], True, "failed ends change nothing")
    res = cl.call("pairing.end", {"id": p1["id"], "reason": "健康原因",
                                  "approval_ref": "东组干〔2018〕12号"}, actor="admin:org")
    eq(res["active"], False)
    ev = wait_event("bangfu.registry.pairing.ended", "pairing/%d" % p1["id"])
    eq(ev["data"]["reason"], "健康原因")
    eq(ev["data"]["approval_ref"], "东组干〔2018〕12号")
    eq(ev["data"]["helper_id"], cid)
    eq(ev["actor"], "admin:org")
    expect_error(cl, "pairing.end", {"id": p1["id"], "reason": "again", "approval_ref": "y"},
                 "failed_precondition", "id")
    # the row is kept with who, when, why
    got = cl.call("pairing.get", {"id": p1["id"]})
    eq((got["active"], got["ended_by"], got["reason"], got["approval_ref"]),
       (False, "admin:org", "健康原因", "东组干〔2018〕12号"))
    check(got["ended_at"], "ended_at set")
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.pairing WHERE id = %s", (p1["id"],))
    eq(cur.fetchone()[0], 1)
    conn.close()
    # the ended pairing no longer counts toward the cap
    p3 = pair(cl, "cadre_household", cid, h3)
    eq(cl.call("cadre.get", {"id": cid})["households"], 2)
    hist = cl.call("pairing.list", {"helper_id": cid, "kind": "cadre_household"})["items"]
    eq([x["target_id"] for x in hist], [h1, h2, h3])
    eq([x["active"] for x in hist], [False, True, True])
    eq([x["id"] for x in cl.call("pairing.list", {"helper_id": cid, "kind": "cadre_household",
                                                   "active": False})["items"]], [p1["id"]])
    eq(len(cl.call("pairing.list", {"helper_id": cid, "kind": "cadre_household",
                                    "active": True})["items"]), 2)
    check(p3["id"] > p1["id"], "new id")
    eq(cl.call("household.get", {"id": h1})["responsible_cadre_ids"], [])


# ---------------------------------------------------------------- coverage

def test_coverage_report_counts():
    cl = c()
    geo = fresh_county(cl)
    saved = dict(GEO)
    GEO.update(geo)
    try:
        t0, t1 = geo["towns"]
        u = unit(cl)
        v_unit = cl.call("village.create", {"region_code": t0, "name": "甲村", "category": "poor"})["id"]
        v_team = cl.call("village.create", {"region_code": t0, "name": "乙村", "category": "weak"})["id"]
        v_none = cl.call("village.create", {"region_code": t1, "name": "丙村",
                                            "category": "difficult"})["id"]
        v_ended = cl.call("village.create", {"region_code": t1, "name": "丁村",
                                             "category": "other"})["id"]
        pair(cl, "unit_village", u, v_unit)
        leader = cadre(cl, u, "section", party=True)
        cl.call("team.create", {"name": "组" + bftest.uid(), "unit_id": u, "leader_id": leader,
                                "member_ids": [], "village_ids": [v_team]})
        pe = pair(cl, "unit_village", u, v_ended)
        cl.call("pairing.end", {"id": pe["id"], "reason": "调整", "approval_ref": "A-1"})
        hh = {}
        for v in (v_unit, v_team, v_none):
            hh[v] = [household(cl, v, 2)["id"] for _ in range(3)]
        general = cadre(cl, u, "general")
        pair(cl, "cadre_household", general, hh[v_unit][0])
        pair(cl, "cadre_household", leader, hh[v_team][0])
        pe = pair(cl, "cadre_household", leader, hh[v_none][0])
        cl.call("pairing.end", {"id": pe["id"], "reason": "调整", "approval_ref": "A-2"})
        exited = hh[v_none][1]
        cl.call("household.update", {"id": exited, "status": "exited"})

        # a cadre over the cap: paired by an instance configured with a higher cap
        port = bftest.free_port()
        S.start("registry", env={"BANGFU_REGISTRY_BIND": "tcp://127.0.0.1:%d" % port,
                                 "BANGFU_REGISTRY_CAP_GENERAL": "5"}, name="registry-cap5")
        loose = Client("tcp://127.0.0.1:%d" % port)
        try:
            over = cadre(loose, u, "general")
            for h in (hh[v_team][1], hh[v_team][2], hh[v_none][2]):
                pair(loose, "cadre_household", over, h)
        finally:
            loose.close()
            eq(S.stop("registry-cap5"), 0)

        rep = cl.call("coverage.report", {"region_code": geo["county"]})
        eq(rep["region_code"], geo["county"])
        # 9 households, 1 exited; covered: unit[0], team[0], team[1], team[2], none[2]
        eq(rep["households"]["total"], 8)
        eq(rep["households"]["uncovered"], 3)
        eq([x["id"] for x in rep["households"]["items"]],
           sorted([hh[v_unit][1], hh[v_unit][2], hh[v_none][0]]))
        check(all(x["head_name"] for x in rep["households"]["items"]), "head names")
        eq(rep["cadres_over_cap"]["count"], 1)
        eq(rep["cadres_over_cap"]["items"],
           [{"id": over, "name": rep["cadres_over_cap"]["items"][0]["name"], "rank": "general",
             "unit_id": u, "households": 3, "cap": 2}])
        eq(rep["villages"]["total"], 4)
        eq(rep["villages"]["without_helper"], 2)
        eq([x["id"] for x in rep["villages"]["items"]], [v_none, v_ended])

        # township 1 only: the two villages without helpers, and the cadre
        rep = cl.call("coverage.report", {"region_code": t1})
        eq((rep["households"]["total"], rep["households"]["uncovered"]), (2, 1))
        eq((rep["villages"]["total"], rep["villages"]["without_helper"]), (2, 2))
        eq(rep["cadres_over_cap"]["count"], 1)
        # township 0: the over-cap cadre also has households there
        rep = cl.call("coverage.report", {"region_code": t0})
        eq((rep["households"]["total"], rep["households"]["uncovered"]), (6, 2))
        eq((rep["villages"]["total"], rep["villages"]["without_helper"]), (2, 0))
        eq(rep["cadres_over_cap"]["count"], 1)

        # the whole registry: at least these
        rep = cl.call("coverage.report", {})
        check(rep["households"]["uncovered"] >= 3, "global report counts these too")
        check(len(rep["households"]["items"]) <= 100, "lists are bounded")
        check(rep["cadres_over_cap"]["count"] >= 1, "global over-cap")
        expect_error(cl, "coverage.report", {"region_code": "12"}, "invalid_argument",
                     "region_code")
        expect_error(cl, "coverage.report", {"region_code": geo["prefix"] + "999000"},
                     "not_found", "region_code")
    finally:
        GEO.clear()
        GEO.update(saved)


# ---------------------------------------------------------------- import

def test_import_reports_bad_rows_and_lands_good_ones():
    cl = c()
    vid = village(cl)
    rows = [household_params(vid, 2) for _ in range(8)]
    rows[1]["members"][1]["id_number"] = bad_check(rows[1]["members"][1]["id_number"])
    rows[2]["members"][0]["relation"] = "spouse"                          # no head
    rows[4]["members"][1]["id_number"] = rows[3]["members"][0]["id_number"]  # repeated in batch
    existing = household_params(vid, 1)
    household(cl, vid, members=existing["members"])
    rows[5]["members"][0]["id_number"] = existing["members"][0]["id_number"]  # in the database
    rows[6]["village_id"] = 987654321
    rows[7]["members"][1]["id_number"] = rows[7]["members"][0]["id_number"]  # twice in a row
    rows.append("not a map")
    res = cl.call("household.import", {"rows": rows})
    eq(res["accepted"], 2)
    rej = {x["row"]: x for x in res["rejected"]}
    eq(sorted(rej), [1, 2, 4, 5, 6, 7, 8])
    eq((rej[1]["code"], rej[1]["field"]), ("invalid_argument", "members[1].id_number"))
    eq((rej[2]["code"], rej[2]["field"]), ("invalid_argument", "members"))
    eq((rej[4]["code"], rej[4]["field"]), ("already_exists", "members[1].id_number"))
    check("row 3" in rej[4]["message"], rej[4]["message"])
    eq((rej[5]["code"], rej[5]["field"]), ("already_exists", "members[0].id_number"))
    eq((rej[6]["code"], rej[6]["field"]), ("not_found", "village_id"))
    eq((rej[7]["code"], rej[7]["field"]), ("already_exists", "members[1].id_number"))
    eq(rej[8]["code"], "invalid_argument")
    for x in res["rejected"]:
        assert_no_id_in(x["message"].encode())
    eq(len(res["ids"]), 9)
    eq([i for i, x in enumerate(res["ids"]) if x is not None], [0, 3])
    for i in (0, 3):
        h = cl.call("household.reveal", {"id": res["ids"][i], "reason": "导入核对"})
        eq(sorted(m["id_number"] for m in h["members"]),
           sorted(m["id_number"] for m in rows[i]["members"]))
        wait_event("bangfu.registry.household.created", "household/%d" % res["ids"][i])
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.household WHERE village_id = %s", (vid,))
    eq(cur.fetchone()[0], 3)  # the two imported plus `existing`
    conn.close()
    expect_error(cl, "household.import", {"rows": [{}] * 5001}, "invalid_argument", "rows")


def test_concurrent_imports_of_the_same_people_land_each_once():
    cl = c()
    vid = village(cl)
    rows = [household_params(vid, 3) for _ in range(300)]
    batches = [list(rows), list(reversed(rows)), rows[100:] + rows[:100]]
    results = [None] * len(batches)
    barrier = threading.Barrier(len(batches))

    def run(i):
        own = Client(S.endpoint("registry"), timeout_ms=120000)  # sanitizers on a busy machine
        try:
            barrier.wait()
            results[i] = own.call("household.import", {"rows": batches[i]})
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(sum(r["accepted"] for r in results), 300, "each household lands exactly once")
    for r in results:
        for x in r["rejected"]:
            eq(x["code"], "already_exists")
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*), count(DISTINCT p.id_number) FROM registry.person p "
                "JOIN registry.household h ON h.id = p.household_id WHERE h.village_id = %s",
                (vid,))
    eq(cur.fetchone(), (900, 900))
    cur.execute("SELECT count(*) FROM registry.household WHERE village_id = %s", (vid,))
    eq(cur.fetchone()[0], 300)
    conn.close()


# ---------------------------------------------------------------- events, overall

def test_region_and_village_writes_emit():
    cl = c()
    vid = village(cl)
    ev = wait_event("bangfu.registry.village.created", "village/%d" % vid)
    eq(ev["data"]["id"], vid)
    code = GEO["prefix"] + "003000"
    cl.call("region.put", {"code": code, "name": "镇3", "level": "township",
                           "parent_code": GEO["county"]})
    wait_event("bangfu.registry.region.created", "region/" + code)


def test_no_full_id_number_in_any_event():
    events = raw_stream_events()
    check(len(events) > 50, "the stream holds this module's events (%d)" % len(events))
    for blob in events:
        assert_no_id_in(blob)
