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
    s = CTX.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
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


def test_write_without_actor_is_unauthenticated():
    e = c().err("region.put", {"code": "120000000000", "name": "天津市", "level": "province"},
                actor=None)
    eq(e["code"], "unauthenticated")
    eq(e["field"], "actor")


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
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
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
