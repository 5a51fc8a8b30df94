/* channel.c: the ways a delivery leaves notify, all through libcurl (HTTP
 * and SMTP) and OpenSSL (HMAC), never hand-written protocol code.
 *
 * Webhook: HTTP POST of the event as JSON with the Standard Webhooks headers
 * (webhook-id, webhook-timestamp, webhook-signature = "v1,<base64
 * HMAC-SHA256(key, id.timestamp.body)>", key = the base64 after "whsec_";
 * during a secret rotation two signatures, space-separated). A 2xx within the
 * timeout is success. Email: a MIME message (UTF-8, base64 body, RFC 2047
 * encoded subject) through the configured SMTP relay. SMS: POST JSON {to,
 * text} to the configured gateway. The CURL handle is the worker's, reused
 * (curl_easy_reset) so connections are kept alive. Webhook connections go
 * through the connect-time address check of netguard.c and their errors are
 * generic ("timeout", "connection failed", "HTTP 500", "refused: address not
 * allowed"), never libcurl's text.
 */
#include "notify.h"
#include "bf_json.h"
#include "bf_mp.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *notify_base64(const unsigned char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out) return NULL;
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* Decodes standard base64 (with padding) into out; returns the length or -1. */
static int s_base64_decode(const char *in, unsigned char *out, size_t out_cap)
{
    size_t len = strlen(in);
    if (len == 0 || len % 4 != 0 || (len / 4) * 3 > out_cap) return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0) return -1;
    if (in[len - 1] == '=') n--;
    if (in[len - 2] == '=') n--;
    return n;
}

void notify_secret_new(char *out, size_t len)
{
    unsigned char key[32];
    if (RAND_bytes(key, sizeof key) != 1) {
        /* RAND_bytes failing means no entropy: refuse to make a weak key */
        snprintf(out, len, "%s", "");
        return;
    }
    char *b = notify_base64(key, sizeof key);
    snprintf(out, len, "whsec_%s", b ? b : "");
    free(b);
}

int notify_webhook_sign(const char *secret, const char *msg_id, long long ts, const char *body,
                        size_t body_len, char *out, size_t out_len)
{
    if (!secret || strncmp(secret, "whsec_", 6) != 0) return -1;
    unsigned char key[256];
    int klen = s_base64_decode(secret + 6, key, sizeof key);
    if (klen <= 0) return -1;
    char prefix[160];
    int pl = snprintf(prefix, sizeof prefix, "%s.%lld.", msg_id, ts);
    if (pl <= 0 || (size_t)pl >= sizeof prefix) return -1;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    unsigned char *msg = malloc((size_t)pl + body_len + 1);
    if (!msg) return -1;
    memcpy(msg, prefix, (size_t)pl);
    if (body_len) memcpy(msg + pl, body, body_len);
    unsigned char *ok = HMAC(EVP_sha256(), key, klen, msg, (size_t)pl + body_len, mac, &maclen);
    free(msg);
    if (!ok) return -1;
    char *b = notify_base64(mac, maclen);
    if (!b) return -1;
    size_t used = strlen(out);
    int w = snprintf(out + used, out_len - used, "%sv1,%s", used ? " " : "", b);
    free(b);
    return w > 0 && (size_t)w < out_len - used ? 0 : -1;
}

/* Response bodies are read and thrown away, bounded. */
static size_t s_discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    size_t *seen = ud;
    *seen += size * nmemb;
    if (*seen > 1024 * 1024) return 0; /* a receiver streaming megabytes: stop */
    return size * nmemb;
}

static void s_curl_error(notify_result_t *res, CURLcode rc, const char *errbuf)
{
    snprintf(res->error, sizeof res->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* A reason a webhook failed that tells nothing about the network behind
 * notify (libcurl's text names hosts and ports and tells open from closed). */
static void s_generic_error(notify_result_t *res, CURLcode rc, const notify_guard_t *g)
{
    const char *why;
    if (g && g->refused) why = "refused: address not allowed";
    else if (rc == CURLE_OPERATION_TIMEDOUT) why = "timeout";
    else if (rc == CURLE_COULDNT_RESOLVE_HOST) why = "host not found";
    else if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
             rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CACERT_BADFILE)
        why = "TLS failed";
    else why = "connection failed";
    snprintf(res->error, sizeof res->error, "%s", why);
}

/* POSTs body with headers; 2xx within the timeout is success. A guard (for
 * webhooks) checks every address before it is connected and makes the
 * errors generic; NULL for the operator-configured SMS gateway. */
static int s_post(CURL *c, notify_guard_t *g, const char *url, struct curl_slist *headers,
                  const char *body, size_t body_len, long timeout_ms, notify_result_t *res)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    size_t seen = 0;
    res->no_answer = false;
    curl_easy_reset(c);
    if (g && notify_guard_setup(c, g, url) != 0) {
        res->status = 0;
        res->no_answer = true;
        snprintf(res->error, sizeof res->error, "refused: url not allowed");
        return -1;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &seen);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "bangfu-notify/0.1");
    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, NULL);
    if (rc != CURLE_OK) {
        res->status = 0;
        res->no_answer = true;
        if (g) s_generic_error(res, rc, g);
        else s_curl_error(res, rc, errbuf);
        return -1;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    res->status = (int)code;
    if (code >= 200 && code < 300) {
        res->error[0] = '\0';
        return 0;
    }
    snprintf(res->error, sizeof res->error, "HTTP %ld", code);
    return -1;
}

int notify_send_webhook(void *curl, const notify_allow_t *allow, const char *url,
                        const char *secret, const char *secret2, const char *msg_id, long long ts,
                        const char *body, size_t body_len, long timeout_ms, notify_result_t *res)
{
    char sig[512] = "";
    if (notify_webhook_sign(secret, msg_id, ts, body, body_len, sig, sizeof sig) != 0 ||
        (secret2 && *secret2 &&
         notify_webhook_sign(secret2, msg_id, ts, body, body_len, sig, sizeof sig) != 0)) {
        snprintf(res->error, sizeof res->error, "the endpoint's secret is not a whsec_ key");
        res->status = 0;
        return -1;
    }
    char h_id[128], h_ts[64], h_sig[600];
    snprintf(h_id, sizeof h_id, "webhook-id: %s", msg_id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    struct curl_slist *h = NULL, *t;
    const char *lines[] = {"Content-Type: application/json", h_id, h_ts, h_sig, "Expect:"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        t = curl_slist_append(h, lines[i]);
        if (!t) {
            curl_slist_free_all(h);
            snprintf(res->error, sizeof res->error, "out of memory");
            return -1;
        }
        h = t;
    }
    notify_guard_t guard = {.allow = allow};
    int rc = s_post(curl, &guard, url, h, body, body_len, timeout_ms, res);
    curl_slist_free_all(h);
    return rc;
}

int notify_send_sms(void *curl, const char *gateway_url, const char *to, const char *text,
                    const char *msg_id, long timeout_ms, notify_result_t *res)
{
    if (!gateway_url || !*gateway_url) {
        res->status = 0;
        snprintf(res->error, sizeof res->error, "no SMS gateway configured (notify.sms_url)");
        return -1;
    }
    json_t *o = json_pack("{s:s, s:s, s:s}", "to", to, "text", text, "id", msg_id);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) {
        snprintf(res->error, sizeof res->error, "cannot build the SMS request (bad UTF-8?)");
        return -1;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    int rc = -1;
    if (h) rc = s_post(curl, NULL, gateway_url, h, body, strlen(body), timeout_ms, res);
    else snprintf(res->error, sizeof res->error, "out of memory");
    curl_slist_free_all(h);
    free(body);
    return rc;
}

/* ---------------------------------------------------------------- email */

typedef struct {
    char *data;
    size_t len, cap;
} s_buf_t;

static int s_put(s_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 1024) + n;
        char *p = realloc(b->data, cap);
        if (!p) return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int s_puts(s_buf_t *b, const char *s) { return s_put(b, s, strlen(s)); }

/* An RFC 2047 header value: encoded words of at most 45 raw bytes each,
 * never splitting a UTF-8 sequence, folded onto continuation lines. */
static int s_put_encoded_header(s_buf_t *b, const char *name, const char *value)
{
    if (s_puts(b, name) || s_puts(b, ": ")) return -1;
    size_t len = strlen(value), i = 0;
    if (len == 0) return s_puts(b, "\r\n");
    while (i < len) {
        size_t n = len - i > 45 ? 45 : len - i;
        while (n > 0 && i + n < len && ((unsigned char)value[i + n] & 0xC0) == 0x80) n--;
        if (n == 0) n = len - i > 45 ? 45 : len - i;
        char *enc = notify_base64((const unsigned char *)value + i, n);
        if (!enc) return -1;
        int rc = s_puts(b, i ? "\r\n =?UTF-8?B?" : "=?UTF-8?B?") || s_puts(b, enc) ||
                 s_puts(b, "?=");
        free(enc);
        if (rc) return -1;
        i += n;
    }
    return s_puts(b, "\r\n");
}

/* Builds the whole message (headers and base64 body with CRLF line ends). */
static char *s_mime(const char *from, const char *to, const char *subject, const char *body,
                    const char *msg_id)
{
    s_buf_t b = {0};
    char date[64], line[512];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    /* the body in canonical form: CRLF line ends */
    s_buf_t text = {0};
    int bad = 0;
    for (const char *p = body; *p && !bad; p++) {
        if (*p == '\n' && (p == body || p[-1] != '\r')) bad |= s_put(&text, "\r\n", 2);
        else bad |= s_put(&text, p, 1);
    }
    if (!text.data) bad |= s_put(&text, "", 0);
    char *enc = bad ? NULL : notify_base64((const unsigned char *)text.data, text.len);
    free(text.data);
    if (!enc) return NULL;
    snprintf(line, sizeof line,
             "Date: %s\r\nFrom: <%s>\r\nTo: <%s>\r\nMessage-ID: <%s@bangfu.notify>\r\n", date,
             from, to, msg_id);
    bad |= s_puts(&b, line);
    bad |= s_put_encoded_header(&b, "Subject", subject);
    bad |= s_puts(&b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n");
    size_t el = strlen(enc);
    for (size_t i = 0; i < el && !bad; i += 76) {
        bad |= s_put(&b, enc + i, el - i > 76 ? 76 : el - i);
        bad |= s_puts(&b, "\r\n");
    }
    free(enc);
    if (bad) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

typedef struct {
    const char *data;
    size_t len, off;
} s_reader_t;

static size_t s_read(char *ptr, size_t size, size_t nmemb, void *ud)
{
    s_reader_t *r = ud;
    size_t room = size * nmemb, left = r->len - r->off;
    size_t n = left < room ? left : room;
    memcpy(ptr, r->data + r->off, n);
    r->off += n;
    return n;
}

int notify_send_email(void *curl, const char *smtp_url, const char *from, const char *to,
                      const char *subject, const char *body, const char *msg_id,
                      long timeout_ms, notify_result_t *res)
{
    char *msg = s_mime(from, to, subject, body, msg_id);
    if (!msg) {
        snprintf(res->error, sizeof res->error, "out of memory building the message");
        return -1;
    }
    char mail_from[400], rcpt[400], errbuf[CURL_ERROR_SIZE] = "";
    snprintf(mail_from, sizeof mail_from, "<%s>", from);
    snprintf(rcpt, sizeof rcpt, "<%s>", to);
    struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
    if (!rcpts) {
        free(msg);
        snprintf(res->error, sizeof res->error, "out of memory");
        return -1;
    }
    s_reader_t rd = {msg, strlen(msg), 0};
    CURL *c = curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, smtp_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, mail_from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, s_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &rd);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, NULL);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    res->status = (int)code;
    curl_slist_free_all(rcpts);
    free(msg);
    res->no_answer = rc != CURLE_OK && code == 0;
    if (rc != CURLE_OK) {
        s_curl_error(res, rc, errbuf);
        return -1;
    }
    res->error[0] = '\0';
    return 0;
}

/* ---------------------------------------------------------- event JSON */

char *notify_event_json(const char *payload, size_t len)
{
    if (bf_mp_check(payload, len, BF_MP_MAX_DEPTH) != 0) return NULL;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    char *json = NULL;
    if (msgpack_unpack_next(&u, payload, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return NULL;
    }
    /* the same map, but its data is now JSON */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const msgpack_object_map *m = &u.data.via.map;
    msgpack_pack_map(&pk, m->size);
    for (uint32_t i = 0; i < m->size; i++) {
        bf_mp_obj(&pk, &m->ptr[i].key);
        if (bf_mp_str_eq(&m->ptr[i].key, "datacontenttype"))
            bf_mp_str(&pk, "application/json");
        else
            bf_mp_obj(&pk, &m->ptr[i].val);
    }
    msgpack_unpacked u2;
    msgpack_unpacked_init(&u2);
    off = 0;
    if (msgpack_unpack_next(&u2, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS)
        json = bf_json_from_msgpack(&u2.data, BF_JSON_COMPACT);
    msgpack_unpacked_destroy(&u2);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&u);
    return json;
}
