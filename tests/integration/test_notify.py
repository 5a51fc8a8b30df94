"""The notification service (docs/notify.md) against real PostgreSQL and Redis,
a local HTTP receiver that verifies Standard Webhooks signatures itself, and a
local SMTP sink. The notify clock is manual (clock.set / scheduler.tick), so
no test sleeps for a backoff to pass."""
import base64
import email
import email.header
import email.policy
import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bftest
import msgpack
import zmq

from bftest import (BUILD, TMP, Stack, Subscriber, TestFailure, check, eq, expect_error,
                    free_port, redis_client, stream_last_id, uid, wait_for)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
S = None
R = None          # redis client
RECV = None       # the webhook receiver
SMTP = None       # the SMTP sink
BASE_MS = 60000   # notify.backoff_base_ms in this stack
MAX_ATTEMPTS = 3
DISABLE_MS = 1000000
NOTIFY_ENV = {}


# ---------------------------------------------------------------- receiver

class Receiver:
    """Records every POST by path; answers per path mode ("ok" -> 200,
    "fail" -> 500). Verifies the Standard Webhooks signature with the secrets
    registered for the path (all signatures in the header are checked)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}   # path -> [dict]
        self.modes = {}      # path -> "ok" | "fail"
        self.secrets = {}    # path -> [whsec_...]
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                path = self.path
                with recv.lock:
                    mode = recv.modes.get(path, "ok")
                    rec = {"id": self.headers.get("webhook-id"),
                           "ts": self.headers.get("webhook-timestamp"),
                           "sig": self.headers.get("webhook-signature") or "",
                           "ctype": self.headers.get("Content-Type"),
                           "body": body, "status": 200 if mode == "ok" else 500,
                           "verified": recv.verify(path, self.headers, body)}
                    recv.requests.setdefault(path, []).append(rec)
                self.send_response(rec["status"])
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a sender killed mid-request (the SIGKILL test) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    @staticmethod
    def sign(secret, msg_id, ts, body):
        key = base64.b64decode(secret[len("whsec_"):])
        mac = hmac.new(key, b"%s.%s." % (msg_id.encode(), ts.encode()) + body, hashlib.sha256)
        return base64.b64encode(mac.digest()).decode()

    def verify(self, path, headers, body):
        """Which registered secrets produced a signature in the header."""
        sigs = [s.split(",", 1)[1] for s in (headers.get("webhook-signature") or "").split()
                if s.startswith("v1,")]
        ok = []
        for secret in self.secrets.get(path, []):
            expect = self.sign(secret, headers.get("webhook-id") or "",
                               headers.get("webhook-timestamp") or "", body)
            if any(hmac.compare_digest(expect, s) for s in sigs):
                ok.append(secret)
        return ok

    def got(self, path):
        with self.lock:
            return list(self.requests.get(path, []))

    def ok_ids(self, path):
        """webhook-id -> number of 2xx answers."""
        counts = {}
        for r in self.got(path):
            if r["status"] == 200:
                counts[r["id"]] = counts.get(r["id"], 0) + 1
        return counts

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """Python's smtpd (Debian python3.11) in a thread; keeps raw messages."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import asyncore
            import smtpd
        self.asyncore = asyncore
        self.messages = []
        sink = self

        class Server(smtpd.SMTPServer):
            def process_message(self, peer, mailfrom, rcpttos, data, **kw):
                sink.messages.append({"from": mailfrom, "to": rcpttos, "data": data})

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), None, decode_data=False)
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            self.asyncore.loop(timeout=0.1, count=1)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.server.close()


# ------------------------------------------------------------------ setup

STREAM = "bangfu:events:test-notify-" + uuid.uuid4().hex[:8]


def setup_module():
    global S, R, RECV, SMTP, NOTIFY_ENV
    RECV = Receiver()
    SMTP = SmtpSink()
    NOTIFY_ENV = {
        "BANGFU_NOTIFY_CLOCK": "manual",
        "BANGFU_NOTIFY_VISIBILITY_MS": "2000",
        "BANGFU_NOTIFY_WEBHOOK_TIMEOUT_MS": "1500",
        "BANGFU_NOTIFY_BACKOFF_BASE_MS": str(BASE_MS),
        "BANGFU_NOTIFY_BACKOFF_CAP_MS": "600000",
        "BANGFU_NOTIFY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "BANGFU_NOTIFY_DISABLE_AFTER_MS": str(DISABLE_MS),
        "BANGFU_NOTIFY_SMTP_URL": "smtp://127.0.0.1:%d" % SMTP.port,
        "BANGFU_NOTIFY_MAIL_FROM": "notify@bangfu.test",
        "BANGFU_NOTIFY_RATE_PER_SEC": "0",
        "BANGFU_NOTIFY_GROUP_START": "0",
        "BANGFU_NOTIFY_REDRIVE_INTERVAL_S": "0",
        # the receivers of these tests are on loopback, which webhooks may
        # reach only when the allow-list names it (docs/notify.md)
        "BANGFU_NOTIFY_WEBHOOK_ALLOW": "127.0.0.1/32",
    }
    services = ["registry"]
    if os.path.exists(os.path.join(BUILD, "bin", "bangfu-tasks")):
        services.append("tasks")
    # a stream of its own: the shared bangfu:events holds every other test
    # file's events, which the group (starting at 0) would have to wade through
    S = Stack(services, extra_env={"BANGFU_TASKS_CLOCK": "manual",
                                   "BANGFU_RELAY_STREAM": STREAM}).__enter__()
    S.start("notify", env=NOTIFY_ENV)
    R = redis_client()


def teardown_module():
    try:
        if S:
            S.__exit__(None, None, None)
    finally:
        if RECV:
            RECV.close()
        if SMTP:
            SMTP.close()


def nc():
    return S.client("notify")


def clock_set(ms):
    return nc().call("clock.set", {"ms": ms})["now_ms"]


def clock_now():
    return nc().call("clock.get")["now_ms"]


def tick():
    return nc().call("scheduler.tick")["moved"]


def make_event(etype, data, subject="test/1", eid=None):
    eid = eid or str(uuid.uuid4())
    ev = {"specversion": "1.0", "id": eid, "source": "bangfu/test", "type": etype,
          "subject": subject, "time": "2024-09-25T08:00:00.000Z",
          "datacontenttype": "application/msgpack", "actor": "admin", "data": data}
    return ev


def publish(ev):
    """What the relay does: XADD to bangfu:events with id, type, event."""
    return R.xadd(STREAM, {"id": ev["id"], "type": ev["type"],
                                    "event": msgpack.packb(ev, use_bin_type=True)}).decode()


def webhook(path, **kw):
    params = {"name": "hook-" + uid(), "url": RECV.url(path), "rate_per_sec": 0}
    params.update(kw)
    ep = nc().call("endpoint.create", params)
    RECV.secrets[path] = [ep["secret"]]
    return ep


def subscribe(ep_id, prefix, **kw):
    params = {"name": "sub-" + uid(), "type_prefix": prefix, "endpoint_id": ep_id}
    params.update(kw)
    return nc().call("subscription.create", params)["id"]


def delivery_of(event_id, n=1, timeout=15):
    return wait_for(lambda: (lambda items: items if len(items) >= n else None)(
        nc().call("delivery.list", {"event_id": event_id})["items"]), timeout=timeout,
        msg="no delivery recorded for event %s" % event_id)


def wait_state(did, pred, timeout=15):
    last = [None]

    def probe():
        last[0] = nc().call("delivery.get", {"id": did})
        return last[0] if pred(last[0]) else None
    try:
        return wait_for(probe, timeout=timeout)
    except TestFailure:
        raise TestFailure("delivery %s never reached the wanted state; last: %r" % (did, last[0]))


# ---------------------------------------------------------------- webhooks

def test_event_becomes_a_signed_webhook_the_receiver_verifies():
    u = uid()
    path = "/ok-" + u
    ep = webhook(path)
    check(ep["secret"].startswith("whsec_"), "secret is whsec_")
    subscribe(ep["id"], "bangfu.test.%s." % u)
    ev = make_event("bangfu.test.%s.thing.created" % u, {"name": "东丽区 第一村", "n": 3})
    publish(ev)
    got = wait_for(lambda: RECV.got(path), msg="the webhook never arrived")
    eq(len(got), 1, "one request")
    rq = got[0]
    eq(rq["verified"], [ep["secret"]], "signature verified by the receiver")
    eq(rq["ctype"], "application/json")
    check(abs(int(rq["ts"]) - time.time()) < 60, "webhook-timestamp is now (seconds)")
    body = json.loads(rq["body"])
    eq(body["id"], ev["id"])
    eq(body["type"], ev["type"])
    eq(body["data"], {"name": "东丽区 第一村", "n": 3})
    eq(body["datacontenttype"], "application/json")
    d = delivery_of(ev["id"])[0]
    eq(rq["id"], d["id"], "webhook-id is the delivery id")
    wait_state(d["id"], lambda x: x["state"] == "sent")
    # a tampered body does not verify
    eq(Receiver.sign(ep["secret"], rq["id"], rq["ts"], rq["body"] + b" ") in rq["sig"], False)


def test_rotation_sends_two_signatures_both_valid():
    u = uid()
    path = "/rot-" + u
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    old = ep["secret"]
    rot = nc().call("endpoint.rotate_secret", {"id": ep["id"], "overlap_s": 3600})
    new = rot["secret"]
    check(new != old and new.startswith("whsec_"), "a new secret")
    RECV.secrets[path] = [new, old]
    ev = make_event("bangfu.test.%s.rotated" % u, {"k": 1})
    publish(ev)
    got = wait_for(lambda: RECV.got(path), msg="no webhook after rotation")
    sigs = got[0]["sig"].split()
    eq(len(sigs), 2, "two signatures during rotation")
    eq(sorted(got[0]["verified"]), sorted([new, old]), "each secret made one of them")
    # after the overlap only the new secret signs
    clock_set(clock_now() + 3601 * 1000)
    ev2 = make_event("bangfu.test.%s.rotated" % u, {"k": 2})
    publish(ev2)
    got = wait_for(lambda: RECV.got(path)[1:], msg="no second webhook")
    eq(len(got[0]["sig"].split()), 1, "one signature after the overlap")
    eq(got[0]["verified"], [new])
    # the secret is never listed
    e = nc().call("endpoint.get", {"id": ep["id"]})
    check("secret" not in e, "endpoint.get shows no secret")


def test_failing_endpoint_retried_on_schedule_dead_lettered_then_admin_retry_delivers_once():
    u = uid()
    path = "/fail-" + u
    RECV.modes[path] = "fail"
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    t0 = clock_set(1900000000000)
    ev = make_event("bangfu.test.%s.thing" % u, {"x": 1})
    publish(ev)
    did = delivery_of(ev["id"])[0]["id"]
    d = wait_state(did, lambda x: x["state"] == "retry" and x["attempts"] == 1)
    eq(d["last_error"], "HTTP 500")
    eq(d["last_status"], 500)
    delay = d["due_ms"] - t0
    check(BASE_MS // 2 <= delay <= BASE_MS, "first retry delay %d in [base/2, base]" % delay)
    # not before it is due
    # (the count tick() returns may include other tests' retries due by then:
    # what matters is this delivery)
    clock_set(d["due_ms"] - 1)
    tick()
    early = nc().call("delivery.get", {"id": did})
    eq((early["state"], early["attempts"], early["due_ms"]), ("retry", 1, d["due_ms"]),
       "not moved a millisecond early")
    time.sleep(0.3)
    eq(len(RECV.got(path)), 1, "no second attempt before the due time")
    # at the due time it is moved back and tried again
    clock_set(d["due_ms"])
    tick()  # (the notify scheduler's own 100 ms pass may move it first)
    d2 = wait_state(did, lambda x: x["attempts"] == 2 and x["state"] in ("retry", "dead"))
    eq(d2["state"], "retry")
    delay2 = d2["due_ms"] - d["due_ms"]
    check(BASE_MS <= delay2 <= 2 * BASE_MS, "second delay %d in [base, 2 base]" % delay2)
    eq(len(RECV.got(path)), 2)
    # the last attempt fails: dead letter with the last error
    clock_set(d2["due_ms"])
    tick()
    d3 = wait_state(did, lambda x: x["state"] == "dead")
    eq(d3["attempts"], MAX_ATTEMPTS)
    eq(d3["last_error"], "HTTP 500")
    eq(len(RECV.got(path)), MAX_ATTEMPTS, "exactly max_attempts tries")
    dead = nc().call("queues.dead.list", {"endpoint_id": ep["id"]})["items"]
    eq([x["id"] for x in dead], [did])
    entries = [f for _, f in R.xrange("bangfu:notify:dead") if f[b"d"].decode() == did]
    eq(len(entries), 1, "in the dead-letter stream")
    eq(entries[0][b"error"], b"HTTP 500")
    # and the event bangfu.notify.delivery.dead_lettered, through the outbox
    dl = wait_for(lambda: [e for _, e in stream_tail(200)
                           if e["type"] == "bangfu.notify.delivery.dead_lettered"
                           and e["data"]["delivery_id"] == did],
                  msg="no bangfu.notify.delivery.dead_lettered event")
    eq(len(dl), 1, "one dead_lettered event")
    eq(dl[0]["subject"], "delivery/" + did)
    eq({k: dl[0]["data"][k] for k in ("event_id", "event_type", "channel", "endpoint_id",
                                      "attempts", "error")},
       {"event_id": ev["id"], "event_type": ev["type"], "channel": "webhook",
        "endpoint_id": ep["id"], "attempts": MAX_ATTEMPTS, "error": "HTTP 500"})
    shown = nc().call("queues.dead.show", {"id": did})
    eq(shown["event"]["id"], ev["id"])
    # the receiver is fixed; an admin retries the one delivery
    RECV.modes[path] = "ok"
    r = nc().call("queues.dead.retry", {"id": did})
    eq(r["count"], 1)
    wait_state(did, lambda x: x["state"] == "sent")
    eq(RECV.ok_ids(path), {did: 1}, "delivered exactly once after the admin retry")
    eq([f for _, f in R.xrange("bangfu:notify:dead") if f[b"d"].decode() == did], [],
       "gone from the dead-letter stream")
    expect_error(nc(), "queues.dead.retry", {"id": did}, "not_found", "id")
    # the admin action was recorded and emitted an event
    import psycopg2  # noqa: F401
    from bftest import pg
    cur = pg().cursor()
    cur.execute("SELECT actor, method FROM notify.admin_action WHERE method = 'queues.dead.retry' "
                "AND detail LIKE %s", ("%" + did + "%",))
    eq(cur.fetchall(), [("admin", "queues.dead.retry")])
    wait_for(lambda: [e for _, e in stream_tail(50) if e["type"] == "bangfu.notify.dead.retried"
                      and did in e["data"]["ids"]], msg="no bangfu.notify.dead.retried event")


def stream_tail(n):
    out = []
    for sid, f in R.xrevrange(STREAM, count=n):
        out.append((sid.decode(), msgpack.unpackb(f[b"event"], raw=False)))
    return out


def test_dead_retry_and_drop_by_filter_and_all():
    u = uid()
    path = "/filt-" + u
    RECV.modes[path] = "fail"
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    t = clock_set(1910000000000)
    ids = []
    for i in range(3):
        ev = make_event("bangfu.test.%s.x" % u, {"i": i})
        publish(ev)
        ids.append(delivery_of(ev["id"])[0]["id"])
    for k in range(1, MAX_ATTEMPTS + 1):
        for did in ids:
            wait_state(did, lambda x: x["attempts"] == k and x["state"] in ("retry", "dead"))
        if k < MAX_ATTEMPTS:
            t += 2 * BASE_MS  # past any delay so far, and far inside the disable window
            clock_set(t)
            tick()
    for did in ids:
        wait_state(did, lambda x: x["state"] == "dead")
    eq(nc().call("queues.dead.drop", {"ids": [ids[0]]})["count"], 1)
    eq(nc().call("delivery.get", {"id": ids[0]})["state"], "dropped")
    RECV.modes[path] = "ok"
    r = nc().call("queues.dead.retry", {"filter": {"endpoint_id": ep["id"]}})
    eq(r["count"], 2)
    for did in ids[1:]:
        wait_state(did, lambda x: x["state"] == "sent")
    eq(sorted(RECV.ok_ids(path)), sorted(ids[1:]))
    eq(nc().call("queues.dead.retry", {"all": True})["count"] >= 0, True)
    expect_error(nc(), "queues.dead.retry", {}, "invalid_argument")
    expect_error(nc(), "queues.dead.retry", {"id": "nope"}, "invalid_argument", "id")


def test_event_repeated_in_the_stream_is_delivered_once():
    u = uid()
    path = "/dup-" + u
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    ev = make_event("bangfu.test.%s.dup" % u, {"x": 1})
    publish(ev)
    publish(ev)   # the relay repeats an event after a crash: same id
    marker = make_event("bangfu.test.%s.marker" % u, {"x": 2})
    publish(marker)
    # events are ingested in stream order: once the marker is delivered the
    # repeat has been seen
    wait_for(lambda: len(RECV.ok_ids(path)) >= 2, msg="marker not delivered")
    eq(len(nc().call("delivery.list", {"event_id": ev["id"]})["items"]), 1)
    got = [r for r in RECV.got(path) if json.loads(r["body"])["id"] == ev["id"]]
    eq(len(got), 1, "the repeated event was delivered once")


# ---------------------------------------------------------- email & inbox

def test_email_reaches_the_smtp_sink_with_the_zh_cn_template():
    u = uid()
    addr = "cadre-%s@example.org" % u
    ep = nc().call("endpoint.create", {"name": "mail-" + u, "channel": "email", "address": addr})
    check("secret" not in ep, "email endpoints have no secret")
    person = 900000000 + int(u[:6], 16) % 1000000
    subscribe(ep["id"], "bangfu.tasks.task.overdue",
              scope={"kind": "person", "value": "cadre:%d" % person})
    title = "提交九月份帮扶工作月报（含照片）%s" % u
    ev = make_event("bangfu.tasks.task.overdue",
                    {"task_id": 4711, "title": title, "due_at": "2024-09-25T23:59:59+08:00",
                     "recipient": {"kind": "cadre", "id": person}}, subject="task/4711")
    publish(ev)
    msg = wait_for(lambda: [m for m in SMTP.messages if addr in m["to"]],
                   msg="no email reached the SMTP sink")[0]
    eq(msg["from"], "notify@bangfu.test")
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)
    eq(str(parsed["Subject"]), "【逾期提醒】任务已逾期：" + title)
    eq(parsed.get_content_type(), "text/plain")
    eq(parsed.get_content_charset(), "utf-8")
    body = parsed.get_content()
    check("任务“%s”已于 2024-09-25T23:59:59+08:00 逾期" % title in body, "zh-CN body: %r" % body)
    check("任务编号：4711" in body, "task id in body")
    d = delivery_of(ev["id"])[0]
    wait_state(d["id"], lambda x: x["state"] == "sent")
    eq(d["channel"], "email")


def test_template_put_and_inbox_list_ack():
    u = uid()
    etype = "bangfu.test.%s.notice" % u
    nc().call("template.put", {"type": etype, "subject": "通报：{{village.name}}",
                               "body": "{{summary}}（{{missing}}）第{{n}}期"})
    nc().call("template.put", {"type": etype, "locale": "en", "subject": "Notice: {{village.name}}",
                               "body": "{{summary}}"})
    tl = nc().call("template.list", {"type": etype})
    eq(sorted(t["locale"] for t in tl), ["en", "zh-CN"])
    person = "cadre:%d" % (800000000 + int(u[:6], 16) % 1000000)
    nc().call("subscription.create", {"name": "inbox-" + u, "type_prefix": etype,
                                      "channels": ["inbox"]})
    ev = make_event(etype, {"village": {"name": "新立村"}, "summary": "检查发现问题3个", "n": 7,
                            "recipient": {"kind": "cadre", "id": int(person.split(":")[1])}})
    publish(ev)
    box = wait_for(lambda: (lambda b: b if b["items"] else None)(
        nc().call("inbox.list", {"person": person})), msg="nothing in the inbox")
    eq(len(box["items"]), 1)
    item = box["items"][0]
    eq(item["title"], "通报：新立村")
    eq(item["body"], "检查发现问题3个（）第7期")
    eq(box["unread"], 1)
    nc().call("inbox.ack", {"id": item["id"], "person": person}, actor=person)
    box = nc().call("inbox.list", {"person": person, "unread": True})
    eq(box["items"], [])
    eq(box["unread"], 0)
    expect_error(nc(), "inbox.ack", {"id": item["id"], "person": "cadre:1"}, "not_found", "id")
    expect_error(nc(), "inbox.list", {"person": "nobody"}, "invalid_argument", "person")


def test_bad_input_is_refused_with_the_field():
    expect_error(nc(), "endpoint.create", {"name": "x" + uid(), "url": "ftp://x"},
                 "invalid_argument", "url")
    expect_error(nc(), "endpoint.create", {"name": "x" + uid(), "url": "http://x/",
                                           "secret": "whsec_!!"}, "invalid_argument", "secret")
    expect_error(nc(), "endpoint.create", {"name": "x" + uid(), "channel": "email",
                                           "address": "not an address"},
                 "invalid_argument", "address")
    expect_error(nc(), "subscription.create", {"name": "s", "type_prefix": "bangfu.",
                                               "endpoint_id": 987654321}, "not_found",
                 "endpoint_id")
    expect_error(nc(), "subscription.create", {"name": "s", "type_prefix": "bangfu.",
                                               "channels": ["email"]}, "invalid_argument",
                 "channels")
    expect_error(nc(), "subscription.create", {"name": "s", "type_prefix": "bangfu.",
                                               "channels": ["inbox"],
                                               "scope": {"kind": "region", "value": "12ab"}},
                 "invalid_argument", "scope.value")
    expect_error(nc(), "queues.pause", {"queue": "nope"}, "invalid_argument", "queue")
    e = nc().call("endpoint.create", {"name": "dupe-" + uid(), "url": "http://127.0.0.1:1/"})
    expect_error(nc(), "endpoint.create", {"name": nc().call("endpoint.get", {"id": e["id"]})["name"],
                                           "url": "http://127.0.0.1:1/"}, "already_exists", "name")


# ------------------------------------------------- rate limit and disabling

def test_rate_limit_per_endpoint_on_the_clock():
    u = uid()
    path = "/rate-" + u
    ep = webhook(path, rate_per_sec=1, rate_burst=2)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    t = clock_set(1920000000000)
    evs = [make_event("bangfu.test.%s.r" % u, {"i": i}) for i in range(4)]
    for ev in evs:
        publish(ev)
    dids = [delivery_of(ev["id"])[0]["id"] for ev in evs]
    for did in dids:
        wait_state(did, lambda x: x["state"] in ("sent", "retry"))
    eq(len(RECV.ok_ids(path)), 2, "the burst of 2 went at once")
    waiting = [nc().call("delivery.get", {"id": d}) for d in dids]
    eq(sorted(x["state"] for x in waiting), ["retry", "retry", "sent", "sent"])
    for x in waiting:
        if x["state"] == "retry":
            eq(x["attempts"], 0, "waiting for a token is not an attempt")
    clock_set(t + 1000)
    tick()
    wait_for(lambda: len(RECV.ok_ids(path)) == 3, msg="one more after a second")
    clock_set(t + 2000)
    tick()
    wait_for(lambda: len(RECV.ok_ids(path)) == 4, msg="the last after two seconds")


def test_endpoint_failing_past_the_window_is_disabled_then_released():
    u = uid()
    path = "/dis-" + u
    RECV.modes[path] = "fail"
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    t = clock_set(1930000000000)
    ev = make_event("bangfu.test.%s.a" % u, {"i": 1})
    publish(ev)
    did = delivery_of(ev["id"])[0]["id"]
    d = wait_state(did, lambda x: x["state"] == "retry")
    eq(nc().call("endpoint.get", {"id": ep["id"]})["failing_since_ms"], t)
    clock_set(t + DISABLE_MS + 1)
    tick()
    wait_for(lambda: nc().call("endpoint.get", {"id": ep["id"]})["status"] == "disabled",
             msg="endpoint not disabled")
    wait_for(lambda: [e for _, e in stream_tail(100) if e["type"] == "bangfu.notify.endpoint.disabled"
                      and e["data"]["endpoint_id"] == ep["id"]],
             msg="no bangfu.notify.endpoint.disabled event")
    # deliveries for a disabled endpoint are held, not tried
    ev2 = make_event("bangfu.test.%s.b" % u, {"i": 2})
    publish(ev2)
    did2 = delivery_of(ev2["id"])[0]["id"]
    wait_state(did2, lambda x: x["state"] == "held")
    n_before = len(RECV.got(path))
    RECV.modes[path] = "ok"
    r = nc().call("endpoint.update", {"id": ep["id"], "status": "active"})
    eq(r["released"], 1)
    wait_state(did2, lambda x: x["state"] == "sent")
    eq(len(RECV.got(path)), n_before + 1)
    check(d["state"] == "retry", "the first is still waiting for its retry")
    clock_set(nc().call("delivery.get", {"id": did})["due_ms"])
    tick()
    wait_state(did, lambda x: x["state"] == "sent")


# ------------------------------------------------------------ pause, stats

def cli(*args, env=None):
    e = dict(S.env)
    e["BANGFU_NOTIFY_RPC"] = S.endpoint("notify")
    if env:
        e.update(env)
    p = subprocess.run([os.path.join(BUILD, "bin", "bangfu")] + list(args), env=e,
                       capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def queue(stats, name):
    return [q for q in stats["queues"] if q["name"] == name][0]


def test_bangfu_queues_json_shows_the_true_numbers():
    u = uid()
    ok_path, bad_path = "/qok-" + u, "/qbad-" + u
    RECV.modes[bad_path] = "fail"
    ok_ep, bad_ep = webhook(ok_path), webhook(bad_path)
    subscribe(ok_ep["id"], "bangfu.test.%s.ok" % u)
    subscribe(bad_ep["id"], "bangfu.test.%s.bad" % u)
    # a fresh minute of the notify clock: the counters there are ours alone
    clock_set(1940000000000 + int(u[:4], 16) * 3600 * 1000)
    rc, out, err = cli("queues", "pause", "webhook")
    eq(rc, 0, err)
    try:
        _queues_paused_part(u, ok_path, bad_path)
    finally:
        nc().call("queues.resume", {"queue": "webhook"})


def _queues_paused_part(u, ok_path, bad_path):
    oks = [make_event("bangfu.test.%s.ok" % u, {"i": i}) for i in range(3)]
    bads = [make_event("bangfu.test.%s.bad" % u, {"i": i}) for i in range(2)]
    for ev in oks + bads:
        publish(ev)
    for ev in oks + bads:
        delivery_of(ev["id"])
    rc, out, err = cli("queues", "--json")
    eq(rc, 0, err)
    st = json.loads(out)
    w = queue(st, "webhook")
    eq(w["paused"], True)
    eq(w["length"], R.xlen("bangfu:notify:q:webhook"))
    check(w["length"] >= 5, "5 deliveries wait while paused (length %d)" % w["length"])
    check(w["oldest_age_ms"] is not None and w["oldest_age_ms"] >= 0, "oldest age known")
    rc, out, err = cli("queues", "resume", "webhook")
    eq(rc, 0, err)
    for ev in oks:
        wait_state(delivery_of(ev["id"])[0]["id"], lambda x: x["state"] == "sent")
    for ev in bads:
        wait_state(delivery_of(ev["id"])[0]["id"], lambda x: x["state"] == "retry")
    rc, out, err = cli("queues", "--json")
    eq(rc, 0, err)
    st = json.loads(out)
    w = queue(st, "webhook")
    eq(w["paused"], False)
    eq(w["delivered_1m"], 3, "delivered in the last minute")
    eq(w["failed_1m"], 2, "failed in the last minute")
    eq(w["delivered_1h"], 3)
    eq(w["failed_1h"], 2)
    eq(w["length"], R.xlen("bangfu:notify:q:webhook"))
    eq(w["pending"], R.xpending("bangfu:notify:q:webhook", "notify")["pending"])
    eq(st["retry"]["size"], R.zcard("bangfu:notify:retry"))
    check(st["retry"]["size"] >= 2, "the 2 failures wait in the retry set")
    eq(st["dead"]["size"], R.xlen("bangfu:notify:dead"))
    ev_q = queue(st, "events")
    groups = {g["name"].decode(): g for g in R.xinfo_groups(STREAM)}
    eq(ev_q["consumers"], groups["notify"]["consumers"])
    check(ev_q["delivered_1m"] >= 5, "the 5 events counted as processed")
    # the human table names every queue
    rc, out, err = cli("queues")
    eq(rc, 0, err)
    for name in ("events", "webhook", "email", "sms", "inbox", "retry", "dead"):
        check(name in out, "%s in the table" % name)
    # the dead-letter commands through the CLI
    rc, out, err = cli("queues", "dead", "list", "--json")
    eq(rc, 0, err)
    check("items" in json.loads(out), "dead list answers")
    # pause and resume were recorded and emitted
    wait_for(lambda: [e for _, e in stream_tail(200) if e["type"] == "bangfu.notify.queue.resumed"],
             msg="no queue.resumed event")


# ------------------------------------------------------------ crash safety

def test_sigkill_in_the_middle_of_1000_deliveries_loses_none_duplicates_none():
    u = uid()
    path = "/kill-" + u
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    evs = [make_event("bangfu.test.%s.bulk" % u, {"i": i}) for i in range(1000)]
    pipe = R.pipeline(transaction=False)
    for ev in evs:
        pipe.xadd(STREAM, {"id": ev["id"], "type": ev["type"],
                                    "event": msgpack.packb(ev, use_bin_type=True)})
    pipe.execute()
    wait_for(lambda: len(RECV.ok_ids(path)) >= 150, timeout=60, msg="deliveries did not start")
    S.procs.pop("notify").kill()
    before = len(RECV.ok_ids(path))
    check(before < 1000, "killed in the middle (%d delivered before)" % before)
    S.start("notify", env=NOTIFY_ENV)
    wait_for(lambda: len(RECV.ok_ids(path)) >= 1000, timeout=120, interval=0.2,
             msg="not all 1000 delivered after the restart")
    ids = RECV.ok_ids(path)
    eq(len(ids), 1000, "1000 distinct webhook-ids")
    per_event = {}
    for r in RECV.got(path):
        per_event.setdefault(json.loads(r["body"])["id"], set()).add(r["id"])
    eq(sorted(per_event), sorted(ev["id"] for ev in evs), "every event arrived")
    eq(max(len(v) for v in per_event.values()), 1, "one webhook-id per event")
    # a webhook-id may be posted again only if the kill fell between the
    # receiver's 2xx and the state write (at-least-once); bounded by workers
    again = sum(c - 1 for c in ids.values())
    check(again <= 8, "%d repeated posts of a webhook-id" % again)
    from bftest import pg
    cur = pg().cursor()

    def states():
        cur.execute("SELECT state, count(*) FROM notify.delivery WHERE endpoint_id = %s "
                    "GROUP BY 1", (ep["id"],))
        return dict(cur.fetchall())
    wait_for(lambda: states() == {"sent": 1000}, timeout=20,
             msg="not all 1000 recorded as sent: %r" % states())


def test_lost_redis_work_is_redriven_from_postgresql():
    """What Redis loses in a crash: a delivery recorded in PostgreSQL but
    missing from its stream is queued again when notify starts."""
    u = uid()
    path = "/redrive-" + u
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    nc().call("queues.pause", {"queue": "webhook"})
    ev = make_event("bangfu.test.%s.r" % u, {"i": 1})
    publish(ev)
    did = delivery_of(ev["id"])[0]["id"]
    # Redis forgets it (as after a crash that lost the last second of AOF)
    for sid, f in R.xrange("bangfu:notify:q:webhook"):
        if f[b"d"].decode() == did:
            R.xdel("bangfu:notify:q:webhook", sid)
    S.stop("notify")
    nc_resume = None
    S.start("notify", env=NOTIFY_ENV)
    nc_resume = nc().call("queues.resume", {"queue": "webhook"})
    eq(nc_resume["paused"], False)
    wait_state(did, lambda x: x["state"] == "sent")
    eq(RECV.ok_ids(path), {did: 1})


# -------------------------------------------------------- tasks -> inbox

def _household_with_cadre():
    """A county, township, village, household, unit and the cadre paired as
    the household's responsible person (cadre_household)."""
    import random
    from bftest import RpcError, fresh_id
    reg = S.client("registry")
    for _ in range(100):
        county = "%s%02d%02d" % (random.choice(["13", "14", "15", "21", "22", "23", "41", "42"]),
                                 random.randint(1, 99), random.randint(1, 99))
        try:
            reg.call("region.get", {"code": county + "000000"})
        except RpcError as e:
            if e.code == "not_found":
                break
            raise
    reg.call("region.put", {"code": county[:2] + "0" * 10, "name": "省", "level": "province"})
    reg.call("region.put", {"code": county[:4] + "0" * 8, "name": "市", "level": "city",
                            "parent_code": county[:2] + "0" * 10})
    reg.call("region.put", {"code": county + "000000", "name": "区", "level": "county",
                            "parent_code": county[:4] + "0" * 8})
    town = county + "001000"
    reg.call("region.put", {"code": town, "name": "新立街道", "level": "township",
                            "parent_code": county + "000000"})
    vid = reg.call("village.create", {"region_code": town, "name": "村" + uid(),
                                      "category": "poor"})["id"]
    hid = reg.call("household.create", {
        "village_id": vid, "categories": ["registered_poor"],
        "causes": {"main": "illness", "secondary": []}, "route": "safety_net",
        "income_fen": 500000,
        "members": [{"name": "户主" + uid()[:4], "id_number": fresh_id(county),
                     "relation": "head"}]})["id"]
    unit = reg.call("unit.create", {"name": "帮扶单位" + uid(), "kind": "department"})["id"]
    cadre = reg.call("cadre.create", {"name": "干部" + uid()[:6], "rank": "general",
                                      "unit_id": unit, "party_member": True})["id"]
    reg.call("pairing.create", {"kind": "cadre_household", "helper_id": cadre, "target_id": hid,
                                "starts_on": "2020-01-01"})
    return {"county": county, "village": vid, "household": hid, "unit": unit, "cadre": cadre}


def test_recipients_and_region_scope_come_from_the_registry():
    g = _household_with_cadre()
    u = uid()
    etype = "bangfu.test.%s.visit" % u
    # people: the household's responsible cadre, found through household.get
    nc().call("subscription.create", {"name": "people-" + u, "type_prefix": etype,
                                      "channels": ["inbox"]})
    # a system scoped to the county: the event names only the household
    path = "/region-" + u
    ep = webhook(path)
    subscribe(ep["id"], etype, scope={"kind": "region", "value": g["county"] + "000000"})
    other = webhook("/other-" + u)
    subscribe(other["id"], etype, scope={"kind": "region", "value": "99"})
    ev = make_event(etype, {"household_id": g["household"]}, subject="household/%d" % g["household"])
    publish(ev)
    person = "cadre:%d" % g["cadre"]
    box = wait_for(lambda: (lambda b: b if b["items"] else None)(
        nc().call("inbox.list", {"person": person})), msg="the responsible cadre got nothing")
    eq(box["items"][0]["event_id"], ev["id"])
    wait_for(lambda: RECV.got(path), msg="the region-scoped endpoint got nothing")
    items = nc().call("delivery.list", {"event_id": ev["id"]})["items"]
    eq(sorted((d["channel"], d["recipient"]) for d in items),
       [("inbox", person), ("webhook", "endpoint:%d" % ep["id"])])


def test_task_going_overdue_reaches_the_responsible_cadres_inbox():
    if "tasks" not in S.procs:
        raise TestFailure("the tasks service (bangfu-tasks) is not built: this test needs it")
    g = _household_with_cadre()
    tasks = S.client("tasks")
    u = uid()
    person = "cadre:%d" % g["cadre"]
    nc().call("subscription.create", {"name": "overdue-" + u,
                                      "type_prefix": "bangfu.tasks.task.overdue",
                                      "channels": ["inbox"],
                                      "scope": {"kind": "person", "value": person}})
    tasks.call("clock.set", {"now": "2030-01-01T00:00:00Z"})
    title = "走访结对户并填写帮扶手册" + u
    tasks.call("task.create", {"title": title, "owner": {"kind": "cadre", "id": g["cadre"]},
                               "target": {"kind": "household", "id": g["household"]},
                               "due": "2030-01-02T00:00:00Z"})
    tasks.call("clock.set", {"now": "2030-01-03T00:00:00Z"})
    tasks.call("scheduler.tick")
    box = wait_for(lambda: (lambda b: [i for i in b["items"]
                                       if i["type"] == "bangfu.tasks.task.overdue"] or None)(
        nc().call("inbox.list", {"person": person})), timeout=20,
        msg="the overdue task never reached the responsible cadre's inbox")
    eq(box[0]["title"], "【逾期提醒】任务已逾期：" + title)
    check(title in box[0]["body"] and "逾期" in box[0]["body"], "zh-CN body: %r" % box[0]["body"])


# ------------------------------------------------------- example subscribers

def test_example_subscribers_in_c_and_python_receive_events():
    exe = os.path.join(TMP, "subscriber-%s" % uid())
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzmq", "msgpack", "hiredis"],
                           capture_output=True, check=True).stdout.decode().split()
    cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe,
                         os.path.join(ROOT, "examples", "subscriber.c")] + flags,
                        capture_output=True)
    eq(cc.returncode, 0, cc.stderr.decode())
    env = dict(S.env)
    # Both run as a subscriber whose public and secret keys start with '=',
    # a Z85 digit that is also the key files' separator (the C example once
    # skipped it and found no keys, in one run of ~30).
    name = "subscriber.eq%s" % uid()[:8]
    while True:
        pub, sec = zmq.curve_keypair()
        if pub[:1] == b"=" and sec[:1] == b"=":
            break
    kpath = os.path.join(bftest.KEYS_DIR, name + ".key")
    with open(os.open(kpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write("public = %s\nsecret = %s\n" % (pub.decode(), sec.decode()))
    bftest.principal(name, roles=("subscriber",))  # keeps the pair, adds the section
    with open(os.path.join(bftest.KEYS_DIR, name + ".pub")) as f:
        eq(f.read(), "public = %s\n" % pub.decode(), "keygen kept the pair")
    env["BANGFU_PRINCIPAL"] = name
    time.sleep(1.2)  # services and the bus pick principals.conf up within a second
    # the catch-up reads the stream as the read-only Redis user (docs/security.md)
    env["BANGFU_REDIS_URL"] = bftest.REDIS_URL.replace(
        "redis://", "redis://bangfu_cli:%s@" % bftest.redis_password("cli"), 1)
    u = uid()
    since = stream_last_id(R, STREAM)
    procs = []
    outs = []
    for argv in ([exe, "bangfu.notify.endpoint."],
                 ["/usr/bin/python3", os.path.join(ROOT, "examples", "subscriber.py"),
                  "bangfu.notify.endpoint."]):
        out = open(os.path.join(TMP, "sub-%s-%d.out" % (u, len(procs))), "w+")
        procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))
        outs.append(out)
    try:
        # A live subscriber sees only what is published after its
        # subscription reached the bus (start-up, CURVE handshake and the
        # slow joiner take longer under the sanitizers): publish one event at a
        # time until each live subscriber has printed one, instead of trusting
        # a fixed sleep.
        lines = []
        deadline = time.time() + 30
        while True:
            ep = nc().call("endpoint.create", {"name": "sub-ex-%s-%d" % (u, len(lines)),
                                               "url": "http://127.0.0.1:1/"})
            ev = wait_for(lambda: [e for _, e in stream_tail(50)
                                   if e["type"] == "bangfu.notify.endpoint.created"
                                   and e["data"]["id"] == ep["id"]],
                          msg="no event in the stream")[0]
            lines.append("bangfu.notify.endpoint.created %s" % ev["id"])
            time.sleep(0.5)
            if all(any(ln in open(out.name).read() for ln in lines) for out in outs):
                break
            if time.time() >= deadline:
                raise TestFailure("a live subscriber printed none of %d events (last %s): %s" % (
                    len(lines), lines[-1], "; ".join(
                        "%s exit=%r printed %r" % (" ".join(p.args[-2:]), p.poll(),
                                                   open(o.name).read()[-400:])
                        for p, o in zip(procs, outs))))
        line = lines[-1]
        for out in outs:
            wait_for(lambda: line in open(out.name).read(), timeout=10,
                     msg="a live subscriber did not print %s" % line)
        # catch-up: both read the stream from an id, then go live
        for argv in ([exe, "--from", since, "bangfu.notify.endpoint."],
                     ["/usr/bin/python3", os.path.join(ROOT, "examples", "subscriber.py"),
                      "--from", since, "bangfu.notify.endpoint."]):
            out = open(os.path.join(TMP, "catchup-%s-%d.out" % (u, len(outs))), "w+")
            outs.append(out)
            p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append(p)
            wait_for(lambda: line in open(out.name).read(), timeout=10,
                     msg="catch-up did not print %s" % line)
            eq(open(out.name).read().count(line), 1, "catch-up printed it once (deduped)")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for out in outs:
            out.close()


# ------------------------------------------------------ two instances

def test_two_instances_side_by_side_share_the_work_and_send_each_webhook_once():
    """Two notify processes on one group (issue 6): every event's webhook
    arrives, each webhook-id exactly once, both instances send part of them,
    and the second one leaves cleanly (exit 0, its idle consumers removed)."""
    from bftest import Client
    u = uid()
    path = "/two-" + u
    ep = webhook(path)
    subscribe(ep["id"], "bangfu.test.%s." % u)
    bind = "tcp://127.0.0.1:%d" % free_port()
    S.start("notify", env=dict(NOTIFY_ENV, BANGFU_NOTIFY_BIND=bind), name="notify2")
    n2 = Client(bind)
    try:
        _two_instances(u, path, ep, n2)
    finally:
        n2.close()
        if "notify2" in S.procs:
            S.stop("notify2")


def _consumers(stream):
    return [c["name"].decode() for c in R.xinfo_consumers(stream, "notify")]


def _two_instances(u, path, ep, n2):
    n2.call("clock.set", {"ms": clock_now()})   # one notify clock for both
    inst1 = nc().call("queues.stats")["process"]["instance"]
    inst2 = n2.call("queues.stats")["process"]["instance"]
    for inst in (inst1, inst2):
        host, pid, rnd = inst.rsplit(":", 2)
        check(host and pid.isdigit() and len(rnd) == 8 and int(rnd, 16) >= 0,
              "instance is <hostname>:<pid>:<8 hex>: %r" % inst)
    check(inst1 != inst2, "two instances, two names (%s, %s)" % (inst1, inst2))
    n = 300
    evs = [make_event("bangfu.test.%s.pair" % u, {"i": i}) for i in range(n)]
    pipe = R.pipeline(transaction=False)
    for ev in evs:
        pipe.xadd(STREAM, {"id": ev["id"], "type": ev["type"],
                           "event": msgpack.packb(ev, use_bin_type=True)})
    pipe.execute()
    wait_for(lambda: len(RECV.ok_ids(path)) >= n, timeout=120, interval=0.2,
             msg="not all %d webhooks arrived" % n)
    items = wait_for(lambda: (lambda it: it if len(it) == n and
                              all(d["state"] == "sent" for d in it) else None)(
        nc().call("delivery.list", {"endpoint_id": ep["id"], "limit": 1000})["items"]),
        timeout=20, msg="not all %d deliveries recorded as sent" % n)
    # every event once, each webhook-id exactly once, nothing posted twice
    ids = RECV.ok_ids(path)
    eq(len(ids), n, "%d distinct webhook-ids" % n)
    eq(sorted(c for c in ids.values() if c != 1), [], "no webhook-id posted twice")
    eq(len(RECV.got(path)), n, "exactly %d posts" % n)
    per_event = {}
    for r in RECV.got(path):
        per_event.setdefault(json.loads(r["body"])["id"], set()).add(r["id"])
    eq(sorted(per_event), sorted(ev["id"] for ev in evs), "every event arrived")
    eq(max(len(v) for v in per_event.values()), 1, "one webhook-id per event")
    eq(sorted(ids), sorted(d["id"] for d in items), "the webhook-ids are the deliveries")
    eq(sorted(set(d["attempts"] for d in items)), [1], "each delivery claimed once")
    # both instances did part of the work, and nobody else did
    by = {inst1: 0, inst2: 0}
    for d in items:
        w = d["worker"] or ""
        inst, _, thread = w.rpartition(":")
        check(inst in by and thread.startswith("w"),
              "delivery %s sent by %r, not a worker of the two instances" % (d["id"], w))
        by[inst] += 1
    check(by[inst1] > 0 and by[inst2] > 0, "both instances sent some: %r" % by)
    eq(nc().call("delivery.get", {"id": items[0]["id"]})["worker"], items[0]["worker"])
    # the second instance stops cleanly and takes its idle consumers with it
    # (Redis makes a consumer when it first gets a message: both have some)
    webhook_q = "bangfu:notify:q:webhook"
    check(any(c.startswith(inst2 + ":w") for c in _consumers(webhook_q)),
          "notify2's workers are consumers of %s" % webhook_q)
    eq(S.stop("notify2"), 0, "notify2 exit code")
    for stream in [STREAM] + ["bangfu:notify:q:" + c for c in ("webhook", "email", "sms", "inbox")]:
        eq([c for c in _consumers(stream) if c.startswith(inst2 + ":")], [],
           "notify2's consumers removed from %s" % stream)
    check(any(c.startswith(inst1 + ":w") for c in _consumers(webhook_q)),
          "the running instance keeps its consumers: %r" % _consumers(webhook_q))


# ------------------------------------------------- pause survives Redis loss

def test_pause_survives_redis_loss():
    """queues.pause is kept in PostgreSQL: a Redis restarted without its data
    (no AOF) or flushed gets the pause back from PostgreSQL, without any call,
    and a resumed queue stays resumed; a restarted notify reads the table."""
    rd = bftest.PrivateRedis("pause")
    rd.start()
    stream = "bangfu:events:pause:%s" % uid()
    paused_key = "bangfu:notify:paused"
    try:
        with Stack(["registry"], extra_env={"BANGFU_REDIS_URL": rd.url,
                                            "BANGFU_RELAY_STREAM": stream}) as s:
            s.start("notify", env=NOTIFY_ENV)
            c = s.client("notify")
            eq(c.call("queues.pause", {"queue": "sms"})["changed"], True)
            rr = rd.client()
            wait_for(lambda: rr.sismember(paused_key, "sms"), msg="pause copied to Redis")

            def sms_paused():
                try:
                    q = [x for x in c.call("queues.stats", {})["queues"] if x["name"] == "sms"]
                    return q[0]["paused"]
                except bftest.RpcError:
                    return None  # notify not yet reconnected to the new Redis

            eq(sms_paused(), True)
            # Redis lost without AOF: it comes back empty (a canary key shows
            # it; the paused set may already be rebuilt by the time we look)
            rr.set("bangfu:notify:test-canary", "1")
            rd.stop(keep=False)
            rd.start()
            rr = rd.client()
            eq(rr.exists("bangfu:notify:test-canary"), 0, "the new Redis starts empty")
            # the workers find the copy gone and rebuild it, with no call
            wait_for(lambda: rr.sismember(paused_key, "sms"), timeout=20,
                     msg="the pause came back from PostgreSQL after the Redis loss")
            eq(sms_paused(), True)
            # flushed while running (no reconnect)
            rr.flushall()
            wait_for(lambda: rr.sismember(paused_key, "sms"), timeout=20,
                     msg="the pause came back after FLUSHALL")
            # a Redis that remembers no pause does not undo it at a notify restart
            s.stop("notify")
            rr.srem(paused_key, "sms")
            s.start("notify", env=NOTIFY_ENV)
            c = s.client("notify")
            eq(sms_paused(), True)
            check(rr.sismember(paused_key, "sms"), "the start rebuilt the copy")
            # resume: the loss of Redis must not bring the pause back either
            eq(c.call("queues.resume", {"queue": "sms"})["changed"], True)
            eq(sms_paused(), False)
            rd.stop(keep=False)
            rd.start()
            rr = rd.client()
            wait_for(lambda: rr.exists(paused_key) == 1, timeout=20, msg="copy rebuilt")
            check(not rr.sismember(paused_key, "sms"), "a resumed queue stays resumed")
            wait_for(lambda: sms_paused() is False, timeout=20, msg="stats say resumed")
            conn = bftest.pg()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM notify.queue_pause WHERE queue = 'sms'")
                eq(cur.fetchone()[0], 0)
            conn.close()
    finally:
        try:
            nc().call("queues.resume", {"queue": "sms"})
        except Exception:
            pass
        rd.stop(keep=False)
