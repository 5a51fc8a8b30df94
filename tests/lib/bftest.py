"""bftest: what integration tests need to drive real bangfu processes.

Tests run against the PostgreSQL and Redis that tests/run.sh started (their
addresses are in BANGFU_PG_DSN / BANGFU_REDIS_URL). A Stack starts the bus and
the requested services from $BANGFU_BUILD/bin on spare loopback ports, waits
for sys.health, and stops them with SIGTERM, checking that each exited 0.
Clients speak the real wire protocol (ZeroMQ DEALER + msgpack), so every test
exercises exactly what other teams' code will see.

Security (docs/security.md). tests/run.sh makes the keys ($BANGFU_KEYS_DIR,
`bangfu keygen --deployment` plus the test principals "harness" (admin,
act_for) and "events.reader" (subscriber)), and every service runs with CURVE
on. A Client authenticates as a principal (default admin). So that tests
written before authentication keep working: call(..., actor=X) for a valid
actor X that is not the client's principal goes through a socket keyed as
principal X (made on first use with role admin, so a test that plays a
planner and an approver uses two real principals); a call with auth= goes
through the "harness" principal, which acts for others, with actor and auth
as given. principal() makes or changes a principal for tests that need
exact roles.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import msgpack
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "python"))
import bangfu_keys  # noqa: E402

BUILD = os.environ.get("BANGFU_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
TMP = os.environ.get("BANGFU_TEST_TMP", "/tmp")
PG_DSN = os.environ.get("BANGFU_PG_DSN", "")
REDIS_URL = os.environ.get("BANGFU_REDIS_URL", "")
CTX = zmq.Context.instance()


class TestFailure(AssertionError):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise TestFailure(msg)


def eq(a, b, msg=""):
    if a != b:
        raise TestFailure("%s: %r != %r" % (msg or "values differ", a, b))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pg():
    """A new psycopg2 connection (autocommit) to the test database."""
    import psycopg2
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    return conn


# Redis runs with ACL users (docs/security.md): tests use bangfu_admin, whose
# URL tests/run.sh exports; services use their own users.
REDIS_ADMIN_URL = os.environ.get("BANGFU_TEST_REDIS_ADMIN_URL", REDIS_URL)
SECRETS_DIR = os.environ.get("BANGFU_TEST_SECRETS_DIR", "")
REDIS_ACL = os.environ.get("BANGFU_TEST_REDIS_ACL", "")


def redis_client():
    """A redis-py client logged in as bangfu_admin."""
    import redis
    return redis.Redis.from_url(REDIS_ADMIN_URL)


def redis_password(user):
    """The password of Redis ACL user bangfu_<user> (admin, registry, ...)."""
    with open(os.path.join(SECRETS_DIR, "redis-%s.password" % user)) as f:
        return f.readline().strip()


def redis_server_args():
    """redis-server options for a private Redis with the same ACL users (and
    maxmemory policy) as the one tests/run.sh started."""
    args = ["--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]
    return args + (["--aclfile", REDIS_ACL] if REDIS_ACL else [])


def redis_cli_env():
    """Environment for redis-cli --user bangfu_admin (REDISCLI_AUTH)."""
    e = dict(os.environ)
    if SECRETS_DIR:
        e["REDISCLI_AUTH"] = redis_password("admin")
    return e


def redis_cli_auth():
    return ["--user", "bangfu_admin"] if SECRETS_DIR else []


def redis_admin(port):
    """A redis-py client of the private Redis on port, as bangfu_admin."""
    import redis
    if not SECRETS_DIR:
        return redis.Redis(port=port)
    return redis.Redis(port=port, username="bangfu_admin", password=redis_password("admin"))


class PrivateRedis:
    """A Redis of a test's own (same ACL users as the shared one), which the
    test may stop, restart or wipe: `aof` keeps its data across a restart."""

    def __init__(self, tag, aof=False):
        self.port = free_port()
        self.aof = aof
        self.dir = os.path.join(TMP, "redis-%s-%s" % (tag, uid()))
        os.makedirs(self.dir)
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def cli(self, *args):
        return subprocess.call(["redis-cli", "-p", str(self.port)] + redis_cli_auth() +
                               list(args), env=redis_cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        subprocess.check_call(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                               "--dir", self.dir, "--daemonize", "yes", "--save", "",
                               "--appendonly", "yes" if self.aof else "no",
                               "--appendfsync", "everysec", "--pidfile", self.dir + "/r.pid",
                               "--logfile", self.dir + "/r.log"] + redis_server_args())
        wait_for(lambda: self.cli("ping") == 0, msg="private redis up")

    def stop(self, keep=True):
        """Shuts it down; keep=False also removes its data (a Redis lost)."""
        self.cli("shutdown") if keep else self.cli("shutdown", "nosave")
        wait_for(lambda: self.cli("ping") != 0, msg="private redis down")
        if not keep:
            import shutil
            for name in os.listdir(self.dir):
                if name.startswith("appendonly") or name.endswith(".rdb"):
                    p = os.path.join(self.dir, name)
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def client(self):
        return redis_admin(self.port)


def fresh_town(reg):
    """Province, city, county and one township under a county code no other
    test uses (registry client reg, as admin); returns the township's code."""
    import random
    while True:
        county = "%02d%02d%02d" % (random.choice([13, 14, 41, 42, 43]), random.randint(1, 99),
                                   random.randint(1, 99))
        try:
            reg.call("region.get", {"code": county + "000000"})
        except RpcError as e:
            if e.code == "not_found":
                break
            raise
    prov, city = county[:2], county[:4]
    reg.call("region.put", {"code": prov + "0" * 10, "name": "省", "level": "province"})
    reg.call("region.put", {"code": city + "0" * 8, "name": "市", "level": "city",
                            "parent_code": prov + "0" * 10})
    reg.call("region.put", {"code": county + "000000", "name": "县", "level": "county",
                            "parent_code": city + "0" * 8})
    town = county + "001000"
    reg.call("region.put", {"code": town, "name": "镇", "level": "township",
                            "parent_code": county + "000000"})
    return town


def uid():
    return uuid.uuid4().hex[:10]


class RpcError(Exception):
    def __init__(self, error):
        self.error = error
        self.code = error.get("code")
        self.field = error.get("field")
        super().__init__("%s: %s (field %s)" % (self.code, error.get("message"), self.field))


KEYS_DIR = os.environ.get("BANGFU_KEYS_DIR", "")
ACT_FOR = "harness"  # the test principal that acts for others (run.sh makes it)
SUBSCRIBER = "events.reader"  # the test principal with role subscriber
_principals = set()  # made by this process
_endpoint_server = {}  # endpoint -> server name, filled by Stack


def keygen(*args):
    """Runs `bangfu keygen` on the test keys directory; returns its stdout."""
    argv = [os.path.join(BUILD, "bin", "bangfu"), "keygen"] + list(args) + ["--dir", KEYS_DIR]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0:
        raise TestFailure("bangfu keygen %s: %s" % (" ".join(args), p.stderr.decode()))
    return p.stdout.decode()


def principal(name, roles=("admin",), region=None, act_for=False, cadre_id=None):
    """Makes principal name (a key pair and its principals.conf section) or
    replaces its section; services pick it up without a restart. Returns
    name."""
    args = [name, "--roles", ",".join(roles), "--act-for" if act_for else "--no-act-for"]
    if region:
        args += ["--region", region]
    if cadre_id:
        args += ["--cadre-id", str(cadre_id)]
    keygen(*args)
    _principals.add(name)
    return name


def _legacy_principal(name):
    """The principal a legacy actor plays: made with role admin the first
    time, left alone if it exists (a test may have given it exact roles)."""
    if name in _principals or os.path.exists(os.path.join(KEYS_DIR, name + ".key")):
        _principals.add(name)
        return
    principal(name, roles=("admin",))


def curve_socket(kind, server, as_principal=None):
    """A socket of kind configured as a CURVE client of server (no-op in
    plaintext mode); connect it yourself."""
    s = CTX.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    bangfu_keys.configure(s, server, as_principal or bangfu_keys.principal())
    return s


def raw_dealer(endpoint, server):
    """A CURVE DEALER connected to endpoint, for tests that pipeline raw
    requests (raw_send) and match replies by id (raw_recv)."""
    s = curve_socket(zmq.DEALER, server)
    s.connect(endpoint)
    return s


def raw_send(sock, rid, method, params, actor="admin"):
    """Sends one request with id rid on a raw_dealer socket, without waiting."""
    sock.send_multipart([b"", msgpack.packb({"v": 1, "id": rid, "method": method,
                                             "actor": actor, "params": params})])


def raw_recv(sock, what, timeout_ms=20000):
    """The next reply on a raw_dealer socket (a map with its id); fails the
    test naming what was awaited if none comes in timeout_ms."""
    check(sock.poll(timeout_ms), "no reply to " + what)
    return msgpack.unpackb(sock.recv_multipart()[-1], raw=False)


class Client:
    """A DEALER client: sends an empty delimiter and the request map.
    Authenticates as principal (default admin) to the server called server
    (default: the service Stack gave this endpoint, else registry);
    principal=None and server=None with plain=True make an unauthenticated
    socket."""

    def __init__(self, endpoint, timeout_ms=30000, server=None, principal="admin", plain=False):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.server = server or _endpoint_server.get(endpoint, "registry")
        self.principal = principal
        self.plain = plain
        self.sock = self._socket(principal)
        self.socks = {principal: self.sock}

    def _socket(self, who):
        s = CTX.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if not self.plain:
            bangfu_keys.configure(s, self.server, who)
        s.connect(self.endpoint)
        return s

    def _sock_for(self, actor, auth):
        """The socket a call goes through (see the module doc)."""
        if self.plain or not bangfu_keys.curve():
            return self.sock
        who = self.principal
        if auth is not None:
            who = ACT_FOR
        elif actor is not None and actor != self.principal and bangfu_keys.name_ok(actor):
            _legacy_principal(actor)
            who = actor
        if who not in self.socks:
            self.socks[who] = self._socket(who)
        return self.socks[who]

    def close(self):
        for s in self.socks.values():
            s.close(0)
        self.socks = {}

    def raw(self, body, frames=None, timeout_ms=None, sock=None):
        """Sends body as the last frame (after `frames`, default one empty
        delimiter) and returns the decoded reply map (or None on timeout)."""
        sock = sock or self.sock
        parts = [b""] if frames is None else list(frames)
        sock.send_multipart(parts + [body])
        if not sock.poll(timeout_ms or self.timeout_ms):
            return None
        reply = sock.recv_multipart()
        return msgpack.unpackb(reply[-1], raw=False, strict_map_key=False), reply[:-1]

    def request(self, method, params=None, actor=None, rid=None, extra=None, auth=None):
        req = {"v": 1, "id": rid or uuid.uuid4().hex, "method": method,
               "params": params if params is not None else {}}
        if actor is not None:
            req["actor"] = actor
        if auth is not None:
            req["auth"] = auth
        if extra:
            req.update(extra)
        body = msgpack.packb(req, use_bin_type=True)
        sock = self._sock_for(actor, auth)
        while True:
            got = self.raw(body, sock=sock)
            if got is None:
                raise TestFailure("no reply to %s within %d ms" % (method, self.timeout_ms))
            reply, _ = got
            if reply.get("id") == req["id"]:
                return reply

    def call(self, method, params=None, actor="admin", auth=None):
        """Returns the result, or raises RpcError. auth: {roles, region,
        cadre_id} for the actor (docs/security.md)."""
        reply = self.request(method, params, actor, auth=auth)
        if reply.get("ok"):
            return reply.get("result")
        raise RpcError(reply.get("error") or {})

    def err(self, method, params=None, actor="admin", auth=None):
        """Expects an error; returns it as a dict."""
        reply = self.request(method, params, actor, auth=auth)
        if reply.get("ok"):
            raise TestFailure("%s unexpectedly succeeded: %r" % (method, reply.get("result")))
        return reply["error"]


def expect_error(client, method, params, code, field=None, actor="admin", auth=None):
    e = client.err(method, params, actor, auth=auth)
    eq(e.get("code"), code, "%s error code (%s)" % (method, e.get("message")))
    if field is not None:
        eq(e.get("field"), field, "%s error field (%s)" % (method, e.get("message")))
    return e


class Process:
    def __init__(self, name, argv, env, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        with open(os.path.join(TMP, "pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the process; returns its exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return None
        self.log.close()
        return self.proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Stack:
    """The bus plus any services, on spare ports, sharing one database."""

    def __init__(self, services=("registry",), extra_env=None, tag=None):
        self.tag = tag or uid()
        self.ports = {"bus_xsub": free_port(), "bus_pub": free_port()}
        self.env = dict(os.environ)
        self.env.update({
            "BANGFU_BUS_XSUB": "tcp://127.0.0.1:%d" % self.ports["bus_xsub"],
            "BANGFU_BUS_PUB": "tcp://127.0.0.1:%d" % self.ports["bus_pub"],
            "BANGFU_LOG_LEVEL": os.environ.get("BANGFU_TEST_LOG_LEVEL", "info"),
        })
        _endpoint_server["tcp://127.0.0.1:%d" % self.ports["bus_xsub"]] = "bus"
        _endpoint_server["tcp://127.0.0.1:%d" % self.ports["bus_pub"]] = "bus"
        for s in ("registry", "funds", "tasks", "notify", "gateway"):
            port = free_port()
            self.ports[s] = port
            _endpoint_server["tcp://127.0.0.1:%d" % port] = s
            self.env["BANGFU_%s_BIND" % s.upper()] = "tcp://127.0.0.1:%d" % port
            self.env["BANGFU_%s_RPC" % s.upper()] = "tcp://127.0.0.1:%d" % port
        # the gateway's HTTP side, console files and bootstrap admin's password
        # file (one per test run: the database, and so the users, are shared)
        self.ports["gateway_http"] = free_port()
        self.env["BANGFU_GATEWAY_HTTP_BIND"] = "127.0.0.1:%d" % self.ports["gateway_http"]
        self.env["BANGFU_GATEWAY_WWW_DIR"] = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "services", "gateway", "www")
        self.env["BANGFU_GATEWAY_ADMIN_PASSWORD_FILE"] = os.path.join(
            TMP, "gateway-admin.password")
        if extra_env:
            self.env.update(extra_env)
        self.procs = {}
        self.services = list(services)
        self.clients = []

    def endpoint(self, service):
        return "tcp://127.0.0.1:%d" % self.ports[service]

    def http_url(self):
        """The gateway's HTTP base URL, e.g. http://127.0.0.1:41234"""
        return "http://" + self.env["BANGFU_GATEWAY_HTTP_BIND"]

    def start_bus(self):
        self.procs["bus"] = Process("bus", [os.path.join(BUILD, "bin", "bangfu-bus")], self.env,
                                    os.path.join(TMP, "bus-%s.log" % self.tag))
        time.sleep(0.1)

    def start(self, service, env=None, name=None):
        e = dict(self.env)
        if env:
            e.update(env)
        name = name or service
        p = Process(name, [os.path.join(BUILD, "bin", "bangfu-" + service)], e,
                    os.path.join(TMP, "%s-%s.log" % (name, self.tag)))
        self.procs[name] = p
        endpoint = e.get("BANGFU_%s_BIND" % service.upper(), self.endpoint(service))
        # overwrite: free ports are reused, and an endpoint an earlier Stack's
        # service had (a stale entry) would give clients the wrong server key
        _endpoint_server[endpoint] = service
        self.wait_healthy(endpoint, p, server=service)
        return p

    def wait_healthy(self, endpoint, proc, timeout=30, server=None):
        server = server or _endpoint_server.get(endpoint) or proc.name
        c = Client(endpoint, timeout_ms=500, server=server)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if not proc.alive():
                    raise TestFailure("%s exited early:\n%s" % (proc.name, proc.output()[-3000:]))
                try:
                    r = c.request("sys.health")
                    if r.get("ok"):
                        return
                except TestFailure:
                    # a timed-out request leaves a late reply; use a new socket
                    c.close()
                    c = Client(endpoint, timeout_ms=500, server=server)
                time.sleep(0.05)
        finally:
            c.close()
        raise TestFailure("%s not healthy in %ds" % (proc.name, timeout))

    def __enter__(self):
        self.start_bus()
        for s in self.services:
            self.start(s)
        return self

    def client(self, service, timeout_ms=30000, principal="admin"):
        c = Client(self.endpoint(service), timeout_ms, server=service, principal=principal)
        self.clients.append(c)
        return c

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name)
        return p.stop(sig)

    def __exit__(self, *exc):
        for c in self.clients:
            c.close()
        bad = []
        for name in list(self.procs):
            p = self.procs[name]
            rc = p.stop()
            if rc != 0:
                bad.append("%s exited %r:\n%s" % (name, rc, p.output()[-2000:]))
        if bad and exc[0] is None:
            raise TestFailure("unclean shutdown: " + "\n".join(bad))
        return False


class Subscriber:
    """A bus subscriber collecting (type, event) pairs."""

    def __init__(self, stack, prefix="", principal=SUBSCRIBER):
        self.sock = CTX.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if principal:
            bangfu_keys.configure(self.sock, "bus", principal)
        self.sock.connect("tcp://127.0.0.1:%d" % stack.ports["bus_pub"])
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.events = []
        time.sleep(0.3)  # let the subscription reach the publishers (slow joiner)

    def collect(self, until, timeout=10):
        """Receives until until(events) is true or the timeout passes."""
        deadline = time.time() + timeout
        while time.time() < deadline and not until(self.events):
            if self.sock.poll(100):
                topic, body = self.sock.recv_multipart()
                self.events.append((topic.decode(), msgpack.unpackb(body, raw=False)))
        return self.events

    def close(self):
        self.sock.close(0)


def stream_events(r, since="-", stream="bangfu:events"):
    """All events in the Redis stream after id `since`, decoded."""
    out = []
    start = since if since == "-" else "(" + since
    while True:
        batch = r.xrange(stream, min=start, max="+", count=10000)
        if not batch:
            return out
        for sid, fields in batch:
            out.append((sid.decode(), msgpack.unpackb(fields[b"event"], raw=False)))
        start = "(" + batch[-1][0].decode()


def stream_last_id(r, stream="bangfu:events"):
    last = r.xrevrange(stream, count=1)
    return last[0][0].decode() if last else "0-0"


def wait_for(pred, timeout=10, interval=0.05, msg="condition not met in time"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TestFailure(msg)


# ---- GB 11643 ID numbers for test data
_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_C = "10X98765432"


def id_check_digit(first17):
    return _C[sum(int(a) * w for a, w in zip(first17, _W)) % 11]


def make_id(n, region="120110", year=1970):
    """A valid, deterministic ID number for person n: distinct for distinct
    n < 13,440,000 (the 3-digit sequence, then 12 x 28 dates a year, 40 years)."""
    n = int(n)
    seq, rest = n % 1000, n // 1000
    day_index, y = rest % 336, year + (rest // 336) % 40
    first17 = "%s%04d%02d%02d%03d" % (region, y, 1 + day_index // 28, 1 + day_index % 28, seq)
    return first17 + id_check_digit(first17)


_id_counter = [int(time.time() * 1000) % 5000000]


def fresh_id(region="120110"):
    _id_counter[0] += 1
    import random
    return make_id(random.randrange(0, 9999999), region=region)


# ---- volume
SANITIZE = os.environ.get("BANGFU_SANITIZE") == "1"


def scaled(n, floor=100):
    """Volume for big tests: the full n normally; a tenth (at least floor)
    under the sanitizers, which run the same scenarios 5-20x slower. The full
    volumes run in the plain `make test`."""
    return max(floor, n // 10) if SANITIZE else n
