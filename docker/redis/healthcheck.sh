#!/bin/sh
# Healthy when Redis answers PING with PONG (not LOADING while it replays the
# AOF), asked as bangfu_admin (no client gets an answer without a password).
REDISCLI_AUTH=$(head -n 1 "${BANGFU_SECRETS:-/run/bangfu/secrets}/redis-admin.password" 2>/dev/null) \
    && export REDISCLI_AUTH
[ "$(redis-cli -h 127.0.0.1 -p "${REDIS_PORT:-6379}" --user bangfu_admin ping 2>/dev/null)" = PONG ]
