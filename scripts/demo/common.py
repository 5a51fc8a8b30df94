"""common: a small RPC client for the demo loaders (scripts/demo/*.py).

Each loader is run by scripts/stack.sh after the services are healthy, with
the endpoints of var/endpoints.env in its environment. Loaders must be
idempotent: running one twice changes nothing (an `already_exists` reply is
success for a loader).

Keys (docs/security.md): a call as an actor that has its own key pair in
$BANGFU_KEYS_DIR (system:demo, the approver cadre:finance-bureau) goes through
a socket keyed as that principal, so the tranche planner and its approver are
two real principals; any other actor (the cadres who own tasks) is named
through the "demo.loader" principal, which acts for others. stack.sh makes
these principals."""
import os
import sys
import uuid

import msgpack
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import bangfu_keys  # noqa: E402

CTX = zmq.Context.instance()
ACTOR = "system:demo"
ACT_FOR = "demo.loader"


class RpcError(Exception):
    def __init__(self, error):
        self.error = error or {}
        self.code = self.error.get("code")
        self.field = self.error.get("field")
        super().__init__("%s: %s (field %s)" % (self.code, self.error.get("message"), self.field))


class Client:
    def __init__(self, service, timeout_ms=60000):
        var = "BANGFU_%s_RPC" % service.upper()
        self.endpoint = os.environ.get(var)
        if not self.endpoint:
            sys.exit("%s is not set (source var/endpoints.env)" % var)
        self.timeout_ms = timeout_ms
        self.service = service
        self.socks = {}

    def _sock(self, actor):
        who = actor if bangfu_keys.has_pair(actor) else ACT_FOR
        if who not in self.socks:
            s = CTX.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            bangfu_keys.configure(s, self.service, who)
            s.connect(self.endpoint)
            self.socks[who] = s
        return self.socks[who]

    def call(self, method, params=None, actor=ACTOR):
        rid = uuid.uuid4().hex
        req = {"v": 1, "id": rid, "method": method, "params": params or {}, "actor": actor}
        sock = self._sock(actor)
        sock.send_multipart([b"", msgpack.packb(req, use_bin_type=True)])
        while True:
            if not sock.poll(self.timeout_ms):
                raise RpcError({"code": "unavailable", "message": "no reply from " + self.endpoint})
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
            if reply.get("id") != rid:
                continue
            if reply.get("ok"):
                return reply.get("result")
            raise RpcError(reply.get("error"))

    def ensure(self, method, params, actor=ACTOR):
        """Calls a create method; returns its result, or None if it already existed."""
        try:
            return self.call(method, params, actor)
        except RpcError as e:
            if e.code == "already_exists":
                return None
            raise
