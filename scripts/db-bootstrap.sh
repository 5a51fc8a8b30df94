#!/bin/sh
# db-bootstrap.sh [SECRETS_DIR]: creates, as a PostgreSQL superuser, one login
# role per bangfu service and the schema it owns (docs/security.md,
# "PostgreSQL and Redis privileges"). Safe to run again: it only creates
# what is missing, (re)sets each role's attributes and password, and gives
# each schema, and everything in it, to its role (a database whose migrations
# ran as the superuser is converted in place).
#
#   role bangfu_<svc>: LOGIN, no superuser, no CREATEDB/CREATEROLE/REPLICATION/
#       BYPASSRLS; owns schema <svc> and every object in it (its migrations
#       run as this role); no right on any other service's schema (no USAGE,
#       so not even a read) and no CREATE on the database or on public.
#   password: the first line of SECRETS_DIR/pg-<svc>.password (SCRAM, as the
#       server's password_encryption says); with no SECRETS_DIR, none (for
#       trust authentication on loopback: make test, make run).
#
# Connects with psql's usual variables (PGHOST, PGPORT, PGUSER, PGDATABASE,
# PGPASSWORD) as a superuser. Used by scripts/lib.sh, by the compose
# PostgreSQL (docker/postgres/entrypoint.sh, installed there as
# bangfu-db-bootstrap) and by operators (docs/operations.md).
# BANGFU_DB_SERVICES overrides the list of services.
set -eu
secrets=${1:-}
services=${BANGFU_DB_SERVICES:-registry funds tasks notify gateway}
PSQL=${PSQL:-psql}

for svc in $services; do
    case "$svc" in *[!a-z_]* | "") echo "db-bootstrap: bad service name $svc" >&2; exit 2 ;; esac
    role="bangfu_$svc"
    setpw="\\set pw ''"
    if [ -n "$secrets" ]; then
        f="$secrets/pg-$svc.password"
        [ -s "$f" ] || { echo "db-bootstrap: missing $f" >&2; exit 1; }
        case "$f" in *"'"* | *'`'*) echo "db-bootstrap: bad path $f" >&2; exit 2 ;; esac
        # psql reads the file itself (never on a command line, so never in ps)
        setpw="\\set pw \`head -n 1 '$f' | tr -d '\\r\\n'\`"
    fi
    # The password is a psql variable (:'pw' quotes it as a literal); the
    # names are fixed identifiers checked above.
    "$PSQL" -X -q -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
$setpw
SELECT format('CREATE ROLE %I', '$role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE "$role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
SELECT CASE WHEN :'pw' = '' THEN 'ALTER ROLE "$role" PASSWORD NULL'
            ELSE format('ALTER ROLE %I PASSWORD %L', '$role', :'pw') END \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), '$role') \gexec
CREATE SCHEMA IF NOT EXISTS "$svc" AUTHORIZATION "$role";
ALTER SCHEMA "$svc" OWNER TO "$role";
REVOKE ALL ON SCHEMA "$svc" FROM PUBLIC;
DO \$\$
DECLARE o record;
BEGIN
  -- tables first: their sequences, indexes and row types follow them
  FOR o IN SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = '"$svc"'::regnamespace AND c.relkind IN ('r', 'p')
              AND c.relowner <> '"$role"'::regrole LOOP
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '$svc', o.relname, '$role');
  END LOOP;
  FOR o IN SELECT c.relname, c.relkind FROM pg_class c
            WHERE c.relnamespace = '"$svc"'::regnamespace AND c.relkind IN ('S', 'v', 'm', 'f')
              AND c.relowner <> '"$role"'::regrole LOOP
    EXECUTE format('ALTER %s %I.%I OWNER TO %I',
                   CASE o.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                        WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'FOREIGN TABLE' END,
                   '$svc', o.relname, '$role');
  END LOOP;
  FOR o IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
            WHERE p.pronamespace = '"$svc"'::regnamespace AND p.proowner <> '"$role"'::regrole LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.sig, '$role');
  END LOOP;
  FOR o IN SELECT t.typname, t.typtype FROM pg_type t
            WHERE t.typnamespace = '"$svc"'::regnamespace AND t.typtype IN ('e', 'd', 'r')
              AND t.typowner <> '"$role"'::regrole LOOP
    EXECUTE format('ALTER %s %I.%I OWNER TO %I', CASE WHEN o.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                   '$svc', o.typname, '$role');
  END LOOP;
END
\$\$;
SQL
done
# Nobody but the owner (pg_database_owner) creates in public (PostgreSQL 15's
# default; older servers granted it to everyone).
"$PSQL" -X -q -v ON_ERROR_STOP=1 -c 'REVOKE CREATE ON SCHEMA public FROM PUBLIC'
