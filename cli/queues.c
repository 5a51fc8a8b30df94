/* queues.c: `bangfu queues`, what admins watch and do with notify's queues.
 *
 *   bangfu queues [--watch [SEC]] [--json]
 *   bangfu queues dead list [--channel C] [--endpoint ID] [--type PREFIX] [--limit N] [--json]
 *   bangfu queues dead show ID
 *   bangfu queues dead retry|drop (ID... | --all | --channel C --endpoint ID --type PREFIX)
 *   bangfu queues pause|resume QUEUE      (events, webhook, email, sms, inbox)
 *
 * Everything goes through the notify service's RPC (queues.stats,
 * queues.dead.*, queues.pause/resume), so the CLI shows what a web page
 * would. Writes name the actor from --actor, $BANGFU_ACTOR, or "admin".
 */
#include "cli.h"
#include "bf_json.h"
#include "bf_mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *s_usage_text =
    "usage: bangfu queues [--watch [SEC]] [--json]\n"
    "       bangfu queues dead list [--channel C] [--endpoint ID] [--type PREFIX] [--limit N] "
    "[--json]\n"
    "       bangfu queues dead show ID\n"
    "       bangfu queues dead retry|drop (ID... | --all | [--channel C] [--endpoint ID] "
    "[--type PREFIX])\n"
    "       bangfu queues pause|resume QUEUE     (events, webhook, email, sms, inbox)\n"
    "Shows every queue of the notify service (the event stream and each delivery\n"
    "stream): length, pending in the consumer group, age of the oldest message,\n"
    "consumers, delivered and failed in the last minute and hour, retries and dead\n"
    "letters; and lists, retries or drops dead letters. Options: --actor A (default\n"
    "$BANGFU_ACTOR or admin), --timeout MS. Exit status: 0 ok, 1 error reply, 2 usage,\n"
    "3 no answer.\n";

static int s_call(const char *method, msgpack_sbuffer *params, const char *actor, long timeout,
                  bf_reply_t *reply)
{
    const char *ep = cli_endpoint("notify");
    bf_client_t *c = bf_client_open("notify", ep, (int)timeout);
    if (!c) {
        fprintf(stderr, "bangfu queues: bad notify endpoint %s\n", ep);
        return -1;
    }
    static bool probed;
    if (!probed && cli_require("bangfu queues", "notify", ep, timeout) != 0) {
        bf_client_destroy(&c);
        memset(reply, 0, sizeof *reply);
        msgpack_unpacked_init(&reply->msg);
        snprintf(reply->code, sizeof reply->code, "unavailable");
        snprintf(reply->message, sizeof reply->message, "no answer at %s", ep);
        return -1;
    }
    probed = true;
    int rc = bf_client_call(c, method, params ? params->data : NULL, params ? params->size : 0,
                            actor, reply);
    bf_client_destroy(&c);
    return rc;
}

static int64_t s_int(const msgpack_object *m, const char *key)
{
    int64_t v = 0;
    const msgpack_object *o = bf_mp_get(m, key);
    if (o && bf_mp_int(o, &v)) return v;
    return -1;
}

static void s_age(int64_t ms, char *buf, size_t n)
{
    if (ms < 0) snprintf(buf, n, "-");
    else if (ms < 10000) snprintf(buf, n, "%lldms", (long long)ms);
    else if (ms < 600000) snprintf(buf, n, "%llds", (long long)(ms / 1000));
    else if (ms < 36000000) snprintf(buf, n, "%lldm", (long long)(ms / 60000));
    else snprintf(buf, n, "%lldh", (long long)(ms / 3600000));
}

static void s_num(int64_t v, char *buf, size_t n)
{
    if (v < 0) snprintf(buf, n, "-");
    else snprintf(buf, n, "%lld", (long long)v);
}

static void s_table(const msgpack_object *st)
{
    const msgpack_object *qs = bf_mp_get(st, "queues");
    printf("%-8s %8s %8s %8s %9s %7s %7s %7s %7s %6s %6s %s\n", "QUEUE", "LENGTH", "PENDING",
           "OLDEST", "CONSUMERS", "OK/1m", "FAIL/1m", "OK/1h", "FAIL/1h", "RETRY", "DEAD", "");
    for (uint32_t i = 0; qs && qs->type == MSGPACK_OBJECT_ARRAY && i < qs->via.array.size; i++) {
        const msgpack_object *q = &qs->via.array.ptr[i];
        const msgpack_object *name = bf_mp_get(q, "name");
        const msgpack_object *paused = bf_mp_get(q, "paused");
        char b[10][24];
        s_num(s_int(q, "length"), b[0], sizeof b[0]);
        s_num(s_int(q, "pending"), b[1], sizeof b[1]);
        s_age(s_int(q, "oldest_age_ms"), b[2], sizeof b[2]);
        s_num(s_int(q, "consumers"), b[3], sizeof b[3]);
        s_num(s_int(q, "delivered_1m"), b[4], sizeof b[4]);
        s_num(s_int(q, "failed_1m"), b[5], sizeof b[5]);
        s_num(s_int(q, "delivered_1h"), b[6], sizeof b[6]);
        s_num(s_int(q, "failed_1h"), b[7], sizeof b[7]);
        s_num(s_int(q, "retry"), b[8], sizeof b[8]);
        s_num(s_int(q, "dead"), b[9], sizeof b[9]);
        printf("%-8.*s %8s %8s %8s %9s %7s %7s %7s %7s %6s %6s %s\n",
               name && name->type == MSGPACK_OBJECT_STR ? (int)name->via.str.size : 1,
               name && name->type == MSGPACK_OBJECT_STR ? name->via.str.ptr : "?", b[0], b[1],
               b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
               paused && paused->type == MSGPACK_OBJECT_BOOLEAN && paused->via.boolean ? "PAUSED"
                                                                                       : "");
    }
    const msgpack_object *retry = bf_mp_get(st, "retry"), *dead = bf_mp_get(st, "dead");
    int64_t next = retry ? s_int(retry, "next_due_ms") : -1, now = s_int(st, "now_ms");
    char due[32] = "";
    if (next >= 0 && now >= 0) {
        char a[24];
        s_age(next > now ? next - now : 0, a, sizeof a);
        snprintf(due, sizeof due, ", next due in %s", a);
    }
    const msgpack_object *clock = bf_mp_get(st, "clock");
    printf("\nretry set: %lld%s    dead letters: %lld    clock: %.*s\n",
           (long long)(retry ? s_int(retry, "size") : -1), due,
           (long long)(dead ? s_int(dead, "size") : -1),
           clock && clock->type == MSGPACK_OBJECT_STR ? (int)clock->via.str.size : 1,
           clock && clock->type == MSGPACK_OBJECT_STR ? clock->via.str.ptr : "?");
}

static int s_stats(bool json, int watch, long timeout)
{
    for (;;) {
        bf_reply_t reply;
        int rc = s_call("queues.stats", NULL, NULL, timeout, &reply);
        if (rc != 0 || !reply.ok) {
            int code = cli_print_reply(&reply, false);
            bf_reply_destroy(&reply);
            if (!watch) return rc != 0 ? CLI_UNAVAILABLE : code;
        } else {
            if (watch) printf("\033[H\033[2J");
            if (json) {
                char *s = bf_json_from_msgpack(reply.result, watch ? BF_JSON_PRETTY : 0);
                printf("%s\n", s ? s : "null");
                free(s);
            } else {
                s_table(reply.result);
            }
            fflush(stdout);
            bf_reply_destroy(&reply);
        }
        if (!watch) return CLI_OK;
        sleep((unsigned)watch);
    }
}

int cli_queues(int argc, char **argv)
{
    const char *actor = cli_actor(NULL);
    long timeout = 30000;
    bool json = false, all = false;
    int watch = 0;
    const char *channel = NULL, *type = NULL;
    long long endpoint = 0, limit = 0;
    const char *pos[1100];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", s_usage_text);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--watch")) {
            watch = 2;
            if (i + 1 < argc && atoi(argv[i + 1]) > 0) watch = atoi(argv[++i]);
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else if (!strcmp(a, "--actor") && i + 1 < argc) {
            actor = argv[++i];
        } else if (!strcmp(a, "--timeout") && i + 1 < argc) {
            timeout = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--channel") && i + 1 < argc) {
            channel = argv[++i];
        } else if (!strcmp(a, "--type") && i + 1 < argc) {
            type = argv[++i];
        } else if (!strcmp(a, "--endpoint") && i + 1 < argc) {
            endpoint = strtoll(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--limit") && i + 1 < argc) {
            limit = strtoll(argv[++i], NULL, 10);
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "bangfu queues: unknown option %s\n%s", a, s_usage_text);
            return CLI_USAGE;
        } else if (npos < (int)(sizeof pos / sizeof pos[0])) {
            pos[npos++] = a;
        }
    }
    if (timeout <= 0) {
        fprintf(stderr, "bangfu queues: --timeout must be positive\n");
        return CLI_USAGE;
    }
    if (npos == 0) return s_stats(json, watch, timeout);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *method = NULL, *who = NULL;
    if ((!strcmp(pos[0], "pause") || !strcmp(pos[0], "resume")) && npos == 2) {
        method = !strcmp(pos[0], "pause") ? "queues.pause" : "queues.resume";
        who = actor;
        msgpack_pack_map(&pk, 1);
        bf_mp_kv_str(&pk, "queue", pos[1]);
    } else if (!strcmp(pos[0], "dead") && npos >= 2 && !strcmp(pos[1], "list") && npos == 2) {
        method = "queues.dead.list";
        int n = (channel != NULL) + (endpoint > 0) + (type != NULL) + (limit > 0);
        msgpack_pack_map(&pk, (size_t)n);
        if (channel) bf_mp_kv_str(&pk, "channel", channel);
        if (endpoint > 0) bf_mp_kv_int(&pk, "endpoint_id", endpoint);
        if (type) bf_mp_kv_str(&pk, "type_prefix", type);
        if (limit > 0) bf_mp_kv_int(&pk, "limit", limit);
    } else if (!strcmp(pos[0], "dead") && npos == 3 && !strcmp(pos[1], "show")) {
        method = "queues.dead.show";
        msgpack_pack_map(&pk, 1);
        bf_mp_kv_str(&pk, "id", pos[2]);
    } else if (!strcmp(pos[0], "dead") && npos >= 2 &&
               (!strcmp(pos[1], "retry") || !strcmp(pos[1], "drop"))) {
        method = !strcmp(pos[1], "retry") ? "queues.dead.retry" : "queues.dead.drop";
        who = actor;
        bool filter = channel || endpoint > 0 || type;
        int kinds = (npos > 2) + (all ? 1 : 0) + (filter ? 1 : 0);
        if (kinds != 1) {
            fprintf(stderr, "bangfu queues dead %s: give ids, --all, or a filter "
                            "(--channel/--endpoint/--type)\n", pos[1]);
            msgpack_sbuffer_destroy(&sb);
            return CLI_USAGE;
        }
        msgpack_pack_map(&pk, 1);
        if (npos == 3) {
            bf_mp_kv_str(&pk, "id", pos[2]);
        } else if (npos > 3) {
            bf_mp_key(&pk, "ids");
            msgpack_pack_array(&pk, (size_t)(npos - 2));
            for (int i = 2; i < npos; i++) bf_mp_str(&pk, pos[i]);
        } else if (all) {
            bf_mp_kv_bool(&pk, "all", true);
        } else {
            bf_mp_key(&pk, "filter");
            msgpack_pack_map(&pk, (size_t)((channel != NULL) + (endpoint > 0) + (type != NULL)));
            if (channel) bf_mp_kv_str(&pk, "channel", channel);
            if (endpoint > 0) bf_mp_kv_int(&pk, "endpoint_id", endpoint);
            if (type) bf_mp_kv_str(&pk, "type_prefix", type);
        }
    }
    if (!method) {
        fprintf(stderr, "%s", s_usage_text);
        msgpack_sbuffer_destroy(&sb);
        return CLI_USAGE;
    }
    bf_reply_t reply;
    int rc = s_call(method, &sb, who, timeout, &reply);
    msgpack_sbuffer_destroy(&sb);
    int code;
    if (rc == 0 && reply.ok && !json && !strcmp(method, "queues.dead.list")) {
        const msgpack_object *items = bf_mp_get(reply.result, "items");
        printf("%-34s %-8s %-40s %3s %s\n", "DELIVERY", "CHANNEL", "EVENT TYPE", "TRY",
               "LAST ERROR");
        for (uint32_t i = 0; items && items->type == MSGPACK_OBJECT_ARRAY && i < items->via.array.size;
             i++) {
            const msgpack_object *d = &items->via.array.ptr[i];
            const msgpack_object *f[4] = {bf_mp_get(d, "id"), bf_mp_get(d, "channel"),
                                          bf_mp_get(d, "event_type"), bf_mp_get(d, "last_error")};
            char s[4][256];
            for (int k = 0; k < 4; k++)
                snprintf(s[k], sizeof s[k], "%.*s",
                         f[k] && f[k]->type == MSGPACK_OBJECT_STR ? (int)f[k]->via.str.size : 1,
                         f[k] && f[k]->type == MSGPACK_OBJECT_STR ? f[k]->via.str.ptr : "-");
            printf("%-34s %-8s %-40s %3lld %s\n", s[0], s[1], s[2], (long long)s_int(d, "attempts"),
                   s[3]);
        }
        code = CLI_OK;
    } else {
        code = cli_print_reply(&reply, !json && isatty(1));
        if (rc != 0) code = CLI_UNAVAILABLE;
    }
    bf_reply_destroy(&reply);
    return code;
}
