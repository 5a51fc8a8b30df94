#!/bin/sh
# Healthy when the server accepts TCP connections on its port and the bangfu
# database exists. During first-start initialisation the server listens on its
# Unix socket only, so this stays unhealthy until the real server is up.
pg_isready -q -h 127.0.0.1 -p "${POSTGRES_PORT:-5432}" -d "${POSTGRES_DB:-bangfu}" \
    -U "${POSTGRES_USER:-bangfu}" || exit 1
psql -h /var/run/postgresql -p "${POSTGRES_PORT:-5432}" -U "${POSTGRES_USER:-bangfu}" \
    -d "${POSTGRES_DB:-bangfu}" -Atqc 'SELECT 1' >/dev/null 2>&1 || exit 1
