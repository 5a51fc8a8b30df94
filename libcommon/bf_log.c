/* bf_log: JSON-lines logger; see bf_log.h. */
#include "bf_log.h"
#include "bf_valid.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bf_log_level_t bf_log_min_level = BF_INFO;
static const char *s_service = "bangfu";
static _Thread_local const char *s_request_id;

static const char *const s_level_names[] = {"debug", "info", "warn", "error"};

void bf_log_init(const char *service, bf_log_level_t level)
{
    if (service) s_service = service;
    bf_log_min_level = level;
}

int bf_log_level_parse(const char *s, bf_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, s_level_names[i]) == 0) {
            *out = (bf_log_level_t)i;
            return 0;
        }
    }
    if (s && strcmp(s, "warning") == 0) {
        *out = BF_WARN;
        return 0;
    }
    return -1;
}

void bf_log_set_request(const char *request_id) { s_request_id = request_id; }

/* Appends src to buf as JSON string contents, escaping as needed; never
 * writes past cap (truncates instead). Returns the new length. */
static size_t s_escape(char *buf, size_t len, size_t cap, const char *src)
{
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        char tmp[8];
        const char *piece = tmp;
        size_t n;
        switch (*p) {
        case '"': piece = "\\\""; n = 2; break;
        case '\\': piece = "\\\\"; n = 2; break;
        case '\n': piece = "\\n"; n = 2; break;
        case '\r': piece = "\\r"; n = 2; break;
        case '\t': piece = "\\t"; n = 2; break;
        default:
            if (*p < 0x20) {
                n = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            } else if (*p < 0x80) {
                tmp[0] = (char)*p;
                n = 1;
            } else {
                /* a whole valid UTF-8 sequence or U+FFFD: a message cut inside
                 * a character (vsnprintf or this cap) or holding bad bytes
                 * must still make a valid JSON line */
                size_t seq = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 1;
                if (strnlen((const char *)p, seq) == seq &&
                    bf_valid_utf8((const char *)p, seq)) {
                    piece = (const char *)p;
                    n = seq;
                    p += seq - 1;
                } else {
                    piece = "\\ufffd";
                    n = 6;
                }
            }
        }
        if (len + n >= cap) break;
        memcpy(buf + len, piece, n);
        len += n;
    }
    return len;
}

void bf_log_emit(bf_log_level_t level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);

    char line[4096];
    size_t cap = sizeof line - 3; /* room for "}\n" and NUL */
    int n = snprintf(line, cap,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                     "\"service\":\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                     s_level_names[level & 3]);
    size_t len = n > 0 ? (size_t)n : 0;
    len = s_escape(line, len, cap, s_service);
    if (s_request_id) {
        const char *k = "\",\"req\":\"";
        if (len + strlen(k) < cap) {
            memcpy(line + len, k, strlen(k));
            len += strlen(k);
            len = s_escape(line, len, cap, s_request_id);
        }
    }
    const char *k = "\",\"msg\":\"";
    if (len + strlen(k) < cap) {
        memcpy(line + len, k, strlen(k));
        len += strlen(k);
        len = s_escape(line, len, cap, msg);
    }
    line[len++] = '"';
    line[len++] = '}';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
