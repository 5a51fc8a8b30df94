/* bench_load: the load generator and measuring tools behind `make bench`.
 *
 * Subcommands (bench/run.sh drives them; each prints one line of key=value):
 *   rpc EP METHOD CLIENTS SECONDS TEMPLATE [LO HI]
 *       CLIENTS threads, each with its own bf_client (one request in flight
 *       per connection), call METHOD for SECONDS (the first second is warm-up
 *       and not counted). TEMPLATE is JSON params with placeholders:
 *       @N@ a number unique in this process (base BENCH_SEQ_BASE), @R@ a
 *       random integer in [LO, HI], @ID@ a valid resident ID number made from
 *       @N@ and the prefix BENCH_ID_PREFIX (6 digits). Prints rps, p50, p99.
 *   once EP METHOD FILE [TIMEOUT_MS]
 *       one call with JSON params read from FILE (@N@ is replaced by a
 *       number unique to this call); prints the seconds the call took.
 *   csv HOUSEHOLDS VILLAGE_LO VILLAGE_HI PREFIX SERIAL0 ID0 IMPORT.csv HH.copy PERSON.copy
 *       an import file of HOUSEHOLDS households of 3 persons, and the same
 *       rows as COPY text for the household and person tables (ids from ID0,
 *       ID numbers with PREFIX from SERIAL0, distinct from the CSV's).
 *   relay DSN SCHEMA BUS_PUB EVENTS SAMPLES
 *       EVENTS events committed in one transaction into SCHEMA's outbox:
 *       events/s from the commit to the last one reaching a bus subscriber;
 *       then SAMPLES single events: commit -> subscriber p50/p99.
 *   xadd REDIS_URL EVENTS PIPELINE
 *       the relay's XADD (same fields and payload size) pipelined PIPELINE
 *       deep with hiredis: events/s.
 * Clients are CURVE clients as $BANGFU_PRINCIPAL (default admin) with the keys
 * in $BANGFU_KEYS_DIR, like the CLI (docs/security.md); EP is given with the
 * server's name, "registry=tcp://127.0.0.1:7101".
 */
#include "bf_client.h"
#include "bf_db.h"
#include "bf_json.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_outbox.h"
#include "bf_redis.h"
#include "bf_rpc.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_pct(double *v, size_t n, double p)
{
    if (!n) return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* A valid 18-character ID number from a 6-digit prefix and a serial: the
 * birth date walks from 1940-01-01 by serial / 500 days, the sequence number
 * is serial % 500 * 2 (even: no gender is given, so parity does not matter). */
static void s_id_number(const char *prefix, long long serial, char out[19])
{
    long long days = serial / 500;
    int y = 1940, m = 1, d = 1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    while (days > 0) {
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        int ml = mdays[m - 1] + (m == 2 && leap);
        if (days >= ml - d + 1) {
            days -= ml - d + 1;
            d = 1;
            if (++m > 12) {
                m = 1;
                y++;
            }
        } else {
            d += (int)days;
            days = 0;
        }
    }
    char first[24];
    snprintf(first, sizeof first, "%.6s%04d%02d%02d%03lld", prefix, y, m, d, serial % 500 * 2);
    memcpy(out, first, 17);
    out[17] = bf_id_check_digit(first);
    out[18] = '\0';
}

/* ------------------------------------------------------------------ rpc */

typedef struct {
    const char *server, *ep, *method, *tmpl, *prefix;
    long long lo, hi;
    double t_count, t_end;
    double *lat;
    size_t nlat, cap;
    long long ok, err;
    char first_err[600];
    unsigned seed;
} worker_t;

static atomic_llong s_seq;

/* The actor of writes: the principal we are (a principal may act only as
 * itself unless it may act for others). */
static const char *s_actor(void)
{
    const char *id = bf_keys_identity();
    return id && *id ? id : "admin";
}

/* Splits "name=endpoint" into its parts (name in buf). */
static const char *s_split_ep(const char *arg, char *name, size_t n)
{
    const char *eq = strchr(arg, '=');
    if (!eq || (size_t)(eq - arg) >= n) {
        snprintf(name, n, "%s", "registry");
        return arg;
    }
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = '\0';
    return eq + 1;
}

/* Expands the placeholders of tmpl into a malloc'd string. */
static char *s_expand(const char *tmpl, long long n, long long rnd, const char *prefix)
{
    size_t cap = strlen(tmpl) * 2 + 64, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    for (const char *p = tmpl; *p;) {
        char piece[32];
        const char *add = NULL;
        size_t skip = 1;
        if (!strncmp(p, "@N@", 3)) {
            snprintf(piece, sizeof piece, "%lld", n);
            add = piece;
            skip = 3;
        } else if (!strncmp(p, "@R@", 3)) {
            snprintf(piece, sizeof piece, "%lld", rnd);
            add = piece;
            skip = 3;
        } else if (!strncmp(p, "@ID@", 4)) {
            s_id_number(prefix, n, piece);
            add = piece;
            skip = 4;
        }
        size_t alen = add ? strlen(add) : 1;
        if (len + alen + 1 > cap) {
            cap = (len + alen + 1) * 2;
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        if (add)
            memcpy(out + len, add, alen);
        else
            out[len] = *p;
        len += alen;
        p += skip;
    }
    out[len] = '\0';
    return out;
}

static void *s_rpc_worker(void *arg)
{
    worker_t *w = arg;
    bf_client_t *c = bf_client_open(w->server, w->ep, 30000);
    if (!c) {
        w->err++;
        snprintf(w->first_err, sizeof w->first_err, "bf_client_open failed");
        return NULL;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (;;) {
        double t0 = s_now();
        if (t0 >= w->t_end) break;
        long long n = atomic_fetch_add(&s_seq, 1);
        long long rnd = w->lo + (long long)(rand_r(&w->seed) % (unsigned)(w->hi - w->lo + 1));
        char *json = s_expand(w->tmpl, n, rnd, w->prefix);
        char jerr[200];
        msgpack_sbuffer_clear(&sb);
        if (!json || bf_json_to_msgpack(json, strlen(json), &sb, jerr, sizeof jerr) != 0) {
            snprintf(w->first_err, sizeof w->first_err, "bad template: %s", json ? jerr : "oom");
            free(json);
            w->err++;
            break;
        }
        free(json);
        t0 = s_now();
        bf_reply_t reply;
        int rc = bf_client_call(c, w->method, sb.data, sb.size, s_actor(), &reply);
        double t1 = s_now();
        if (rc == 0 && reply.ok) {
            if (t0 >= w->t_count) {
                w->ok++;
                if (w->nlat == w->cap) {
                    size_t ncap = w->cap ? w->cap * 2 : 4096;
                    double *grown = realloc(w->lat, ncap * sizeof *grown);
                    if (!grown) {
                        bf_reply_destroy(&reply);
                        break;
                    }
                    w->lat = grown;
                    w->cap = ncap;
                }
                w->lat[w->nlat++] = (t1 - t0) * 1e3;
            }
        } else {
            w->err++;
            if (!w->first_err[0])
                snprintf(w->first_err, sizeof w->first_err, "%s (%s): %s", reply.code,
                         reply.field, reply.message);
        }
        bf_reply_destroy(&reply);
    }
    msgpack_sbuffer_destroy(&sb);
    bf_client_destroy(&c);
    return NULL;
}

static int s_cmd_rpc(int argc, char **argv)
{
    if (argc < 7) return 2;
    int clients = atoi(argv[4]);
    double secs = atof(argv[5]);
    if (clients < 1 || clients > 256 || secs <= 1) {
        fprintf(stderr, "rpc: CLIENTS 1..256, SECONDS > 1\n");
        return 2;
    }
    const char *base = getenv("BENCH_SEQ_BASE");
    atomic_store(&s_seq, base ? atoll(base) : 1);
    const char *prefix = getenv("BENCH_ID_PREFIX");
    char server[64];
    const char *ep = s_split_ep(argv[2], server, sizeof server);
    worker_t *w = calloc((size_t)clients, sizeof *w);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    if (!w || !th) return 1;
    double start = s_now();
    for (int i = 0; i < clients; i++) {
        w[i] = (worker_t){.server = server, .ep = ep, .method = argv[3], .tmpl = argv[6],
                          .prefix = prefix ? prefix : "110105",
                          .lo = argc > 7 ? atoll(argv[7]) : 1, .hi = argc > 8 ? atoll(argv[8]) : 1,
                          .t_count = start + 1.0, .t_end = start + secs,
                          .seed = (unsigned)(i * 7919 + 17)};
        if (w[i].hi < w[i].lo) w[i].hi = w[i].lo;
        pthread_create(&th[i], NULL, s_rpc_worker, &w[i]);
    }
    size_t total = 0;
    long long ok = 0, err = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        total += w[i].nlat;
        ok += w[i].ok;
        err += w[i].err;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) return 1;
    size_t k = 0;
    const char *first_err = NULL;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, w[i].lat, w[i].nlat * sizeof *all);
        k += w[i].nlat;
        free(w[i].lat);
        if (!first_err && w[i].first_err[0]) first_err = w[i].first_err;
    }
    qsort(all, total, sizeof *all, s_cmp_double);
    printf("rps=%.0f p50_ms=%.2f p99_ms=%.2f ok=%lld err=%lld\n", (double)ok / (secs - 1.0),
           s_pct(all, total, 0.50), s_pct(all, total, 0.99), ok, err);
    if (first_err) fprintf(stderr, "bench_load rpc %s: first error: %s\n", argv[3], first_err);
    free(all);
    free(w);
    free(th);
    return err ? 1 : 0;
}

/* ------------------------------------------------------------------ once */

static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n < cap - 1) break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int s_cmd_once(int argc, char **argv)
{
    if (argc < 5) return 2;
    size_t len;
    char *tmpl = s_read_file(argv[4], &len);
    if (!tmpl) {
        fprintf(stderr, "once: cannot read %s\n", argv[4]);
        return 2;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long n = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    char *json = s_expand(tmpl, n, 0, "110105");
    free(tmpl);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char jerr[200];
    if (!json || bf_json_to_msgpack(json, strlen(json), &sb, jerr, sizeof jerr) != 0) {
        fprintf(stderr, "once: bad JSON: %s\n", json ? jerr : "oom");
        free(json);
        msgpack_sbuffer_destroy(&sb);
        return 2;
    }
    free(json);
    char server[64];
    const char *ep = s_split_ep(argv[2], server, sizeof server);
    bf_client_t *c = bf_client_open(server, ep, argc > 5 ? atoi(argv[5]) : 600000);
    if (!c) {
        msgpack_sbuffer_destroy(&sb);
        return 1;
    }
    bf_reply_t reply;
    double t0 = s_now();
    int rc = bf_client_call(c, argv[3], sb.data, sb.size, s_actor(), &reply);
    double t1 = s_now();
    int ok = rc == 0 && reply.ok;
    if (ok)
        printf("secs=%.3f\n", t1 - t0);
    else
        fprintf(stderr, "bench_load once %s: %s (%s): %s\n", argv[3], reply.code, reply.field,
                reply.message);
    bf_reply_destroy(&reply);
    bf_client_destroy(&c);
    msgpack_sbuffer_destroy(&sb);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ csv */

static const char *const s_cats[] = {"dibao", "low_income", "registered_poor", "disabled"};
static const char *const s_causes[] = {"illness", "disability", "lack_of_labour", "education"};
static const char *const s_routes[] = {"employment", "industry", "safety_net"};
static const char *const s_rel[] = {"head", "spouse", "child"};

static int s_cmd_csv(int argc, char **argv)
{
    if (argc < 11) return 2;
    long long nh = atoll(argv[2]), vlo = atoll(argv[3]), vhi = atoll(argv[4]);
    const char *prefix = argv[5];
    long long serial = atoll(argv[6]), id0 = atoll(argv[7]);
    if (nh < 1 || vlo < 1 || vhi < vlo || strlen(prefix) != 6) return 2;
    FILE *csv = fopen(argv[8], "w"), *hh = fopen(argv[9], "w"), *pe = fopen(argv[10], "w");
    int rc = 0;
    if (!csv || !hh || !pe) {
        fprintf(stderr, "csv: cannot write the output files\n");
        rc = 2;
        goto done;
    }
    fprintf(csv, "household_ref,village_id,categories,cause_main,route,income_fen,name,"
                 "id_number,relation\n");
    /* the CSV and the COPY files hold the same rows, with distinct ID numbers
     * (the COPY rows use serials after the CSV's) and explicit ids */
    long long cserial = serial + nh * 3;
    for (long long h = 0; h < nh; h++) {
        long long vid = vlo + h % (vhi - vlo + 1);
        const char *cat = s_cats[h % 4], *cause = s_causes[h % 4], *route = s_routes[h % 3];
        long long income = 300000 + h % 1000 * 100;
        long long hid = id0 + h;
        fprintf(hh, "%lld\t%lld\t{%s}\t%s\t%s\t%lld\tbench\n", hid, vid, cat, cause, route, income);
        for (int p = 0; p < 3; p++) {
            char idn[19], cidn[19];
            s_id_number(prefix, serial++, idn);
            s_id_number(prefix, cserial++, cidn);
            fprintf(csv, "H%lld,%lld,%s,%s,%s,%lld,张%lld,%s,%s\n", h, vid, cat, cause, route,
                    income, h, idn, s_rel[p]);
            fprintf(pe, "%lld\t%lld\t张%lld\t%s\t%s\n", id0 * 3 + h * 3 + p, hid, h, cidn,
                    s_rel[p]);
        }
    }
done:
    if (csv && fclose(csv) != 0) rc = 1;
    if (hh && fclose(hh) != 0) rc = 1;
    if (pe && fclose(pe) != 0) rc = 1;
    return rc;
}

/* ------------------------------------------------------------------ relay */

/* Receives one bus message (type, event); returns 0, or -1 on timeout. */
static int s_bus_recv(void *sub)
{
    char buf[8192];
    if (zmq_recv(sub, buf, sizeof buf, 0) < 0) return -1;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &ml);
    while (more) {
        zmq_recv(sub, buf, sizeof buf, 0);
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &ml);
    }
    return 0;
}

static int s_commit_events(bf_db_t *db, bf_outbox_batch_t *b, int n, const char *pad)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        bf_mp_kv_int(&pk, "n", i);
        bf_mp_kv_str(&pk, "pad", pad);
        char subj[32];
        snprintf(subj, sizeof subj, "bench/%d", i);
        rc = bf_outbox_batch_add(b, "bangfu.bench.ping", subj, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0 || bf_db_begin(db) != 0 || bf_outbox_batch_insert(b, db) != 0 ||
        bf_db_commit(db) != 0) {
        fprintf(stderr, "relay: writing events: %s\n", bf_db_errmsg(db));
        bf_db_rollback(db);
        return -1;
    }
    return 0;
}

static int s_cmd_relay(int argc, char **argv)
{
    if (argc < 7) return 2;
    int events = atoi(argv[5]), samples = atoi(argv[6]);
    if (events < 1 || samples < 1) return 2;
    bf_db_t *db = bf_db_new(argv[2], argv[3]);
    if (!db || bf_db_connect(db, 5) != 0) {
        fprintf(stderr, "relay: cannot connect to PostgreSQL\n");
        bf_db_destroy(&db);
        return 1;
    }
    bf_outbox_batch_t *b = bf_outbox_batch_new(argv[3], "bench");
    void *sub = zmq_socket(bf_zmq_ctx(), ZMQ_SUB);
    int tmo = 10000, hwm = 0;
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "bangfu.bench.", 13);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    char kerr[512];
    if (bf_curve_client(sub, "bus", kerr, sizeof kerr) != 0) {
        fprintf(stderr, "relay: %s\n", kerr);
        zmq_close(sub);
        bf_outbox_batch_destroy(&b);
        bf_db_destroy(&db);
        return 1;
    }
    zmq_connect(sub, argv[4]);
    /* a probe until the subscription has reached the relay's publisher */
    int rc = 1;
    static const char pad[] = "a typical event is a few hundred bytes: household.created carries "
                              "its id, village, categories, causes, route, income and members";
    double *lat = calloc((size_t)samples, sizeof *lat);
    if (!b || !lat) goto done;
    int tries = 0;
    for (;; tries++) {
        if (tries == 20 || s_commit_events(db, b, 1, pad) != 0) {
            fprintf(stderr, "relay: no event reached the bus subscriber\n");
            goto done;
        }
        int t = 500;
        zmq_setsockopt(sub, ZMQ_RCVTIMEO, &t, sizeof t);
        if (s_bus_recv(sub) == 0) break;
    }
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    while (1) { /* drain late probes */
        int t = 300;
        zmq_setsockopt(sub, ZMQ_RCVTIMEO, &t, sizeof t);
        if (s_bus_recv(sub) != 0) break;
    }
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    if (s_commit_events(db, b, events, pad) != 0) goto done;
    double t0 = s_now();
    for (int i = 0; i < events; i++)
        if (s_bus_recv(sub) != 0) {
            fprintf(stderr, "relay: only %d of %d events arrived\n", i, events);
            goto done;
        }
    double eps = events / (s_now() - t0);
    for (int i = 0; i < samples; i++) {
        if (bf_db_begin(db) != 0) goto done;
        char subj[32];
        snprintf(subj, sizeof subj, "bench/%d", i);
        if (bf_outbox_batch_add(b, "bangfu.bench.ping", subj, NULL, 0) != 0 ||
            bf_outbox_batch_insert(b, db) != 0) {
            bf_db_rollback(db);
            goto done;
        }
        if (bf_db_commit(db) != 0) goto done;
        double tc = s_now(); /* the commit is durable when COMMIT returns */
        if (s_bus_recv(sub) != 0) {
            fprintf(stderr, "relay: event %d did not arrive\n", i);
            goto done;
        }
        lat[i] = (s_now() - tc) * 1e3;
    }
    qsort(lat, (size_t)samples, sizeof *lat, s_cmp_double);
    printf("events_per_s=%.0f p50_ms=%.2f p99_ms=%.2f\n", eps, s_pct(lat, (size_t)samples, 0.5),
           s_pct(lat, (size_t)samples, 0.99));
    rc = 0;
done:
    free(lat);
    zmq_close(sub);
    bf_outbox_batch_destroy(&b);
    bf_db_destroy(&db);
    return rc;
}

/* ------------------------------------------------------------------ xadd */

static int s_cmd_xadd(int argc, char **argv)
{
    if (argc < 5) return 2;
    int events = atoi(argv[3]), depth = atoi(argv[4]);
    if (events < 1 || depth < 1) return 2;
    char err[256];
    bf_redis_t *r = bf_redis_new(argv[2], err, sizeof err);
    if (!r || bf_redis_ensure(r) != 0) {
        fprintf(stderr, "xadd: %s\n", r ? bf_redis_errmsg(r) : err);
        bf_redis_destroy(&r);
        return 1;
    }
    char payload[320];
    memset(payload, 'x', sizeof payload);
    int rc = 0;
    double t0 = s_now();
    for (int done = 0; done < events && rc == 0;) {
        int batch = events - done < depth ? events - done : depth;
        for (int i = 0; i < batch; i++) {
            char id[37];
            bf_uuid_v7(id);
            const char *av[] = {"XADD", "bench:xadd", "MAXLEN", "~", "10000000", "*", "id", id,
                                "type", "bangfu.bench.ping", "event", payload};
            size_t lens[12];
            for (int k = 0; k < 12; k++) lens[k] = strlen(av[k]);
            lens[11] = sizeof payload;
            if (bf_redis_append(r, 12, av, lens) != 0) rc = 1;
        }
        for (int i = 0; i < batch; i++) {
            redisReply *rep = bf_redis_read(r);
            if (!rep || rep->type == REDIS_REPLY_ERROR) rc = 1;
            if (rep) freeReplyObject(rep);
        }
        done += batch;
    }
    double secs = s_now() - t0;
    redisReply *del = bf_redis_cmdf(r, "DEL bench:xadd");
    if (del) freeReplyObject(del);
    if (rc == 0) printf("events_per_s=%.0f\n", events / secs);
    else fprintf(stderr, "xadd: %s\n", bf_redis_errmsg(r));
    bf_redis_destroy(&r);
    return rc;
}

int main(int argc, char **argv)
{
    bf_log_init("bench", BF_ERROR);
    char serr[512];
    if (bf_security_init_env("admin", serr, sizeof serr) != 0) {
        fprintf(stderr, "bench_load: security: %s (see docs/security.md)\n", serr);
        return 2;
    }
    int rc = 2;
    if (argc >= 2) {
        if (!strcmp(argv[1], "rpc")) rc = s_cmd_rpc(argc, argv);
        else if (!strcmp(argv[1], "once")) rc = s_cmd_once(argc, argv);
        else if (!strcmp(argv[1], "csv")) rc = s_cmd_csv(argc, argv);
        else if (!strcmp(argv[1], "relay")) rc = s_cmd_relay(argc, argv);
        else if (!strcmp(argv[1], "xadd")) rc = s_cmd_xadd(argc, argv);
    }
    if (rc == 2) fprintf(stderr, "usage: see the header of bench/bench_load.c\n");
    bf_zmq_ctx_term();
    return rc;
}
