"""bangfu_keys: the ONE place Python code learns about bangfu's CURVE keys.

Every Python client of bangfu (the test harness, the demo loaders, the
example subscriber, the compose scenario) makes its ZeroMQ sockets through
this module, so nothing else needs to know where keys live or how CURVE is
set up (docs/security.md):

    import bangfu_keys
    sock = ctx.socket(zmq.DEALER)
    bangfu_keys.configure(sock, "registry")      # before connect
    sock.connect(endpoint)

Environment (the same as the C CLI):
    BANGFU_KEYS_DIR        the keys directory (<name>.key, <name>.pub, principals.conf)
    BANGFU_PRINCIPAL       who we are (default "admin")
    BANGFU_SECURITY_MODE   "curve" (default) or "plaintext" (no keys at all)
"""
import os
import re

NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*(:[A-Za-z0-9_.@-]+)?$")


def keys_dir():
    return os.environ.get("BANGFU_KEYS_DIR", "")


def principal():
    return os.environ.get("BANGFU_PRINCIPAL") or "admin"


def curve():
    """True unless BANGFU_SECURITY_MODE=plaintext."""
    return os.environ.get("BANGFU_SECURITY_MODE", "curve") != "plaintext"


def name_ok(name):
    """True if name is a valid principal name (the RPC actor syntax)."""
    return isinstance(name, str) and 0 < len(name) <= 128 and NAME_RE.match(name) is not None


def _field(path, field):
    with open(path) as f:
        for line in f:
            k, sep, v = line.partition("=")
            if sep and k.strip() == field:
                v = v.strip()
                if len(v) == 40:
                    return v.encode()
    raise ValueError("%s has no valid '%s = <40 Z85 characters>' line" % (path, field))


def public_key(name, directory=None):
    """The public key (Z85 bytes) of name, from <dir>/<name>.pub."""
    return _field(os.path.join(directory or keys_dir(), name + ".pub"), "public")


def key_pair(name, directory=None):
    """(public, secret) Z85 bytes of name, from <dir>/<name>.key."""
    path = os.path.join(directory or keys_dir(), name + ".key")
    return _field(path, "public"), _field(path, "secret")


def configure(sock, server, as_principal=None, directory=None):
    """Makes sock a CURVE client of the server called `server` ("registry",
    "bus"), authenticated as as_principal (default: $BANGFU_PRINCIPAL). Call
    before connect. Does nothing in plaintext mode. Returns sock."""
    if not curve():
        return sock
    pub, sec = key_pair(as_principal or principal(), directory)
    sock.curve_serverkey = public_key(server, directory)
    sock.curve_publickey = pub
    sock.curve_secretkey = sec
    return sock


def has_pair(name, directory=None):
    """True if <dir>/<name>.key exists (name is a principal we can act as)."""
    return name_ok(name) and os.path.exists(os.path.join(directory or keys_dir(), name + ".key"))
