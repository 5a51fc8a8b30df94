"""notify's guard rails (docs/notify.md "Webhook destinations", "Isolation",
"Retention"): webhooks cannot reach loopback / private / link-local targets
unless the allow-list names them, endpoint URLs carry no user info, secrets
stay out of admin records, lists, events and logs, endpoint.test never holds
the RPC workers, one black-hole endpoint does not hold up the others (per
endpoint concurrency cap and circuit breaker), retention deletes only what
is old and finished, and a cadre reads only its own inbox.

Real PostgreSQL and Redis, the real binaries, local HTTP receivers. The main
notify allows 127.0.0.1/32 (where the receivers are); a second, strict one
allows only one redirector's port."""
import json
import os
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack

from bftest import (Client, RpcError, Stack, TestFailure, check, eq, expect_error, free_port, pg,
                    redis_client, uid, wait_for)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
S = None
R = None
RECV = None
HOLE = None
STREAM = "bangfu:events:test-notify-guard-" + uuid.uuid4().hex[:8]
BASE_MS = 60000
BREAKER = 4       # notify.breaker_failures in this stack
CAP = 2           # notify.endpoint_concurrency (default)
TIMEOUT_MS = 1500


class Receiver:
    """Answers POSTs per path: "ok" -> 200, "redirect:<url>" -> 302 there."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.modes = {}
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with recv.lock:
                    mode = recv.modes.get(self.path, "ok")
                    recv.requests.setdefault(self.path, []).append(
                        {"id": self.headers.get("webhook-id"), "body": body})
                if mode.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", mode[len("redirect:"):])
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path, host="127.0.0.1"):
        return "http://%s:%d%s" % (host, self.port, path)

    def got(self, path):
        with self.lock:
            return list(self.requests.get(path, []))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """Accepts connections, reads the request and never answers, holding
    each connection until the client gives up (closes) or the hole is
    switched to answering 200. Counts connections and the most open at once."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.total = 0
        self.open = 0
        self.max_open = 0
        self.answer = False
        self.stopped = False
        threading.Thread(target=self.loop, daemon=True).start()

    def url(self, path="/hole"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def loop(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with self.lock:
            self.total += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        try:
            conn.settimeout(0.05)
            buf = b""
            while not self.stopped:
                if self.answer and b"\r\n\r\n" in buf:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close"
                                 b"\r\n\r\nok")
                    return
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return  # the client gave up
                buf += chunk
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()


NOTIFY_ENV = {
    "BANGFU_NOTIFY_CLOCK": "manual",
    "BANGFU_NOTIFY_VISIBILITY_MS": "5000",
    "BANGFU_NOTIFY_WEBHOOK_TIMEOUT_MS": str(TIMEOUT_MS),
    "BANGFU_NOTIFY_BACKOFF_BASE_MS": str(BASE_MS),
    "BANGFU_NOTIFY_BACKOFF_CAP_MS": "600000",
    "BANGFU_NOTIFY_MAX_ATTEMPTS": "3",
    "BANGFU_NOTIFY_RATE_PER_SEC": "0",
    "BANGFU_NOTIFY_GROUP_START": "0",
    "BANGFU_NOTIFY_REDRIVE_INTERVAL_S": "0",
    "BANGFU_NOTIFY_BREAKER_FAILURES": str(BREAKER),
    "BANGFU_NOTIFY_RETENTION_INTERVAL_S": "1",
    # the receivers of this test live on loopback: allowed explicitly
    "BANGFU_NOTIFY_WEBHOOK_ALLOW": "127.0.0.1/32",
}


def setup_module():
    global S, R, RECV, HOLE
    RECV = Receiver()
    HOLE = BlackHole()
    S = Stack([], extra_env={"BANGFU_RELAY_STREAM": STREAM}).__enter__()
    S.start("notify", env=NOTIFY_ENV)
    R = redis_client()


def teardown_module():
    try:
        if S:
            S.__exit__(None, None, None)
    finally:
        if RECV:
            RECV.close()
        if HOLE:
            HOLE.close()


def nc():
    return S.client("notify")


def publish(etype, data):
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "bangfu/test", "type": etype,
          "subject": "test/1", "time": "2024-09-25T08:00:00.000Z",
          "datacontenttype": "application/msgpack", "actor": "admin", "data": data}
    R.xadd(STREAM, {"id": ev["id"], "type": ev["type"],
                    "event": msgpack.packb(ev, use_bin_type=True)})
    return ev


def endpoint(url, client=None, **kw):
    params = {"name": "guard-" + uid(), "url": url, "rate_per_sec": 0}
    params.update(kw)
    return (client or nc()).call("endpoint.create", params)


def subscribe(ep_id, prefix):
    return nc().call("subscription.create", {"name": "sub-" + uid(), "type_prefix": prefix,
                                             "endpoint_id": ep_id})["id"]


def deliveries(ep_id):
    return nc().call("delivery.list", {"endpoint_id": ep_id, "limit": 1000})["items"]


def run_test(client, ep_id, timeout=15):
    """endpoint.test, then endpoint.test_result until it is done."""
    t = client.call("endpoint.test", {"id": ep_id})
    eq(t["state"], "pending")
    return wait_for(lambda: (lambda r: r if r["state"] == "done" else None)(
        client.call("endpoint.test_result", {"id": t["test_id"]})), timeout=timeout,
        msg="endpoint test %s not done" % t["test_id"])


def tick():
    return nc().call("scheduler.tick")["moved"]


def advance(ms):
    return nc().call("clock.set", {"advance_ms": ms})["now_ms"]


# ------------------------------------------------------------------- SSRF

def test_endpoint_urls_with_user_info_or_other_schemes_are_refused():
    for url in ("http://user:pass@127.0.0.1:%d/x" % RECV.port, "https://user@example.org/",
                "ftp://example.org/", "file:///etc/passwd", "gopher://example.org/",
                "http://:80/", "http://exa mple.org/"):
        expect_error(nc(), "endpoint.create", {"name": "bad-" + uid(), "url": url},
                     "invalid_argument", "url")
    ep = endpoint(RECV.url("/fine"))
    expect_error(nc(), "endpoint.update", {"id": ep["id"], "url": "http://a:b@example.org/"},
                 "invalid_argument", "url")
    e = nc().err("endpoint.create", {"name": "bad-" + uid(), "url": "http://u:p@example.org/"})
    check("user" in e["message"], "the message says why: %r" % e)


def test_without_the_allow_list_internal_targets_are_refused_at_connect():
    """A notify whose allow-list names only one redirector port: loopback,
    private, link-local (cloud metadata), CGNAT, unspecified, IPv6 loopback,
    IPv4-mapped IPv6, a name resolving to loopback, and a redirect to
    loopback are all refused; nothing reaches the receiver; the answers are
    generic."""
    u = uid()
    target = "/target-" + u
    redirector = "/redirect-" + u
    RECV.modes[redirector] = "redirect:" + RECV.url(target)
    bind = "tcp://127.0.0.1:%d" % free_port()
    strict = dict(NOTIFY_ENV, BANGFU_NOTIFY_BIND=bind,
                  BANGFU_NOTIFY_GROUP="strict-" + u, BANGFU_NOTIFY_WORKERS="1",
                  BANGFU_RELAY_STREAM=STREAM + ":strict",
                  # only the redirector's port, by address and port
                  BANGFU_NOTIFY_WEBHOOK_ALLOW="127.0.0.1:%d" % RECV.port)
    # the receiver itself is reachable only through a second port: a copy
    other = Receiver()
    # endpoint tests are shared by every instance (FOR UPDATE SKIP LOCKED):
    # the main notify, whose allow-list has loopback, stops meanwhile
    eq(S.stop("notify"), 0, "notify exit code")
    try:
        S.start("notify", env=strict, name="notify-strict")
        n2 = Client(bind, timeout_ms=30000)
        try:
            urls = {
                "loopback": other.url(target),
                "private 10/8": "http://10.0.0.1:%d%s" % (other.port, target),
                "private 192.168/16": "http://192.168.0.1/",
                "link-local metadata": "http://169.254.169.254/latest/meta-data/",
                "CGNAT": "http://100.64.0.1/",
                "unspecified": "http://0.0.0.0:%d%s" % (other.port, target),
                "IPv6 loopback": "http://[::1]:%d%s" % (other.port, target),
                "IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]:%d%s" % (other.port, target),
                "a name for loopback": other.url(target, host="localhost"),
                "multicast": "http://224.0.0.1/",
                "private 172.16/12": "http://172.16.0.1/",
                "broadcast": "http://255.255.255.255/",
                "IPv6 unique local": "http://[fd00::1]/",
                "IPv6 link-local": "http://[fe80::1]/",
                "NAT64 of loopback": "http://[64:ff9b::7f00:1]:%d/" % other.port,
                "6to4 of loopback": "http://[2002:7f00:1::1]:%d/" % other.port,
                "IPv6 unspecified": "http://[::]:%d/" % other.port,
            }
            for what, url in urls.items():
                ep = endpoint(url, client=n2)
                r = run_test(n2, ep["id"])
                eq(r["ok"], False, what)
                eq(r["error"], "refused: address not allowed", what)
                eq(r["status"], 0, what)
            eq(other.got(target), [], "nothing reached the receiver")
            # the redirector is allowed; its redirect to loopback is not followed
            ep = endpoint(RECV.url(redirector), client=n2)
            r = run_test(n2, ep["id"])
            eq(r["ok"], False)
            eq(r["error"], "HTTP 302")
            eq(len(RECV.got(redirector)), 1, "the redirector was called")
            eq(RECV.got(target), [], "the redirect target was not")
        finally:
            n2.close()
            if "notify-strict" in S.procs:
                eq(S.stop("notify-strict"), 0, "notify-strict exit code")
            S.start("notify", env=NOTIFY_ENV)
        # the main notify (allow-list 127.0.0.1/32) reaches the receiver
        ep = endpoint(other.url(target))
        eq(run_test(nc(), ep["id"])["ok"], True)
        eq(len(other.got(target)), 1)
    finally:
        other.close()


def test_a_malformed_allow_list_stops_notify_at_start():
    bind = "tcp://127.0.0.1:%d" % free_port()
    try:
        S.start("notify", env=dict(NOTIFY_ENV, BANGFU_NOTIFY_BIND=bind,
                                   BANGFU_NOTIFY_WEBHOOK_ALLOW="127.0.0.1/32,not an entry"),
                name="notify-badallow")
    except TestFailure as e:
        check("webhook_allow" in str(e), "the log names the key: %s" % e)
    else:
        raise TestFailure("notify started with a malformed notify.webhook_allow")
    finally:
        p = S.procs.pop("notify-badallow", None)
        if p:
            p.stop()


def test_a_delivery_to_a_refused_address_fails_generically_in_the_worker():
    u = uid()
    ep = endpoint("http://169.254.169.254/latest/meta-data/")
    subscribe(ep["id"], "bangfu.test.%s." % u)
    ev = publish("bangfu.test.%s.x" % u, {"x": 1})
    d = wait_for(lambda: [x for x in deliveries(ep["id"])
                          if x["event_id"] == ev["id"] and x["state"] == "retry"],
                 timeout=15, msg="the delivery was not tried")[0]
    eq(d["last_error"], "refused: address not allowed")


def test_endpoint_test_answers_never_carry_curl_text():
    closed = free_port()
    ep = endpoint("http://127.0.0.1:%d/x" % closed)
    r = run_test(nc(), ep["id"])
    eq(r["ok"], False)
    eq(r["error"], "connection failed")
    check(str(closed) not in json.dumps(r), "the port is not in the answer: %r" % r)


# ---------------------------------------------------------------- secrets

SECRET_A = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"      # base64 of 24 bytes
SECRET_B = "whsec_" + "WllYV1ZVVFNSUVBPTk1MS0pJSEdGRURD"


def test_secrets_never_in_admin_records_lists_events_or_logs():
    ep = endpoint(RECV.url("/secret"), secret=SECRET_A)
    eq(ep["secret"], SECRET_A, "shown once, at create")
    rot = nc().call("endpoint.rotate_secret", {"id": ep["id"], "secret": SECRET_B})
    eq(rot["secret"], SECRET_B, "shown once, at rotation")
    gen = nc().call("endpoint.rotate_secret", {"id": ep["id"]})["secret"]
    got = nc().call("endpoint.get", {"id": ep["id"]})
    eq(got["secret_set"], True)
    check(re.fullmatch(r"sha256:[0-9a-f]{12}", got["secret_fingerprint"] or ""),
          "a short fingerprint: %r" % got["secret_fingerprint"])
    listed = [e for e in nc().call("endpoint.list")["items"] if e["id"] == ep["id"]]
    eq(len(listed), 1)
    for s in (SECRET_A, SECRET_B, gen, SECRET_A[6:], SECRET_B[6:], gen[6:]):
        check(s not in json.dumps(got) and s not in json.dumps(listed), "secret in a list")
    cur = pg().cursor()
    cur.execute("SELECT method, detail FROM notify.admin_action WHERE detail LIKE %s",
                ("%" + RECV.url("/secret") + "%",))
    rows = cur.fetchall()
    cur.execute("SELECT method, detail FROM notify.admin_action WHERE method = "
                "'endpoint.rotate_secret' AND detail ~ %s", ('"id":%d[,}]' % ep["id"],))
    rows += cur.fetchall()
    eq(sorted(m for m, _ in rows), ["endpoint.create", "endpoint.rotate_secret",
                                    "endpoint.rotate_secret"])
    for _, detail in rows:
        for s in (SECRET_A, SECRET_B, gen):
            check(s[6:] not in detail, "secret in admin_action.detail: %s" % detail)
    check(any('"secret":"[redacted]"' in d for _, d in rows), "the redaction is visible")
    # events: notify's own, through the outbox and the relay
    wait_for(lambda: [1 for _, f in R.xrange(STREAM)
                      if f[b"type"] == b"bangfu.notify.endpoint.secret_rotated"],
             timeout=15, msg="no secret_rotated event relayed")
    for _, f in R.xrange(STREAM):
        for s in (SECRET_A, SECRET_B, gen):
            check(s[6:].encode() not in f[b"event"], "secret in an event")
    log = S.procs["notify"].output()
    for s in (SECRET_A, SECRET_B, gen):
        check(s[6:] not in log, "secret in the log")


def test_the_migration_scrubs_old_admin_records():
    """003 rewrites admin records written before redaction: secrets and user
    info in URLs. Run its admin_action statements on rows written the old
    way."""
    sql = open(os.path.join(ROOT, "services", "notify", "migrations",
                            "003_isolation_redaction.sql")).read()
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    stmts = [s.strip() for s in sql.split(";") if s.strip().startswith("UPDATE admin_action")]
    eq(len(stmts), 2, "two admin_action statements")
    u = uid()
    old = json.dumps({"name": "old-" + u, "url": "http://alice:pw%s@example.org/h" % u,
                      "secret": SECRET_A}, separators=(",", ":"))
    cur = pg().cursor()
    cur.execute("INSERT INTO notify.admin_action (actor, method, detail) VALUES "
                "('admin', 'endpoint.create', %s) RETURNING id", (old,))
    rid = cur.fetchone()[0]
    cur.execute("SET search_path TO notify")
    for s in stmts:
        cur.execute(s)
    cur.execute("SELECT detail FROM notify.admin_action WHERE id = %s", (rid,))
    detail = json.loads(cur.fetchone()[0])
    eq(detail["secret"], "[redacted]")
    eq(detail["url"], "http://example.org/h")
    eq(detail["name"], "old-" + u)


# -------------------------------------------------------------- isolation

def test_endpoint_tests_against_a_black_hole_leave_rpc_workers_free():
    """endpoint.test only records the request: four at once against a black
    hole all answer at once with a test id, sys.health answers while they
    are still pending, and each ends as a generic "timeout"."""
    ep = endpoint(HOLE.url("/test"))
    results = [None] * 4

    def run(i):
        c = Client(S.endpoint("notify"), timeout_ms=30000)
        try:
            results[i] = c.call("endpoint.test", {"id": ep["id"]})
        finally:
            c.close()
    before = HOLE.total
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    check(all(r and r["state"] == "pending" for r in results), repr(results))
    ids = [r["test_id"] for r in results]
    eq(len(set(ids)), 4)
    wait_for(lambda: HOLE.total > before, timeout=10, msg="no test reached the black hole")
    h = Client(S.endpoint("notify"), timeout_ms=5000)
    try:
        health = h.call("sys.health")
        states = [h.call("endpoint.test_result", {"id": i})["state"] for i in ids]
    finally:
        h.close()
    eq(health["status"], "ok")
    check(any(s != "done" for s in states),
          "sys.health answered while endpoint tests were pending: %r" % states)
    for i in ids:
        r = wait_for(lambda: (lambda r: r if r["state"] == "done" else None)(
            nc().call("endpoint.test_result", {"id": i})), timeout=30, msg="test not done")
        eq((r["ok"], r["status"], r["error"]), (False, 0, "timeout"))
        eq(r["endpoint_id"], ep["id"])
        check(r["ms"] < 10000, "bounded by the test timeout: %r" % r)
    expect_error(nc(), "endpoint.test_result", {"id": "t_nope"}, "not_found", "id")
    expect_error(nc(), "endpoint.test", {"id": 987654321}, "not_found", "id")


def test_a_black_hole_endpoint_does_not_hold_up_a_healthy_one():
    """Ten events for a black hole and five for a healthy receiver: the
    healthy ones all arrive; the black hole never has more than the cap of
    connections open; after BREAKER failures without an answer its circuit
    opens and the rest wait (not attempts); once it answers and the pause is
    over everything is delivered and the breaker closes."""
    u = uid()
    hole_ep = endpoint(HOLE.url("/bh-" + u))
    ok_path = "/healthy-" + u
    ok_ep = endpoint(RECV.url(ok_path))
    subscribe(hole_ep["id"], "bangfu.test.%s.hole" % u)
    subscribe(ok_ep["id"], "bangfu.test.%s.ok" % u)
    HOLE.max_open = HOLE.open
    before = HOLE.total
    for i in range(10):
        publish("bangfu.test.%s.hole" % u, {"i": i})
    for i in range(5):
        publish("bangfu.test.%s.ok" % u, {"i": i})
    wait_for(lambda: len(RECV.got(ok_path)) >= 5, timeout=30,
             msg="the healthy endpoint's webhooks did not all arrive")
    eq(len({r["id"] for r in RECV.got(ok_path)}), 5)
    # the black hole's deliveries settle: none still sending
    items = wait_for(lambda: (lambda it: it if len(it) == 10 and
                              all(d["state"] == "retry" for d in it) else None)(
        deliveries(hole_ep["id"])), timeout=60,
        msg="the black hole's deliveries did not settle in retry")
    check(HOLE.max_open <= CAP, "at most %d connections at once, saw %d" % (CAP, HOLE.max_open))
    tried = HOLE.total - before
    check(BREAKER <= tried <= BREAKER + CAP - 1,
          "the breaker stopped the attempts after %d failures: %d connections" % (BREAKER, tried))
    waiting = [d for d in items if d["last_error"] == "paused: endpoint circuit open"]
    eq(len(waiting), 10 - tried, "the others wait for the pause: %r" % [
        (d["attempts"], d["last_error"]) for d in items])
    check(all(d["attempts"] == 0 for d in waiting), "waiting is not an attempt")
    check(all(d["last_error"] == "timeout" for d in items if d["attempts"] == 1),
          "timeouts are called timeouts")
    ep = nc().call("endpoint.get", {"id": hole_ep["id"]})
    check(ep["consecutive_failures"] >= BREAKER, repr(ep))
    check(ep["paused_until_ms"], "paused: %r" % ep)
    # the receiver comes back; after the pause and the backoff all is sent
    HOLE.answer = True
    try:
        advance(BASE_MS * 10)
        tick()
        wait_for(lambda: all(d["state"] == "sent" for d in deliveries(hole_ep["id"])),
                 timeout=60, msg="not everything delivered after the pause")
        ep = nc().call("endpoint.get", {"id": hole_ep["id"]})
        eq(ep["consecutive_failures"], 0)
        eq(ep["paused_until_ms"], None)
    finally:
        HOLE.answer = False


# -------------------------------------------------------------- retention

def test_retention_deletes_old_finished_rows_only():
    u = uid()
    ep = endpoint(RECV.url("/ret-" + u))
    sub = subscribe(ep["id"], "bangfu.test.%s." % u)
    cur = pg().cursor()

    def did():
        return "d_" + uuid.uuid4().hex

    ev_old, ev_keep = "ret-old-" + u, "ret-keep-" + u
    for e in (ev_old, ev_keep):
        cur.execute("INSERT INTO notify.event (id, type, payload, received_at) VALUES "
                    "(%s, 'bangfu.test.x', '\\x80', now() - interval '400 days')", (e,))
    rows = {"sent_old": (ev_old, "sent", 200), "dropped_old": (ev_old, "dropped", 200),
            "pending_old": (ev_keep, "pending", 200), "dead_old": (ev_keep, "dead", 200),
            "retry_old": (ev_keep, "retry", 200), "sent_new": (ev_keep, "sent", 1)}
    ids = {}
    for k, (ev, state, days) in rows.items():
        ids[k] = did()
        cur.execute("INSERT INTO notify.delivery (id, event_id, event_type, subscription_id, "
                    "endpoint_id, channel, recipient, state, due_ms, created_at, updated_at) "
                    "VALUES (%s, %s, 'bangfu.test.x', %s, %s, 'webhook', 'endpoint', %s, "
                    "CASE WHEN %s = 'retry' THEN 4000000000000 END, "
                    "now() - make_interval(days => %s), now() - make_interval(days => %s))",
                    (ids[k], ev, sub, ep["id"], state, state, days, days))
    inbox_old, inbox_new = did(), did()
    for i, days in ((inbox_old, 400), (inbox_new, 1)):
        cur.execute("INSERT INTO notify.inbox (id, person, event_id, event_type, title, body, "
                    "created_at) VALUES (%s, 'cadre:999001', 'e', 't', 't', 'b', "
                    "now() - make_interval(days => %s))", (i, days))
    cur.execute("INSERT INTO notify.admin_action (actor, method, detail, at) VALUES "
                "('admin', 'ret.test', %s, now() - interval '1000 days') RETURNING id", (u,))
    admin_old = cur.fetchone()[0]
    cur.execute("INSERT INTO notify.admin_action (actor, method, detail) VALUES "
                "('admin', 'ret.test', %s) RETURNING id", (u,))
    admin_new = cur.fetchone()[0]
    try:
        def left():
            cur.execute("SELECT id FROM notify.delivery WHERE id = ANY(%s)", (list(ids.values()),))
            return {r[0] for r in cur.fetchall()}
        wait_for(lambda: ids["sent_old"] not in left() and ids["dropped_old"] not in left(),
                 timeout=20, msg="old sent/dropped deliveries not deleted")
        eq(left(), {ids[k] for k in ("pending_old", "dead_old", "retry_old", "sent_new")},
           "unfinished, dead and recent deliveries are kept")
        def events():
            cur.execute("SELECT id FROM notify.event WHERE id = ANY(%s)", ([ev_old, ev_keep],))
            return [r[0] for r in cur.fetchall()]
        # the same pass deletes the events after the deliveries
        wait_for(lambda: events() == [ev_keep], timeout=20,
                 msg="the event nothing refers to is not deleted: %r" % events())
        wait_for(lambda: (cur.execute("SELECT count(*) FROM notify.inbox WHERE id = %s",
                                      (inbox_old,)), cur.fetchone()[0] == 0)[1],
                 timeout=20, msg="old inbox message not deleted")
        cur.execute("SELECT id FROM notify.inbox WHERE id = %s", (inbox_new,))
        eq(len(cur.fetchall()), 1, "a recent inbox message stays")
        wait_for(lambda: (cur.execute("SELECT id FROM notify.admin_action WHERE method = "
                                      "'ret.test' AND detail = %s", (u,)),
                          [r[0] for r in cur.fetchall()] == [admin_new])[1],
                 timeout=20, msg="old admin record not deleted")
        check(admin_old != admin_new)
    finally:
        cur.execute("DELETE FROM notify.delivery WHERE id = ANY(%s)", (list(ids.values()),))
        cur.execute("DELETE FROM notify.event WHERE id = ANY(%s)", ([ev_old, ev_keep],))
        cur.execute("DELETE FROM notify.inbox WHERE id = %s", (inbox_new,))


# ------------------------------------------------------------------ inbox

def test_a_cadre_reads_and_marks_only_its_own_inbox():
    me, other = 900000 + int(uid()[:4], 16) % 90000, 1
    other = me + 1
    cur = pg().cursor()
    mine, theirs = "d_" + uuid.uuid4().hex, "d_" + uuid.uuid4().hex
    for i, who in ((mine, me), (theirs, other)):
        cur.execute("INSERT INTO notify.inbox (id, person, event_id, event_type, title, body) "
                    "VALUES (%s, %s, 'e', 't', '标题', '内容')", (i, "cadre:%d" % who))
    auth = {"roles": ["cadre"], "cadre_id": me}
    actor = "cadre:%d" % me
    got = nc().call("inbox.list", {"person": "cadre:%d" % me}, actor=actor, auth=auth)
    eq([m["id"] for m in got["items"]], [mine])
    expect_error(nc(), "inbox.list", {"person": "cadre:%d" % other}, "permission_denied",
                 "person", actor=actor, auth=auth)
    # another's message: not found for this cadre, whether person is given or not
    expect_error(nc(), "inbox.ack", {"id": theirs}, "not_found", "id", actor=actor, auth=auth)
    expect_error(nc(), "inbox.ack", {"id": theirs, "person": "cadre:%d" % other},
                 "permission_denied", "person", actor=actor, auth=auth)
    cur.execute("SELECT acked_at FROM notify.inbox WHERE id = %s", (theirs,))
    eq(cur.fetchone()[0], None, "the other's message is untouched")
    r = nc().call("inbox.ack", {"id": mine}, actor=actor, auth=auth)
    check(r["acked_at"], "acked")
    # an admin sees any inbox
    got = nc().call("inbox.list", {"person": "cadre:%d" % other})
    eq([m["id"] for m in got["items"]], [theirs])
    # a cadre without a cadre id or a person actor has no inbox of its own
    expect_error(nc(), "inbox.list", {"person": "cadre:%d" % me}, "permission_denied",
                 "person", actor="someone", auth={"roles": ["cadre"]})
