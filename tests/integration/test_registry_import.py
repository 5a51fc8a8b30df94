"""household.import at scale: 100,000 generated households (1-5 members each)
in batches of 2,000, with bad rows planted at known places (a wrong check
digit, no head, a person already registered by an earlier batch, a person
repeated within a batch). Checks the exact accepted/rejected rows of every
batch, that the database holds exactly the accepted households and persons,
one household.created event per accepted household in the outbox with no
full ID number in any of them, and that the whole import takes well under a
minute.
"""
import datetime
import os
import random
import re
import time

import bftest
from bftest import Stack, check, eq

S = None
GEO = {}
HOUSEHOLDS = int(os.environ.get("BANGFU_IMPORT_HOUSEHOLDS", "100000"))
BATCH = 2000
# well under a minute on a 2-core machine; sanitizer builds run several times slower
LIMIT_S = 240.0 if os.environ.get("BANGFU_SANITIZE") else 60.0
ID_RE = re.compile(rb"[0-9]{17}[0-9Xx]")
CATEGORIES = ["dibao", "low_income", "extreme_poverty", "orphan", "left_behind_child",
              "left_behind_elderly", "disabled", "serious_illness", "registered_poor"]
CAUSES = ["illness", "disability", "lack_of_labour", "education", "lack_of_skills",
          "lack_of_land", "lack_of_water", "disaster", "lack_of_funds", "transport",
          "self_motivation", "other"]
ROUTES = ["employment", "industry", "safety_net"]


def setup_module():
    global S
    S = Stack(["registry"]).__enter__()
    cl = S.client("registry")
    while True:
        prov = random.choice(["31", "32", "33", "34", "35", "36", "37"])
        city = "%s%02d" % (prov, random.randint(1, 99))
        county = "%s%02d" % (city, random.randint(1, 99))
        try:
            cl.call("region.get", {"code": county + "000000"})
        except bftest.RpcError as e:
            if e.code == "not_found":
                break
            raise
    cl.call("region.put", {"code": prov + "0" * 10, "name": "省", "level": "province"})
    cl.call("region.put", {"code": city + "0" * 8, "name": "市", "level": "city",
                           "parent_code": prov + "0" * 10})
    cl.call("region.put", {"code": county + "000000", "name": "县", "level": "county",
                           "parent_code": city + "0" * 8})
    cl.call("region.put", {"code": county + "001000", "name": "镇", "level": "township",
                           "parent_code": county + "000000"})
    GEO["prefix"] = county
    GEO["villages"] = [cl.call("village.create", {"region_code": county + "001000",
                                                  "name": "导入村%d" % i,
                                                  "category": "poor"})["id"]
                       for i in range(10)]


def teardown_module():
    S.__exit__(None, None, None)


def make_id(n):
    day = datetime.date(1940, 1, 1) + datetime.timedelta(days=n // 1000)
    first17 = "%s%s%03d" % (GEO["prefix"], day.strftime("%Y%m%d"), n % 1000)
    return first17 + bftest.id_check_digit(first17)


def generate():
    """The rows, and for each bad row the field the server must name."""
    rnd = random.Random(20170801)
    rows, bad = [], {}
    n = 0
    for i in range(HOUSEHOLDS):
        size = rnd.randint(1, 5)
        members = []
        for j in range(size):
            n += 1
            members.append({"name": "成员%d" % n, "id_number": make_id(n),
                            "relation": "head" if j == 0 else rnd.choice(
                                ["spouse", "child", "parent", "grandchild"])})
        cats = rnd.sample(CATEGORIES, rnd.randint(1, 3))
        main = rnd.choice(CAUSES)
        rows.append({"village_id": GEO["villages"][i % 10], "categories": cats,
                     "causes": {"main": main,
                                "secondary": [c for c in rnd.sample(CAUSES, 2) if c != main]},
                     "route": rnd.choice(ROUTES), "income_fen": rnd.randint(0, 5000000),
                     "members": members})
    # plant the bad rows; a duplicate only ever copies a good row's person
    for i in range(HOUSEHOLDS):
        m = rows[i]["members"]
        if i % 997 == 5:
            last = len(m) - 1
            idn = m[last]["id_number"]
            d = "0123456789X"
            m[last]["id_number"] = idn[:17] + d[(d.index(idn[17]) + 3) % 11]
            bad[i] = ("invalid_argument", "members[%d].id_number" % last)
        elif i % 1499 == 7:
            m[0]["relation"] = "spouse"
            bad[i] = ("invalid_argument", "members")
        elif i % 1201 == 9 and i >= 3 * BATCH:
            j = i - 2 * BATCH - 1  # an earlier batch: already in the database
            while j in bad:
                j -= 1
            m[0]["id_number"] = rows[j]["members"][0]["id_number"]
            bad[i] = ("already_exists", "members[0].id_number")
        elif i % 1301 == 11 and i % BATCH >= 3:
            j = i - 3  # the same batch, earlier row
            while j in bad:
                j -= 1
            check(j // BATCH == i // BATCH, "same batch")
            k = len(m) - 1
            m[k]["id_number"] = rows[j]["members"][0]["id_number"]
            bad[i] = ("already_exists", "members[%d].id_number" % k)
    return rows, bad


def test_import_100k_households_with_bad_rows():
    rows, bad = generate()
    check(len(bad) > HOUSEHOLDS // 500, "planted bad rows: %d" % len(bad))
    cl = bftest.Client(S.endpoint("registry"), timeout_ms=120000)
    accepted_ids = []
    accepted_persons = 0
    t0 = time.time()
    try:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            res = cl.call("household.import", {"rows": batch})
            want = {i - start: v for i, v in bad.items() if start <= i < start + BATCH}
            got = {x["row"]: (x["code"], x["field"]) for x in res["rejected"]}
            eq(got, want, "rejected rows of the batch at %d" % start)
            eq(res["accepted"], len(batch) - len(want))
            eq(len(res["ids"]), len(batch))
            for k, hid in enumerate(res["ids"]):
                eq(hid is None, k in want)
                if hid is not None:
                    accepted_ids.append(hid)
                    accepted_persons += len(batch[k]["members"])
            for x in res["rejected"]:
                check(not ID_RE.search(x["message"].encode()), "no ID number in messages")
    finally:
        cl.close()
    elapsed = time.time() - t0
    print("# imported %d households (%d persons) in %.1f s" %
          (len(accepted_ids), accepted_persons, elapsed))
    eq(len(accepted_ids), HOUSEHOLDS - len(bad))
    eq(len(set(accepted_ids)), len(accepted_ids))
    if HOUSEHOLDS >= 100000:
        check(elapsed < LIMIT_S, "import took %.1f s (limit %.0f s)" % (elapsed, LIMIT_S))

    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*), min(id), max(id) FROM registry.household "
                "WHERE village_id = ANY(%s)", (GEO["villages"],))
    count, lo, hi = cur.fetchone()
    eq(count, len(accepted_ids), "households in the database")
    eq((lo, hi), (min(accepted_ids), max(accepted_ids)))
    cur.execute("SELECT count(*), count(DISTINCT p.id_number) FROM registry.person p "
                "JOIN registry.household h ON h.id = p.household_id "
                "WHERE h.village_id = ANY(%s)", (GEO["villages"],))
    eq(cur.fetchone(), (accepted_persons, accepted_persons), "persons in the database")
    cur.execute("SELECT count(*) FROM registry.person WHERE id_number LIKE %s",
                (GEO["prefix"] + "%",))
    eq(cur.fetchone()[0], accepted_persons, "no person of a rejected row landed")
    cur.execute("SELECT count(*) FROM registry.household h WHERE h.village_id = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM registry.person p WHERE p.household_id = h.id "
                "AND p.relation = 'head')", (GEO["villages"],))
    eq(cur.fetchone()[0], 0, "every household has its head")
    subjects = ["household/%d" % h for h in accepted_ids]
    cur.execute("SELECT count(*), count(DISTINCT subject) FROM registry.outbox "
                "WHERE type = 'bangfu.registry.household.created' AND subject = ANY(%s)",
                (subjects,))
    eq(cur.fetchone(), (len(accepted_ids), len(accepted_ids)), "one event per household")
    cur.execute("SELECT payload FROM registry.outbox "
                "WHERE type = 'bangfu.registry.household.created' AND subject = ANY(%s)",
                (subjects,))
    for (payload,) in cur:
        if ID_RE.search(bytes(payload)):
            raise bftest.TestFailure("a full ID number in an event")
    conn.close()

    # the relay moves them on: the last household's event reaches the stream
    r = bftest.redis_client()
    last = "household/%d" % accepted_ids[-1]

    def relayed():
        tail = r.xrevrange("bangfu:events", count=200)
        import msgpack
        return any(msgpack.unpackb(f[b"event"], raw=False)["subject"] == last for _, f in tail)

    bftest.wait_for(relayed, timeout=120, interval=0.5,
                    msg="the import's events did not reach the Redis stream")
