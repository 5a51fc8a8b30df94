#!/bin/sh
# redis-acl.sh SECRETS_DIR [STREAM]: prints bangfu's Redis ACL file (for
# redis-server --aclfile) on stdout. One user per service, each allowed only
# the commands and keys it uses (docs/security.md, "PostgreSQL and Redis
# privileges"); passwords are read from SECRETS_DIR/redis-<user>.password and
# written only as SHA-256 hashes. STREAM is relay.stream (bangfu:events); the
# rules for it also cover STREAM:* (streams of their own for a second
# deployment sharing the Redis, or for tests: relay.stream = bangfu:events:x).
#
#   default          off: a client that has not sent AUTH can do nothing (NOAUTH)
#   bangfu_admin     everything (operators, `make test` helpers, unit tests)
#   bangfu_registry, bangfu_funds, bangfu_tasks
#                    the outbox relay on STREAM only: XADD; XINFO STREAM and
#                    XRANGE (its Redis-loss check); XINFO GROUPS, XPENDING and
#                    XTRIM MINID (trimming by consumer lag); PING, INFO (health)
#   bangfu_notify    its own keys bangfu:notify:* (queues, retry set, dead
#                    letters, pause set, stats, rate buckets) and, on STREAM,
#                    only reading through its consumer group (and XADD: its
#                    relay publishes notify's own events)
#   bangfu_cli       `bangfu events --from`: XRANGE / XREVRANGE of STREAM
# Used by scripts/lib.sh (make test, make run) and the compose Redis
# (docker/redis/entrypoint.sh). POSIX sh; needs sha256sum.
set -eu
dir=${1:?usage: redis-acl.sh SECRETS_DIR [STREAM]}
stream=${2:-bangfu:events}
ev="~$stream ~$stream:*"

hash() { # user -> "#<sha256 of its password>"
    f="$dir/redis-$1.password"
    [ -s "$f" ] || { echo "redis-acl.sh: missing $f" >&2; exit 1; }
    printf '#%s' "$(head -n 1 "$f" | tr -d '\r\n' | sha256sum | cut -d ' ' -f 1)"
}

base="+ping +select +info +hello"
echo "user default off resetpass resetkeys resetchannels -@all"
echo "user bangfu_admin on $(hash admin) ~* &* +@all"
for s in registry funds tasks gateway; do  # relays (the gateway has one too)
    echo "user bangfu_$s on $(hash "$s") resetchannels -@all $base $ev" \
        "+xadd +xtrim +xrange +xpending +xinfo|stream +xinfo|groups"
done
echo "user bangfu_notify on $(hash notify) resetchannels -@all $base" \
    "~bangfu:notify:* +@stream +@hash +@sortedset +@set +@string +@keyspace -@dangerous" \
    "+eval +evalsha" \
    "($ev +xadd +xtrim +xreadgroup +xack +xautoclaim +xpending +xrange +xrevrange +xlen" \
    "+xinfo +xgroup|create +xgroup|createconsumer +xgroup|delconsumer +eval +evalsha)"
echo "user bangfu_cli on $(hash cli) resetchannels -@all $base $ev +xrange +xrevrange +xlen"
