"""Least privilege in PostgreSQL and Redis (docs/security.md, "PostgreSQL and
Redis privileges"): every service logs in to PostgreSQL as its own role, which
owns only its schema and is no superuser, and to Redis as its own ACL user,
allowed only the commands and keys it uses; a client without credentials can
do nothing in Redis; Redis has a maxmemory with policy noeviction, and
sys.health reports memory use with an alert flag.
"""
import psycopg2
import redis as redislib

import bftest
from bftest import Stack, check, eq

SERVICES = ("registry", "funds", "tasks", "notify")
S = None


def setup_module():
    global S
    S = Stack(list(SERVICES)).__enter__()


def teardown_module():
    S.__exit__(None, None, None)


def _as_role(role):
    conn = psycopg2.connect(bftest.PG_DSN, user=role)
    conn.autocommit = True
    return conn


def _denied(conn, sql, what):
    cur = conn.cursor()
    try:
        cur.execute(sql)
    except psycopg2.Error as e:
        eq(e.pgcode, "42501", "%s: refused as insufficient_privilege (%s)" % (what, e.pgerror))
        return
    raise bftest.TestFailure("%s: allowed, should be refused" % what)


def _redis_as(user):
    port = int(bftest.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    if user is None:
        return redislib.Redis(host="127.0.0.1", port=port)
    return redislib.Redis(host="127.0.0.1", port=port, username="bangfu_" + user,
                          password=bftest.redis_password(user))


def _refused(fn, says, what):
    try:
        fn()
    except redislib.exceptions.RedisError as e:
        # redis-py drops the error code from the message and raises a class
        # for it instead (NOPERM: NoPermissionError, NOAUTH:
        # AuthenticationRequiredError, WRONGPASS: AuthenticationError)
        text = "%s: %s" % (type(e).__name__, e)
        names = {"NOPERM": "NoPermission", "NOAUTH": "AuthenticationRequired",
                 "WRONGPASS": "AuthenticationError"}
        check(says in text or names.get(says, says) in text or
              (says == "NOAUTH" and "Authentication required" in text),
              "%s: refused with %s, got %r" % (what, says, text))
        return
    raise bftest.TestFailure("%s: allowed, should be refused" % what)


# ------------------------------------------------------------------ PostgreSQL

def test_each_service_logs_in_as_its_own_role_which_is_no_superuser():
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()")
    users = {r[0] for r in cur.fetchall()}
    for svc in SERVICES:
        role = "bangfu_" + svc
        check(role in users, "%s has a connection as %s (connected: %s)" % (svc, role, sorted(users)))
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication "
                    "FROM pg_roles WHERE rolname = %s", (role,))
        eq(cur.fetchone(), (False, False, False, False, False), role + " has no special attribute")


def test_each_schema_and_everything_in_it_belongs_to_its_service_role():
    cur = bftest.pg().cursor()
    for svc in SERVICES:
        cur.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (svc,))
        eq(cur.fetchone()[0], "bangfu_" + svc, "owner of schema " + svc)
        cur.execute("SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                    "WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r','p','S','v')",
                    (svc,))
        rows = cur.fetchall()
        check(any(r[0] == "outbox" for r in rows), "the outbox is in schema " + svc)
        eq([r for r in rows if r[1] != "bangfu_" + svc], [], "objects of %s not its role's" % svc)


def test_the_registry_role_cannot_touch_funds_or_tasks():
    conn = _as_role("bangfu_registry")
    cur = conn.cursor()
    cur.execute("SELECT current_user, count(*) FROM registry.region GROUP BY 1")  # its own: fine
    _denied(conn, "INSERT INTO funds.account (kind, name) VALUES ('external', 'x')",
            "INSERT funds.account")
    _denied(conn, "UPDATE funds.account SET floor_fen = -100000000", "UPDATE funds.account floor")
    _denied(conn, "UPDATE funds.tranche SET approved_by = 'cadre:x'", "UPDATE funds.tranche")
    _denied(conn, "SELECT count(*) FROM funds.transfer", "read funds.transfer")
    _denied(conn, "INSERT INTO tasks.plan DEFAULT VALUES", "INSERT tasks.plan")
    _denied(conn, "DELETE FROM tasks.plan", "DELETE tasks.plan")
    _denied(conn, "UPDATE notify.endpoint SET url = 'http://x/'", "UPDATE notify.endpoint")
    _denied(conn, "CREATE SCHEMA intruder", "CREATE SCHEMA")
    _denied(conn, "CREATE TABLE public.intruder (i int)", "CREATE TABLE in public")
    _denied(conn, "SET ROLE bangfu_funds", "SET ROLE to another service")
    _denied(conn, "ALTER ROLE bangfu_registry SUPERUSER", "ALTER ROLE SUPERUSER")
    conn.close()


def test_the_funds_role_cannot_write_the_registry():
    conn = _as_role("bangfu_funds")
    _denied(conn, "UPDATE registry.household SET name = 'x'", "UPDATE registry.household")
    _denied(conn, "DROP TABLE registry.region", "DROP TABLE registry.region")
    conn.close()


# ----------------------------------------------------------------------- Redis

def test_redis_refuses_a_client_without_credentials():
    anon = _redis_as(None)
    _refused(anon.ping, "NOAUTH", "PING without AUTH")
    _refused(lambda: anon.xadd("bangfu:events", {"id": "forged", "type": "bangfu.x", "event": "{}"}),
             "NOAUTH", "forged XADD to bangfu:events without credentials")
    _refused(anon.flushall, "NOAUTH", "FLUSHALL without AUTH")
    bad = redislib.Redis(host="127.0.0.1", port=anon.connection_pool.connection_kwargs["port"],
                         username="bangfu_admin", password="not-the-password")
    _refused(bad.ping, "WRONGPASS", "a wrong password")
    _refused(lambda: redislib.Redis(host="127.0.0.1",
                                    port=anon.connection_pool.connection_kwargs["port"],
                                    password="guess").ping(), "WRONGPASS", "the default user")


def test_a_service_redis_user_may_only_publish_events():
    reg = _redis_as("registry")
    check(reg.ping(), "the registry's user can PING (health)")
    reg.xrange("bangfu:events", count=1)  # the relay's Redis-loss check reads it
    _refused(lambda: reg.xreadgroup("notify", "x", {"bangfu:events": ">"}, count=1), "NOPERM",
             "registry reads through notify's consumer group")
    _refused(lambda: reg.xgroup_destroy("bangfu:events", "notify"), "NOPERM",
             "registry destroys notify's consumer group")
    _refused(lambda: reg.xdel("bangfu:events", "1-1"), "NOPERM", "registry XDEL bangfu:events")
    _refused(lambda: reg.delete("bangfu:events"), "NOPERM", "registry DEL bangfu:events")
    _refused(reg.flushall, "NOPERM", "registry FLUSHALL")
    _refused(lambda: reg.sismember("bangfu:notify:paused", "email"), "NOPERM",
             "registry reads notify's keys")
    _refused(lambda: reg.xadd("bangfu:notify:q:email", {"d": "x"}), "NOPERM",
             "registry writes notify's queue")
    _refused(lambda: reg.xadd("bangfu:other", {"a": "b"}), "NOPERM", "registry XADD elsewhere")
    _refused(lambda: reg.config_set("maxmemory", "0"), "NOPERM", "registry CONFIG SET")
    _refused(lambda: reg.eval("return 1", 0), "NOPERM", "registry EVAL")


def test_notify_and_cli_users_cannot_rewrite_the_stream():
    nt = _redis_as("notify")
    check(nt.sismember("bangfu:notify:paused", "no-such-queue") in (0, False),
          "notify reads its own keys")
    _refused(lambda: nt.xdel("bangfu:events", "1-1"), "NOPERM", "notify XDEL bangfu:events")
    _refused(lambda: nt.delete("bangfu:events"), "NOPERM", "notify DEL bangfu:events")
    _refused(lambda: nt.eval("return redis.call('XDEL', KEYS[1], '1-1')", 1, "bangfu:events"),
             "can't access", "notify XDEL inside a script")
    _refused(nt.flushall, "NOPERM", "notify FLUSHALL")
    _refused(lambda: nt.keys("*"), "NOPERM", "notify KEYS")
    cli = _redis_as("cli")
    cli.xrevrange("bangfu:events", count=1)  # `bangfu events --from` may read
    _refused(lambda: cli.xadd("bangfu:events", {"id": "forged"}), "NOPERM", "cli XADD")


def test_redis_has_maxmemory_and_never_evicts():
    r = bftest.redis_client()
    check(int(r.config_get("maxmemory")["maxmemory"]) > 0, "maxmemory is set")
    eq(r.config_get("maxmemory-policy")["maxmemory-policy"], "noeviction", "policy")


def test_health_reports_redis_memory_and_alerts_near_the_limit():
    c = S.client("registry")
    h = c.call("sys.health", actor=None)
    m = h["redis_memory"]
    check(m["used"] > 0 and m["max"] > 0, "used and max reported: %r" % m)
    eq(m["pct"], m["used"] * 100 // m["max"], "pct")
    eq(m["alert"], False, "no alert far below maxmemory")
    r = bftest.redis_client()
    old = r.config_get("maxmemory")["maxmemory"]
    try:
        # a limit the current use fills to about 90 % (above the default 80 %)
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", str(used * 100 // 90))
        m = c.call("sys.health", actor=None)["redis_memory"]
        check(m["pct"] >= 80, "pct near the limit: %r" % m)
        eq(m["alert"], True, "alert above redis.memory_alert_pct")
    finally:
        r.config_set("maxmemory", old)
    eq(c.call("sys.health", actor=None)["redis_memory"]["alert"], False, "alert gone again")
