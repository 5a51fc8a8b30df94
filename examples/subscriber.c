/* subscriber.c: an example system subscribing to bangfu's events.
 *
 *   subscriber [--from STREAM_ID] [TYPE_PREFIX]
 *
 * Live: a ZeroMQ SUB socket on the bus ($BANGFU_BUS_PUB), filtered by the
 * type prefix (the topic frame is the event type). Catch-up (--from): the
 * recipe of docs/events-catchup.md: subscribe to the bus FIRST, then read the
 * Redis Stream bangfu:events ($BANGFU_REDIS_URL, redis://user:password@host:
 * port/db: a read-only user such as bangfu_cli) after STREAM_ID to its end,
 * then switch to the bus, dropping any live event whose id was already seen.
 * Prints "<type> <event id>" per event, one line each.
 *
 * The bus admits only known CURVE keys (docs/security.md): the SUB socket uses
 * $BANGFU_KEYS_DIR/bus.pub and the key pair of $BANGFU_PRINCIPAL (default
 * admin; any principal with role subscriber, service or admin), unless
 * BANGFU_SECURITY_MODE=plaintext.
 *
 * Self-contained on purpose (no libbangfu): build with
 *   cc -std=c11 -o subscriber examples/subscriber.c \
 *      $(pkg-config --cflags --libs libzmq msgpack hiredis)
 */
#define _POSIX_C_SOURCE 200809L
#include <hiredis.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define SEEN_MAX 65536 /* ids remembered from the catch-up, for dedupe */

/* Reads "<field> = <40 Z85 characters>" from DIR/NAME.EXT into out[41]. */
static int s_key_field(const char *dir, const char *name, const char *ext, const char *field,
                       char out[41])
{
    char path[4096], line[256];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int found = 0;
    size_t flen = strlen(field);
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, field, flen) != 0) continue;
        p += flen;
        while (*p == ' ' || *p == '\t') p++;
        if (*p++ != '=') continue;
        /* one '=' only: '=' is also a Z85 digit, a key may start with it */
        while (*p == ' ' || *p == '\t') p++;
        if (strcspn(p, " \t\r\n") == 40) {
            memcpy(out, p, 40);
            out[40] = 0;
            found = 1;
        }
    }
    fclose(f);
    return found ? 0 : -1;
}

/* Makes sub a CURVE client of the bus (nothing in plaintext mode). */
static int s_curve(void *sub)
{
    const char *mode = getenv("BANGFU_SECURITY_MODE");
    if (mode && !strcmp(mode, "plaintext")) return 0;
    const char *dir = getenv("BANGFU_KEYS_DIR");
    const char *me = getenv("BANGFU_PRINCIPAL");
    if (!me || !*me) me = "admin";
    char server[41], pub[41], sec[41];
    if (!dir || s_key_field(dir, "bus", "pub", "public", server) != 0 ||
        s_key_field(dir, me, "key", "public", pub) != 0 ||
        s_key_field(dir, me, "key", "secret", sec) != 0) {
        fprintf(stderr, "subscriber: no keys for %s in $BANGFU_KEYS_DIR (%s)\n", me,
                dir ? dir : "unset");
        return -1;
    }
    int rc = zmq_setsockopt(sub, ZMQ_CURVE_SERVERKEY, server, 40) ||
             zmq_setsockopt(sub, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
             zmq_setsockopt(sub, ZMQ_CURVE_SECRETKEY, sec, 40);
    memset(sec, 0, sizeof sec);
    return rc ? -1 : 0;
}

static volatile sig_atomic_t s_stop;
static void s_on_signal(int sig) { (void)sig; s_stop = 1; }

static char *s_seen[SEEN_MAX];
static size_t s_nseen;

static int s_was_seen(const char *id)
{
    for (size_t i = 0; i < s_nseen; i++)
        if (!strcmp(s_seen[i], id)) return 1;
    return 0;
}

static void s_remember(const char *id)
{
    if (s_nseen == SEEN_MAX) {
        free(s_seen[0]);
        memmove(s_seen, s_seen + 1, (SEEN_MAX - 1) * sizeof *s_seen);
        s_nseen--;
    }
    s_seen[s_nseen] = strdup(id);
    if (s_seen[s_nseen]) s_nseen++;
}

/* Copies a str value of a msgpack map, looked up by key, bounded. */
static int s_get_str(const msgpack_object *map, const char *key, char *out, size_t n)
{
    if (map->type != MSGPACK_OBJECT_MAP) return -1;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            !memcmp(k->via.str.ptr, key, k->via.str.size)) {
            if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= n) return -1;
            memcpy(out, v->via.str.ptr, v->via.str.size);
            out[v->via.str.size] = '\0';
            return 0;
        }
    }
    return -1;
}

/* Decodes one event; prints it unless seen (catch-up ids) or not matching. */
static void s_event(const char *data, size_t len, const char *prefix, int remember)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    char id[80], type[256];
    if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        s_get_str(&u.data, "id", id, sizeof id) == 0 &&
        s_get_str(&u.data, "type", type, sizeof type) == 0 &&
        strncmp(type, prefix, strlen(prefix)) == 0) {
        if (remember) {
            s_remember(id);
            printf("%s %s\n", type, id);
        } else if (!s_was_seen(id)) {
            printf("%s %s\n", type, id);
        }
        fflush(stdout);
    }
    msgpack_unpacked_destroy(&u);
}

static redisContext *s_redis(void)
{
    const char *url = getenv("BANGFU_REDIS_URL");
    char host[256] = "127.0.0.1", user[128] = "", pass[256] = "";
    int port = 6379, db = 0;
    if (url && !strncmp(url, "redis://", 8)) {
        const char *p = url + 8;
        /* user:password@ (Redis ACL; docs/security.md: bangfu_cli may read the stream) */
        const char *at = strrchr(p, '@'), *pc = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
        if (at && pc && (size_t)(pc - p) < sizeof user && (size_t)(at - pc - 1) < sizeof pass) {
            memcpy(user, p, (size_t)(pc - p));
            user[pc - p] = '\0';
            memcpy(pass, pc + 1, (size_t)(at - pc - 1));
            pass[at - pc - 1] = '\0';
            p = at + 1;
        }
        const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
        size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
        if (hl > 0 && hl < sizeof host) {
            memcpy(host, p, hl);
            host[hl] = '\0';
        }
        if (colon) port = atoi(colon + 1);
        if (slash) db = atoi(slash + 1);
    }
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "subscriber: redis %s:%d: %s\n", host, port, c ? c->errstr : "no memory");
        if (c) redisFree(c);
        return NULL;
    }
    if (pass[0]) {
        redisReply *r = user[0] ? redisCommand(c, "AUTH %s %s", user, pass)
                                : redisCommand(c, "AUTH %s", pass);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (!ok) fprintf(stderr, "subscriber: redis AUTH as %s refused\n", user[0] ? user : "default");
        if (r) freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        if (r) freeReplyObject(r);
    }
    return c;
}

/* Reads the event stream ($BANGFU_RELAY_STREAM, default bangfu:events) after
 * `from` to its current end, page by page. */
static int s_catch_up(const char *from, const char *prefix)
{
    redisContext *c = s_redis();
    if (!c) return -1;
    char start[80];
    snprintf(start, sizeof start, "(%s", from);
    const char *stream = getenv("BANGFU_RELAY_STREAM");
    if (!stream || !*stream) stream = "bangfu:events";
    int rc = 0;
    for (;;) {
        redisReply *r = redisCommand(c, "XRANGE %s %s + COUNT 1000", stream, start);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "subscriber: XRANGE failed\n");
            if (r) freeReplyObject(r);
            rc = -1;
            break;
        }
        size_t n = r->elements;
        for (size_t i = 0; i < n; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            redisReply *f = e->element[1];
            for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2)
                if (f->element[k]->type == REDIS_REPLY_STRING &&
                    !strcmp(f->element[k]->str, "event") &&
                    f->element[k + 1]->type == REDIS_REPLY_STRING)
                    s_event(f->element[k + 1]->str, f->element[k + 1]->len, prefix, 1);
            if (i + 1 == n && e->element[0]->len < sizeof start - 2)
                snprintf(start, sizeof start, "(%s", e->element[0]->str);
        }
        freeReplyObject(r);
        if (n < 1000) break;
    }
    redisFree(c);
    return rc;
}

int main(int argc, char **argv)
{
    const char *from = NULL, *prefix = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--from") && i + 1 < argc) from = argv[++i];
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: subscriber [--from STREAM_ID] [TYPE_PREFIX]\n");
            return 0;
        } else prefix = argv[i];
    }
    const char *bus = getenv("BANGFU_BUS_PUB");
    if (!bus || !*bus) bus = "tcp://127.0.0.1:7099";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    if (s_curve(sub) != 0) return 1; /* 0. our key and the bus's */
    /* 1. subscribe first, so nothing published during the catch-up is missed */
    if (zmq_connect(sub, bus) != 0 || zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix))) {
        fprintf(stderr, "subscriber: cannot subscribe on %s\n", bus);
        return 1;
    }
    /* 2. the stream from the last id this system processed */
    if (from && s_catch_up(from, prefix) != 0) return 1;
    /* 3. live, skipping what the catch-up already printed */
    while (!s_stop) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&topic, sub, 0) >= 0 && zmq_msg_more(&topic) &&
            zmq_msg_recv(&body, sub, 0) >= 0)
            s_event(zmq_msg_data(&body), zmq_msg_size(&body), prefix, 0);
        /* drop any extra frames */
        while (zmq_msg_more(&body)) {
            zmq_msg_close(&body);
            zmq_msg_init(&body);
            if (zmq_msg_recv(&body, sub, 0) < 0) break;
        }
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
    }
    zmq_close(sub);
    zmq_ctx_term(ctx);
    for (size_t i = 0; i < s_nseen; i++) free(s_seen[i]);
    return 0;
}
