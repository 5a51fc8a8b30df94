#!/usr/bin/env python3
"""An example system subscribing to bangfu's events (Debian's python3-zmq and
python3-msgpack; python3-redis for the catch-up).

    subscriber.py [--from STREAM_ID] [TYPE_PREFIX]

Live: a ZeroMQ SUB socket on the bus ($BANGFU_BUS_PUB) filtered by the type
prefix (the topic frame is the event type). With --from, the catch-up recipe
of docs/events-catchup.md: subscribe to the bus first, read the Redis Stream
bangfu:events ($BANGFU_REDIS_URL, redis://user:password@host:port/db with a
read-only user such as bangfu_cli, docs/security.md) after STREAM_ID to its end, then go live,
skipping live events whose id the catch-up already handled. Prints
"<type> <event id>" per event.

The bus admits only known keys (docs/security.md): the socket is set up by
scripts/python/bangfu_keys.py from $BANGFU_KEYS_DIR and $BANGFU_PRINCIPAL (a
principal with role subscriber, service or admin).
"""
import os
import sys

import msgpack
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                                "python"))
import bangfu_keys  # noqa: E402


def handle(body, prefix, seen, remember):
    ev = msgpack.unpackb(body, raw=False)
    if not isinstance(ev, dict):
        return
    etype, eid = ev.get("type"), ev.get("id")
    if not isinstance(etype, str) or not isinstance(eid, str) or not etype.startswith(prefix):
        return
    if remember:
        seen.add(eid)
    elif eid in seen:
        return  # already handled during the catch-up
    print(etype, eid, flush=True)


def catch_up(since, prefix, seen):
    import redis
    r = redis.Redis.from_url(os.environ.get("BANGFU_REDIS_URL", "redis://127.0.0.1:6379/0"))
    start = "(" + since
    while True:
        batch = r.xrange(os.environ.get("BANGFU_RELAY_STREAM", "bangfu:events"), min=start,
                         max="+", count=1000)
        for sid, fields in batch:
            if b"event" in fields:
                handle(fields[b"event"], prefix, seen, True)
        if len(batch) < 1000:
            return
        start = "(" + batch[-1][0].decode()


def main(argv):
    since, prefix = None, ""
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--from" and args:
            since = args.pop(0)
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            prefix = a
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    bangfu_keys.configure(sub, "bus")                 # 0. our key, the bus's key
    sub.connect(os.environ.get("BANGFU_BUS_PUB", "tcp://127.0.0.1:7099"))
    sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())   # 1. subscribe first
    seen = set()
    if since:
        catch_up(since, prefix, seen)                 # 2. the stream from our last id
    try:
        while True:                                   # 3. live, deduped by event id
            frames = sub.recv_multipart()
            if len(frames) >= 2:
                handle(frames[1], prefix, seen, False)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
