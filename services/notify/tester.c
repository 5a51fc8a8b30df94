/* tester.c: endpoint.test, asynchronous (docs/notify.md "Isolation").
 *
 * An RPC worker must never wait for a receiver: the RPC front hands requests
 * to its workers in turn, so one worker held by curl delays every request
 * queued behind it. endpoint.test therefore only records a test request
 * (table endpoint_test, state pending) and returns its id; tester threads
 * (notify.test_concurrency of them) claim pending tests (FOR UPDATE SKIP
 * LOCKED, so several instances share them), send the synthetic event with a
 * hard timeout of notify.test_timeout_ms (at most 3 s), and write the
 * outcome, with the event bangfu.notify.endpoint.tested.
 * endpoint.test_result {id} reads it. At most notify.test_pending_max tests
 * wait at once; more are refused with resource_exhausted. A test left
 * running by a process that died is taken again after a minute.
 *
 * Webhook answers are generic (channel.c): "refused: address not allowed",
 * "timeout", "connection failed", "HTTP 500"; never libcurl's text.
 */
#include "bf_login.h"
#include "notify.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

int endpoint_test(bf_req_t *r)
{
    notify_t *n = r->svc;
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_test_ep", "SELECT 1 FROM endpoint WHERE id = $1", 1,
                               p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res);
    PQclear(res);
    if (!found) return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no endpoint with id %lld", (long long)id);
    res = bf_db_prep(r->db, "notify_test_waiting",
                     "SELECT count(*) AS n FROM endpoint_test WHERE state <> 'done'", 0, NULL, NULL,
                     NULL);
    if (!res) return bf_req_db_fail(r);
    long long waiting = bf_db_int(res, 0, "n");
    PQclear(res);
    if (waiting >= n->test_pending_max)
        return bf_req_fail(r, BF_E_EXHAUSTED, "id",
                           "%lld endpoint tests are waiting (notify.test_pending_max); try again "
                           "in a few seconds", waiting);
    char uuid[37], tid[40];
    bf_uuid_v7(uuid);
    snprintf(tid, sizeof tid, "t_%s", uuid);
    char subject[48];
    snprintf(subject, sizeof subject, "endpoint/%lld", (long long)id);
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *ip[] = {tid, p[0], r->actor};
    res = bf_db_prep(r->db, "notify_test_put",
                     "INSERT INTO endpoint_test (id, endpoint_id, requested_by) VALUES ($1, $2, $3)",
                     3, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *epk = bf_event_begin(&ev);
    msgpack_pack_map(epk, 2);
    bf_mp_kv_int(epk, "endpoint_id", id);
    bf_mp_kv_str(epk, "test_id", tid);
    if (notify_admin_record(r, &ev, "endpoint.test_requested", subject) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_str(r->out, "test_id", tid);
    bf_mp_kv_int(r->out, "endpoint_id", id);
    bf_mp_kv_str(r->out, "state", "pending");
    return 0;
}

int endpoint_test_result(bf_req_t *r)
{
    const char *id;
    if (bf_req_str(r, r->params, NULL, "id", true, 64, &id) != 0) return -1;
    const char *p[] = {id};
    PGresult *res = bf_db_prep(
        r->db, "notify_test_get",
        "SELECT id, endpoint_id, state, ok, status, error, ms, webhook_id, requested_by, "
        TS("requested_at") " AS requested_at, " TS("finished_at") " AS finished_at "
        "FROM endpoint_test WHERE id = $1",
        1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no endpoint test %s", id);
    }
    bool done = !strcmp(bf_db_str(res, 0, "state"), "done");
    msgpack_pack_map(r->out, 11);
    bf_mp_kv_str(r->out, "id", bf_db_str(res, 0, "id"));
    bf_mp_kv_int(r->out, "endpoint_id", bf_db_int(res, 0, "endpoint_id"));
    bf_mp_kv_str(r->out, "state", bf_db_str(res, 0, "state"));
    if (done) bf_mp_kv_bool(r->out, "ok", bf_db_bool(res, 0, "ok"));
    else bf_mp_kv_nil(r->out, "ok");
    if (done) bf_mp_kv_int(r->out, "status", bf_db_int(res, 0, "status"));
    else bf_mp_kv_nil(r->out, "status");
    bf_mp_kv_str(r->out, "error", bf_db_str(res, 0, "error"));
    if (done) bf_mp_kv_int(r->out, "ms", bf_db_int(res, 0, "ms"));
    else bf_mp_kv_nil(r->out, "ms");
    bf_mp_kv_str(r->out, "webhook_id", bf_db_str(res, 0, "webhook_id"));
    bf_mp_kv_str(r->out, "requested_by", bf_db_str(res, 0, "requested_by"));
    bf_mp_kv_str(r->out, "requested_at", bf_db_str(res, 0, "requested_at"));
    bf_mp_kv_str(r->out, "finished_at", bf_db_str(res, 0, "finished_at"));
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------- the thread */

static void s_nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The synthetic event as JSON (malloc'd), or NULL. */
static char *s_test_body(int64_t ep, const char *actor)
{
    char eid[37], when[32], subject[48];
    bf_uuid_v7(eid);
    bf_time_rfc3339(when);
    snprintf(subject, sizeof subject, "endpoint/%lld", (long long)ep);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    bf_mp_kv_str(&pk, "specversion", "1.0");
    bf_mp_kv_str(&pk, "id", eid);
    bf_mp_kv_str(&pk, "source", "bangfu/notify");
    bf_mp_kv_str(&pk, "type", "bangfu.notify.endpoint.test");
    bf_mp_kv_str(&pk, "subject", subject);
    bf_mp_kv_str(&pk, "time", when);
    bf_mp_kv_str(&pk, "datacontenttype", "application/msgpack");
    bf_mp_kv_str(&pk, "actor", actor);
    bf_mp_key(&pk, "data");
    msgpack_pack_map(&pk, 2);
    bf_mp_kv_int(&pk, "endpoint_id", ep);
    bf_mp_kv_str(&pk, "message", "这是一条测试消息 / a test message");
    char *body = notify_event_json(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return body;
}

/* Sends one claimed test and records the outcome. */
static void s_run_test(notify_t *n, bf_db_t *db, CURL *curl, const char *tid, int64_t ep,
                       const char *actor)
{
    long timeout = (long)(n->test_timeout_ms < n->webhook_timeout_ms ? n->test_timeout_ms
                                                                      : n->webhook_timeout_ms);
    char eps[24], msg_id[48];
    snprintf(eps, sizeof eps, "%lld", (long long)ep);
    snprintf(msg_id, sizeof msg_id, "test_%s", tid + 2);
    const char *p[] = {eps};
    PGresult *res = bf_db_prep(db, "notify_test_secret",
                               "SELECT channel, url, address, secret, previous_secret, "
                               "previous_until_ms FROM endpoint WHERE id = $1",
                               1, p, NULL, NULL);
    if (!res) return; /* left running: taken again after a minute */
    notify_result_t out = {0, "", false};
    int rc = -1;
    char *body = s_test_body(ep, actor);
    int64_t t0 = notify_wall_ms();
    const char *channel = PQntuples(res) == 1 ? bf_db_str(res, 0, "channel") : "";
    if (PQntuples(res) != 1) {
        snprintf(out.error, sizeof out.error, "endpoint gone");
    } else if (!body) {
        snprintf(out.error, sizeof out.error, "out of memory");
    } else if (!strcmp(channel, "webhook")) {
        const char *prev = NULL;
        if (!bf_db_null(res, 0, "previous_secret") &&
            bf_db_int(res, 0, "previous_until_ms") > notify_now_ms(n))
            prev = bf_db_str(res, 0, "previous_secret");
        rc = notify_send_webhook(curl, n->allow, bf_db_str(res, 0, "url"),
                                 bf_db_str(res, 0, "secret"), prev, msg_id, (long long)(t0 / 1000),
                                 body, strlen(body), timeout, &out);
    } else if (!strcmp(channel, "email")) {
        rc = notify_send_email(curl, n->smtp_url, n->mail_from, bf_db_str(res, 0, "address"),
                               "【测试】bangfu 通知测试 / test", body, msg_id, timeout, &out);
    } else {
        rc = notify_send_sms(curl, n->sms_url, bf_db_str(res, 0, "address"),
                             "【测试】bangfu 通知测试 / test", msg_id, timeout, &out);
    }
    /* the answer names no host, port or library error text */
    if (rc != 0 && strcmp(channel, "webhook") != 0 && out.no_answer)
        snprintf(out.error, sizeof out.error, "connection failed");
    int64_t ms = notify_wall_ms() - t0;
    free(body);
    PQclear(res);

    char st[16], mss[24];
    snprintf(st, sizeof st, "%d", out.status);
    snprintf(mss, sizeof mss, "%lld", (long long)ms);
    if (bf_db_begin(db) != 0) return;
    const char *up[] = {tid, rc == 0 ? "t" : "f", st, rc == 0 ? NULL : out.error, mss, msg_id};
    res = bf_db_prep(db, "notify_test_done",
                     "UPDATE endpoint_test SET state = 'done', ok = $2::boolean, status = $3::int, "
                     "error = $4, ms = $5::int, webhook_id = $6, finished_at = now() "
                     "WHERE id = $1",
                     6, up, NULL, NULL);
    if (!res) {
        bf_db_rollback(db);
        return;
    }
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *epk = bf_event_begin(&ev);
    msgpack_pack_map(epk, 5);
    bf_mp_kv_int(epk, "endpoint_id", ep);
    bf_mp_kv_str(epk, "test_id", tid);
    bf_mp_kv_bool(epk, "ok", rc == 0);
    bf_mp_kv_int(epk, "status", out.status);
    bf_mp_kv_str(epk, "error", rc == 0 ? NULL : out.error);
    char subject[48];
    snprintf(subject, sizeof subject, "endpoint/%lld", (long long)ep);
    if (bf_event_commit(&ev, db, NOTIFY_SERVICE, "bangfu.notify.endpoint.tested", subject,
                        actor) != 0 ||
        bf_db_commit(db) != 0)
        bf_db_rollback(db);
}

void *notify_tester_main(void *arg)
{
    notify_t *n = arg;
    bf_db_t *db = bf_login_db(n->cfg, NOTIFY_SERVICE, NOTIFY_SERVICE);
    CURL *curl = curl_easy_init();
    if (!db || !curl) {
        bf_log(BF_ERROR, "tester: cannot start");
        goto out;
    }
    while (!notify_stopping(n)) {
        if (bf_db_ensure(db) != 0 && bf_db_connect(db, 1) != 0) {
            s_nap(1000);
            continue;
        }
        PGresult *res = bf_db_prep(
            db, "notify_test_claim",
            "UPDATE endpoint_test SET state = 'running', started_at = now() WHERE id = "
            "(SELECT id FROM endpoint_test WHERE state = 'pending' OR (state = 'running' AND "
            "started_at < now() - interval '1 minute') ORDER BY requested_at "
            "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, endpoint_id, requested_by",
            0, NULL, NULL, NULL);
        if (!res || PQntuples(res) != 1) {
            if (res) PQclear(res);
            s_nap(100);
            continue;
        }
        char tid[64], actor[256];
        snprintf(tid, sizeof tid, "%s", bf_db_str(res, 0, "id"));
        snprintf(actor, sizeof actor, "%s", bf_db_str(res, 0, "requested_by"));
        int64_t ep = bf_db_int(res, 0, "endpoint_id");
        PQclear(res);
        s_run_test(n, db, curl, tid, ep, actor);
    }
out:
    if (curl) curl_easy_cleanup(curl);
    bf_db_destroy(&db);
    return NULL;
}
