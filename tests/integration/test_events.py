"""Events: nothing lost, nothing invented (issue 2, section 4).

Every write's event lands in the outbox in the write's transaction, the relay
moves it to the Redis Stream and the bus; a relay killed mid-stream or cut off
from Redis resumes without gaps; two instances never relay the same event
twice while both live."""
import os
import re
import subprocess
import threading
import time

import bftest
import msgpack

from bftest import (Stack, Subscriber, check, eq, free_port, pg, redis_client, stream_events,
                    stream_last_id, uid, wait_for, TMP, RpcError)

STREAM_OWN = "bangfu:events:own:%s" % uid()  # under bangfu:events:, as the ACL allows
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _region_code(n):
    # a unique township under a unique county per test run
    return "13%04d%03d000" % (n % 10000, n % 1000)


def _outbox_ids(conn, since_seq=0):
    cur = conn.cursor()
    cur.execute("SELECT event_id::text FROM registry.outbox WHERE seq > %s ORDER BY seq",
                (since_seq,))
    return [r[0] for r in cur.fetchall()]


def _max_seq(conn):
    cur = conn.cursor()
    cur.execute("SELECT coalesce(max(seq), 0) FROM registry.outbox")
    return cur.fetchone()[0]


def _pending(conn):
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM registry.outbox WHERE relayed_at IS NULL")
    return cur.fetchone()[0]


def test_event_reaches_bus_and_stream_with_cloudevents_attributes():
    with Stack(["registry"]) as s:
        sub = Subscriber(s, "bangfu.registry.region.")
        r = redis_client()
        since = stream_last_id(r)
        code = "22%04d000000" % (int(uid(), 16) % 10000)
        s.client("registry").call("region.put", {"code": code, "name": "测试省", "level": "county"},
                                  actor="cadre:7")
        got = sub.collect(lambda ev: any(e[1]["subject"] == "region/" + code for e in ev))
        sub.close()
        mine = [e for t, e in got if e["subject"] == "region/" + code]
        eq(len(mine), 1, "exactly one live event")
        ev = mine[0]
        eq(ev["specversion"], "1.0")
        eq(ev["type"], "bangfu.registry.region.created")
        eq(ev["source"], "bangfu/registry")
        eq(ev["actor"], "cadre:7")
        check(RFC3339.match(ev["time"]), "time is RFC 3339: %r" % ev["time"])
        eq(ev["data"]["name"], "测试省")
        in_stream = [e for sid, e in stream_events(r, since) if e["id"] == ev["id"]]
        eq(len(in_stream), 1, "the same event is in the stream once")
        eq(in_stream[0], ev)
        # the stream entry carries id and type as plain fields too
        entries = r.xrange("bangfu:events", min="(" + since, max="+")
        fields = [f for _, f in entries if f[b"id"].decode() == ev["id"]]
        eq(fields[0][b"type"].decode(), ev["type"])


def test_failed_write_emits_nothing():
    with Stack(["registry"]) as s:
        conn = pg()
        before = _max_seq(conn)
        c = s.client("registry")
        try:
            c.call("village.create", {"region_code": "129999999000", "name": "无", "category": "poor"})
            raise AssertionError("village.create in an unknown region succeeded")
        except RpcError as e:
            eq(e.code, "not_found")
        eq(_max_seq(conn), before, "no outbox row for a refused write")


def test_unchanged_region_put_emits_no_event():
    with Stack(["registry"]) as s:
        conn = pg()
        c = s.client("registry")
        code = "12%04d000000" % (int(uid(), 16) % 10000)
        c.call("region.put", {"code": code, "name": "甲", "level": "city"})
        seq = _max_seq(conn)
        r = c.call("region.put", {"code": code, "name": "甲", "level": "city"})
        eq(r["change"], "none")
        eq(_max_seq(conn), seq, "an idempotent repeat writes no event")
        r = c.call("region.put", {"code": code, "name": "乙", "level": "city"})
        eq(r["change"], "updated")
        eq(_max_seq(conn), seq + 1)


def _writer(client, prefix, n, out, stop):
    for i in range(n):
        if stop.is_set():
            return
        code = "%s%03d000" % (prefix, i)
        try:
            client.call("region.put", {"code": code, "name": "乡%d" % i, "level": "township"})
            out.append(code)
        except Exception:
            # the service is being killed: a write may fail (then it made no
            # event) or succeed without us seeing the reply; use a new socket
            # so a late reply can't be mistaken for the next one
            time.sleep(0.05)


def test_relay_killed_mid_stream_resumes_without_gaps():
    conn = pg()
    r = redis_client()
    start_seq = _max_seq(conn)
    s = Stack(["registry"])
    s.__enter__()
    try:
        from bftest import Client
        prefix = "14%04d" % (int(uid(), 16) % 10000)  # a county; townships below it
        done, stop = [], threading.Event()
        c1 = Client(s.endpoint("registry"), timeout_ms=2000)
        t = threading.Thread(target=_writer, args=(c1, prefix, 400, done, stop))
        t.start()
        wait_for(lambda: len(done) > 100, timeout=30, msg="writes before the kill")
        s.procs["registry"].kill()  # SIGKILL: relay and RPC die mid-stream
        s.procs.pop("registry")
        time.sleep(0.3)
        s.start("registry")
        t.join(60)
        stop.set()
        c1.close()
        wait_for(lambda: _pending(conn) == 0, timeout=30, msg="outbox drained after restart")
        ids = _outbox_ids(conn, start_seq)
        check(len(ids) >= 100, "events were written (%d)" % len(ids))
        streamed = [e["id"] for _, e in stream_events(r)]
        sset = set(streamed)
        missing = [i for i in ids if i not in sset]
        eq(missing, [], "every committed event is in the stream (no gap)")
        # duplicates are allowed after a crash, but they carry the same id,
        # and nothing that is not in the outbox appears (nothing invented)
        outbox_all = set(_outbox_ids(conn, 0))
        mine = [i for i in streamed if i in set(ids)]
        check(len(mine) >= len(ids), "all present")
        invented = [i for _, e in stream_events(r) for i in [e["id"]]
                    if e["source"] == "bangfu/registry" and i not in outbox_all]
        eq(invented, [], "no event in the stream that the outbox never had")
    finally:
        s.__exit__(None, None, None)


def test_relay_survives_redis_outage():
    rd = bftest.PrivateRedis("outage")
    rd.start()
    port, url = rd.port, rd.url
    start_redis, stop_redis = rd.start, lambda: rd.stop(keep=False)
    conn = pg()
    try:
        # a stream of its own: the shared database's outbox also holds what
        # other tests relayed to bangfu:events on the shared Redis, which this
        # private Redis never had (the relay would send it all again)
        with Stack(["registry"], extra_env={"BANGFU_REDIS_URL": url,
                                            "BANGFU_RELAY_STREAM": STREAM_OWN}) as s:
            c = s.client("registry")
            stop_redis()
            seq0 = _max_seq(conn)
            base = "15%04d" % (int(uid(), 16) % 10000)
            codes = ["%s%03d000" % (base, i) for i in range(20)]
            for code in codes:
                c.call("region.put", {"code": code, "name": "断", "level": "township"})
            ids = _outbox_ids(conn, seq0)
            eq(len(ids), 20, "writes succeed while Redis is down")
            check(_pending(conn) > 0, "events wait in the outbox while Redis is down")
            h = c.call("sys.health", actor=None)
            eq(h["redis"], "down")
            start_redis()
            wait_for(lambda: _pending(conn) == 0, timeout=30, msg="relay caught up after Redis returned")
            rr = rd.client()
            streamed = {e["id"] for _, e in stream_events(rr, stream=STREAM_OWN)}
            eq([i for i in ids if i not in streamed], [], "every event written during the outage")
    finally:
        stop_redis()


def test_events_redis_lost_are_sent_again_from_the_outbox():
    # Redis accepted events, then restarted without its data (no AOF): the
    # relay notices the new connection, finds its newest relayed events
    # missing from the stream and sends them again, before and with new ones
    rd = bftest.PrivateRedis("loss")
    rd.start()
    port, url = rd.port, rd.url
    start_redis, stop_redis = rd.start, lambda: rd.stop(keep=False)
    conn = pg()
    try:
        # a stream of its own: the shared database's outbox also holds what
        # other tests relayed to bangfu:events on the shared Redis, which this
        # private Redis never had (the relay would send it all again)
        with Stack(["registry"], extra_env={"BANGFU_REDIS_URL": url,
                                            "BANGFU_RELAY_STREAM": STREAM_OWN}) as s:
            c = s.client("registry")
            seq0 = _max_seq(conn)
            base = "14%04d" % (int(uid(), 16) % 10000)
            for i in range(20):
                c.call("region.put", {"code": "%s%03d000" % (base, i), "name": "失",
                                      "level": "township"})
            ids = _outbox_ids(conn, seq0)
            eq(len(ids), 20)
            rr = bftest.redis_admin(port)
            wait_for(lambda: set(ids) <= {e["id"] for _, e in stream_events(rr, stream=STREAM_OWN)},
                     timeout=20, msg="relayed before the loss")
            stop_redis()
            start_redis()  # empty: everything it had is gone
            rr = bftest.redis_admin(port)
            eq(stream_events(rr, stream=STREAM_OWN), [], "the new Redis starts empty")
            # one more write right away: it must not hide the loss
            c.call("region.put", {"code": "%s%03d000" % (base, 20), "name": "新",
                                  "level": "township"})
            ids = _outbox_ids(conn, seq0)
            eq(len(ids), 21)
            wait_for(lambda: set(ids) <= {e["id"] for _, e in stream_events(rr, stream=STREAM_OWN)},
                     timeout=30, msg="every event, lost ones included, in the new stream")
            order = [e["id"] for _, e in stream_events(rr, stream=STREAM_OWN) if e["id"] in set(ids)]
            eq(order, ids, "sent again in outbox order, the new one last")
            check("no longer has" in s.procs["registry"].output(), "the loss is logged")
            # and it stays correct: nothing sent a third time
            time.sleep(1.5)
            eq(len([1 for _, e in stream_events(rr, stream=STREAM_OWN) if e["id"] in set(ids)]), 21)
    finally:
        stop_redis()


def test_stream_is_trimmed_by_consumer_lag_never_past_unread():
    # two groups: "fast" reads and acknowledges 10 and holds 10 more pending;
    # "slow" is created after the first 5 were read by nobody else; the relay
    # trims what every group has read and acknowledged, and nothing else
    # under bangfu:events:, where the relays' Redis users may write (docs/security.md)
    stream = "bangfu:events:trim:%s" % uid()
    r = redis_client()
    r.xgroup_create(stream, "fast", id="0", mkstream=True)
    env = {"BANGFU_RELAY_STREAM": stream, "BANGFU_RELAY_STREAM_KEEP_S": "0",
           "BANGFU_RELAY_TRIM_INTERVAL_S": "1"}
    with Stack(["registry"], extra_env=env) as s:
        c = s.client("registry")
        base = "41%04d" % (int(uid(), 16) % 10000)
        for i in range(5):
            c.call("region.put", {"code": "%s%03d000" % (base, i), "name": "剪",
                                  "level": "township"})
        wait_for(lambda: r.xlen(stream) == 5, msg="5 in the stream")
        r.xgroup_create(stream, "slow", id="$")
        for i in range(5, 30):
            c.call("region.put", {"code": "%s%03d000" % (base, i), "name": "剪",
                                  "level": "township"})
        wait_for(lambda: r.xlen(stream) >= 30 - 0, timeout=10, msg="30 in the stream")
        ids = [sid for sid, _ in r.xrange(stream)]
        got = r.xreadgroup("fast", "c1", {stream: ">"}, count=20)
        fast_ids = [sid for sid, _ in got[0][1]]
        r.xack(stream, "fast", *fast_ids[:10])       # 10 read and done, 10 pending
        slow = r.xreadgroup("slow", "c1", {stream: ">"}, count=25)
        r.xack(stream, "slow", *[sid for sid, _ in slow[0][1]])  # slow: all 25 done
        # the oldest entry some group still needs is fast's first pending one
        wait_for(lambda: r.xlen(stream) == 20, timeout=10,
                 msg="trimmed to the oldest entry a group still needs (len %d)" % r.xlen(stream))
        time.sleep(2.5)
        eq(r.xlen(stream), 20, "never past an unread entry")
        eq(r.xrange(stream, count=1)[0][0], ids[10], "the first pending entry is kept")
    r.delete(stream)


def test_two_instances_relay_each_event_once():
    conn = pg()
    r = redis_client()
    since = stream_last_id(r)
    seq0 = _max_seq(conn)
    with Stack(["registry"]) as s:
        port2 = free_port()
        s.start("registry", env={"BANGFU_REGISTRY_BIND": "tcp://127.0.0.1:%d" % port2},
                name="registry2")
        from bftest import Client
        c1 = s.client("registry")
        c2 = Client("tcp://127.0.0.1:%d" % port2)
        base = "21%04d" % (int(uid(), 16) % 10000)
        for i in range(60):
            (c1 if i % 2 else c2).call("region.put", {"code": "%s%03d000" % (base, i),
                                                      "name": "双", "level": "township"})
        c2.close()
        wait_for(lambda: _pending(conn) == 0, timeout=30, msg="both instances' events relayed")
        ids = _outbox_ids(conn, seq0)
        eq(len(ids), 60)
        streamed = [e["id"] for _, e in stream_events(r, since) if e["id"] in set(ids)]
        eq(sorted(streamed), sorted(ids), "each event exactly once in the stream")
