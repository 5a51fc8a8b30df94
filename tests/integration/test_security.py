"""Authentication on every socket (docs/security.md): CURVE + ZAP on the RPC
ROUTERs and on the bus, principals from principals.conf, the actor/auth rules
of the dispatcher, and the plaintext mode's warning."""
import os
import subprocess
import time
import uuid

import msgpack
import zmq

import bftest
import bangfu_keys
from bftest import CTX, BUILD, Client, Stack, Subscriber, check, eq, uid, wait_for

S = None


def setup_module():
    global S
    S = Stack(["registry"])
    S.__enter__()


def teardown_module():
    if S:
        S.__exit__(None, None, None)


def _log(name="registry"):
    return S.procs[name].output()


def _stranger_socket(server="registry", kind=zmq.DEALER, endpoint=None):
    """A CURVE client with a fresh key pair that no principal has."""
    pub, sec = zmq.curve_keypair()
    s = CTX.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey = bangfu_keys.public_key(server)
    s.curve_publickey = pub
    s.curve_secretkey = sec
    s.connect(endpoint or S.endpoint(server))
    return s, pub.decode()


def _health_over(sock, timeout_ms=1500):
    req = {"v": 1, "id": uuid.uuid4().hex, "method": "sys.health"}
    sock.send_multipart([b"", msgpack.packb(req)], flags=zmq.NOBLOCK)
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv_multipart()[-1], raw=False)


def test_unknown_key_gets_no_reply_and_the_refusal_is_logged():
    s, pub = _stranger_socket()
    try:
        eq(_health_over(s), None, "a stranger's request is answered")
    finally:
        s.close(0)
    wait_for(lambda: ("zap: refused CURVE key %s" % pub[:8]) in _log(), timeout=5,
             msg="the refusal (key prefix) is logged")
    line = [x for x in _log().splitlines() if pub[:8] in x][0]
    check("127.0.0.1" in line, "the refusal names the peer address: " + line)
    check(pub not in line, "the whole key is not logged")


def test_plain_socket_without_curve_gets_no_reply():
    c = Client(S.endpoint("registry"), timeout_ms=1500, plain=True)
    try:
        body = msgpack.packb({"v": 1, "id": "plain", "method": "sys.health"})
        eq(c.raw(body), None, "a plain-text client is answered")
    finally:
        c.close()


def test_key_not_in_principals_is_refused_and_a_principal_added_at_run_time_is_admitted():
    name = "late.%s" % uid()
    # the key pair exists (files in keys.dir) but no principals.conf section
    pub, sec = zmq.curve_keypair()
    with open(os.path.join(bftest.KEYS_DIR, name + ".key"), "w") as f:
        f.write("public = %s\nsecret = %s\n" % (pub.decode(), sec.decode()))
    os.chmod(os.path.join(bftest.KEYS_DIR, name + ".key"), 0o600)
    c = Client(S.endpoint("registry"), timeout_ms=1500, principal=name)
    try:
        eq(c.raw(msgpack.packb({"v": 1, "id": "x", "method": "sys.health"})), None,
           "a key without a principal is answered")
    finally:
        c.close()
    bftest.principal(name, roles=("auditor",))  # keygen keeps the pair, adds the section
    c = Client(S.endpoint("registry"), timeout_ms=10000, principal=name)
    try:
        r = c.call("sys.health", actor=None)
        eq(r["status"], "ok")
    finally:
        c.close()


def test_a_removed_principal_is_refused_even_on_an_open_connection():
    name = "gone.%s" % uid()
    bftest.principal(name, roles=("admin",))
    c = Client(S.endpoint("registry"), timeout_ms=3000, principal=name)
    try:
        eq(c.call("sys.health", actor=None)["status"], "ok")
        path = os.path.join(bftest.KEYS_DIR, "principals.conf")
        with open(path) as f:
            text = f.read()
        start = text.index("[%s]" % name)
        end = text.find("\n[", start + 1)
        tmp = path + ".t"
        with open(tmp, "w") as f:
            f.write(text[:start] + (text[end + 1:] if end >= 0 else ""))
        os.rename(tmp, path)
        time.sleep(1.1)  # the table is re-checked at most once a second
        e = c.err("sys.health", actor=None)
        eq(e["code"], "unauthenticated")
    finally:
        c.close()
    c = Client(S.endpoint("registry"), timeout_ms=1500, principal=name)
    try:
        eq(c.raw(msgpack.packb({"v": 1, "id": "x", "method": "sys.health"})), None,
           "a removed principal can connect again")
    finally:
        c.close()


def test_principal_without_act_for_cannot_name_another_actor_or_pass_auth():
    name = "clerk.%s" % uid()
    bftest.principal(name, roles=("auditor",))
    c = Client(S.endpoint("registry"), principal=name)
    try:
        # reads as itself work; the dispatcher sees the principal's roles
        c.call("region.list", {}, actor=None)
        c.call("region.list", {}, actor=name)
        # actor/auth in `extra`: sent as they are through this principal's socket
        e = c.request("region.list", {}, extra={"actor": "cadre:1"})
        eq(e["ok"], False)
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "actor")
        e = c.request("region.list", {}, extra={"actor": name, "auth": {"roles": ["admin"]}})
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "auth")
        # an auditor is not admin: region.put (admin only) is refused
        e = c.request("region.put", {"code": "130000000000", "name": "河北省",
                                     "level": "province"}, actor=None)
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "method")
    finally:
        c.close()


def test_act_for_auth_narrows_roles_and_cannot_grant_admin_or_leave_its_region():
    # the deployment's gateway: service + act_for
    gw = Client(S.endpoint("registry"), principal="gateway")
    try:
        e = gw.request("region.list", {}, extra={"actor": "cadre:7", "auth": {"roles": ["admin"]}})
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "auth")
        e = gw.request("region.list", {}, extra={"actor": "cadre:7", "auth": {"roles": ["service"]}})
        eq(e["ok"], True, "a gateway may pass a role it holds itself")
        r = gw.request("region.list", {}, extra={"actor": "cadre:7", "auth": {"roles": ["cadre"], "cadre_id": 7}})
        eq(r["ok"], True, "a cadre may read regions")
    finally:
        gw.close()
    # an admin that acts for others: auth narrows it (region.put is admin only)
    h = Client(S.endpoint("registry"), principal=bftest.ACT_FOR)
    try:
        e = h.request("region.put", {"code": "130000000000", "name": "河北省", "level": "province"}, extra={"actor": "cadre:7", "auth": {"roles": ["cadre"], "cadre_id": 7}})
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "method")
    finally:
        h.close()
    # a gateway bound to a region cannot vouch for one outside it
    name = "gw.%s" % uid()
    bftest.principal(name, roles=("service",), act_for=True, region="120110000000")
    g = Client(S.endpoint("registry"), principal=name)
    try:
        e = g.request("region.list", {}, extra={"actor": "operator:1", "auth": {"roles": ["county_operator"], "region": "120220000000"}})
        eq(e["error"]["code"], "permission_denied")
        eq(e["error"]["field"], "auth")
        r = g.request("region.list", {}, extra={"actor": "operator:1", "auth": {"roles": ["county_operator"], "region": "120110005000"}})
        eq(r["ok"], True, "a region inside the gateway's is accepted")
    finally:
        g.close()


def _publisher(as_principal=None, stranger=False, plain=False):
    ep = "tcp://127.0.0.1:%d" % S.ports["bus_xsub"]
    if stranger:
        s, _ = _stranger_socket("bus", zmq.PUB, ep)
        return s
    s = CTX.socket(zmq.PUB)
    s.setsockopt(zmq.LINGER, 0)
    if not plain:
        bangfu_keys.configure(s, "bus", as_principal)
    s.connect(ep)
    return s


def _publish_for(pub, topic, seconds=2.0):
    """Publishes topic repeatedly (slow joiners) for a while."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        pub.send_multipart([topic.encode(), msgpack.packb({"type": topic, "id": uid()})])
        time.sleep(0.05)


def test_forged_publish_without_a_service_key_never_reaches_a_subscriber():
    u = uid()
    sub = Subscriber(S, "bangfu.forged.%s." % u)
    try:
        forgers = {"plain": _publisher(plain=True), "stranger": _publisher(stranger=True),
                   "subscriber-key": _publisher(bftest.SUBSCRIBER)}
        for what, p in forgers.items():
            _publish_for(p, "bangfu.forged.%s.%s" % (u, what), 1.5)
        sub.collect(lambda ev: len(ev) > 0, timeout=1)
        eq(sub.events, [], "a forged event reached a subscriber")
        for p in forgers.values():
            p.close(0)
        # control: a service's key publishes
        svc = _publisher("registry")
        _publish_for(svc, "bangfu.forged.%s.service" % u, 1.5)
        got = sub.collect(lambda ev: len(ev) > 0, timeout=5)
        svc.close(0)
        check(got and got[0][0] == "bangfu.forged.%s.service" % u,
              "the service's event was not delivered: %r" % got[:1])
    finally:
        sub.close()
    check("bus.xsub" in S.procs["bus"].output(), "the bus logged the refused publishers")


def test_sub_without_a_key_gets_nothing():
    u = uid()
    plain = Subscriber(S, "bangfu.keyless.%s" % u, principal=None)
    keyed = Subscriber(S, "bangfu.keyless.%s" % u)
    try:
        svc = _publisher("registry")
        _publish_for(svc, "bangfu.keyless.%s" % u, 1.5)
        svc.close(0)
        got = keyed.collect(lambda ev: len(ev) > 0, timeout=5)
        check(got, "the keyed subscriber got the event (control)")
        plain.collect(lambda ev: len(ev) > 0, timeout=1)
        eq(plain.events, [], "a keyless SUB got an event")
    finally:
        plain.close()
        keyed.close()


def test_keygen_is_idempotent_and_validates():
    k = os.path.join(bftest.TMP, "keys-%s" % uid())
    b = os.path.join(BUILD, "bin", "bangfu")
    out1 = subprocess.run([b, "keygen", "--deployment", k], capture_output=True, text=True)
    eq(out1.returncode, 0, out1.stderr)
    conf1 = open(os.path.join(k, "principals.conf")).read()
    out2 = subprocess.run([b, "keygen", "--deployment", k], capture_output=True, text=True)
    eq(out2.returncode, 0, out2.stderr)
    eq(open(os.path.join(k, "principals.conf")).read(), conf1, "a second run changes nothing")
    check("created" in out1.stdout and "created" not in out2.stdout, out2.stdout)
    eq(oct(os.stat(os.path.join(k, "admin.key")).st_mode & 0o777), "0o600")
    for name in ("registry", "funds", "tasks", "notify", "bus", "gateway", "admin"):
        check("[%s]" % name in conf1, name + " missing")
    # the section up to the next header at a line start (Z85 keys may hold '[')
    check("act_for = true" in conf1.split("\n[gateway]")[1].split("\n[")[0],
          "gateway acts for others")
    bad = subprocess.run([b, "keygen", "x.y", "--dir", k, "--roles", "root"],
                         capture_output=True, text=True)
    eq(bad.returncode, 2)
    check("unknown role root" in bad.stderr, bad.stderr)
    bad = subprocess.run([b, "keygen", "Bad Name", "--dir", k, "--roles", "admin"],
                         capture_output=True, text=True)
    eq(bad.returncode, 2)


def test_cli_authenticates_as_bangfu_principal():
    b = os.path.join(BUILD, "bin", "bangfu")
    name = "cli.%s" % uid()
    bftest.principal(name, roles=("auditor",))
    env = dict(S.env, BANGFU_PRINCIPAL=name)
    p = subprocess.run([b, "call", "registry", "region.put",
                        '{"code":"130000000000","name":"河北省","level":"province"}'],
                       capture_output=True, text=True, env=env)
    eq(p.returncode, 1, p.stdout)
    check('"permission_denied"' in p.stderr, p.stderr)
    env = dict(S.env, BANGFU_PRINCIPAL="nobody.%s" % uid())
    p = subprocess.run([b, "call", "registry", "sys.health"], capture_output=True, text=True,
                       env=env)
    eq(p.returncode, 2)
    check("nobody" in p.stderr, p.stderr)


def test_plaintext_mode_warns_and_trusts_the_envelope():
    port = bftest.free_port()
    ep = "tcp://127.0.0.1:%d" % port
    env = {"BANGFU_REGISTRY_BIND": ep, "BANGFU_SECURITY_MODE": "plaintext",
           "BANGFU_RELAY_ENABLED": "false"}
    bftest._endpoint_server[ep] = "registry"
    old = os.environ.get("BANGFU_SECURITY_MODE")
    os.environ["BANGFU_SECURITY_MODE"] = "plaintext"  # bangfu_keys: plain sockets
    try:
        S.start("registry", env=env, name="registry-plain")
        c = Client(ep, timeout_ms=5000)
        try:
            e = c.err("region.put", {"code": "130000000000", "name": "河北省",
                                     "level": "province"}, actor=None)
            eq(e["code"], "unauthenticated", "plaintext: a write must name its actor")
            eq(c.call("sys.health", actor="anyone:at-all")["status"], "ok")
        finally:
            c.close()
        lines = [x for x in S.procs["registry-plain"].output().splitlines()
                 if "security.mode=plaintext: no authentication" in x]
        check(lines, "the plaintext warning is logged")
        check("warn" in lines[0], "logged as a warning: " + lines[0])
    finally:
        if old is None:
            os.environ.pop("BANGFU_SECURITY_MODE", None)
        else:
            os.environ["BANGFU_SECURITY_MODE"] = old
        eq(S.stop("registry-plain"), 0)
