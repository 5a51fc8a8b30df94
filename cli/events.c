/* events.c: `bangfu events tail [type-prefix] [--from STREAM_ID] [--json]`.
 *
 * Live: a SUB socket on the bus (BANGFU_BUS_PUB) subscribed to the prefix.
 * With --from, first the Redis Stream (BANGFU_REDIS_URL, key
 * BANGFU_RELAY_STREAM or bangfu:events) from that id, then live, with no gap
 * and no event twice (docs/events.md, "Catching up, then going live"):
 *   1. subscribe before reading the stream, so what is published meanwhile
 *      waits in the socket (receive queue raised to S_RCVHWM messages);
 *   2. read the stream in pages of S_PAGE, printing what matches the prefix;
 *   3. go live, dropping events whose id was already printed (a bounded set
 *      of the last 2 x S_SEEN_GEN ids).
 * A subscription takes a moment to travel through the bus to each service's
 * publisher (ZeroMQ's "slow joiner"); an event published before it arrived
 * is in the stream but never reaches the socket. So the stream is read once
 * more, from where the catch-up ended, when the first live event of each
 * source arrives, and every S_SETTLE_POLL during the first S_SETTLE seconds:
 * whatever the bus missed in that window is printed from the stream.
 *
 * Before anything is read, the SUB socket's own handshake with the bus must
 * succeed within the connect timeout (cli_connect, probe.h): a SUB connect
 * never fails by itself, so without it a dead bus meant waiting in silence.
 *
 * Ctrl-C (or SIGTERM) sets a flag; the loop polls with a short timeout and
 * exits 0. Exit 2 for usage, 3 if the bus does not answer within the connect
 * timeout or Redis cannot be read for --from.
 */
#include "bf_json.h"
#include "bf_keys.h"
#include "bf_login.h"
#include "bf_mp.h"
#include "bf_redis.h"
#include "bf_rpc.h"
#include "cli.h"
#include "probe.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define S_PAGE 1000
#define S_SEEN_GEN 65536 /* ids per generation of the seen set */
#define S_RCVHWM 100000
#define S_SETTLE 3.0
#define S_SETTLE_POLL 0.25
#define S_MAX_SOURCES 32

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* ---- the set of printed event ids: two generations of 64-bit hashes -------- */

typedef struct {
    uint64_t *gen[2]; /* gen[0] current, gen[1] previous; open addressing */
    size_t n;         /* entries in gen[0] */
} seen_t;

#define S_SEEN_SLOTS (S_SEEN_GEN * 2)

static uint64_t s_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
    return h ? h : 1;
}

static bool s_seen_in(const uint64_t *slots, uint64_t h)
{
    if (!slots) return false;
    size_t k = (size_t)h & (S_SEEN_SLOTS - 1);
    while (slots[k]) {
        if (slots[k] == h) return true;
        k = (k + 1) & (S_SEEN_SLOTS - 1);
    }
    return false;
}

static bool s_seen_has(const seen_t *s, uint64_t h)
{
    return s_seen_in(s->gen[0], h) || s_seen_in(s->gen[1], h);
}

/* Adds h; when the current generation is full it becomes the previous one and
 * the oldest is forgotten. Returns -1 if memory runs out. */
static int s_seen_add(seen_t *s, uint64_t h)
{
    if (!s->gen[0] || s->n == S_SEEN_GEN) {
        uint64_t *fresh = calloc(S_SEEN_SLOTS, sizeof *fresh);
        if (!fresh) return -1;
        free(s->gen[1]);
        s->gen[1] = s->gen[0];
        s->gen[0] = fresh;
        s->n = 0;
    }
    size_t k = (size_t)h & (S_SEEN_SLOTS - 1);
    while (s->gen[0][k]) {
        if (s->gen[0][k] == h) return 0;
        k = (k + 1) & (S_SEEN_SLOTS - 1);
    }
    s->gen[0][k] = h;
    s->n++;
    return 0;
}

/* ---- the tail -------------------------------------------------------------- */

typedef struct {
    const char *prefix;
    size_t prefix_len;
    const char *from;
    bool json;
    const char *bus;
    const char *stream;
    void *sub;
    bf_redis_t *redis;
    char next[80];    /* where the next XRANGE starts: --from, then "(" + last id read */
    char last_id[64]; /* the last stream entry read, "" before the first */
    seen_t seen;
    char sources[S_MAX_SOURCES][96]; /* sources whose first live event came */
    int nsources;
    bool all_bridged; /* too many sources to track: bridge no more */
    double t_live, last_settle_poll;
    unsigned long printed, dropped;
} tail_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void s_str(const msgpack_object *o, char *out, size_t n)
{
    if (o && o->type == MSGPACK_OBJECT_STR && o->via.str.size > 0)
        snprintf(out, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    else
        snprintf(out, n, "-");
}

/* Prints one event (msgpack bytes) unless its id was printed before or its
 * type does not match. Returns 1 printed, 0 skipped, -1 malformed. */
static int s_event(tail_t *t, const char *body, size_t len)
{
    if (bf_mp_check(body, len, BF_MP_MAX_DEPTH) != 0) return -1;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&msg, body, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        msg.data.type != MSGPACK_OBJECT_MAP)
        goto done;
    const msgpack_object *ev = &msg.data;
    const msgpack_object *id = bf_mp_get(ev, "id"), *type = bf_mp_get(ev, "type");
    if (!id || id->type != MSGPACK_OBJECT_STR || !type || type->type != MSGPACK_OBJECT_STR)
        goto done;
    rc = 0;
    if (type->via.str.size < t->prefix_len ||
        memcmp(type->via.str.ptr, t->prefix, t->prefix_len) != 0)
        goto done;
    uint64_t h = s_hash(id->via.str.ptr, id->via.str.size);
    if (s_seen_has(&t->seen, h)) {
        t->dropped++;
        goto done;
    }
    if (s_seen_add(&t->seen, h) != 0) goto done;
    if (t->json) {
        char *json = bf_json_from_msgpack(ev, BF_JSON_COMPACT);
        if (json) printf("%s\n", json);
        free(json);
    } else {
        char tm[64], ty[256], subject[256];
        s_str(bf_mp_get(ev, "time"), tm, sizeof tm);
        s_str(type, ty, sizeof ty);
        s_str(bf_mp_get(ev, "subject"), subject, sizeof subject);
        const msgpack_object *data = bf_mp_get(ev, "data");
        char *json = data ? bf_json_from_msgpack(data, BF_JSON_COMPACT) : NULL;
        printf("%s %s %s %s\n", tm, ty, subject, json ? json : "{}");
        free(json);
    }
    fflush(stdout);
    t->printed++;
    rc = 1;
done:
    msgpack_unpacked_destroy(&msg);
    return rc;
}

/* The value of field name in a stream entry's [field, value, ...] array. */
static const redisReply *s_entry_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) && !memcmp(k->str, name, k->len))
            return fields->element[i + 1];
    }
    return NULL;
}

/* Reads the stream from t->next up to its end, printing what matches. Returns 0, or -1 if Redis failed (message
 * printed). */
static int s_stream_read(tail_t *t)
{
    for (;;) {
        char start[80];
        snprintf(start, sizeof start, "%s", t->next);
        char count[16];
        snprintf(count, sizeof count, "%d", S_PAGE);
        const char *argv[] = {"XRANGE", t->stream, start, "+", "COUNT", count};
        size_t lens[6];
        for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
        redisReply *rep = bf_redis_cmd(t->redis, 6, argv, lens);
        if (!rep) {
            fprintf(stderr, "bangfu events: redis: %s\n", bf_redis_errmsg(t->redis));
            return -1;
        }
        if (rep->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "bangfu events: XRANGE %s %s: %s\n", t->stream, start,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
            freeReplyObject(rep);
            return -1;
        }
        size_t n = rep->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            snprintf(t->last_id, sizeof t->last_id, "%.*s", (int)e->element[0]->len,
                     e->element[0]->str);
            snprintf(t->next, sizeof t->next, "(%s", t->last_id);
            const redisReply *type = s_entry_field(e->element[1], "type");
            if (type && type->type == REDIS_REPLY_STRING &&
                (type->len < t->prefix_len || memcmp(type->str, t->prefix, t->prefix_len) != 0))
                continue; /* cheap filter before decoding */
            const redisReply *body = s_entry_field(e->element[1], "event");
            if (body && body->type == REDIS_REPLY_STRING) s_event(t, body->str, body->len);
        }
        freeReplyObject(rep);
        if (n < S_PAGE || s_stop) return 0;
    }
}

/* A live message: [type, event]. */
static void s_live(tail_t *t)
{
    zmq_msg_t part[2];
    int nparts = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, t->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (nparts < 2)
            part[nparts++] = m;
        else
            zmq_msg_close(&m); /* a third frame: not ours to read */
    }
    if (nparts == 2 && !more) {
        const char *body = zmq_msg_data(&part[1]);
        size_t len = zmq_msg_size(&part[1]);
        if (t->redis && !t->all_bridged) {
            /* first event of a source: anything of it the bus missed before
             * our subscription reached it is in the stream */
            char source[96] = "";
            msgpack_unpacked msg;
            msgpack_unpacked_init(&msg);
            size_t off = 0;
            if (bf_mp_check(body, len, BF_MP_MAX_DEPTH) == 0 &&
                msgpack_unpack_next(&msg, body, len, &off) == MSGPACK_UNPACK_SUCCESS)
                s_str(bf_mp_get(&msg.data, "source"), source, sizeof source);
            msgpack_unpacked_destroy(&msg);
            bool known = false;
            for (int i = 0; i < t->nsources && !known; i++)
                known = !strcmp(t->sources[i], source);
            if (!known) {
                if (t->nsources < S_MAX_SOURCES)
                    snprintf(t->sources[t->nsources++], sizeof t->sources[0], "%s", source);
                else
                    t->all_bridged = true;
                if (s_stream_read(t) != 0)
                    fprintf(stderr, "bangfu events: could not check the stream; going on live\n");
            }
        }
        s_event(t, body, len);
    }
    for (int i = 0; i < nparts; i++) zmq_msg_close(&part[i]);
}

static void s_help(FILE *f)
{
    fprintf(f,
            "usage: bangfu events tail [TYPE_PREFIX] [--from STREAM_ID] [--json]\n"
            "\n"
            "Prints events as they happen, from the bus ($BANGFU_BUS_PUB), one per line:\n"
            "  time type subject data-as-JSON\n"
            "TYPE_PREFIX filters by type, e.g. bangfu.registry. or bangfu.registry.household.\n"
            "\n"
            "  --from ID   first replay the Redis Stream bangfu:events ($BANGFU_REDIS_URL)\n"
            "              from stream id ID (inclusive, as XRANGE: 1700000000000-0; \"(ID\"\n"
            "              starts after ID; \"-\" or 0 from the beginning; \"$\" after the\n"
            "              last entry, i.e. only new events but without the gap of a\n"
            "              fresh subscription), then go live; no event is printed twice\n"
            "  --json      print each whole event (all CloudEvents attributes) as JSON\n"
            "\n"
            "The bus must answer within the connect timeout (1.5 s; --connect-timeout MS or\n"
            "$BANGFU_CONNECT_TIMEOUT_MS), else exit 3 with a hint.\n"
            "\n"
            "Ctrl-C stops. Exit status: 0 stopped, 2 usage, 3 bus not answering or Redis\n"
            "unavailable for --from.\n");
}

static bool s_valid_stream_id(const char *s)
{
    if (!strcmp(s, "-") || !strcmp(s, "0") || !strcmp(s, "$")) return true;
    if (*s == '(') s++;
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9') i++;
    if (i == 0 || i > 20) return false;
    if (s[i] == '\0') return true;
    if (s[i] != '-') return false;
    size_t j = i + 1;
    while (s[j] >= '0' && s[j] <= '9') j++;
    return j > i + 1 && j - i - 1 <= 20 && s[j] == '\0';
}

int cli_events(int argc, char **argv)
{
    if (argc < 2 || cli_is_help(argv[1])) {
        s_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "tail") != 0) {
        fprintf(stderr, "bangfu events: unknown subcommand %s (only: tail)\n", argv[1]);
        return CLI_USAGE;
    }
    tail_t t;
    memset(&t, 0, sizeof t);
    t.prefix = "";
    for (int i = 2; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            s_help(stdout);
            return CLI_OK;
        } else if (!strcmp(argv[i], "--json")) {
            t.json = true;
        } else if (!strcmp(argv[i], "--from") && i + 1 < argc) {
            t.from = argv[++i];
            if (!s_valid_stream_id(t.from)) {
                fprintf(stderr, "bangfu events: --from wants a stream id such as "
                                "1700000000000-0, (1700000000000-0, -, 0 or $\n");
                return CLI_USAGE;
            }
            if (!strcmp(t.from, "0")) t.from = "-";
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "bangfu events: unknown option %s (try --help)\n", argv[i]);
            return CLI_USAGE;
        } else if (!t.prefix[0]) {
            t.prefix = argv[i];
        } else {
            fprintf(stderr, "bangfu events: one type prefix only (try --help)\n");
            return CLI_USAGE;
        }
    }
    t.prefix_len = strlen(t.prefix);
    const char *env = getenv("BANGFU_BUS_PUB");
    t.bus = env && *env ? env : "tcp://127.0.0.1:7099";
    env = getenv("BANGFU_RELAY_STREAM");
    t.stream = env && *env ? env : "bangfu:events";

    int exit_code = CLI_OK;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    setvbuf(stdout, NULL, _IOLBF, 0);

    t.sub = zmq_socket(bf_zmq_ctx(), ZMQ_SUB);
    int linger = 0, hwm = S_RCVHWM;
    if (!t.sub) {
        fprintf(stderr, "bangfu events: cannot make a socket: %s\n", zmq_strerror(errno));
        exit_code = CLI_UNAVAILABLE;
        goto cleanup;
    }
    zmq_setsockopt(t.sub, ZMQ_LINGER, &linger, sizeof linger);
    char kerr[512];
    if (bf_curve_client(t.sub, "bus", kerr, sizeof kerr) != 0) {
        fprintf(stderr, "bangfu events: %s\n", kerr);
        exit_code = CLI_USAGE;
        goto cleanup;
    }
    zmq_setsockopt(t.sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(t.sub, ZMQ_SUBSCRIBE, t.prefix, t.prefix_len);
    /* a SUB connect never fails by itself: wait for the bus's handshake (the
     * connect timeout), or give up with exit 3 and the hint (probe.h) */
    exit_code = cli_connect("bangfu events", t.sub, "bus", t.bus, "BANGFU_BUS_PUB");
    if (exit_code != CLI_OK) goto cleanup;

    if (t.from) {
        /* redis.url, redis.user and redis.password_file as the services read
         * them (BANGFU_* variables, $BANGFU_CONFIG), as the user bangfu_cli,
         * which may only read the event stream (docs/security.md) */
        const bf_cfg_def_t *const tables[] = {bf_cfg_common, NULL};
        char err[1200];
        bf_cfg_t *cfg = bf_cfg_load(tables, NULL, err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "bangfu events: config: %s\n", err);
            exit_code = CLI_USAGE;
            goto cleanup;
        }
        char url[512];
        snprintf(url, sizeof url, "%s", bf_cfg_str(cfg, "redis.url"));
        char *at = strrchr(url, '@'); /* never print a password */
        if (at) memmove(url + 8, at + 1, strlen(at + 1) + 1);
        t.redis = bf_login_redis(cfg, "cli", err, sizeof err);
        bf_cfg_destroy(&cfg);
        if (!t.redis) {
            fprintf(stderr, "bangfu events: %s\n", err);
            exit_code = CLI_USAGE;
            goto cleanup;
        }
        if (bf_redis_ensure(t.redis) != 0) {
            fprintf(stderr, "bangfu events: cannot reach Redis at %s: %s\n", url,
                    bf_redis_errmsg(t.redis));
            exit_code = CLI_UNAVAILABLE;
            goto cleanup;
        }
        snprintf(t.next, sizeof t.next, "%s", t.from);
        if (!strcmp(t.from, "$")) {
            /* nothing old: start after the stream's last entry, gap-free from now */
            snprintf(t.next, sizeof t.next, "-"); /* an empty stream: all that comes is new */
            redisReply *rep = bf_redis_cmdf(t.redis, "XREVRANGE %s + - COUNT 1", t.stream);
            bool ok = rep && rep->type == REDIS_REPLY_ARRAY;
            if (ok && rep->elements == 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
                rep->element[0]->elements == 2 &&
                rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
                snprintf(t.next, sizeof t.next, "(%.*s",
                         (int)rep->element[0]->element[0]->len, rep->element[0]->element[0]->str);
            if (!ok)
                fprintf(stderr, "bangfu events: XREVRANGE %s: %s\n", t.stream,
                        rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                              : bf_redis_errmsg(t.redis));
            if (rep) freeReplyObject(rep);
            if (!ok) {
                exit_code = CLI_UNAVAILABLE;
                goto cleanup;
            }
        } else if (s_stream_read(&t) != 0) {
            exit_code = CLI_UNAVAILABLE;
            goto cleanup;
        }
    }

    if (s_stop) goto cleanup; /* interrupted during the replay */
    if (t.redis)
        fprintf(stderr, "bangfu events: %lu events from %s up to %s; live from %s\n", t.printed,
                t.stream, t.last_id[0] ? t.last_id : "(none)", t.bus);
    else
        fprintf(stderr, "bangfu events: live from %s\n", t.bus);
    fflush(stderr);
    t.t_live = s_now();
    t.last_settle_poll = t.t_live;
    while (!s_stop) {
        zmq_pollitem_t it = {t.sub, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 200);
        if (rc < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "bangfu events: %s\n", zmq_strerror(errno));
            exit_code = CLI_UNAVAILABLE;
            break;
        }
        if (rc > 0 && (it.revents & ZMQ_POLLIN)) s_live(&t);
        double now = s_now();
        if (t.redis && now - t.t_live < S_SETTLE && now - t.last_settle_poll >= S_SETTLE_POLL) {
            t.last_settle_poll = now;
            s_stream_read(&t); /* errors are printed; live goes on */
        }
    }

cleanup:
    if (t.sub) zmq_close(t.sub);
    bf_redis_destroy(&t.redis);
    free(t.seen.gen[0]);
    free(t.seen.gen[1]);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    s_stop = 0;
    return exit_code;
}
