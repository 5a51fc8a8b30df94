# PostgreSQL 15 for bangfu, from Debian's own packages (no outside image but
# debian:bookworm-slim), so what CI tests is what operators run.
#
#   docker build -f docker/postgres.Dockerfile -t bangfu-postgres:15 .
#
# On first start (empty /var/lib/postgresql/data) docker/postgres/entrypoint.sh
# runs initdb as the postgres user with the superuser $POSTGRES_USER (bangfu)
# and the password from $POSTGRES_PASSWORD (or the file $POSTGRES_PASSWORD_FILE),
# creates the database $POSTGRES_DB (bangfu) and accepts password (SCRAM)
# connections from any address. The password is never baked into the image.
# On every start it makes one login role per service (bangfu-db-bootstrap, from
# scripts/db-bootstrap.sh) with the passwords mounted at /run/bangfu/secrets.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# No "main" cluster from the package: the entrypoint makes the one we use.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/bangfu.conf \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 0700 /var/lib/postgresql/data \
 && chmod 2775 /var/run/postgresql
COPY docker/postgres/entrypoint.sh /usr/local/bin/postgres-entrypoint
COPY docker/postgres/healthcheck.sh /usr/local/bin/postgres-healthcheck
COPY scripts/db-bootstrap.sh /usr/local/bin/bangfu-db-bootstrap
RUN chmod 0755 /usr/local/bin/postgres-entrypoint /usr/local/bin/postgres-healthcheck \
    /usr/local/bin/bangfu-db-bootstrap
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=bangfu \
    POSTGRES_DB=bangfu \
    POSTGRES_PORT=5432 \
    POSTGRES_LISTEN=*
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# SIGINT = "fast" shutdown: clients (the services) are disconnected and the
# server stops at once, cleanly. SIGTERM ("smart") would wait for them.
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=5 CMD ["postgres-healthcheck"]
ENTRYPOINT ["postgres-entrypoint"]
CMD []
