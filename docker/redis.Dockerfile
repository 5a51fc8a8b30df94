# Redis 7 for bangfu, from Debian's redis-server package (no outside image but
# debian:bookworm-slim). Append-only file on (appendonly yes, appendfsync
# everysec: at most about a second of writes lost in a crash) plus the default
# RDB snapshots, both in the /data volume; ACL users per service from the
# mounted passwords, maxmemory with noeviction. See docker/redis/entrypoint.sh.
#
#   docker build -f docker/redis.Dockerfile -t bangfu-redis:7 .
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && mkdir -p /data && chown redis:redis /data && chmod 0750 /data
COPY docker/redis/entrypoint.sh /usr/local/bin/redis-entrypoint
COPY docker/redis/healthcheck.sh /usr/local/bin/redis-healthcheck
COPY scripts/redis-acl.sh /usr/local/bin/bangfu-redis-acl
RUN chmod 0755 /usr/local/bin/redis-entrypoint /usr/local/bin/redis-healthcheck \
    /usr/local/bin/bangfu-redis-acl
ENV REDIS_PORT=6379 \
    REDIS_BIND="* -::*"
VOLUME /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 CMD ["redis-healthcheck"]
ENTRYPOINT ["redis-entrypoint"]
CMD []
