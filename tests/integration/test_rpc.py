"""The RPC contract (docs/protocol.md), against the real registry service:
the envelope, every error code the dispatcher produces, malformed frames,
REQ and DEALER clients, sys.health / sys.methods, clean shutdown."""
import msgpack
import zmq

import bftest
from bftest import (CTX, Client, Stack, check, eq, expect_error, TestFailure)

S = None


def setup_module():
    global S
    S = Stack(["registry"]).__enter__()


def teardown_module():
    S.__exit__(None, None, None)


def c():
    return S.client("registry")


def test_health_answers_with_every_field():
    h = c().call("sys.health", actor=None)
    for k in ("status", "service", "version", "uptime_s", "db", "redis"):
        check(k in h, "sys.health lacks " + k)
    eq(h["service"], "registry")
    eq(h["status"], "ok")
    eq(h["db"], "ok")
    eq(h["redis"], "ok")


def test_methods_lists_every_method_with_params_and_writes():
    ms = c().call("sys.methods", actor=None)
    byname = {m["name"]: m for m in ms}
    for name in ("sys.health", "sys.methods", "region.put", "village.create", "village.list"):
        check(name in byname, name + " missing from sys.methods")
    eq(byname["region.put"]["writes"], True)
    eq(byname["village.list"]["writes"], False)
    names = [p["name"] for p in byname["region.put"]["params"]]
    eq(names, ["code", "name", "level", "parent_code"])


def test_reply_echoes_id_and_version():
    r = c().request("sys.health", rid="my-request-1")
    eq(r["v"], 1)
    eq(r["id"], "my-request-1")
    eq(r["ok"], True)


def test_req_socket_client_works():
    s = bftest.curve_socket(zmq.REQ, "registry")
    s.connect(S.endpoint("registry"))
    s.send(msgpack.packb({"v": 1, "id": "req-1", "method": "sys.health", "params": {}}))
    check(s.poll(5000), "REQ client got no reply")
    reply = msgpack.unpackb(s.recv(), raw=False)
    s.close(0)
    eq(reply["id"], "req-1")
    eq(reply["ok"], True)


def test_routing_frames_are_echoed_unchanged():
    cl = c()
    body = msgpack.packb({"v": 1, "id": "r2", "method": "sys.health"})
    reply, frames = cl.raw(body, frames=[b"hop-a", b"hop-b", b""])
    eq(frames, [b"hop-a", b"hop-b", b""])
    eq(reply["id"], "r2")


def test_unknown_method_is_not_found():
    expect_error(c(), "no.such.method", {}, "not_found", "method")


def test_unknown_version_is_invalid():
    r = c().request("sys.health", extra={"v": 2})
    eq(r["ok"], False)
    eq(r["error"]["code"], "invalid_argument")
    eq(r["error"]["field"], "v")


def test_missing_version_is_invalid():
    body = msgpack.packb({"id": "x", "method": "sys.health"})
    reply, _ = c().raw(body)
    eq(reply["error"]["code"], "invalid_argument")
    eq(reply["error"]["field"], "v")


def test_write_without_actor_acts_as_the_principal():
    # with CURVE the authenticated principal is the actor when the envelope
    # names none (plaintext mode refuses it: test_security.py)
    r = c().call("region.put", {"code": "120000000000", "name": "天津市", "level": "province"},
                 actor=None)
    eq(r["code"], "120000000000")


def test_bad_actor_is_invalid():
    expect_error(c(), "region.put", {"code": "120000000000", "name": "天津市", "level": "province"},
                 "invalid_argument", "actor", actor="drop table;")


def test_wrong_type_names_the_field():
    expect_error(c(), "region.put", {"code": 120000000000, "name": "x", "level": "province"},
                 "invalid_argument", "code")


def test_missing_field_names_the_field():
    expect_error(c(), "region.put", {"code": "120000000000", "level": "province"},
                 "invalid_argument", "name")


def test_unknown_parameter_names_the_field():
    expect_error(c(), "region.put", {"code": "120000000000", "name": "x", "level": "province",
                                     "colour": "red"}, "invalid_argument", "colour")


def test_over_long_string_names_the_field():
    expect_error(c(), "region.put", {"code": "120000000000", "name": "长" * 100,
                                     "level": "province"}, "invalid_argument", "name")


def test_float_for_integer_is_invalid():
    expect_error(c(), "village.get", {"id": 1.5}, "invalid_argument", "id")


def test_integer_overflow_is_invalid():
    r = c().request("village.get", {"id": 2**64 - 1})
    eq(r["error"]["code"], "invalid_argument")
    eq(r["error"]["field"], "id")


def test_over_long_list_names_the_field():
    expect_error(c(), "village.create", {"region_code": "120110001000", "name": "x",
                                         "category": "poor", "reasons": ["a"] * 17},
                 "invalid_argument", "reasons")


def test_params_not_a_map_is_invalid():
    r = c().request("sys.health", extra={"params": [1, 2]})
    eq(r["error"]["code"], "invalid_argument")
    eq(r["error"]["field"], "params")


def test_not_found_entity():
    expect_error(c(), "village.get", {"id": 987654321}, "not_found", "id")


def test_already_exists():
    cl = c()
    cl.call("region.put", {"code": "120000000000", "name": "天津市", "level": "province"})
    cl.call("region.put", {"code": "120110000000", "name": "东丽区", "level": "county",
                           "parent_code": "120000000000"})
    cl.call("region.put", {"code": "120110003000", "name": "新立街道", "level": "township",
                           "parent_code": "120110000000"})
    cl.call("village.create", {"region_code": "120110003000", "name": "稻地村", "category": "difficult",
                               "code": "120110003201"})
    expect_error(cl, "village.create", {"region_code": "120110003000", "name": "稻地村",
                                        "category": "difficult", "code": "120110003201"},
                 "already_exists", "code")


def test_garbage_bytes_get_an_error_with_nil_id():
    reply, _ = c().raw(b"\xc1\xff\x00garbage")
    eq(reply["ok"], False)
    eq(reply["id"], None)
    eq(reply["error"]["code"], "invalid_argument")


def test_msgpack_array_gets_an_error():
    reply, _ = c().raw(msgpack.packb([1, 2, 3]))
    eq(reply["error"]["code"], "invalid_argument")
    eq(reply["id"], None)


def test_lying_container_header_is_refused_cheaply():
    # an array header claiming 2^32-1 elements in a 5-byte frame
    reply, _ = c().raw(b"\xdd\xff\xff\xff\xff")
    eq(reply["error"]["code"], "invalid_argument")


def test_trailing_bytes_are_refused():
    body = msgpack.packb({"v": 1, "id": "t", "method": "sys.health"}) + b"\x00"
    reply, _ = c().raw(body)
    eq(reply["error"]["code"], "invalid_argument")


def test_ten_megabyte_string_is_refused_and_service_keeps_serving():
    big = msgpack.packb({"v": 1, "id": "big", "method": "region.put",
                         "params": {"name": "x" * (10 * 1024 * 1024)}})
    cl = Client(S.endpoint("registry"), timeout_ms=1500)
    got = cl.raw(big, timeout_ms=1500)
    cl.close()
    # the socket drops an over-size frame (ZMQ_MAXMSGSIZE): no reply, no crash
    eq(got, None, "an over-size frame must not be answered")
    eq(c().call("sys.health", actor=None)["status"], "ok")


def _rss_peak_kb(proc):
    with open("/proc/%d/status" % proc.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise TestFailure("no VmHWM")


def test_a_frame_of_millions_of_nils_is_refused_before_decoding():
    # 8 MiB of nils in household.import's rows list: refused by its object
    # budget before msgpack-c allocates (it would spend ~24 bytes an object),
    # so the service's peak memory stays far below what decoding would take
    n = 8 * 1024 * 1024 - 64
    body = (b"\x84\xa1v\x01\xa2id\xa3nil\xa6method\xb0household.import"
            b"\xa6params\x81\xa4rows\xdd" + n.to_bytes(4, "big") + b"\xc0" * n)
    cl = Client(S.endpoint("registry"), timeout_ms=10000)
    got = cl.raw(body, timeout_ms=10000)
    cl.close()
    check(got is not None, "no reply to the frame of nils")
    eq(got[0]["error"]["code"], "resource_exhausted")
    check("msgpack objects" in got[0]["error"]["message"], got[0]["error"]["message"])
    # the same for a method without list parameters, at a smaller size
    m = 100000
    body = (b"\x84\xa1v\x01\xa2id\xa3ni2\xa6method\xaaregion.get"
            b"\xa6params\x81\xa4code\xdd" + m.to_bytes(4, "big") + b"\xc0" * m)
    got = c().raw(body)
    eq(got[0]["error"]["code"], "resource_exhausted")
    peak_mb = _rss_peak_kb(S.procs["registry"]) / 1024.0
    if not bftest.SANITIZE:  # ASan's shadow memory alone exceeds the bound
        check(peak_mb < 64, "registry peak RSS %.1f MB after the nils (bound 64 MB)" % peak_mb)
    eq(c().call("sys.health", actor=None)["status"], "ok")


def test_many_bad_frames_then_still_serving():
    cl = c()
    for body in [b"", b"\x80", b"\x91\xc0", msgpack.packb("str"), msgpack.packb(None),
                 msgpack.packb({"v": 1}), msgpack.packb({"v": 1, "method": 5}),
                 msgpack.packb({"v": 1, "method": "region.put", "params": {"code": None}})]:
        got = cl.raw(body, timeout_ms=3000)
        check(got is not None, "no reply to %r" % body)
        eq(got[0]["ok"], False)
    eq(cl.call("sys.health", actor=None)["status"], "ok")


def test_stats_count_calls():
    st = c().call("sys.stats", actor=None)
    check(st["calls"] > 10, "sys.stats counts calls")
    check(st["bad_frames"] >= 3, "sys.stats counts bad frames")


def test_pipelined_requests_are_all_answered():
    """5,000 requests to a one-worker instance over one DEALER socket, keeping
    up to 800 in flight: every one is answered, in whatever order. (ZeroMQ
    queues hold 1,000 messages per peer; a client that leaves more replies
    unread than that can lose replies, which docs/protocol.md says.)"""
    from bftest import free_port
    port = free_port()
    S.start("registry", env={"BANGFU_REGISTRY_BIND": "tcp://127.0.0.1:%d" % port,
                             "BANGFU_RPC_WORKERS": "1", "BANGFU_RELAY_ENABLED": "false"},
            name="registry-pipelined")
    s = bftest.curve_socket(zmq.DEALER, "registry")
    s.connect("tcp://127.0.0.1:%d" % port)
    n, window = 5000, 800
    sent, got = 0, set()
    while len(got) < n:
        while sent < n and sent - len(got) < window:
            s.send_multipart([b"", msgpack.packb({"v": 1, "id": "p%d" % sent,
                                                  "method": "sys.stats"})])
            sent += 1
        check(s.poll(20000), "no reply for 20 s with %d of %d answered" % (len(got), n))
        got.add(msgpack.unpackb(s.recv_multipart()[-1], raw=False)["id"])
    s.close(0)
    eq(len(got), n, "every pipelined request answered once")
    eq(S.stop("registry-pipelined"), 0, "the instance stops cleanly")


def test_held_row_lock_does_not_delay_other_requests():
    """Two workers; a household row locked in PostgreSQL by this test holds
    one household.update (and so one worker). sys.health and household.get
    from another client must still be answered, by the free worker, while
    the update is pending (the back end hands a request to a free worker, not
    to the next in turn); sys.stats counts the workers. After the lock goes,
    the update completes."""
    import random
    from bftest import free_port, pg, fresh_id
    cl = c()
    county, vid = _group_village(random.choice(["13", "14", "15", "21", "22"]), "锁村")
    hid = cl.call("household.create", _group_household(vid, "王五", fresh_id(county)))["id"]

    port = free_port()
    ep = "tcp://127.0.0.1:%d" % port
    S.start("registry", env={"BANGFU_REGISTRY_BIND": ep, "BANGFU_RPC_WORKERS": "2",
                             "BANGFU_RELAY_ENABLED": "false"}, name="registry-lock")
    conn = pg()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SELECT id FROM registry.household WHERE id = %s FOR UPDATE", (hid,))
    blocked = bftest.curve_socket(zmq.DEALER, "registry")
    blocked.connect(ep)
    try:
        blocked.send_multipart([b"", msgpack.packb({
            "v": 1, "id": "held", "method": "household.update", "actor": "admin",
            "params": {"id": hid, "income_fen": 200}})])
        other = Client(ep, timeout_ms=10000, server="registry")
        # wait until the update is inside a worker, blocked on the lock
        import time
        deadline = time.time() + 20
        watch = pg()
        try:
            while True:
                cur2 = watch.cursor()
                cur2.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if cur2.fetchone()[0] > 0:
                    break
                check(time.time() < deadline, "the update never waited for the row lock")
                time.sleep(0.05)
        finally:
            watch.close()
        for i in range(10):
            eq(other.call("sys.health", actor=None)["status"], "ok", "sys.health answers")
            eq(other.call("household.get", {"id": hid})["id"], hid, "household.get answers")
        st = other.call("sys.stats", actor=None)
        eq(st["workers"], 2, "sys.stats names the worker count")
        check("unroutable_replies" in st, "sys.stats counts unroutable replies")
        check(not blocked.poll(0), "the update is still pending while the others were answered")
        other.close()
    finally:
        conn.rollback()
        conn.close()
    check(blocked.poll(20000), "the update is answered once the lock is released")
    reply = msgpack.unpackb(blocked.recv_multipart()[-1], raw=False)
    blocked.close(0)
    eq(reply.get("ok"), True, "the update succeeds after the lock: %r" % reply.get("error"))

    # a client that leaves before its reply: the reply is counted as unroutable
    stats = Client(ep, timeout_ms=10000, server="registry")
    before = stats.call("sys.stats", actor=None)["unroutable_replies"]
    conn = pg()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SELECT id FROM registry.household WHERE id = %s FOR UPDATE", (hid,))
    gone = bftest.curve_socket(zmq.DEALER, "registry")
    gone.connect(ep)
    try:
        gone.send_multipart([b"", msgpack.packb({
            "v": 1, "id": "gone", "method": "household.update", "actor": "admin",
            "params": {"id": hid, "income_fen": 300}})])
        watch = pg()
        try:
            bftest.wait_for(lambda: _lock_waiting(watch), timeout=20,
                            msg="the second update never waited for the row lock")
        finally:
            watch.close()
        gone.close(0)
        import time
        time.sleep(0.3)  # the server notices the disconnect
    finally:
        conn.rollback()
        conn.close()
    bftest.wait_for(lambda: stats.call("sys.stats", actor=None)["unroutable_replies"] > before,
                    timeout=20, msg="the reply to a departed client is not counted")
    stats.close()
    eq(S.stop("registry-lock"), 0, "the instance stops cleanly")


def _group_village(prov, name):
    """A fresh county under province prov (two digits) with one township and
    one poor village; returns (county, village id)."""
    import time
    cl = c()
    county = "%s%02d%02d" % (prov, time.time_ns() % 97 + 1, time.time_ns() // 7 % 97 + 1)
    cl.call("region.put", {"code": prov + "0" * 10, "name": "省", "level": "province"})
    cl.call("region.put", {"code": county[:4] + "0" * 8, "name": "市", "level": "city",
                           "parent_code": prov + "0" * 10})
    cl.call("region.put", {"code": county + "000000", "name": "县", "level": "county",
                           "parent_code": county[:4] + "0" * 8})
    cl.call("region.put", {"code": county + "001000", "name": "镇", "level": "township",
                           "parent_code": county + "000000"})
    vid = cl.call("village.create", {"region_code": county + "001000", "name": name,
                                     "category": "poor"})["id"]
    return county, vid


def _group_household(vid, name, id_number):
    return {"village_id": vid, "categories": ["dibao"], "causes": {"main": "illness"},
            "route": "employment", "income_fen": 100,
            "members": [{"name": name, "id_number": id_number, "relation": "head"}]}


def _row_locked(hid):
    """A connection whose open transaction holds household hid FOR UPDATE."""
    from bftest import pg
    conn = pg()
    conn.autocommit = False
    conn.cursor().execute("SELECT id FROM registry.household WHERE id = %s FOR UPDATE", (hid,))
    return conn


def _dealer(ep):
    return bftest.raw_dealer(ep, "registry")


_send, _recv = bftest.raw_send, bftest.raw_recv


def test_queued_writes_share_one_commit():
    """Commit groups (bf_rpc.h). One worker, held by an update that waits for
    a row lock this test holds; meanwhile writes queue at the front: three
    household.create (one with a request key), one create whose member's ID
    number is already registered, and an update of a second household whose
    row is locked too. When the first lock goes, the queued writes reach the
    worker as one group in one transaction: the creates are answered (the
    duplicate with already_exists, the others ok and stored: one failure does
    not fail the others), while the update that meets the second lock is set
    aside after rpc.group_lock_timeout_ms and answered only once that lock
    goes, alone. sys.stats counts the group, its members and the set-aside
    one; the keyed create replays from its key, which the group stored."""
    import time
    from bftest import free_port, pg, fresh_id
    cl = c()
    county, vid = _group_village("23", "组村")

    def household(id_number):
        return _group_household(vid, "赵六", id_number)

    taken = fresh_id(county)
    h1 = cl.call("household.create", household(fresh_id(county)))["id"]
    h2 = cl.call("household.create", household(fresh_id(county)))["id"]
    cl.call("household.create", household(taken))

    ep = "tcp://127.0.0.1:%d" % free_port()
    S.start("registry", env={"BANGFU_REGISTRY_BIND": ep, "BANGFU_RPC_WORKERS": "1",
                             "BANGFU_RELAY_ENABLED": "false"}, name="registry-group")
    stats = Client(ep, timeout_ms=20000, server="registry")
    st0 = stats.call("sys.stats", actor=None)
    lock1, lock2 = _row_locked(h1), _row_locked(h2)
    blocked, queued = _dealer(ep), _dealer(ep)
    send, recv = _send, _recv

    key = "group-%d" % time.time_ns()
    keyed = dict(household(fresh_id(county)), request_key=key)
    try:
        send(blocked, "held", "household.update", {"id": h1, "income_fen": 200})
        watch = pg()
        try:
            bftest.wait_for(lambda: _lock_waiting(watch), timeout=20,
                            msg="the update never waited for the row lock")
        finally:
            watch.close()
        send(queued, "c1", "household.create", household(fresh_id(county)))
        send(queued, "c2", "household.create", keyed)
        send(queued, "u2", "household.update", {"id": h2, "income_fen": 300})
        send(queued, "dup", "household.create", household(taken))
        send(queued, "c3", "household.create", household(fresh_id(county)))
        time.sleep(0.5)  # let them all reach the server's queue behind the held worker
        lock1.rollback()
        eq(recv(blocked, "the held update").get("ok"), True, "the held update succeeds")
        got = {}
        for _ in range(4):
            rep = recv(queued, "a queued create")
            got[rep["id"]] = rep
        eq(sorted(got), ["c1", "c2", "c3", "dup"],
           "the creates are answered while the second lock still holds the update")
        for rid in ("c1", "c2", "c3"):
            eq(got[rid].get("ok"), True, "%s succeeds: %r" % (rid, got[rid].get("error")))
        eq(got["dup"]["error"]["code"], "already_exists", "the duplicate fails alone")
        check(not queued.poll(0), "the update behind the second lock is not answered yet")
    finally:
        lock1.rollback()
        lock2.rollback()
    rep = recv(queued, "the set-aside update")
    eq(rep["id"], "u2")
    eq(rep.get("ok"), True, "the set-aside update succeeds alone: %r" % rep.get("error"))
    blocked.close(0)
    queued.close(0)
    cur = lock1.cursor()
    ids = [got[r]["result"]["id"] for r in ("c1", "c2", "c3")]
    cur.execute("SELECT count(*) FROM registry.household WHERE id = ANY(%s)", (ids,))
    eq(cur.fetchone()[0], 3, "the group's creates were committed")
    cur.execute("SELECT income_fen FROM registry.household WHERE id = %s", (h2,))
    eq(cur.fetchone()[0], 300, "the set-aside update was committed")
    lock1.rollback()
    lock1.close()
    lock2.close()
    st = stats.call("sys.stats", actor=None)
    check(st["commit_groups"] > st0["commit_groups"], "sys.stats counts the commit group")
    check(st["grouped_requests"] - st0["grouped_requests"] >= 4,
          "the four creates shared the group: %r" % st)
    check(st["group_retries"] > st0["group_retries"], "the set-aside update is counted")
    again = stats.call("household.create", keyed)
    eq(again["id"], got["c2"]["result"]["id"], "the keyed create replays from its stored key")
    stats.close()
    eq(S.stop("registry-group"), 0, "the instance stops cleanly")


def test_a_group_that_cannot_commit_answers_every_member_unavailable():
    """A commit group whose database connection dies mid-way keeps nothing
    and answers every member unavailable (not the success some of them had
    before the loss); the worker reconnects and serves the next write. The
    group's lock timeout is long here so that a member waits inside the group
    while this test kills the worker's session."""
    import time
    from bftest import free_port, pg, fresh_id
    cl = c()
    county, vid = _group_village("36", "断村")

    def household():
        return _group_household(vid, "孙八", fresh_id(county))

    h1 = cl.call("household.create", household())["id"]
    h2 = cl.call("household.create", household())["id"]
    ep = "tcp://127.0.0.1:%d" % free_port()
    S.start("registry", env={"BANGFU_REGISTRY_BIND": ep, "BANGFU_RPC_WORKERS": "1",
                             "BANGFU_RPC_GROUP_LOCK_TIMEOUT_MS": "60000",
                             "BANGFU_RELAY_ENABLED": "false"}, name="registry-cut")
    lock1, lock2, watch = _row_locked(h1), _row_locked(h2), pg()
    blocked, queued = _dealer(ep), _dealer(ep)
    send = _send

    def recv(sock, what):
        return _recv(sock, what, 30000)

    def waiting_pids():
        cur = watch.cursor()
        cur.execute("SELECT pid FROM pg_locks WHERE NOT granted")
        return [r[0] for r in cur.fetchall()]

    first = household()
    try:
        send(blocked, "held", "household.update", {"id": h1, "income_fen": 200})
        bftest.wait_for(lambda: waiting_pids(), timeout=20,
                        msg="the update never waited for the first lock")
        held_pid = waiting_pids()[0]
        send(queued, "c1", "household.create", first)
        send(queued, "u2", "household.update", {"id": h2, "income_fen": 300})
        send(queued, "c3", "household.create", household())
        time.sleep(0.5)  # let them reach the server's queue behind the held worker
        lock1.rollback()
        eq(recv(blocked, "the held update").get("ok"), True, "the held update succeeds")
        # the group: c1 done, u2 waiting for the second lock inside the group
        bftest.wait_for(lambda: waiting_pids(), timeout=20,
                        msg="the grouped update never waited for the second lock")
        pid = waiting_pids()[0]
        eq(pid, held_pid, "the group runs on the worker's one session")
        watch.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        got = {}
        for _ in range(3):
            rep = recv(queued, "a member of the cut group")
            got[rep["id"]] = rep
    finally:
        lock1.rollback()
        lock2.rollback()
    eq(sorted(got), ["c1", "c3", "u2"], "every member is answered")
    for rid, rep in got.items():
        eq(rep.get("ok"), False, "%s is not reported done" % rid)
        eq(rep["error"]["code"], "unavailable", "%s is unavailable" % rid)
    cur = watch.cursor()
    cur.execute("SELECT count(*) FROM registry.household WHERE village_id = %s", (vid,))
    eq(cur.fetchone()[0], 2, "nothing of the group was kept (only the two setup households)")
    cur.execute("SELECT income_fen FROM registry.household WHERE id = %s", (h2,))
    eq(cur.fetchone()[0], 100, "the grouped update was not kept")
    blocked.close(0)
    queued.close(0)
    again = Client(ep, timeout_ms=20000, server="registry")
    check("id" in again.call("household.create", first),
          "the worker reconnects and the retried create succeeds")
    again.close()
    for conn in (lock1, lock2, watch):
        conn.close()
    eq(S.stop("registry-cut"), 0, "the instance stops cleanly")


def _lock_waiting(conn):
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
    return cur.fetchone()[0] > 0
