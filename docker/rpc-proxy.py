#!/usr/bin/python3
"""rpc-proxy: one RPC address in front of several instances of a bangfu service.

    python3 docker/rpc-proxy.py BIND INSTANCE [INSTANCE ...]
    python3 docker/rpc-proxy.py tcp://*:7201 tcp://10.0.0.5:7101 tcp://10.0.0.6:7101

A ROUTER socket takes the clients' requests at BIND; a DEALER socket connected
to every instance hands each request to the next instance in turn (ZeroMQ
round-robins over the connected peers and skips the ones that are gone); the
reply finds its way back because bangfu services echo every frame before the
request map (docs/protocol.md). Clients then use BIND as the service's
address (BANGFU_REGISTRY_RPC=tcp://proxyhost:7201). Needs Debian's
python3-zmq; the same in C is zmq_proxy(router, dealer, NULL). See
docs/operations.md, "Scale out". Plaintext mode only: with CURVE on
(docs/security.md) a proxy would hide who its clients are, so clients connect
to every instance themselves (a comma-separated endpoint list).
"""
import signal
import sys

import zmq


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    front.bind(argv[1])
    back = ctx.socket(zmq.DEALER)
    for ep in argv[2:]:
        back.connect(ep)
    print("rpc-proxy: %s -> %s" % (argv[1], ", ".join(argv[2:])), file=sys.stderr, flush=True)
    try:
        zmq.proxy(front, back)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
