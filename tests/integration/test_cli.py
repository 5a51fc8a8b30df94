"""The bangfu command line against a real registry, bus, PostgreSQL and Redis:
`bangfu call` (ok, error, exit codes), `bangfu import households` (a generated
100,000-household CSV with bad rows, a GBK file with Chinese headers and
values, CSV-level errors, usage errors), `bangfu events tail --from` (stream
then live, no gap, no duplicate), `bangfu coverage`, --help everywhere, and
the comforts: failing fast with a hint when no service answers, --yuan
amounts, `bangfu health` asking every service at once, and the funds lists as
tables aligned for Chinese names.

Every run uses its own six-digit region prefix for ID numbers and its own
region codes, so reruns against one database never collide.
"""
import json
import os
import queue
import random
import re
import signal
import subprocess
import threading
import time

import bftest
from bftest import Stack, check, eq

S = None
C = None
RUN = {}
BANGFU = os.path.join(bftest.BUILD, "bin", "bangfu")


def _env(**extra):
    e = dict(S.env)
    e["BANGFU_REDIS_URL"] = bftest.REDIS_URL
    e.pop("BANGFU_ACTOR", None)
    e.update(extra)
    return e


def bangfu(*args, env=None, timeout=600, stdin=None):
    """Runs bangfu; returns (exit code, stdout, stderr) as text."""
    p = subprocess.run([BANGFU] + list(args), env=env or _env(), capture_output=True,
                       timeout=timeout, input=stdin)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def _province_prefix():
    # two digits that bf_id_check accepts, four random ones: a fresh ID space per run
    return random.choice(["51", "52", "53", "61", "62", "63", "64", "65"]) + "%04d" % random.randrange(10000)


def setup_module():
    global S, C
    S = Stack(["registry", "funds"]).__enter__()
    C = S.client("registry", timeout_ms=120000)
    RUN["idp"] = _province_prefix()
    # a county and two townships of our own (12-digit codes, unique per run)
    prov = RUN["idp"][:2] + "0000000000"
    county = RUN["idp"][:2] + "%02d%02d000000" % (random.randrange(1, 99), random.randrange(1, 99))
    RUN["county"] = county
    C.call("region.put", {"code": prov, "name": "测试省", "level": "province"})
    C.call("region.put", {"code": county, "name": "测试县" + bftest.uid(), "level": "county",
                          "parent_code": prov})
    RUN["town_a"] = county[:6] + "001000"
    RUN["town_b"] = county[:6] + "002000"
    C.call("region.put", {"code": RUN["town_a"], "name": "甲镇", "level": "township",
                          "parent_code": county})
    C.call("region.put", {"code": RUN["town_b"], "name": "乙镇", "level": "township",
                          "parent_code": county})
    RUN["village"] = C.call("village.create", {"region_code": RUN["town_a"], "name": "导入村",
                                               "category": "poor"})["id"]
    RUN["village2"] = C.call("village.create", {"region_code": RUN["town_a"], "name": "编码村",
                                                "category": "difficult"})["id"]


def teardown_module():
    S.__exit__(None, None, None)


def _id(n):
    """A valid ID number for person n of this run, unique for n < 10^7.
    (bftest.make_id folds its day index onto 28 days, so different n can give
    the same number; this spreads n over real calendar days instead.)"""
    import datetime
    born = datetime.date(1940, 1, 1) + datetime.timedelta(days=int(n) // 1000)
    first17 = "%s%s%03d" % (RUN["idp"], born.strftime("%Y%m%d"), int(n) % 1000)
    return first17 + bftest.id_check_digit(first17)


def _bad_check_digit(idn):
    d = idn[-1]
    return idn[:-1] + ("0" if d != "0" else "1")


# ---------------------------------------------------------------- bangfu call

def test_call_ok_prints_json_and_exits_0():
    rc, out, err = bangfu("call", "registry", "sys.health")
    eq(rc, 0, err)
    h = json.loads(out)
    eq(h["service"], "registry")
    eq(h["status"], "ok")


def test_call_error_reply_exits_1_with_the_error_on_stderr():
    rc, out, err = bangfu("call", "registry", "village.get", '{"id": 987654321}')
    eq(rc, 1)
    eq(out, "")
    e = json.loads(err)
    eq(e["code"], "not_found")
    eq(e["field"], "id")


def test_call_acts_as_its_principal_and_cannot_claim_another_actor():
    # the CLI authenticates as $BANGFU_PRINCIPAL (admin): a write without
    # --actor is admin's; --actor naming someone else is refused
    code = RUN["town_b"][:9] + "201"
    params = json.dumps({"code": code, "name": "测试村", "level": "village",
                         "parent_code": RUN["town_b"]})
    rc, out, err = bangfu("call", "registry", "region.put", params)
    eq(rc, 0, err)
    eq(json.loads(out)["code"], code)
    rc, _, err = bangfu("call", "registry", "region.put", params, "--actor", "cadre:9")
    eq(rc, 1)
    eq(json.loads(err)["code"], "permission_denied")
    eq(json.loads(err)["field"], "actor")
    rc, out, err = bangfu("call", "registry", "region.put", params, "--actor", "admin")
    eq(rc, 0, err)
    eq(json.loads(out)["code"], code)


def test_call_usage_errors_exit_2():
    eq(bangfu("call")[0], 2)
    eq(bangfu("call", "registry")[0], 2)
    eq(bangfu("call", "nosuch", "sys.health")[0], 2)
    rc, _, err = bangfu("call", "registry", "sys.health", "{not json")
    eq(rc, 2)
    check("not valid JSON" in err, err)
    eq(bangfu("nosuchcommand")[0], 2)


def test_call_unavailable_exits_3():
    env = _env(BANGFU_REGISTRY_RPC="tcp://127.0.0.1:%d" % bftest.free_port())
    rc, _, err = bangfu("call", "registry", "sys.health", "--timeout", "300", env=env)
    eq(rc, 3, err)


def test_call_accepts_a_comma_separated_endpoint_list():
    """docs/operations.md: an address variable may list several endpoints; the
    CLI connects to each and round-robins, so a dead one next to a live one
    still answers, and a malformed list is refused."""
    live = S.endpoint("registry")
    dead = "tcp://127.0.0.1:%d" % bftest.free_port()
    env = _env(BANGFU_REGISTRY_RPC="%s,%s" % (live, dead))
    rc, out, err = bangfu("call", "registry", "sys.health", env=env)
    eq(rc, 0, err)
    eq(json.loads(out)["service"], "registry")
    env = _env(BANGFU_REGISTRY_RPC="%s,%s" % (live, live))
    for _ in range(4):
        rc, out, err = bangfu("call", "registry", "sys.health", env=env)
        eq(rc, 0, err)
    rc, _, err = bangfu("call", "registry", "sys.health",
                        env=_env(BANGFU_REGISTRY_RPC=live + ",not-an-endpoint"))
    eq(rc, 2, err)
    check("bad endpoint" in err, err)


def test_help_on_every_command():
    rc, out, _ = bangfu("help")
    eq(rc, 0)
    for cmd in ("call", "import", "events", "coverage"):
        check(cmd in out, "bangfu help lists " + cmd)
    for args in (["call", "--help"], ["import", "--help"], ["import", "households", "--help"],
                 ["events", "--help"], ["events", "tail", "--help"], ["coverage", "--help"]):
        rc, out, err = bangfu(*args)
        eq(rc, 0, " ".join(args) + ": " + err)
        check(out.startswith("usage: bangfu"), " ".join(args) + " prints its usage")
    _, out, _ = bangfu("import", "--help")
    for col in ("household_ref", "户编号", "身份证号", "income_yuan", "与户主关系"):
        check(col in out, "import --help documents column " + col)


# ---------------------------------------------------------------- import: the big file

HEADER = ["household_ref", "village_id", "categories", "cause_main", "cause_secondary", "route",
          "income_yuan", "name", "id_number", "relation", "gender", "phone"]
RELS = ["spouse", "child", "parent", "grandchild", "sibling", "other"]


def _csv_line(fields):
    out = []
    for f in fields:
        f = str(f)
        if any(c in f for c in ',"\n\r'):
            f = '"' + f.replace('"', '""') + '"'
        out.append(f)
    return ",".join(out) + "\r\n"


def _write_big_csv(path, n_households):
    """Writes the CSV; returns (households, bad) where households maps ref to
    its list of (line, id_number) and bad maps ref to the line and field the
    rejects report must name."""
    rnd = random.Random(20170801)
    households = {}
    bad = {}
    person = 0
    line = 1
    # which households get which defect: some at a batch edge (2000 a batch),
    # some spread over the file
    defects = {
        7: "bad_check_digit", 1999: "bad_check_digit", 2000: "unknown_route",
        n_households * 45 // 100 + 3: "unknown_route", 4242: "missing_head",
        n_households * 8888 // 10000: "missing_head", 3001: "duplicate_id",
        n_households - 2: "duplicate_id", 17: "bad_income",
        n_households * 6 // 10 + 1: "bad_relation",
    }
    dup_source = None
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(_csv_line(HEADER))
        line = 1
        for h in range(n_households):
            ref = "R%s-%06d" % (RUN["idp"], h)
            size = 1 + rnd.randrange(3)
            defect = defects.get(h)
            route = ["employment", "industry", "safety_net", "就业", "产业", "兜底"][h % 6]
            income = "%d.%02d" % (rnd.randrange(0, 60000), rnd.randrange(100))
            if defect == "unknown_route":
                route = "飞天"
            if defect == "bad_income":
                income = "12,345"
            rows = []
            for k in range(size):
                person += 1
                idn = _id(person)
                rel = "head" if k == 0 else RELS[(h + k) % len(RELS)]
                if defect == "missing_head":
                    rel = "child"
                if defect == "bad_check_digit" and k == size - 1:
                    idn = _bad_check_digit(idn)
                if defect == "duplicate_id" and k == size - 1:
                    idn = dup_source
                if defect == "bad_relation" and k == size - 1:
                    rel = "neighbour"
                first = k == 0
                fields = [ref,
                          RUN["village"] if first else "",
                          "dibao;left_behind_elderly" if h % 3 == 0 else "低保、留守老人" if first else "",
                          "illness" if h % 2 else "因病",
                          "lack_of_skills" if h % 5 == 0 else "",
                          route if first else "",
                          income if first else "",
                          "姓名%d" % person, idn, rel, "", ""]
                if not first:
                    fields[2] = fields[3] = fields[4] = ""
                line += 1
                f.write(_csv_line(fields))
                rows.append((line, idn))
            households[ref] = rows
            if h == 3000:
                dup_source = rows[0][1]  # a good household's head
            if defect:
                first_line = rows[0][0]
                last_line = rows[-1][0]
                bad[ref] = {
                    "bad_check_digit": (last_line, "id_number"),
                    "unknown_route": (first_line, "route"),
                    "missing_head": (first_line, "members"),
                    "duplicate_id": (last_line, "id_number"),
                    "bad_income": (first_line, "income_yuan"),
                    "bad_relation": (last_line, "relation"),
                }[defect]
    return households, bad


def _read_report(text):
    """The rejects report in text (a file, or stderr with progress lines)."""
    import csv
    import io
    text = text[text.index("line,household_ref"):]
    text = "".join(l for l in text.splitlines(True)
                   if not l.startswith("import: ") and not l.startswith("bangfu import: "))
    rows = list(csv.reader(io.StringIO(text)))
    eq(rows[0], ["line", "household_ref", "field", "message"], "rejects report header")
    return rows[1:]


def test_import_100k_households_with_bad_rows():
    n = bftest.scaled(100000)  # a tenth under the sanitizers
    path = os.path.join(bftest.TMP, "households-%s.csv" % RUN["idp"])
    rejects = os.path.join(bftest.TMP, "rejects-%s.csv" % RUN["idp"])
    households, bad = _write_big_csv(path, n)
    RUN["before_big"] = bftest.stream_last_id(bftest.redis_client())
    t0 = time.time()
    rc, out, err = bangfu("import", "households", path, "--rejects", rejects, "--json",
                          "--actor", "admin")
    seconds = time.time() - t0
    summary = json.loads(out)
    with open(rejects, encoding="utf-8") as f:
        report = _read_report(f.read())
    print("    import of %d households (%d rows, %.1f MiB): %.1f s, %.0f households/s" % (
        n, summary["rows"], os.path.getsize(path) / 1048576.0, seconds, n / seconds))
    eq(rc, 1, "exit code with rejected rows (stderr: %s)" % err[-2000:])
    eq(summary["households"], n)
    if summary["rejected"] != len(bad):
        import collections
        kinds = collections.Counter((r[2], re.sub(r"[0-9]+", "N", r[3])[:80]) for r in report)
        check(False, "rejected %d, expected %d: %r" % (summary["rejected"], len(bad),
                                                       kinds.most_common(8)))
    eq(summary["accepted"], n - len(bad))
    eq(summary["complete"], True)
    eq(summary["encoding"], "utf-8")
    # progress went to stderr as plain lines (not a terminal), ending at 100%
    check(re.search(r"import: 100%% .*%d accepted, %d rejected" % (n - len(bad), len(bad)), err),
          "final progress line: " + err[-500:])

    by_ref = {}
    for line, ref, field, msg in report:
        by_ref.setdefault(ref, []).append((int(line), field, msg))
    eq(sorted(by_ref), sorted(bad), "households in the rejects report")
    for ref, (line, field) in bad.items():
        got = by_ref[ref]
        eq(len(got), 1, "one report line for " + ref)
        eq((got[0][0], got[0][1]), (line, field), "line and field for %s (%s)" % (ref, got[0][2]))
    # no full ID number anywhere in the report or the progress output
    every_id = {idn for rows in households.values() for _, idn in rows}
    for text in (open(rejects, encoding="utf-8").read(), err, out):
        for m in re.findall(r"[0-9]{17}[0-9Xx]", text):
            check(m not in every_id, "a full ID number leaked: %s..." % m[:6])
    check(any("********" in msg for _, _, _, msg in report), "ID numbers are shown masked")

    # the database holds exactly the accepted households, with all their members
    db = bftest.pg()
    cur = db.cursor()
    cur.execute("SELECT count(DISTINCT household_id), count(*) FROM registry.person "
                "WHERE id_number LIKE %s", (RUN["idp"] + "%",))
    n_hh, n_persons = cur.fetchone()
    good_persons = sum(len(rows) for ref, rows in households.items() if ref not in bad)
    eq(n_hh, n - len(bad), "households in the database")
    eq(n_persons, good_persons, "persons in the database")
    cur.execute("SELECT count(*) FROM registry.household WHERE village_id = %s", (RUN["village"],))
    eq(cur.fetchone()[0], n - len(bad), "households in the village")
    # no member of a rejected household got in (the duplicate's twin belongs to household 3000)
    bad_ids = [idn for ref in bad for _, idn in households[ref]
               if idn != households["R%s-%06d" % (RUN["idp"], 3000)][0][1]]
    cur.execute("SELECT count(*) FROM registry.person WHERE id_number = ANY(%s)",
                ([i.upper() for i in bad_ids],))
    eq(cur.fetchone()[0], 0, "persons of rejected households in the database")
    # values arrived translated: Chinese route and categories became codes
    cur.execute("SELECT route, count(*) FROM registry.household WHERE village_id = %s "
                "GROUP BY route ORDER BY route", (RUN["village"],))
    eq([r[0] for r in cur.fetchall()], ["employment", "industry", "safety_net"])
    cur.execute("SELECT DISTINCT categories FROM registry.household WHERE village_id = %s",
                (RUN["village"],))
    eq(sorted(tuple(r[0]) for r in cur.fetchall()), [("dibao", "left_behind_elderly")])
    db.close()
    RUN["big_accepted"] = n - len(bad)


def test_events_tail_replays_the_whole_import_from_the_stream():
    # one household.created event per accepted household, read back in pages
    n = RUN["big_accepted"]
    tail = Tail("bangfu.registry.household.created", "--from", "(" + RUN["before_big"])
    lines = tail.take(n, timeout=120)
    extra = tail.idle(1.0)
    rc, err = tail.stop()
    eq(rc, 0, err)
    eq(len(lines) + len(extra), n, "events printed")
    subjects = {l.split(" ")[2] for l in lines}
    eq(len(subjects), n, "distinct households")
    check(all(" bangfu.registry.household.created household/" in l for l in lines[:100]))


def test_import_again_rejects_every_household_as_already_registered():
    # the same file a second time: nothing new lands, every household is reported
    path = os.path.join(bftest.TMP, "again-%s.csv" % RUN["idp"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(HEADER) + "\n")
        for h in range(5):
            f.write("A%d,%d,dibao,illness,,industry,100,某人,%s,head,,\n" % (h, RUN["village"], _id(1 + h)))
    rc, out, err = bangfu("import", "households", path, "--json")
    eq(rc, 1, err)
    s = json.loads(out)
    eq((s["accepted"], s["rejected"]), (0, 5))
    report = _read_report(err)
    eq([r[0] for r in report], ["2", "3", "4", "5", "6"])
    check(all(r[2] == "id_number" for r in report), report)


# ---------------------------------------------------------------- import: GBK, Chinese

def test_import_gbk_file_with_chinese_headers_and_values():
    p0 = 9000000
    rows = [
        ["户编号", "村ID", "类别", "主要致贫原因", "次要致贫原因", "帮扶路径", "年收入(元)",
         "姓名", "身份证号", "与户主关系", "性别", "电话", "家庭住址", "劳动技能", "是否残疾"],
        ["甲-001", RUN["village2"], "低保、留守老人", "因病", "缺技术;缺资金", "就业", "8800.50",
         "欧阳娜娜", _id(p0 + 1), "户主", "", "13912345678", "甲镇一组 3 号", "普通劳动力", "否"],
        ["甲-001", "", "", "", "", "", "", "王 小红, 二", _id(p0 + 2), "配偶", "", "", "",
         "丧失劳动力", "是"],
        ["", "", "", "", "", "", "", "欧阳明", _id(p0 + 3), "子女", "", "", "", "", ""],
        ["甲-002", RUN["village2"], "特困供养", "因残", "", "兜底", "0", "李四",
         _id(p0 + 4), "户主", "", "", "", "", ""],
        ["甲-003", RUN["village2"], "低收入", "缺劳力", "", "产业", "1200", "张三",
         _id(p0 + 5), "户主", "", "", "", "", ""],
        ["甲-003", "", "", "", "", "", "", "张小三", _id(p0 + 6), "孙子女", "", "", "", "", ""],
    ]
    path = os.path.join(bftest.TMP, "gbk-%s.csv" % RUN["idp"])
    with open(path, "wb") as f:
        for r in rows:
            f.write(_csv_line(r).encode("gbk"))
    raw = open(path, "rb").read()
    try:
        raw.decode("utf-8")
        check(False, "the test file must not be valid UTF-8")
    except UnicodeDecodeError:
        pass
    rc, out, err = bangfu("import", "households", path, "--json")
    eq(rc, 0, err)
    s = json.loads(out)
    eq((s["households"], s["accepted"], s["rejected"], s["encoding"]), (3, 3, 0, "gbk"))
    db = bftest.pg()
    cur = db.cursor()
    cur.execute("SELECT p.name, p.relation, h.categories, h.cause_main, h.cause_secondary, "
                "h.route, h.income_fen, p.phone, h.address, p.labour, p.disability "
                "FROM registry.person p "
                "JOIN registry.household h ON h.id = p.household_id "
                "WHERE p.id_number = ANY(%s) ORDER BY p.id_number",
                ([_id(p0 + i) for i in range(1, 7)],))
    got = cur.fetchall()
    db.close()
    eq(len(got), 6)
    eq(got[0], ("欧阳娜娜", "head", ["dibao", "left_behind_elderly"], "illness",
                ["lack_of_skills", "lack_of_funds"], "employment", 880050, "13912345678",
                "甲镇一组 3 号", "ordinary", False))
    eq(got[1][:2], ("王 小红, 二", "spouse"))
    eq(got[1][9:], ("lost", True))
    eq(got[2][:2], ("欧阳明", "child"))
    eq(got[2][9:], (None, False))
    eq(got[3][:7], ("李四", "head", ["extreme_poverty"], "disability", [], "safety_net", 0))
    eq(got[4][:2], ("张三", "head"))
    eq(got[5][:2], ("张小三", "grandchild"))
    # forced utf-8 on the same file: every row is rejected as not UTF-8, nothing crashes
    rc, out, err = bangfu("import", "households", path, "--encoding", "utf-8", "--dry-run")
    eq(rc, 2, "the Chinese header is unreadable as UTF-8: " + err)


def test_import_csv_level_errors_are_rejections_with_line_numbers():
    p0 = 9100000
    text = ("household_ref,village_id,categories,cause_main,route,income_fen,name,id_number,relation\n"
            "B1,{v},dibao,illness,industry,100,甲,{i1},head\n"
            "B2,{v},dibao,illness,industry,abc,乙,{i2},head\n"
            "B3,{v},dibao,illness,industry,100,\"丙\n(换行)\",{i3},head\n"
            "B4,{v},dibao,illness,industry,100,丁,{i4},head\n"
            "B4,{v2},dibao,illness,industry,100,丁二,{i5},spouse\n"
            "B5,{v},dibao,illness,industry,100,,{i6},head\n"
            "B6,{v},dibao,illness,industry,100,\"x\"y,{i7},head\n"
            "B7,{v},dibao,illness,industry,100,戊,{i8},head,extra\n"
            "B8,{v},dibao,illness,industry,100,{big},{i9},head\n"
            "B9,{v},dibao,illness,industry,100,己,{i10},head\n").format(
        v=RUN["village2"], v2=RUN["village"], big="长" * 30000,
        **{"i%d" % k: _id(p0 + k) for k in range(1, 11)})
    path = os.path.join(bftest.TMP, "csverr-%s.csv" % RUN["idp"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    rc, out, err = bangfu("import", "households", path, "--json", "--batch", "2")
    eq(rc, 1, err)
    s = json.loads(out)
    eq((s["households"], s["accepted"], s["rejected"]), (9, 3, 6))
    report = _read_report(err)
    got = {(r[0], r[1], r[2]) for r in report}
    eq(got, {("3", "B2", "income_fen"), ("7", "B4", "village_id"), ("8", "B5", "name"),
             ("9", "B6", ""), ("10", "B7", ""), ("11", "B8", "")}, report)
    msgs = {r[1]: r[3] for r in report}
    check("quot" in msgs["B6"], msgs["B6"])
    check("longer than 65536" in msgs["B8"], msgs["B8"])


def test_import_usage_errors():
    rc, _, err = bangfu("import", "households", "/nonexistent/file.csv")
    eq(rc, 2)
    check("cannot open" in err, err)
    path = os.path.join(bftest.TMP, "noheader-%s.csv" % RUN["idp"])
    with open(path, "w") as f:
        f.write("household_ref,name\nH1,x\n")
    rc, _, err = bangfu("import", "households", path)
    eq(rc, 2)
    check("lacks" in err and "id_number" in err and "route" in err, err)
    eq(bangfu("import", "households", path, "--batch", "0")[0], 2)
    eq(bangfu("import", "households", path, "--batch", "5001")[0], 2)
    eq(bangfu("import", "households", path, "--encoding", "latin1")[0], 2)
    eq(bangfu("import", "villages", path)[0], 2)
    eq(bangfu("import", "households")[0], 2)


def test_import_with_registry_down_exits_3():
    path = os.path.join(bftest.TMP, "down-%s.csv" % RUN["idp"])
    with open(path, "w") as f:
        f.write(",".join(HEADER) + "\n")
        f.write("D1,%d,dibao,illness,,industry,1,x,%s,head,,\n" % (RUN["village"], _id(9200001)))
    env = _env(BANGFU_REGISTRY_RPC="tcp://127.0.0.1:%d" % bftest.free_port())
    rc, out, err = bangfu("import", "households", path, "--timeout", "500", env=env)
    eq(rc, 3, err)
    check("did not answer" in err, err)


def test_import_reads_stdin_and_village_id_option():
    p0 = 9300000
    text = ("户编号,类别,主要致贫原因,帮扶路径,年收入（元）,姓名,身份证号,与户主关系\n"
            "S1,低保,因病,就业,10,甲,%s,户主\n" % _id(p0 + 1))
    rc, out, err = bangfu("import", "households", "-", "--village-id", str(RUN["village2"]),
                          "--json", stdin=text.encode("utf-8"))
    eq(rc, 0, err)
    eq(json.loads(out)["accepted"], 1)
    db = bftest.pg()
    cur = db.cursor()
    cur.execute("SELECT h.village_id, h.income_fen FROM registry.person p JOIN registry.household h "
                "ON h.id = p.household_id WHERE p.id_number = %s", (_id(p0 + 1),))
    eq(cur.fetchone(), (RUN["village2"], 1000))
    db.close()


# ---------------------------------------------------------------- events tail

class Tail:
    """bangfu events tail in the background, its stdout lines in a queue."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([BANGFU, "events", "tail"] + list(args), env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(os.path.join(bftest.TMP, "pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)
        self.lines = queue.Queue()
        self.ready = threading.Event()
        self.err = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.te = threading.Thread(target=self._read_err, daemon=True)
        self.te.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.decode("utf-8"))

    def _read_err(self):
        for line in self.proc.stderr:
            line = line.decode("utf-8", "replace")
            self.err.append(line)
            if " live from " in line:
                self.ready.set()

    def wait_ready(self, timeout=20):
        """Until the catch-up is done and the tail says it is live."""
        check(self.ready.wait(timeout), "events tail never went live: %r" % self.err)

    def take(self, n, timeout=20):
        out = []
        deadline = time.time() + timeout
        while len(out) < n and time.time() < deadline:
            try:
                out.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        return out

    def idle(self, seconds=1.0):
        """Lines that arrive within seconds (expected: none)."""
        return self.take(10 ** 6, timeout=seconds)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(10)
        self.te.join(5)
        return rc, "".join(self.err)


def _region_event_writes(n, tag):
    """n region.put writes under town_b; returns their codes."""
    codes = []
    for i in range(n):
        code = RUN["town_b"][:9] + "%03d" % (300 + len(RUN.setdefault("ev", [])))
        RUN["ev"].append(code)
        C.call("region.put", {"code": code, "name": "%s-%d" % (tag, i), "level": "village",
                              "parent_code": RUN["town_b"]})
        codes.append(code)
    return codes


def test_events_tail_from_stream_then_live_without_gap():
    r = bftest.redis_client()
    before = bftest.stream_last_id(r)
    old = _region_event_writes(3, "old")
    tail = Tail("bangfu.registry.region.", "--from", "(" + before, "--json")
    first = [json.loads(l) for l in tail.take(3)]
    eq([e["subject"] for e in first], ["region/" + c for c in old], "replayed from the stream")
    # written right after the replay: the subscription may still be on its way
    new = _region_event_writes(3, "new")
    live = [json.loads(l) for l in tail.take(3)]
    eq([e["subject"] for e in live], ["region/" + c for c in new], "then live, no gap")
    check(all(e["type"].startswith("bangfu.registry.region.") for e in first + live))
    check(all(e["specversion"] == "1.0" and e["id"] for e in first + live))
    # nothing else, and nothing twice
    eq(tail.idle(1.5), [], "no duplicates or stray events")
    rc, err = tail.stop()
    eq(rc, 0, "exit after SIGINT: " + err)
    ids = [e["id"] for e in first + live]
    eq(len(set(ids)), 6)
    stream = [e for _, e in bftest.stream_events(r, before)
              if e["type"].startswith("bangfu.registry.region.")]
    eq([e["id"] for e in stream], ids, "the same events as the stream, in its order")


def test_events_tail_during_a_burst_prints_each_event_exactly_once():
    r = bftest.redis_client()
    before = bftest.stream_last_id(r)
    done = threading.Event()

    def burst():
        _region_event_writes(60, "burst")
        done.set()

    t = threading.Thread(target=burst)
    t.start()
    time.sleep(0.05)
    tail = Tail("bangfu.registry.", "--from", "(" + before, "--json")
    t.join()

    def relayed():
        ids = [e["id"] for _, e in bftest.stream_events(r, before)
               if e["type"].startswith("bangfu.registry.")]
        return ids if len(ids) >= 60 else None
    expected = bftest.wait_for(relayed, msg="the burst's 60 events in the stream")
    eq(len(expected), 60)
    got = [json.loads(l)["id"] for l in tail.take(len(expected))]
    extra = tail.idle(1.0)
    rc, err = tail.stop()
    eq(rc, 0, err)
    eq(extra, [], "no event twice")
    eq(sorted(got), sorted(expected), "every event of the burst, each once")


def _wait_in_stream(codes, since):
    """Until the relay has put the events of these region codes into the stream."""
    r = bftest.redis_client()
    want = {"region/" + c for c in codes}
    bftest.wait_for(lambda: want <= {e["subject"] for _, e in bftest.stream_events(r, since)},
                    msg="events relayed to the stream")


def test_events_tail_from_dollar_prints_only_new_events_without_gap():
    since = bftest.stream_last_id(bftest.redis_client())
    _wait_in_stream(_region_event_writes(2, "before-dollar"), since)
    tail = Tail("bangfu.registry.region.", "--from", "$", "--json")
    tail.wait_ready()
    # written at once: without the stream the first ones could miss a fresh subscription
    new = _region_event_writes(3, "after-dollar")
    got = [json.loads(l) for l in tail.take(3)]
    eq(tail.idle(1.0), [])
    rc, err = tail.stop()
    eq(rc, 0, err)
    eq(sorted(e["subject"] for e in got), sorted("region/" + c for c in new))


def test_events_tail_from_the_end_of_the_stream_prints_nothing_old():
    r = bftest.redis_client()
    since = bftest.stream_last_id(r)
    _wait_in_stream(_region_event_writes(1, "last-before"), since)
    last = bftest.stream_last_id(r)
    tail = Tail("--from", "(" + last, "--json")  # after the last entry: nothing to replay
    tail.wait_ready()
    new = _region_event_writes(2, "after-last")
    got = [json.loads(l) for l in tail.take(2)]
    eq(tail.idle(1.0), [], "nothing older than --from, nothing twice")
    rc, err = tail.stop()
    eq(rc, 0, err)
    eq(sorted(e["subject"] for e in got), sorted("region/" + c for c in new))
    check("0 events from bangfu:events up to (none)" in err, err)


def test_events_tail_live_text_format_and_prefix_filter():
    tail = Tail("bangfu.registry.village.")
    # live only: create probe villages until one is printed, i.e. until the
    # subscription has travelled through the bus to the registry's publisher
    seen = []
    for i in range(100):
        C.call("village.create", {"region_code": RUN["town_b"], "name": "探针%d" % i,
                                  "category": "other"})
        seen = tail.take(1, timeout=0.2)
        if seen:
            break
    check(seen, "a live event reached bangfu events tail")
    tail.idle(0.5)  # probes still on their way
    _region_event_writes(1, "filtered-out")
    vid = C.call("village.create", {"region_code": RUN["town_b"], "name": "尾村",
                                    "category": "weak"})["id"]
    lines = tail.take(1)
    eq(tail.idle(0.5), [])
    rc, _ = tail.stop()
    eq(rc, 0)
    eq(len(lines), 1, "only the village event passes the prefix")
    parts = lines[0].rstrip("\n").split(" ", 3)
    check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", parts[0]), "time first: " + lines[0])
    eq(parts[1], "bangfu.registry.village.created")
    eq(parts[2], "village/%d" % vid)
    data = json.loads(parts[3])
    eq(data["id"], vid)
    check(": " not in parts[3] and ", " not in parts[3], "compact JSON: " + parts[3])


def test_events_tail_usage_and_redis_down():
    eq(bangfu("events")[0], 2)
    eq(bangfu("events", "follow")[0], 2)
    eq(bangfu("events", "tail", "--from", "yesterday")[0], 2)
    env = _env(BANGFU_REDIS_URL="redis://127.0.0.1:%d/0" % bftest.free_port())
    rc, _, err = bangfu("events", "tail", "--from", "0", env=env, timeout=30)
    eq(rc, 3, err)


# ---------------------------------------------------------------- coverage

def test_coverage_summary_and_json():
    # town_b: one village without a helper, two households without a cadre
    vid = C.call("village.create", {"region_code": RUN["town_b"], "name": "覆盖村",
                                    "category": "poor"})["id"]
    p0 = 9400000
    path = os.path.join(bftest.TMP, "cov-%s.csv" % RUN["idp"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(HEADER) + "\n")
        f.write("C1,%d,dibao,illness,,industry,1,赵一,%s,head,,\n" % (vid, _id(p0 + 1)))
        f.write("C2,%d,dibao,illness,,industry,1,钱二,%s,head,,\n" % (vid, _id(p0 + 2)))
    eq(bangfu("import", "households", path)[0], 0)
    region = RUN["town_b"]
    # the test village from "tail" may exist in town_b too: count what the registry has
    rc, out, err = bangfu("coverage", "--region", region, "--json")
    eq(rc, 0, err)
    rep = json.loads(out)
    eq(rep["region_code"], region)
    eq(rep["households"]["total"], 2)
    eq(rep["households"]["uncovered"], 2)
    nvill = rep["villages"]["total"]
    eq(rep["villages"]["without_helper"], nvill)
    eq(rep["cadres_over_cap"]["count"], 0)

    rc, out, err = bangfu("coverage", "--region", region)
    eq(rc, 0, err)
    check("Coverage of region %s" % region in out, out)
    check("Households without a responsible cadre: 2 of 2" in out, out)
    check("赵一" in out and "钱二" in out, out)
    check("Cadres over their cap: 0" in out, out)
    check("Villages without a helper unit or team: %d of %d" % (nvill, nvill) in out, out)
    check("覆盖村" in out, out)

    # a helper unit for the village and a cadre for one household change the numbers
    unit = C.call("unit.create", {"name": "覆盖单位" + bftest.uid(), "kind": "department"})["id"]
    C.call("pairing.create", {"kind": "unit_village", "helper_id": unit, "target_id": vid,
                              "starts_on": "2024-01-01"})
    cadre = C.call("cadre.create", {"name": "干部甲", "rank": "general", "unit_id": unit,
                                    "party_member": True})["id"]
    hh = C.call("household.list", {"village_id": vid})["items"]
    C.call("pairing.create", {"kind": "cadre_household", "helper_id": cadre,
                              "target_id": hh[0]["id"], "starts_on": "2024-01-01"})
    rc, out, err = bangfu("coverage", "--region", region)
    eq(rc, 0, err)
    check("Households without a responsible cadre: 1 of 2" in out, out)
    check("Villages without a helper unit or team: %d of %d" % (nvill - 1, nvill) in out, out)

    eq(bangfu("coverage", "--region", "999999999999")[0], 1)
    eq(bangfu("coverage", "--bogus")[0], 2)
    env = _env(BANGFU_REGISTRY_RPC="tcp://127.0.0.1:%d" % bftest.free_port())
    eq(bangfu("coverage", "--timeout", "300", env=env)[0], 3)


# ---------------------------------------------------------------- fail fast, --yuan, health, tables

def _display_width(text):
    import unicodedata
    w = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def _hint_checks(err, endpoint, var, ms):
    check("did not answer at %s within %d ms" % (endpoint, ms) in err, err)
    check("var/endpoints.env" in err and "source" in err, "the hint names var/endpoints.env: " + err)
    check(var in err, "the hint names " + var + ": " + err)


def test_fail_fast_with_a_hint_when_no_service_answers():
    """Nothing listens at the address: the CLI probes before the real call
    (its timeout is still 30 s here) and gives up after the connect timeout
    (1.5 s by default) with exit 3 and a hint, instead of waiting 30 s."""
    dead = "tcp://127.0.0.1:%d" % bftest.free_port()
    env = _env(BANGFU_REGISTRY_RPC=dead)
    env.pop("BANGFU_CONNECT_TIMEOUT_MS", None)
    t0 = time.time()
    rc, out, err = bangfu("call", "registry", "sys.health", env=env, timeout=60)
    elapsed = time.time() - t0
    eq(rc, 3, err)
    eq(out, "")
    _hint_checks(err, dead, "BANGFU_REGISTRY_RPC", 1500)
    check("comes from BANGFU_REGISTRY_RPC" in err, err)
    check("connection refused" in err, err)
    check(elapsed < 10, "gave up after %.1f s, not the call's 30 s timeout" % elapsed)

    # the option and the variable set the connect timeout; the option wins
    rc, _, err = bangfu("--connect-timeout", "300", "coverage", env=env, timeout=60)
    eq(rc, 3, err)
    _hint_checks(err, dead, "BANGFU_REGISTRY_RPC", 300)
    rc, _, err = bangfu("coverage", env=_env(BANGFU_REGISTRY_RPC=dead,
                                             BANGFU_CONNECT_TIMEOUT_MS="700"), timeout=60)
    eq(rc, 3, err)
    _hint_checks(err, dead, "BANGFU_REGISTRY_RPC", 700)
    rc, _, err = bangfu("coverage", "--connect-timeout=400",
                        env=_env(BANGFU_REGISTRY_RPC=dead, BANGFU_CONNECT_TIMEOUT_MS="700"),
                        timeout=60)
    eq(rc, 3, err)
    _hint_checks(err, dead, "BANGFU_REGISTRY_RPC", 400)
    # the funds lists and verify probe too
    for args in (["funds", "sources"], ["funds", "verify"]):
        rc, _, err = bangfu(*args, env=_env(BANGFU_FUNDS_RPC=dead), timeout=60)
        eq(rc, 3, " ".join(args) + ": " + err)
        _hint_checks(err, dead, "BANGFU_FUNDS_RPC", 1500)
    # without the variable the hint says the default address was tried
    env = _env()
    env.pop("BANGFU_NOTIFY_RPC", None)
    rc, _, err = bangfu("call", "notify", "sys.health", "--connect-timeout", "200", env=env,
                        timeout=60)
    if rc == 3:  # unless something listens on the default port on this machine
        check("built-in default: BANGFU_NOTIFY_RPC is not set" in err, err)


def test_events_tail_fails_fast_when_the_bus_does_not_answer():
    """A SUB socket's connect never fails by itself: `events tail` waits for
    its own handshake with the bus for the connect timeout, then exits 3 with
    the hint, instead of tailing nothing forever. (The subprocess timeout only
    catches a hang; the probe's time is not asserted.)"""
    dead = "tcp://127.0.0.1:%d" % bftest.free_port()
    env = _env(BANGFU_BUS_PUB=dead)
    env.pop("BANGFU_CONNECT_TIMEOUT_MS", None)
    rc, out, err = bangfu("events", "tail", env=env, timeout=30)
    eq(rc, 3, err)
    eq(out, "")
    _hint_checks(err, dead, "BANGFU_BUS_PUB", 1500)
    check("bangfu events: bus did not answer" in err, err)
    check("comes from BANGFU_BUS_PUB" in err, err)
    check("connection refused" in err, err)
    check("live from" not in err, "it never claims to be live: " + err)
    # before any replay from Redis, and with the connect timeout of the option
    rc, out, err = bangfu("--connect-timeout", "300", "events", "tail", "--from", "0",
                          "bangfu.registry.", env=env, timeout=30)
    eq(rc, 3, err)
    eq(out, "")
    _hint_checks(err, dead, "BANGFU_BUS_PUB", 300)
    # a malformed address is still a usage error
    rc, _, err = bangfu("events", "tail", env=_env(BANGFU_BUS_PUB="not-an-endpoint"), timeout=30)
    eq(rc, 2, err)
    check("bad endpoint not-an-endpoint" in err, err)


def test_fail_fast_when_the_port_is_not_a_bangfu_service():
    """A port that accepts connections but never speaks ZMTP: no handshake,
    exit 3 after the connect timeout."""
    import socket
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(8)
    ep = "tcp://127.0.0.1:%d" % lsn.getsockname()[1]
    try:
        rc, _, err = bangfu("call", "registry", "sys.health", "--connect-timeout", "500",
                            env=_env(BANGFU_REGISTRY_RPC=ep), timeout=60)
        eq(rc, 3, err)
        _hint_checks(err, ep, "BANGFU_REGISTRY_RPC", 500)
        rc, out, err = bangfu("events", "tail", "--connect-timeout", "500",
                              env=_env(BANGFU_BUS_PUB=ep), timeout=60)
        eq(rc, 3, err)
        eq(out, "")
        _hint_checks(err, ep, "BANGFU_BUS_PUB", 500)
    finally:
        lsn.close()


def test_connect_timeout_usage_errors():
    for args in (["--connect-timeout", "abc", "call", "registry", "sys.health"],
                 ["call", "registry", "sys.health", "--connect-timeout", "0"],
                 ["call", "registry", "sys.health", "--connect-timeout"]):
        rc, _, err = bangfu(*args)
        eq(rc, 2, " ".join(args))
        check("--connect-timeout" in err, err)
    rc, _, err = bangfu("call", "registry", "sys.health",
                        env=_env(BANGFU_CONNECT_TIMEOUT_MS="soon"))
    eq(rc, 2, err)
    check("BANGFU_CONNECT_TIMEOUT_MS" in err, err)
    # a live service passes the probe with a tiny connect timeout too
    rc, out, err = bangfu("call", "registry", "sys.health", "--connect-timeout", "1000")
    eq(rc, 0, err)
    eq(json.loads(out)["status"], "ok")


def test_health_asks_every_service_at_once():
    """registry and funds are up; tasks and notify have addresses where
    nothing listens. Each down one costs the whole timeout: asked one after
    another, four down ones would take 4 x 4 s."""
    env = _env(BANGFU_TASKS_RPC="tcp://127.0.0.1:%d" % bftest.free_port(),
               BANGFU_NOTIFY_RPC="tcp://127.0.0.1:%d" % bftest.free_port())
    t0 = time.time()
    rc, out, err = bangfu("health", "registry", "tasks", "notify", "funds", "tasks", "notify",
                          "--timeout", "4000", env=env, timeout=60)
    elapsed = time.time() - t0
    eq(rc, 3, out + err)
    lines = out.splitlines()
    eq(lines[0].split(), ["SERVICE", "STATE", "LATENCY", "DETAIL"])
    rows = [l.split() for l in lines[1:]]
    eq([r[0] for r in rows], ["registry", "tasks", "notify", "funds", "tasks", "notify"])
    eq([r[1] for r in rows], ["up", "down", "down", "up", "down", "down"])
    for r in rows:
        check(r[3] == "ms" and re.match(r"^>?\d+$", r[2]), "latency column: %r" % r)
    eq(rows[1][2], ">4000")
    check(elapsed < 10, "health took %.1f s: the services were not asked in parallel" % elapsed)

    rc, out, err = bangfu("health", "registry", "funds", "bus", env=_env(), timeout=60)
    eq(rc, 0, out + err)
    eq([l.split()[1] for l in out.splitlines()[1:]], ["up", "up", "up"])
    eq(bangfu("health", "nosuch")[0], 2)


def test_call_yuan_amounts():
    F = S.client("funds")
    src = F.call("source.create", {"name": "元测试-" + bftest.uid(), "kind": "county",
                                   "request_key": bftest.uid()})
    params = '{"source_id": %d, "amount_fen": 12.34, "year": 2024, "request_key": "%s"}' % (
        src["id"], bftest.uid())
    rc, out, err = bangfu("call", "funds", "source.receive", params, "--yuan")
    eq(rc, 0, err)
    eq(json.loads(out)["amount_fen"], 1234)
    params = '{"source_id": %d, "amount_fen": "0.5", "year": 2024, "request_key": "%s"}' % (
        src["id"], bftest.uid())
    rc, out, err = bangfu("call", "funds", "source.receive", params, "--yuan")
    eq(rc, 0, err)
    eq(json.loads(out)["balance_fen"], 1284)
    for bad, why in (("12.345", "more than 2 decimals"), ('"12,00"', "not an amount"),
                     ("1e3", "not an amount")):
        params = '{"source_id": %d, "amount_fen": %s, "year": 2024, "request_key": "%s"}' % (
            src["id"], bad, bftest.uid())
        rc, out, err = bangfu("call", "funds", "source.receive", params, "--yuan")
        eq(rc, 2, bad)
        check("amount_fen" in err and why in err, err)
    eq(F.call("source.get", {"id": src["id"]})["balance_fen"], 1284)
    # without --yuan the number is fen as before
    params = '{"source_id": %d, "amount_fen": 16, "year": 2024, "request_key": "%s"}' % (
        src["id"], bftest.uid())
    rc, out, _ = bangfu("call", "funds", "source.receive", params)
    eq(json.loads(out)["amount_fen"], 16)


def _check_aligned(out):
    lines = out.splitlines()
    check(len(lines) >= 2, out)
    widths = {_display_width(l) for l in lines}
    eq(len(widths), 1, "every line of a right-ended table has the same display width:\n" + out)
    return lines


def test_funds_lists_as_tables_with_chinese_names():
    F = S.client("funds")
    tag = bftest.uid()
    kind = "donation"
    src = F.call("source.create", {"name": "东丽区对口帮扶专项资金" + tag, "kind": kind,
                                   "provider": "东丽区财政局", "request_key": bftest.uid()})
    src2 = F.call("source.create", {"name": "x" + tag, "kind": kind,
                                    "request_key": bftest.uid()})
    F.call("source.receive", {"source_id": src["id"], "amount_fen": 123456789, "year": 2024,
                              "request_key": bftest.uid()})
    F.call("source.receive", {"source_id": src2["id"], "amount_fen": 5, "year": 2024,
                              "request_key": bftest.uid()})
    rc, out, err = bangfu("funds", "sources", "--kind", kind, "--limit", "1000", "--yuan")
    eq(rc, 0, err)
    lines = out.splitlines()
    eq(lines[0].split(), ["ID", "NAME", "KIND", "PROVIDER", "RECEIVED", "元", "BALANCE", "元"])
    mine = [l for l in lines if tag in l]
    eq(len(mine), 2, out)
    check("东丽区对口帮扶专项资金" in mine[0] and "1234567.89" in mine[0], mine[0])
    check(mine[1].rstrip().endswith("0.05"), mine[1])
    _check_aligned(out)  # the last column (balance) is right-aligned
    # the name column starts at the same display column on every line
    col = {_display_width(l[:l.index(n)]) for l, n in
           ((lines[0], "NAME"), (mine[0], "东丽区"), (mine[1], "x" + tag))}
    eq(len(col), 1, out)
    rc, out, err = bangfu("funds", "sources", "--kind", kind, "--limit", "1000")
    eq(rc, 0, err)
    check("123456789" in [l for l in out.splitlines() if tag in l][0], out)
    check("分" in out.splitlines()[0], out)
    rc, out, err = bangfu("funds", "sources", "--kind", kind, "--json")
    eq(rc, 0, err)
    check(isinstance(json.loads(out)["items"], list), out)
    eq(bangfu("funds", "sources", "--kind", "bogus")[0], 1)
    eq(bangfu("funds", "sources", "--limit", "0")[0], 2)
    eq(bangfu("funds", "sources", "--all", "--json")[0], 2)

    bud = F.call("budget.create", {"recipient": "program:" + tag, "year": 2024,
                                   "name": "东丽帮扶预算", "carrier": "东丽开发区",
                                   "funding": [{"source_id": src["id"], "amount_fen": 100000}],
                                   "request_key": bftest.uid()})
    F.call("project.create", {"name": "稻地村蔬菜大棚" + tag, "kind": "industry",
                              "location": "130821000000", "unit_id": 7, "beneficiaries": 120,
                              "target": "建成大棚10座", "budget_id": bud["id"],
                              "amount_fen": 60050, "request_key": bftest.uid()})
    F.call("project.create", {"name": "p" + tag, "kind": "education",
                              "location": "130821000000", "unit_id": 7, "beneficiaries": 1,
                              "target": "t", "budget_id": bud["id"], "amount_fen": 1,
                              "request_key": bftest.uid()})
    rc, out, err = bangfu("funds", "budgets", "--recipient", "program:" + tag, "--yuan")
    eq(rc, 0, err)
    lines = _check_aligned(out)
    eq(len(lines), 2, out)
    check("东丽帮扶预算" in lines[1] and "东丽开发区" in lines[1] and "399.49" in lines[1], out)
    rc, out, err = bangfu("funds", "projects", "--budget-id", str(bud["id"]), "--yuan")
    eq(rc, 0, err)
    lines = _check_aligned(out)
    eq(len(lines), 3, out)
    check("稻地村蔬菜大棚" in lines[1] and "600.50" in lines[1], out)
    check("0.01" in lines[2], out)
    # paging: one per page, --all follows the cursors
    rc, out, err = bangfu("funds", "projects", "--budget-id", str(bud["id"]), "--limit", "1")
    eq(rc, 0, err)
    eq(len(out.splitlines()), 2, out)
    check("--cursor" in err, err)
    rc, out, err = bangfu("funds", "projects", "--budget-id", str(bud["id"]), "--limit", "1",
                          "--all")
    eq(rc, 0, err)
    eq(len(out.splitlines()), 3, out)
    eq(bangfu("funds", "budgets", "--year", "soon")[0], 2)
    rc, out, _ = bangfu("funds", "projects", "--help")
    eq(rc, 0)
    check(out.startswith("usage: bangfu funds projects") and "--budget-id" in out, out)
