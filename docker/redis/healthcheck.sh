#!/bin/sh
# Healthy when Redis answers PING with PONG (not LOADING while it replays the AOF).
[ "$(redis-cli -h 127.0.0.1 -p "${REDIS_PORT:-6379}" ping 2>/dev/null)" = PONG ]
