"""Registry security (docs/registry.md#scoping, docs/security.md): ID numbers
truly masked everywhere without a reveal, household.reveal for auditors with
a reason and its append-only record, region scoping across two counties,
cadres reading only their own households, and gets answered with one SQL
statement each (counted in the PostgreSQL server log, not timed).

Callers are described with the envelope's auth map (roles, region,
cadre_id), as the harness will keep doing once CURVE lands.
"""
import datetime
import os
import random
import re
import time

import msgpack

import bftest
from bftest import Stack, Subscriber, check, eq, expect_error

S = None
SUB = None
STREAM_START = None
A = {}
B = {}
PEOPLE = []  # every ID number this module registers


def setup_module():
    global S, SUB, STREAM_START
    S = Stack(["registry"]).__enter__()
    STREAM_START = bftest.stream_last_id(bftest.redis_client())
    SUB = Subscriber(S, prefix="bangfu.registry.")
    cl = c()
    A.update(fresh_county(cl))
    B.update(fresh_county(cl, avoid=A["prefix"]))


def teardown_module():
    if SUB:
        SUB.close()
    S.__exit__(None, None, None)


def c():
    return S.client("registry")


def fresh_county(cl, avoid=None):
    while True:
        prov = random.choice(["13", "14", "15", "21", "22", "23", "41", "42", "43"])
        city = "%s%02d" % (prov, random.randint(1, 99))
        county = "%s%02d" % (city, random.randint(1, 99))
        code = county + "000000"
        if county == avoid:
            continue
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
    town = county + "001000"
    cl.call("region.put", {"code": town, "name": "镇1", "level": "township",
                           "parent_code": code})
    vid = cl.call("village.create", {"region_code": town, "name": "村" + bftest.uid(),
                                     "category": "poor"})["id"]
    return {"county": code, "prefix": county, "city": city + "0" * 8,
            "province": prov + "0" * 10, "town": town, "village": vid}


def person_id(geo):
    """A valid ID number from the county, with a random birth date and
    sequence, so its birth date digits are specific to it."""
    while True:
        day = datetime.date(1940, 1, 1) + datetime.timedelta(days=random.randint(0, 25000))
        first17 = "%s%s%03d" % (geo["prefix"], day.strftime("%Y%m%d"), random.randint(0, 999))
        idn = first17 + bftest.id_check_digit(first17)
        if idn not in PEOPLE:
            PEOPLE.append(idn)
            return idn


def household_params(geo, n=3):
    members = []
    for i in range(n):
        members.append({"name": "成员" + bftest.uid()[:4], "id_number": person_id(geo),
                        "relation": "head" if i == 0 else "child"})
    return {"village_id": geo["village"], "categories": ["dibao"],
            "causes": {"main": "illness"}, "route": "safety_net", "income_fen": 100000,
            "members": members}


def household(cl, geo, n=3):
    return cl.call("household.create", household_params(geo, n))["id"]


def unit(cl):
    return cl.call("unit.create", {"name": "单位" + bftest.uid(), "kind": "department"})["id"]


def cadre(cl, unit_id, rank="village"):
    return cl.call("cadre.create", {"name": "干部" + bftest.uid()[:6], "rank": rank,
                                    "unit_id": unit_id, "party_member": True})["id"]


def pair(cl, helper, target):
    return cl.call("pairing.create", {"kind": "cadre_household", "helper_id": helper,
                                      "target_id": target, "starts_on": "2017-08-01"})["id"]


def strings(obj):
    """Every string (and bytes) anywhere in a decoded reply."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, bytes):
        yield obj.decode("utf-8", "replace")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v)


ID_LIKE = re.compile(r"[0-9]{6}[0-9*]{11}[0-9Xx*]")


def assert_masked(reply, ids, what):
    """No string of the reply holds a full number, its first 17 characters,
    its birth date (8 digits or YYYY-MM-DD), or any masked form other than
    region + 12 asterisks (so neither the gender digit nor the check
    character)."""
    for s in strings(reply):
        for idn in ids:
            check(idn not in s and idn[:17] not in s, "%s: a full ID number" % what)
            check(idn[6:14] not in s, "%s: a birth date (8 digits) in %r" % (what, s[:80]))
            dashed = "%s-%s-%s" % (idn[6:10], idn[10:12], idn[12:14])
            check(dashed not in s, "%s: a birth date in %r" % (what, s[:80]))
        for m in ID_LIKE.findall(s):
            eq(m[6:], "*" * 12, "%s: masked form %r shows more than the region" % (what, m))
    if isinstance(reply, dict):
        for s in _members(reply):
            check("birth_date" not in s, "%s: birth_date in a member" % what)


def _members(obj):
    if isinstance(obj, dict):
        if "members" in obj and isinstance(obj["members"], list):
            for m in obj["members"]:
                if isinstance(m, dict):
                    yield m
        for v in obj.values():
            yield from _members(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _members(v)


def operator(geo, roles=("county_operator",)):
    return {"roles": list(roles), "region": geo["county"]}


# ---------------------------------------------------------------- masking

def test_no_unrevealed_reply_or_event_holds_a_birth_date_or_the_full_number():
    cl = c()
    params = household_params(A, 3)
    created = cl.call("household.create", params)
    hid = created["id"]
    ids = [m["id_number"] for m in params["members"]]
    assert_masked(created, ids, "household.create")
    eq(created["members"][0]["id_number"], ids[0][:6] + "*" * 12)

    got = cl.call("household.get", {"id": hid})
    assert_masked(got, ids, "household.get")
    eq(got["id_numbers_revealed"], False)
    eq([m["id_number"] for m in got["members"]], [i[:6] + "*" * 12 for i in ids])

    page = cl.call("household.list", {"village_id": A["village"], "limit": 1000})
    check(any(h["id"] == hid for h in page["items"]), "the household is listed")
    assert_masked(page, ids, "household.list")

    added = person_id(A)
    cl.call("household.add_member", {"household_id": hid,
                                     "member": {"name": "配偶", "id_number": added,
                                                "relation": "spouse"}})
    ids.append(added)
    assert_masked(cl.call("household.get", {"id": hid}), ids, "household.get after add")

    # an import whose rejects name persons already registered
    again = household_params(A, 2)
    again["members"][1]["id_number"] = ids[1]
    fresh = household_params(A, 2)
    res = cl.call("household.import", {"rows": [again, fresh]})
    eq(res["accepted"], 1)
    eq(res["rejected"][0]["code"], "already_exists")
    ids += [m["id_number"] for m in again["members"] + fresh["members"]]
    assert_masked(res, ids, "household.import")

    u = unit(cl)
    cid = cadre(cl, u)
    pair(cl, cid, hid)
    for method, p in (("cadre.get", {"id": cid}), ("village.get", {"id": A["village"]}),
                      ("coverage.report", {"region_code": A["county"]}),
                      ("pairing.list", {"target_id": hid})):
        assert_masked(cl.call(method, p), ids, method)

    # the bus and the stream: every event since this module started
    SUB.collect(lambda evs: any(e.get("type", "").endswith("household.member_added")
                                for _, e in evs), timeout=10)
    r = bftest.redis_client()
    events = [e for _, e in bftest.stream_events(r, STREAM_START)]
    check(len(events) >= 5, "the stream holds this module's events (%d)" % len(events))
    for e in events:
        assert_masked(e, ids, "stream event " + e.get("type", "?"))
    bus = SUB.collect(lambda evs: False, timeout=0.5)
    for _, e in bus:
        assert_masked(e, ids, "bus event " + e.get("type", "?"))


# ---------------------------------------------------------------- reveal

def test_reveal_needs_the_auditor_role_and_a_reason_and_is_recorded():
    cl = c()
    params = household_params(A, 2)
    hid = cl.call("household.create", params)["id"]
    ids = sorted(m["id_number"] for m in params["members"])
    expect_error(cl, "household.reveal", {"id": hid}, "invalid_argument", "reason")
    expect_error(cl, "household.reveal", {"id": hid, "reason": "  \t"}, "invalid_argument",
                 "reason")
    e = expect_error(cl, "household.reveal", {"id": hid, "reason": "想看"}, "permission_denied",
                     actor="cadre:7", auth={"roles": ["cadre"], "cadre_id": 7})
    check("auditor" in e["message"], "names the missing role: " + e["message"])
    expect_error(cl, "household.reveal", {"id": hid, "reason": "想看"}, "permission_denied",
                 actor="op:1", auth=operator(A))
    expect_error(cl, "household.reveal", {"id": 987654321, "reason": "核对"}, "not_found", "id",
                 actor="auditor:3", auth={"roles": ["auditor"]})

    rid = "reveal-" + bftest.uid()
    reply = cl.request("household.reveal", {"id": hid, "reason": "低保年审"}, actor="auditor:3",
                       rid=rid, auth={"roles": ["auditor"]})
    check(reply["ok"], repr(reply))
    h = reply["result"]
    eq(h["id_numbers_revealed"], True)
    eq(sorted(m["id_number"] for m in h["members"]), ids)
    for m in h["members"]:
        check("birth_date" not in m, "one member shape")

    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT r.id, r.principal, r.actor, r.reason, r.peer, r.request_id, r.method, "
                "  r.at > now() - interval '5 minutes' "
                "FROM registry.id_reveal r JOIN registry.person p ON p.id = r.person_id "
                "WHERE p.household_id = %s ORDER BY r.id", (hid,))
    rows = cur.fetchall()
    eq(len(rows), 2, "one record per member, and none for the refused calls")
    for row in rows:
        # the authenticated principal (CURVE): the test's gateway, which acts
        # for auditor:3 (bftest sends auth= through it); the peer is loopback
        eq(row[1], bftest.ACT_FOR, "principal")
        eq(row[2:4], ("auditor:3", "低保年审"))
        eq(row[4], "127.0.0.1", "peer")
        eq(row[5:], (rid, "household.reveal", True))
    for m in h["members"]:
        ev = None
        for _ in range(100):
            evs = [e for _, e in bftest.stream_events(bftest.redis_client(), STREAM_START)
                   if e["type"] == "bangfu.registry.person.revealed"
                   and e["subject"] == "person/%d" % m["id"]]
            if evs:
                ev = evs[-1]
                break
            time.sleep(0.1)
        check(ev is not None, "person.revealed in the stream")
        eq(ev["data"]["principal"], bftest.ACT_FOR)  # the authenticated principal
        check(m["id_number"].encode() not in msgpack.packb(ev), "no number in the event")
        check(m["id_number"][6:14].encode() not in msgpack.packb(ev), "no birth date")

    # append-only: UPDATE, DELETE and TRUNCATE are refused by the trigger
    first = rows[0][0]
    for sql in ("UPDATE registry.id_reveal SET reason = 'x' WHERE id = %s" % first,
                "UPDATE registry.id_reveal SET actor = 'nobody' WHERE id = %s" % first,
                "DELETE FROM registry.id_reveal WHERE id = %s" % first,
                "TRUNCATE registry.id_reveal"):
        try:
            cur.execute(sql)
        except Exception as e:  # psycopg2 raises its own error classes
            check("append-only" in str(e), "refused by the trigger: %s" % e)
        else:
            raise bftest.TestFailure("id_reveal accepted: " + sql)
    cur.execute("SELECT actor, reason FROM registry.id_reveal WHERE id = %s", (first,))
    eq(cur.fetchone(), ("auditor:3", "低保年审"), "the record is unchanged")
    conn.close()


# ---------------------------------------------------------------- region scope

def test_region_scoping_two_counties():
    cl = c()
    ha = household(cl, A, 2)
    hb = household(cl, B, 2)
    op_a = operator(A)
    adm_a = operator(A, roles=("admin",))  # an admin bound to county A: writes

    # gets: inside found, outside not_found
    eq(cl.call("household.get", {"id": ha}, auth=op_a)["id"], ha)
    expect_error(cl, "household.get", {"id": hb}, "not_found", "id", auth=op_a)
    eq(cl.call("village.get", {"id": A["village"]}, auth=op_a)["id"], A["village"])
    expect_error(cl, "village.get", {"id": B["village"]}, "not_found", "id", auth=op_a)
    eq(cl.call("region.get", {"code": A["town"]}, auth=op_a)["code"], A["town"])
    expect_error(cl, "region.get", {"code": B["town"]}, "not_found", "code", auth=op_a)

    # lists are filtered
    ids = [h["id"] for h in cl.call("household.list", {"village_id": A["village"],
                                                       "limit": 1000}, auth=op_a)["items"]]
    check(ha in ids, "own household listed")
    eq(cl.call("household.list", {"village_id": B["village"]}, auth=op_a)["items"], [],
       "another county's village lists nothing")
    eq(cl.call("household.list", {"region_code": B["county"]}, auth=op_a)["items"], [])
    vids = [v["id"] for v in cl.call("village.list", {"limit": 1000}, auth=op_a)["items"]]
    check(A["village"] in vids and B["village"] not in vids, "village.list filtered")
    codes = [x["code"] for x in cl.call("region.list", {"limit": 1000}, auth=op_a)["items"]]
    check(A["town"] in codes and B["town"] not in codes, "region.list filtered")

    # coverage: own county by default; a wider region is narrowed; another is not found
    cov = cl.call("coverage.report", {}, auth=op_a)
    eq(cov["region_code"], A["county"])
    full_a = cl.call("coverage.report", {"region_code": A["county"]})
    eq(cov["households"], full_a["households"], "same as the admin's report of county A")
    eq(cl.call("coverage.report", {"region_code": A["province"]}, auth=op_a)["region_code"],
       A["county"])
    expect_error(cl, "coverage.report", {"region_code": B["county"]}, "not_found", "region_code",
                 auth=op_a)
    check(all(x["id"] != hb for x in cov["households"]["items"]), "no county-B household")

    # writes outside: permission_denied naming the field; inside: done
    eq(cl.call("household.update", {"id": ha, "income_fen": 7}, auth=adm_a)["changed"],
       ["income_fen"])
    expect_error(cl, "household.update", {"id": hb, "income_fen": 7}, "permission_denied", "id",
                 auth=adm_a)
    eq(cl.call("household.get", {"id": hb})["income_fen"], 100000, "B unchanged")
    expect_error(cl, "household.create", household_params(B, 1), "permission_denied",
                 "village_id", auth=adm_a)
    res = cl.call("household.import", {"rows": [household_params(A, 1),
                                                household_params(B, 1)]}, auth=adm_a)
    eq(res["accepted"], 1)
    eq((res["rejected"][0]["row"], res["rejected"][0]["code"], res["rejected"][0]["field"]),
       (1, "permission_denied", "village_id"))
    expect_error(cl, "household.add_member",
                 {"household_id": hb, "member": {"name": "甲", "id_number": person_id(B),
                                                 "relation": "child"}},
                 "permission_denied", "household_id", auth=adm_a)
    expect_error(cl, "village.create", {"region_code": B["town"], "name": "新村",
                                        "category": "poor"}, "permission_denied", "region_code",
                 auth=adm_a)
    u = unit(cl)
    cid = cadre(cl, u)
    expect_error(cl, "pairing.create", {"kind": "cadre_household", "helper_id": cid,
                                        "target_id": hb, "starts_on": "2017-08-01"},
                 "permission_denied", "target_id", auth=adm_a)
    pb = pair(cl, cid, hb)  # by an unbound admin
    expect_error(cl, "pairing.get", {"id": pb}, "not_found", "id", auth=op_a)
    expect_error(cl, "pairing.end", {"id": pb, "reason": "调动", "approval_ref": "文1"},
                 "permission_denied", "id", auth=adm_a)
    pa = pair(cl, cid, ha)
    eq(cl.call("pairing.get", {"id": pa}, auth=op_a)["id"], pa)
    listed = [p["id"] for p in cl.call("pairing.list", {"helper_id": cid}, auth=op_a)["items"]]
    eq(listed, [pa], "pairing.list shows only county A's pairing")
    got = cl.call("cadre.get", {"id": cid}, auth=op_a)
    eq(got["household_ids"], [ha], "household ids under the caller's region")
    eq(got["households"], 2, "the count is the cadre's whole load (the cap is per cadre)")


# ---------------------------------------------------------------- cadres

def test_cadre_reads_only_its_own_households_and_record():
    cl = c()
    mine = household(cl, A, 2)
    other = household(cl, A, 2)
    u = unit(cl)
    me, colleague = cadre(cl, u), cadre(cl, u)
    pair(cl, me, mine)
    pair(cl, colleague, other)
    auth = {"roles": ["cadre"], "cadre_id": me}
    h = cl.call("household.get", {"id": mine}, actor="cadre:%d" % me, auth=auth)
    eq(h["responsible_cadre_ids"], [me])
    check(all(m["id_number"].endswith("*" * 12) for m in h["members"]), "masked for a cadre")
    expect_error(cl, "household.get", {"id": other}, "not_found", "id", auth=auth)
    ids = [x["id"] for x in cl.call("household.list", {"village_id": A["village"],
                                                       "limit": 1000}, auth=auth)["items"]]
    eq(ids, [mine], "household.list: only the cadre's household")
    eq(cl.call("cadre.get", {"id": me}, auth=auth)["household_ids"], [mine])
    expect_error(cl, "cadre.get", {"id": colleague}, "not_found", "id", auth=auth)
    eq([x["id"] for x in cl.call("cadre.list", {"unit_id": u}, auth=auth)["items"]], [me])
    pids = [p["target_id"] for p in cl.call("pairing.list", {"kind": "cadre_household",
                                                             "limit": 1000},
                                            auth=auth)["items"]]
    eq(pids, [mine], "pairing.list: only the cadre's own pairing")
    expect_error(cl, "coverage.report", {}, "permission_denied", "method", auth=auth)
    expect_error(cl, "household.reveal", {"id": mine, "reason": "看看"}, "permission_denied",
                 auth=auth)
    # the village of its household is visible, another village is not
    eq(cl.call("village.get", {"id": A["village"]}, auth=auth)["id"], A["village"])
    expect_error(cl, "village.get", {"id": B["village"]}, "not_found", "id", auth=auth)
    # a cadre role without a bound cadre id sees no household
    expect_error(cl, "household.get", {"id": mine}, "not_found", "id",
                 auth={"roles": ["cadre"]})


# ---------------------------------------------------------------- one statement

def test_gets_are_one_statement_each_and_unchanged():
    """A registry whose sessions log every statement (log_statement=all via
    the connection options): each get below must log exactly one statement.
    The before/after results of household.get are compared with the main
    stack's answer."""
    log_path = os.path.join(os.environ["BANGFU_TEST_PG_DIR"], "postgres.log")
    dsn = bftest.PG_DSN + ("&" if "?" in bftest.PG_DSN else "?") + \
        "options=-c%20log_statement%3Dall&application_name=bf_count"
    cl = c()
    hid = household(cl, A, 3)
    u = unit(cl)
    cid = cadre(cl, u)
    pair(cl, cid, hid)
    leader = cadre(cl, u)
    tid = cl.call("team.create", {"name": "组" + bftest.uid(), "unit_id": u,
                                  "leader_id": leader, "member_ids": [cid],
                                  "village_ids": [A["village"]]})["id"]
    expected = {m: cl.call(m, {"id": i}) for m, i in (
        ("household.get", hid), ("village.get", A["village"]), ("cadre.get", cid),
        ("unit.get", u), ("team.get", tid))}
    eq(expected["household.get"]["responsible_cadre_ids"], [cid])
    eq(expected["team.get"]["member_ids"], [cid])

    # log_statement may only be set by a superuser: this one registry logs in
    # as the DSN's user (the test superuser), not as bangfu_registry
    st = Stack([], extra_env={"BANGFU_PG_DSN": dsn, "BANGFU_PG_USER": "",
                              "BANGFU_RPC_WORKERS": "1"})
    st.__enter__()
    try:
        st.start("registry")
        counted = st.client("registry")
        counted.call("sys.health")
        for method, i in (("household.get", hid), ("village.get", A["village"]),
                          ("cadre.get", cid), ("unit.get", u), ("team.get", tid)):
            counted.call(method, {"id": i})  # prepares the statement
            time.sleep(0.3)
            start = os.path.getsize(log_path)
            got = [counted.call(method, {"id": i}) for _ in range(5)]
            time.sleep(0.5)
            with open(log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
            # the service's event relay runs on its own connection: its
            # statements (the leader lock, the outbox) are not the get's
            stmts = [ln for ln in text.splitlines()
                     if re.search(r"LOG:\s+(statement|execute [^:]*):", ln)
                     and "outbox" not in ln.lower() and "advisory" not in ln.lower()]
            eq(len(stmts), 5, "%s: one statement per call, saw %d:\n%s" %
               (method, len(stmts), "\n".join(s[:160] for s in stmts)))
            pids = {re.search(r"\[(\d+)\]", ln).group(1) for ln in stmts}
            eq(len(pids), 1, "all from the one worker's connection")
            for g in got:
                eq(g, expected[method], method + " answers the same")
    finally:
        st.__exit__(None, None, None)
