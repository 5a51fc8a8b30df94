"""common: a small RPC client for the demo loaders (scripts/demo/*.py).

Each loader is run by scripts/stack.sh after the services are healthy, with
the endpoints of var/endpoints.env in its environment. Loaders must be
idempotent: running one twice changes nothing (an `already_exists` reply is
success for a loader)."""
import os
import sys
import uuid

import msgpack
import zmq

CTX = zmq.Context.instance()
ACTOR = "system:demo"


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
        self.sock = CTX.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def call(self, method, params=None, actor=ACTOR):
        rid = uuid.uuid4().hex
        req = {"v": 1, "id": rid, "method": method, "params": params or {}, "actor": actor}
        self.sock.send_multipart([b"", msgpack.packb(req, use_bin_type=True)])
        while True:
            if not self.sock.poll(self.timeout_ms):
                raise RpcError({"code": "unavailable", "message": "no reply from " + self.endpoint})
            reply = msgpack.unpackb(self.sock.recv_multipart()[-1], raw=False)
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
