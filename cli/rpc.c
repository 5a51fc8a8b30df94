/* rpc: the command line's RPC client; see rpc.h. */
#include "rpc.h"

#include "bf_mp.h"
#include "bf_outbox.h"
#include "bf_rpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

struct cli_rpc {
    void *sock;
};

cli_rpc_t *cli_rpc_new(const char *endpoint)
{
    if (!endpoint || !*endpoint) return NULL;
    cli_rpc_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    int linger = 0;
    c->sock = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    if (!c->sock || zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
        goto fail;
    /* a comma-separated list connects the one socket to every endpoint, as
     * bf_client does: ZeroMQ round-robins requests over them. With several,
     * requests go only to completed connections (ZMQ_IMMEDIATE), so a dead
     * endpoint in the list does not swallow them; cli_rpc_call bounds the
     * wait for one with its timeout (ZMQ_SNDTIMEO). */
    if (strchr(endpoint, ',')) {
        int one_ = 1;
        if (zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one_, sizeof one_) != 0) goto fail;
    }
    for (const char *p = endpoint; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[512];
        if (len == 0 || len >= sizeof one) goto fail;
        memcpy(one, p, len);
        one[len] = '\0';
        if (zmq_connect(c->sock, one) != 0) goto fail;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) goto fail; /* a trailing comma */
        }
    }
    return c;
fail:
    if (c->sock) zmq_close(c->sock);
    free(c);
    return NULL;
}

void cli_rpc_destroy(cli_rpc_t **self_p)
{
    if (!self_p || !*self_p) return;
    zmq_close((*self_p)->sock);
    free(*self_p);
    *self_p = NULL;
}

void cli_reply_init(cli_reply_t *reply)
{
    memset(reply, 0, sizeof *reply);
    msgpack_unpacked_init(&reply->msg);
}

void cli_reply_destroy(cli_reply_t *reply)
{
    msgpack_unpacked_destroy(&reply->msg);
    free(reply->buf);
    cli_reply_init(reply);
}

int cli_rpc_send(cli_rpc_t *c, const char *method, const char *params, size_t params_len,
                 const char *actor, char *id)
{
    char uuid[37];
    bf_uuid_v7(uuid);
    snprintf(id, 40, "%s", uuid);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, actor ? 5 : 4);
    bf_mp_kv_int(&pk, "v", BF_RPC_VERSION);
    bf_mp_kv_str(&pk, "id", id);
    bf_mp_kv_str(&pk, "method", method);
    bf_mp_key(&pk, "params");
    if (params && params_len)
        msgpack_sbuffer_write(&sb, params, params_len);
    else
        msgpack_pack_map(&pk, 0);
    if (actor) bf_mp_kv_str(&pk, "actor", actor);
    int rc = 0;
    if (zmq_send(c->sock, "", 0, ZMQ_SNDMORE) < 0 || zmq_send(c->sock, sb.data, sb.size, 0) < 0)
        rc = -1;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void s_copy(char *dst, size_t n, const msgpack_object *o)
{
    if (o && o->type == MSGPACK_OBJECT_STR)
        snprintf(dst, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    else
        dst[0] = '\0';
}

int cli_rpc_recv(cli_rpc_t *c, long wait_ms, cli_reply_t *reply)
{
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, wait_ms < 0 ? 0 : wait_ms) <= 0) return 0;
    zmq_msg_t last;
    zmq_msg_init(&last);
    int more = 1, got = 0;
    while (more) {
        zmq_msg_close(&last);
        zmq_msg_init(&last);
        if (zmq_msg_recv(&last, c->sock, ZMQ_DONTWAIT) < 0) break;
        got = 1;
        more = zmq_msg_more(&last);
    }
    if (!got) {
        zmq_msg_close(&last);
        return 0;
    }
    size_t len = zmq_msg_size(&last);
    char *buf = malloc(len ? len : 1);
    if (buf) memcpy(buf, zmq_msg_data(&last), len);
    zmq_msg_close(&last);
    if (!buf) return -1;
    cli_reply_t r;
    cli_reply_init(&r);
    r.buf = buf;
    size_t off = 0;
    if (bf_mp_check(buf, len, BF_MP_MAX_DEPTH) != 0 ||
        msgpack_unpack_next(&r.msg, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        r.msg.data.type != MSGPACK_OBJECT_MAP) {
        cli_reply_destroy(&r);
        return -1;
    }
    const msgpack_object *root = &r.msg.data;
    s_copy(r.id, sizeof r.id, bf_mp_get(root, "id"));
    const msgpack_object *okv = bf_mp_get(root, "ok");
    r.ok = okv && okv->type == MSGPACK_OBJECT_BOOLEAN && okv->via.boolean;
    r.result = bf_mp_get(root, "result");
    r.error = bf_mp_get(root, "error");
    if (!r.ok) {
        s_copy(r.code, sizeof r.code, bf_mp_get(r.error, "code"));
        s_copy(r.message, sizeof r.message, bf_mp_get(r.error, "message"));
        s_copy(r.field, sizeof r.field, bf_mp_get(r.error, "field"));
        if (!r.code[0]) snprintf(r.code, sizeof r.code, "internal");
    }
    *reply = r;
    return 1;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cli_rpc_call(cli_rpc_t *c, const char *method, const char *params, size_t params_len,
                 const char *actor, long timeout_ms, cli_reply_t *reply)
{
    cli_reply_init(reply);
    char id[40];
    int sndtimeo = timeout_ms > 0 && timeout_ms < 2147483647L ? (int)timeout_ms : -1;
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if (cli_rpc_send(c, method, params, params_len, actor, id) != 0) {
        snprintf(reply->code, sizeof reply->code, "unavailable");
        snprintf(reply->message, sizeof reply->message, "cannot send the request: %s",
                 zmq_strerror(errno));
        return -1;
    }
    double deadline = s_now() + (double)timeout_ms / 1000.0;
    for (;;) {
        long left = (long)((deadline - s_now()) * 1000.0);
        if (left <= 0) break;
        cli_reply_t r;
        if (cli_rpc_recv(c, left, &r) != 1) continue;
        if (strcmp(r.id, id) == 0) {
            *reply = r;
            return 0;
        }
        cli_reply_destroy(&r); /* a late reply to an earlier call */
    }
    snprintf(reply->code, sizeof reply->code, "unavailable");
    snprintf(reply->message, sizeof reply->message, "no reply within %ld ms", timeout_ms);
    return -1;
}
