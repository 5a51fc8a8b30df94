/* bf_client: DEALER-based RPC client with timeouts; see bf_client.h. */
#include "bf_client.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_outbox.h"
#include "bf_rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

struct bf_client {
    void *sock;
    int timeout_ms;
    unsigned long long seq;
};

/* server NULL: a plain socket, whatever the security mode. */
static bf_client_t *s_new(const char *server, const char *identity, const char *endpoint,
                          int timeout_ms)
{
    if (!endpoint) return NULL;
    bf_client_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->sock = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    int linger = 0;
    if (!c->sock) goto fail;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (server) {
        char err[512];
        if (bf_curve_client_as(c->sock, server, identity, err, sizeof err) != 0) {
            bf_log(BF_ERROR, "client of %s: %s", server, err);
            goto fail;
        }
    }
    /* "tcp://a:7101,tcp://b:7101": one connect each; the DEALER socket then
     * spreads requests over every instance that is up */
    const char *p = endpoint;
    int connected = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char one[256];
        if (n == 0 || n >= sizeof one) goto fail;
        memcpy(one, p, n);
        one[n] = '\0';
        if (zmq_connect(c->sock, one) != 0) goto fail;
        connected++;
        p += n;
        if (*p == ',') p++;
    }
    if (!connected) goto fail;
    c->timeout_ms = timeout_ms;
    return c;
fail:
    if (c->sock) zmq_close(c->sock);
    free(c);
    return NULL;
}

bf_client_t *bf_client_new(const char *endpoint, int timeout_ms)
{
    return s_new(NULL, NULL, endpoint, timeout_ms);
}

bf_client_t *bf_client_open(const char *server_name, const char *endpoint, int timeout_ms)
{
    return bf_client_open_as(server_name, bf_keys_identity(), endpoint, timeout_ms);
}

bf_client_t *bf_client_open_as(const char *server_name, const char *identity,
                               const char *endpoint, int timeout_ms)
{
    if (!server_name || !identity) return NULL;
    return s_new(server_name, identity, endpoint, timeout_ms);
}

void bf_client_destroy(bf_client_t **self_p)
{
    if (!self_p || !*self_p) return;
    zmq_close((*self_p)->sock);
    free(*self_p);
    *self_p = NULL;
}

static void s_fail(bf_reply_t *reply, const char *code, const char *msg)
{
    reply->ok = false;
    snprintf(reply->code, sizeof reply->code, "%s", code);
    snprintf(reply->message, sizeof reply->message, "%s", msg);
}

static void s_copy(char *dst, size_t n, const msgpack_object *o)
{
    if (o && o->type == MSGPACK_OBJECT_STR)
        snprintf(dst, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    else
        dst[0] = '\0';
}

/* Waits for the reply whose id is want (NULL: the first one). */
static int s_wait(bf_client_t *c, const char *want, bf_reply_t *reply)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long el = (now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L;
        long left = c->timeout_ms - el;
        if (left <= 0) {
            s_fail(reply, BF_E_UNAVAILABLE, "no reply within the timeout");
            return -1;
        }
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0) continue;
        zmq_msg_t last;
        zmq_msg_init(&last);
        int more = 1;
        while (more) {
            zmq_msg_close(&last);
            zmq_msg_init(&last);
            if (zmq_msg_recv(&last, c->sock, 0) < 0) break;
            more = zmq_msg_more(&last);
        }
        msgpack_unpacked_destroy(&reply->msg);
        msgpack_unpacked_init(&reply->msg);
        /* msgpack-c decodes strings in place: the bytes must outlive the
         * reply, so keep a copy the reply owns (the frame is closed here) */
        free(reply->buf);
        size_t len = zmq_msg_size(&last);
        reply->buf = malloc(len ? len : 1);
        if (!reply->buf) {
            zmq_msg_close(&last);
            s_fail(reply, BF_E_EXHAUSTED, "out of memory for the reply");
            return -1;
        }
        memcpy(reply->buf, zmq_msg_data(&last), len);
        zmq_msg_close(&last);
        size_t off = 0;
        int ok = bf_mp_check(reply->buf, len, BF_MP_MAX_DEPTH) == 0 &&
                 msgpack_unpack_next(&reply->msg, reply->buf, len, &off) ==
                     MSGPACK_UNPACK_SUCCESS;
        if (!ok || reply->msg.data.type != MSGPACK_OBJECT_MAP) {
            s_fail(reply, BF_E_INTERNAL, "malformed reply");
            return -1;
        }
        const msgpack_object *root = &reply->msg.data;
        const msgpack_object *id = bf_mp_get(root, "id");
        if (want && !bf_mp_str_eq(id, want)) continue; /* a late reply to an earlier call */
        const msgpack_object *okv = bf_mp_get(root, "ok");
        reply->ok = okv && okv->type == MSGPACK_OBJECT_BOOLEAN && okv->via.boolean;
        reply->result = bf_mp_get(root, "result");
        reply->error = bf_mp_get(root, "error");
        if (!reply->ok) {
            s_copy(reply->code, sizeof reply->code, bf_mp_get(reply->error, "code"));
            s_copy(reply->message, sizeof reply->message, bf_mp_get(reply->error, "message"));
            s_copy(reply->field, sizeof reply->field, bf_mp_get(reply->error, "field"));
        }
        return 0;
    }
}

static int s_send(bf_client_t *c, const char *body, size_t len)
{
    if (zmq_send(c->sock, "", 0, ZMQ_SNDMORE) < 0) return -1;
    if (zmq_send(c->sock, body, len, 0) < 0) return -1;
    return 0;
}

int bf_client_call(bf_client_t *c, const char *method, const char *params, size_t params_len,
                   const char *actor, bf_reply_t *reply)
{
    return bf_client_call_as(c, method, params, params_len, actor, NULL, 0, reply);
}

int bf_client_call_as(bf_client_t *c, const char *method, const char *params,
                      size_t params_len, const char *actor, const char *auth, size_t auth_len,
                      bf_reply_t *reply)
{
    memset(reply, 0, sizeof *reply);
    msgpack_unpacked_init(&reply->msg);
    char id[48];
    char uuid[37];
    bf_uuid_v7(uuid);
    snprintf(id, sizeof id, "%.36s", uuid);
    c->seq++;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4 + (actor ? 1 : 0) + (auth && auth_len ? 1 : 0));
    bf_mp_kv_int(&pk, "v", BF_RPC_VERSION);
    bf_mp_kv_str(&pk, "id", id);
    bf_mp_kv_str(&pk, "method", method);
    bf_mp_key(&pk, "params");
    if (params && params_len)
        msgpack_sbuffer_write(&sb, params, params_len);
    else
        msgpack_pack_map(&pk, 0);
    if (actor) bf_mp_kv_str(&pk, "actor", actor);
    if (auth && auth_len) {
        bf_mp_key(&pk, "auth");
        msgpack_sbuffer_write(&sb, auth, auth_len);
    }
    int rc = s_send(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        s_fail(reply, BF_E_UNAVAILABLE, "cannot send the request");
        return -1;
    }
    return s_wait(c, id, reply);
}

int bf_client_call_raw(bf_client_t *c, const char *body, size_t len, bf_reply_t *reply)
{
    memset(reply, 0, sizeof *reply);
    msgpack_unpacked_init(&reply->msg);
    if (s_send(c, body, len) != 0) {
        s_fail(reply, BF_E_UNAVAILABLE, "cannot send the request");
        return -1;
    }
    return s_wait(c, NULL, reply);
}

void bf_reply_destroy(bf_reply_t *reply)
{
    msgpack_unpacked_destroy(&reply->msg);
    free(reply->buf);
    memset(reply, 0, sizeof *reply);
}
