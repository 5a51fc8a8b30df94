"""`make up` / `make down` (scripts/stack.sh) in a temp directory: the stack
comes up with every built service healthy, var/endpoints.env has the lines
other tools rely on, the demo data loads, loading it again changes nothing,
and down stops everything."""
import os
import re
import shutil
import subprocess
import urllib.request

import psycopg2

from bftest import BUILD, TMP, check, eq, uid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VAR = None


def _stack(cmd, timeout=300):
    env = dict(os.environ, BANGFU_VAR=VAR, BUILD=os.path.relpath(BUILD, ROOT))
    for k in list(env):
        if k.startswith("BANGFU_") and k.endswith(("_RPC", "_BIND", "_DSN", "_URL", "_XSUB", "_PUB")):
            del env[k]
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "stack.sh"), cmd], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def setup_module():
    global VAR
    VAR = os.path.join(TMP, "stack-%s" % uid())


def teardown_module():
    _stack("down")
    shutil.rmtree(VAR, ignore_errors=True)


def _endpoints():
    env = {}
    with open(os.path.join(VAR, "endpoints.env")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def _counts(dsn):
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    out = {}
    for t in ("region", "village", "household", "person", "unit", "cadre", "team", "pairing",
              "exit_case"):
        cur.execute("SELECT count(*) FROM registry.%s" % t)
        out[t] = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM registry.outbox")
    out["events"] = cur.fetchone()[0]
    cur.execute("SELECT count(*) FILTER (WHERE state = 'open'), "
                "count(*) FILTER (WHERE outcome = 'assisted') FROM tasks.monitor_case")
    out["monitor_open"], out["monitor_assisted"] = cur.fetchone()
    cur.execute("SELECT count(*) FROM tasks.assessment_run")
    out["assessments"] = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM tasks.problem WHERE ref LIKE 'demo-assessment-%'")
    out["bottom3_problems"] = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM funds.batch_line l JOIN funds.batch b ON b.id = l.batch_id "
                "WHERE b.batch_key LIKE 'demo-reward-%'")
    out["rewards_paid"] = cur.fetchone()[0]
    # funds, and seed 004's points supermarket (爱心超市)
    for t in ("transfer", "points_rule", "goods", "points_earning", "points_entry",
              "points_redemption", "outbox"):
        cur.execute("SELECT count(*) FROM funds.%s" % t)
        out["funds." + t] = cur.fetchone()[0]
    conn.close()
    return out


def test_up_writes_endpoints_and_loads_demo():
    r = _stack("up")
    check(r.returncode == 0, "stack up failed:\n%s\n%s" % (r.stdout[-3000:], r.stderr[-3000:]))
    env = _endpoints()
    for k in ("BANGFU_REGISTRY_RPC", "BANGFU_BUS_PUB", "BANGFU_REDIS_URL", "BANGFU_PG_DSN",
              "BANGFU_KEYS_DIR", "BANGFU_PRINCIPAL"):
        check(k in env, "endpoints.env lacks " + k)
    check(re.match(r"^tcp://127\.0\.0\.1:\d+$", env["BANGFU_REGISTRY_RPC"]), "loopback RPC")
    check(env["BANGFU_PG_DSN"].startswith("postgresql://"), "DSN form")
    for svc in ("registry", "funds", "tasks", "notify"):
        if os.path.exists(os.path.join(BUILD, "bin", "bangfu-" + svc)):
            check("BANGFU_%s_RPC" % svc.upper() in env, "endpoint for " + svc)
            h = subprocess.run([os.path.join(BUILD, "bin", "bangfu"), "call", svc, "sys.health"],
                               env=dict(os.environ, **env), capture_output=True, text=True)
            eq(h.returncode, 0, "%s healthy: %s" % (svc, h.stderr))
    if os.path.exists(os.path.join(BUILD, "bin", "bangfu-gateway")):
        m = re.search(r"Console and HTTP API: (http://127\.0\.0\.1:\d+/) .*password in (\S+)\)",
                      r.stdout)
        check(m, "the console URL and password file are printed:\n" + r.stdout[-2000:])
        with urllib.request.urlopen(m.group(1) + "healthz", timeout=10) as h:
            eq(h.status, 200)
        check(os.path.getsize(m.group(2)) > 8, "bootstrap admin password written")
    c = _counts(env["BANGFU_PG_DSN"])
    eq(c["village"], 10, "the ten villages of seed 000")
    check(c["household"] >= 10, "households generated")
    check(c["team"] >= 7, "the teams (two from examples/import, by team.import)")
    check(c["exit_case"] >= 1, "households exited by the procedure in the demo")
    check(c["monitor_open"] >= 1 and c["monitor_assisted"] >= 1,
          "relapse-risk monitoring cases in the demo: %r" % c)
    eq(c["assessments"], 1, "the demo's yearly assessment")
    eq(c["bottom3_problems"], 3, "the bottom three villages named with a rectification")
    eq(c["rewards_paid"], 3, "the best three villages' rewards paid by funds")
    if os.path.exists(os.path.join(BUILD, "bin", "bangfu-funds")):
        eq(c["funds.points_rule"], 4, "the village's behaviour rules")
        eq(c["funds.goods"], 4, "the donated goods")
        check(c["funds.points_earning"] >= 10, "households earned points")
        check(c["funds.points_redemption"] >= 5, "households redeemed points")


def test_demo_data_loads_twice_without_change():
    env = _endpoints()
    before = _counts(env["BANGFU_PG_DSN"])
    loaders = ["registry.py", "tasks.py"]
    if os.path.exists(os.path.join(BUILD, "bin", "bangfu-funds")):
        loaders.append("funds.py")
    for loader in loaders:
        r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo", loader)],
                           env=dict(os.environ, **env), capture_output=True, text=True,
                           timeout=300)
        eq(r.returncode, 0, "second demo load of %s: %s" % (loader, r.stderr[-2000:]))
    eq(_counts(env["BANGFU_PG_DSN"]), before, "a second load changes nothing (no rows, no events)")


def test_down_stops_everything():
    env = _endpoints()
    r = _stack("down")
    eq(r.returncode, 0, r.stderr)
    check(not os.path.exists(os.path.join(VAR, "endpoints.env")), "endpoints.env removed")
    for f in os.listdir(os.path.join(VAR, "run")):
        check(False, "pid file left: " + f)
    h = subprocess.run([os.path.join(BUILD, "bin", "bangfu"), "call", "registry", "sys.health",
                        "--timeout", "500"], env=dict(os.environ, **env), capture_output=True)
    eq(h.returncode, 3, "registry no longer answers")
