#!/bin/sh
# postgres-entrypoint: runs PostgreSQL 15 for bangfu in a container.
#
# Started as root, it gives the data directory to the postgres user and
# re-executes itself as that user (setpriv); started as any other user, it
# runs as that user. On first start (no PG_VERSION in $PGDATA) it initialises
# the cluster: superuser $POSTGRES_USER with the password $POSTGRES_PASSWORD
# (or the contents of $POSTGRES_PASSWORD_FILE, for docker secrets), SCRAM
# password authentication from every address, and the database $POSTGRES_DB.
# Then it becomes the server (exec), listening on $POSTGRES_LISTEN (default
# every address) port $POSTGRES_PORT; extra arguments go to postgres
# (e.g. `-c max_connections=300`). Logs go to stderr, read by `docker logs`.
# Before that, on every start, it runs bangfu-db-bootstrap (scripts/db-bootstrap.sh)
# with the passwords in $BANGFU_SECRETS (/run/bangfu/secrets/pg-<service>.password):
# a login role bangfu_<service> per file, owning only its schema.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=bangfu}"
: "${POSTGRES_DB:=bangfu}"
: "${POSTGRES_PORT:=5432}"
: "${POSTGRES_LISTEN:=*}"
SOCKDIR=/var/run/postgresql

say() { echo "postgres-entrypoint: $*" >&2; }

# The service roles' passwords (docs/security.md): read here, as root, from the
# mounted secrets directory and copied where only the postgres user reads them.
SECRETS=${BANGFU_SECRETS:-/run/bangfu/secrets}
PRIV_SECRETS=/run/bangfu-pg-secrets

if [ "$(id -u)" = 0 ]; then
    if [ -d "$SECRETS" ]; then
        rm -rf "$PRIV_SECRETS"
        mkdir -m 0700 "$PRIV_SECRETS"
        for f in "$SECRETS"/pg-*.password; do
            [ -e "$f" ] && cp "$f" "$PRIV_SECRETS/"
        done
        chown -R postgres:postgres "$PRIV_SECRETS"
        chmod 0600 "$PRIV_SECRETS"/* 2>/dev/null || true
    fi
    mkdir -p "$PGDATA" "$SOCKDIR"
    # A restored or copied volume may carry other owners: give all of it back.
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres {} +
    chown postgres:postgres "$SOCKDIR"
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password=${POSTGRES_PASSWORD:-}
    if [ -z "$password" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        password=$(cat "$POSTGRES_PASSWORD_FILE")
    fi
    if [ -z "$password" ]; then
        say "first start needs a password: set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)"
        exit 1
    fi
    say "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$password" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >&2
    rm -f "$pwfile"
    {
        echo "# bangfu: password (SCRAM) connections from any address; local socket trusted"
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
    # A private start on the Unix socket only, so nothing (not even the health
    # check) sees the server before the database exists.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $POSTGRES_PORT -k $SOCKDIR" -w -t 60 start >&2
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres \
            -qc "CREATE DATABASE \"$POSTGRES_DB\"" >&2
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >&2
    say "initialised"
fi

# On every start (new services, rotated passwords): one login role per service
# owning only its schema, with its password (bangfu-db-bootstrap, idempotent),
# again on the Unix socket only, before anyone can connect.
if [ -d "$PRIV_SECRETS" ] && ls "$PRIV_SECRETS"/pg-*.password >/dev/null 2>&1; then
    services=""
    for f in "$PRIV_SECRETS"/pg-*.password; do
        s=${f##*/pg-}
        services="$services ${s%.password}"
    done
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $POSTGRES_PORT -k $SOCKDIR" -w -t 60 start >&2
    if ! PGHOST=$SOCKDIR PGPORT=$POSTGRES_PORT PGUSER=$POSTGRES_USER PGDATABASE=$POSTGRES_DB \
        BANGFU_DB_SERVICES=$services bangfu-db-bootstrap "$PRIV_SECRETS" >&2; then
        pg_ctl -D "$PGDATA" -m fast -w stop >&2
        say "bootstrap of the service roles failed"
        exit 1
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >&2
    say "service roles:$services"
else
    say "warning: no $SECRETS/pg-<service>.password: service roles not made (docs/operations.md)"
fi

exec postgres -D "$PGDATA" -c listen_addresses="$POSTGRES_LISTEN" -p "$POSTGRES_PORT" \
    -k "$SOCKDIR" "$@"
