"""Chaos: nothing lost, nothing doubled, under faults (`make chaos`; in
`make test` with small numbers).

A mixed load of writes across every service runs from several client threads
while, in turn, each service is SIGKILLed and restarted, PostgreSQL restarts,
Redis restarts with its AOF and once without it (empty), and the bus restarts.
Every write carries a request key and is retried with the same key on
`unavailable`, `conflict` or a timeout until it is acknowledged, as a careful
client would. Afterwards:
- every acknowledged write is present exactly once (villages and tasks by
  their unique names, disbursement lines by their batch, templates by type);
- every acknowledged write's event is in the Redis stream, and every
  village.created reached the webhook endpoint subscribed to it;
- no disbursement was paid twice, and ledger.verify is ok.
It prints a table: faults injected, operations, lost, duplicated.

CHAOS_OPS sets the least number of operations (default 300, a third of that
under the sanitizers; `make chaos` uses 10,000): the load goes on until both
that many are acknowledged and every fault has been injected."""
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bftest
from bftest import Stack, TestFailure, check, eq, wait_for

RUN = bftest.uid()
OPS = int(os.environ.get("CHAOS_OPS", "0")) or (100 if bftest.SANITIZE else 300)
THREADS = 4
STREAM = "bangfu:events:chaos:%s" % RUN  # under bangfu:events:, as the ACL allows


class Receiver:
    """A webhook endpoint that records the event ids it was sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = {}
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                try:
                    eid = json.loads(body).get("id") or ""
                except ValueError:
                    eid = ""
                with recv.lock:
                    recv.ids[eid] = recv.ids.get(eid, 0) + 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a sender killed mid-request is part of the test

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self):
        with self.lock:
            return dict(self.ids)


def pg_restart():
    bindir = next(d for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True))
    pg_ctl = "/usr/lib/postgresql/%s/bin/pg_ctl" % bindir
    pg_dir = os.environ["BANGFU_TEST_PG_DIR"]
    # -l: the server keeps logging to the file other tests read (without it a
    # restarted server logs to pg_ctl's output, which goes nowhere)
    cmd = [pg_ctl, "-D", os.path.join(pg_dir, "data"), "-l", os.path.join(pg_dir, "postgres.log"),
           "-m", "fast", "-w", "-t", "60", "restart"]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.check_call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Load:
    """Client threads doing writes with request keys until told to stop."""

    RETRY = ("unavailable", "conflict", "internal")

    def __init__(self, stack, fixtures):
        self.stack = stack
        self.fx = fixtures
        self.lock = threading.Lock()
        self.acked = []         # (kind, key, name, result)
        self.attempts = 0
        self.retries = 0
        self.failed = []        # (kind, key, error) that never succeeded
        self.stop = threading.Event()
        self.seq = 0

    def next_op(self):
        with self.lock:
            self.seq += 1
            n = self.seq
        kind = ("village", "task", "disburse", "template")[n % 4]
        key = "chaos-%s-%d" % (RUN, n)
        name = "混沌%s-%d" % (RUN, n)
        if kind == "village":
            return kind, key, name, "registry", "village.create", {
                "region_code": self.fx["town"], "name": name, "category": "poor",
                "request_key": key}
        if kind == "task":
            return kind, key, name, "tasks", "task.create", {
                "title": name, "owner": {"kind": "unit", "id": self.fx["unit"]},
                "due": "2031-06-30", "request_key": key}
        if kind == "disburse":
            return kind, key, name, "funds", "disbursement.batch", {
                "batch_key": key, "budget_id": self.fx["budget"], "purpose": name,
                "lines": [{"line_key": "l1", "recipient": "person:%d" % (n % 997 + 1),
                           "amount_fen": 100}],
                "request_key": key}
        return kind, key, name, "notify", "template.put", {
            "type": "bangfu.chaos.%s.%d" % (RUN, n), "subject": name, "body": "b",
            "request_key": key}

    def run_one(self, clients, op):
        kind, key, name, service, method, params = op
        deadline = time.time() + 120
        while time.time() < deadline:
            with self.lock:
                self.attempts += 1
            cl = clients.get(service)
            if cl is None:
                cl = clients[service] = bftest.Client(self.stack.endpoint(service),
                                                      timeout_ms=3000)
            try:
                res = cl.call(method, params)
                with self.lock:
                    self.acked.append((kind, key, name, res))
                return
            except bftest.RpcError as e:
                if e.code not in self.RETRY:
                    with self.lock:
                        self.failed.append((kind, key, str(e)))
                    return
            except TestFailure:
                # no reply in time: a fresh socket, the same key
                cl.close()
                clients[service] = None
            with self.lock:
                self.retries += 1
            time.sleep(0.2)
        with self.lock:
            self.failed.append((kind, key, "not acknowledged within 120 s"))

    def worker(self):
        clients = {}
        try:
            while not self.stop.is_set():
                self.run_one(clients, self.next_op())
        finally:
            for c in clients.values():
                if c:
                    c.close()


def setup_fixtures(stack):
    reg = stack.client("registry")
    town = bftest.fresh_town(reg)
    unit = reg.call("unit.create", {"name": "混沌单位" + RUN, "kind": "department"})["id"]
    funds = stack.client("funds")
    src = funds.call("source.create", {"name": "chaos-" + RUN, "kind": "central",
                                       "provider": "区财政局", "request_key": "cs-" + RUN})
    funds.call("source.receive", {"source_id": src["id"], "amount_fen": 10 ** 12,
                                  "year": 2031, "request_key": "cr-" + RUN})
    bud = funds.call("budget.create", {"recipient": "program:chaos-" + RUN, "year": 2031,
                                       "funding": [{"source_id": src["id"],
                                                    "amount_fen": 10 ** 12}],
                                       "request_key": "cb-" + RUN})
    return {"town": town, "unit": unit, "budget": bud["id"]}


def test_nothing_lost_nothing_doubled_under_faults():
    redis = bftest.PrivateRedis("chaos", aof=True)
    redis.start()
    recv = Receiver()
    # a stream of its own (the shared database's outboxes also hold what other
    # tests relayed to bangfu:events elsewhere, which this Redis never had)
    env = {"BANGFU_REDIS_URL": redis.url, "BANGFU_NOTIFY_REDRIVE_INTERVAL_S": "2",
           "BANGFU_RELAY_STREAM": STREAM,
           "BANGFU_NOTIFY_WEBHOOK_ALLOW": "127.0.0.1/32"}
    faults = []
    try:
        with Stack(["registry", "funds", "tasks", "notify"], extra_env=env) as s:
            fx = setup_fixtures(s)
            ep = s.client("notify").call("endpoint.create", {
                "name": "chaos-" + RUN, "url": "http://127.0.0.1:%d/chaos" % recv.port,
                "rate_per_sec": 0})
            s.client("notify").call("subscription.create", {
                "name": "chaos-" + RUN, "type_prefix": "bangfu.registry.village.created",
                "endpoint_id": ep["id"]})
            load = Load(s, fx)
            threads = [threading.Thread(target=load.worker) for _ in range(THREADS)]
            for t in threads:
                t.start()

            def acked():
                with load.lock:
                    return len(load.acked)

            def fault(name, fn):
                # let some load through between faults
                target = acked() + max(10, OPS // 20)
                wait_for(lambda: acked() >= target or not any(t.is_alive() for t in threads),
                         timeout=120, msg="load stalled before %s" % name)
                fn()
                faults.append(name)

            def restart(svc):
                def fn():
                    s.procs[svc].kill()
                    s.start(svc)
                return fn

            def bus():
                s.procs["bus"].kill()
                s.start_bus()

            try:
                for svc in ("registry", "funds", "tasks", "notify"):
                    fault("SIGKILL " + svc, restart(svc))
                fault("PostgreSQL restart", pg_restart)
                fault("Redis restart (AOF)", lambda: (redis.stop(keep=True), redis.start()))
                fault("Redis restart (data lost)", lambda: (redis.stop(keep=False),
                                                            redis.start()))
                fault("bus restart", bus)
                wait_for(lambda: acked() >= OPS, timeout=600, msg="load reached CHAOS_OPS")
            finally:
                load.stop.set()
                for t in threads:
                    t.join(180)
            eq(load.failed, [], "writes never acknowledged or refused")
            lost, dup = verify(s, load, redis, recv)
            print_table(faults, load, lost, dup)
            eq((lost, dup), ({}, {}), "lost and duplicated writes")
    finally:
        redis.stop(keep=False)
        recv.server.shutdown()


def verify(s, load, redis, recv):
    """Counts, per kind, acknowledged writes missing (lost) or present more
    than once (dup), in PostgreSQL, in the stream and at the endpoint."""
    lost, dup = {}, {}

    def bump(d, k):
        d[k] = d.get(k, 0) + 1

    conn = bftest.pg()
    cur = conn.cursor()
    # every relay done (no unrelayed outbox rows in any service)
    wait_for(lambda: all(_pending(cur, sch) == 0 for sch in
                         ("registry", "funds", "tasks", "notify")),
             timeout=60, msg="outboxes relayed")
    by_kind = {}
    for kind, key, name, res in load.acked:
        by_kind.setdefault(kind, []).append((key, name, res))
    names = [n for _, n, _ in by_kind.get("village", [])]
    cur.execute("SELECT name, count(*) FROM registry.village WHERE name = ANY(%s) GROUP BY 1",
                (names,))
    counts = dict(cur.fetchall())
    for n in names:
        c = counts.get(n, 0)
        bump(lost, "village") if c == 0 else (bump(dup, "village") if c > 1 else None)
    titles = [n for _, n, _ in by_kind.get("task", [])]
    cur.execute("SELECT title, count(*) FROM tasks.task WHERE title = ANY(%s) GROUP BY 1",
                (titles,))
    counts = dict(cur.fetchall())
    for n in titles:
        c = counts.get(n, 0)
        bump(lost, "task") if c == 0 else (bump(dup, "task") if c > 1 else None)
    purposes = [n for _, n, _ in by_kind.get("disburse", [])]
    cur.execute("""SELECT b.purpose, count(l.transfer_id) FROM funds.batch b
                   LEFT JOIN funds.batch_line l ON l.batch_id = b.id
                   WHERE b.purpose = ANY(%s) GROUP BY 1""", (purposes,))
    counts = dict(cur.fetchall())
    for n in purposes:
        c = counts.get(n, 0)
        bump(lost, "disbursement") if c == 0 else (bump(dup, "disbursement") if c > 1 else None)
    types = ["bangfu.chaos.%s.%s" % (RUN, k.rsplit("-", 1)[1])
             for k, _, _ in by_kind.get("template", [])]
    cur.execute("SELECT type, count(*) FROM notify.template WHERE type = ANY(%s) GROUP BY 1",
                (types,))
    counts = dict(cur.fetchall())
    for t in types:
        c = counts.get(t, 0)
        bump(lost, "template") if c == 0 else (bump(dup, "template") if c > 1 else None)
    conn.close()

    # events: each acknowledged village, task and batch has its event in the stream
    r = redis.client()
    want = set()
    for _, _, res in by_kind.get("village", []):
        want.add(("bangfu.registry.village.created", "village/%d" % res["id"]))
    for _, _, res in by_kind.get("task", []):
        want.add(("bangfu.tasks.task.created", "task/%d" % res["id"]))
    for _, _, res in by_kind.get("disburse", []):
        want.add(("bangfu.funds.batch.disbursed", "batch/%d" % res["id"]))

    def missing_events():
        have = {(e.get("type"), e.get("subject"))
                for _, e in bftest.stream_events(r, stream=STREAM)}
        return want - have

    try:
        wait_for(lambda: not missing_events(), timeout=60, msg="events in the stream")
    except TestFailure:
        pass
    for t, _ in missing_events():
        bump(lost, "event " + t.rsplit(".", 2)[-2] + "." + t.rsplit(".", 1)[-1])
    # the webhook endpoint got every village.created event
    vids = {"village/%d" % res["id"] for _, _, res in by_kind.get("village", [])}
    ev_ids = {e["id"] for _, e in bftest.stream_events(r, stream=STREAM)
              if e.get("type") == "bangfu.registry.village.created" and e.get("subject") in vids}

    def undelivered():
        return ev_ids - set(recv.seen())

    try:
        wait_for(lambda: not undelivered(), timeout=90, msg="webhook deliveries")
    except TestFailure:
        pass
    missing = undelivered()
    for _ in missing:
        bump(lost, "webhook delivery")
    if missing:
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("""SELECT state, attempts, last_error, count(*) FROM notify.delivery
                       WHERE event_id = ANY(%s) GROUP BY 1, 2, 3""", (list(missing),))
        print("# undelivered: %r" % (cur.fetchall(),))
        cur.execute("SELECT count(*) FROM notify.event WHERE id = ANY(%s)", (list(missing),))
        print("# of which notify ingested: %d" % cur.fetchone()[0])
        conn.close()
        log = s.procs["notify"].output()
        warns = [l for l in log.splitlines() if '"level":"warn"' in l or '"level":"error"' in l]
        print("# notify's last warnings:\n#   " + "\n#   ".join(warns[-15:]))
    v = s.client("funds").call("ledger.verify")
    check(v["ok"], "ledger.verify after chaos: %r" % v)
    return lost, dup


def _pending(cur, schema):
    cur.execute("SELECT count(*) FROM %s.outbox WHERE relayed_at IS NULL" % schema)
    return cur.fetchone()[0]


def print_table(faults, load, lost, dup):
    print("# chaos: %d faults injected, %d writes acknowledged (%d attempts, %d retries)"
          % (len(faults), len(load.acked), load.attempts, load.retries))
    for f in faults:
        print("#   fault: %s" % f)
    kinds = sorted({k for k, _, _, _ in load.acked})
    print("#   %-14s %8s %6s %10s" % ("write", "acked", "lost", "duplicated"))
    for k in kinds:
        n = sum(1 for x in load.acked if x[0] == k)
        lk = {"village": "village", "task": "task", "disburse": "disbursement",
              "template": "template"}[k]
        print("#   %-14s %8d %6d %10d" % (k, n, lost.get(lk, 0), dup.get(lk, 0)))
    other = {k: v for k, v in lost.items() if k.startswith("event") or k.startswith("webhook")}
    print("#   events/deliveries lost: %s" % (other or 0))
