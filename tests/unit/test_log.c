/* test_log.c: unit tests for bf_log (JSON lines on stderr).
 *
 * stderr is pointed at a temp file with dup2 while the logger writes, then
 * restored, and every line is parsed with jansson (which refuses invalid JSON
 * and invalid UTF-8). Checks: one line per call with exactly ts (RFC 3339 UTC
 * with milliseconds, near now), level, service, req (only while a request id
 * is set, and only on that thread), msg; escaping of quotes, backslashes,
 * newlines and every control character; invalid UTF-8 never makes the line
 * invalid; level filtering in the bf_log macro (below the minimum nothing is
 * written and the arguments are not even evaluated); very long messages are
 * truncated but the line stays valid JSON (also when the cut would fall inside
 * a multi-byte character or an escape); lines from many threads never
 * interleave.
 */
#include "bf_log.h"
#include "bf_test.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- capture */

static FILE *s_cap_file;
static int s_cap_saved = -1;

/* Points stderr (fd 2) at a fresh temp file. */
static int s_capture_start(void)
{
    fflush(stderr);
    s_cap_file = tmpfile();
    if (!s_cap_file) return -1;
    s_cap_saved = dup(STDERR_FILENO);
    if (s_cap_saved < 0 || dup2(fileno(s_cap_file), STDERR_FILENO) < 0) {
        fclose(s_cap_file);
        s_cap_file = NULL;
        return -1;
    }
    return 0;
}

/* Restores stderr and returns what was written (caller frees), or NULL. */
static char *s_capture_end(size_t *len_out)
{
    fflush(stderr);
    dup2(s_cap_saved, STDERR_FILENO);
    close(s_cap_saved);
    s_cap_saved = -1;
    if (!s_cap_file) return NULL;
    /* fd 2 shares the file; its size is what was written */
    off_t size = lseek(fileno(s_cap_file), 0, SEEK_END);
    if (size < 0) size = 0;
    char *buf = malloc((size_t)size + 1);
    if (buf) {
        ssize_t got = pread(fileno(s_cap_file), buf, (size_t)size, 0);
        if (got < 0) got = 0;
        buf[got] = '\0';
        if (len_out) *len_out = (size_t)got;
    }
    fclose(s_cap_file);
    s_cap_file = NULL;
    return buf;
}

static size_t s_count_lines(const char *buf)
{
    size_t n = 0;
    for (const char *p = buf; *p; p++)
        if (*p == '\n') n++;
    return n;
}

/* Parses one line (without its '\n') as a JSON object; NULL (and a message)
 * if it is not one. */
static json_t *s_parse_line(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr);
    if (!root) {
        fprintf(stderr, "  not JSON (%s): %.200s\n", jerr.text, line);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Captures exactly one line and parses it. */
static json_t *s_single(const char *buf, size_t len)
{
    if (!buf || len == 0 || buf[len - 1] != '\n' || s_count_lines(buf) != 1) {
        fprintf(stderr, "  expected exactly one line, got %zu bytes: %.200s\n", len,
                buf ? buf : "(null)");
        return NULL;
    }
    return s_parse_line(buf, len - 1);
}

static const char *s_get_str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Checks ts is "YYYY-MM-DDTHH:MM:SS.mmmZ" within a minute of now. */
static int s_ts_ok(const char *ts)
{
    if (!ts || strlen(ts) != 24) return 0;
    for (int i = 0; i < 24; i++) {
        char c = ts[i];
        int want_digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19 ||
                           i == 23);
        if (want_digit && (c < '0' || c > '9')) return 0;
    }
    if (ts[4] != '-' || ts[7] != '-' || ts[10] != 'T' || ts[13] != ':' || ts[16] != ':' ||
        ts[19] != '.' || ts[23] != 'Z')
        return 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    return t > now - 60 && t < now + 60;
}

/* ------------------------------------------------------------- tests */

static void test_one_valid_line_per_call(void)
{
    bf_log_init("test_log", BF_DEBUG);
    bf_log_set_request(NULL);
    if (s_capture_start() != 0) {
        BF_FAIL_AT("cannot capture stderr");
        return;
    }
    bf_log_emit(BF_INFO, "hello %d", 42);
    size_t len = 0;
    char *buf = s_capture_end(&len);
    json_t *o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "level"), "info");
        ASSERT_STR_EQ(s_get_str(o, "service"), "test_log");
        ASSERT_STR_EQ(s_get_str(o, "msg"), "hello 42");
        ASSERT(s_ts_ok(s_get_str(o, "ts")));
        ASSERT(json_object_get(o, "req") == NULL); /* no request: no req key */
        ASSERT_EQ(json_object_size(o), 4);
        json_decref(o);
    }
    free(buf);

    /* every level, each its own line, in order */
    s_capture_start();
    bf_log_emit(BF_DEBUG, "d");
    bf_log_emit(BF_INFO, "i");
    bf_log_emit(BF_WARN, "w");
    bf_log_emit(BF_ERROR, "e");
    buf = s_capture_end(&len);
    ASSERT(buf != NULL);
    if (!buf) return;
    ASSERT_EQ(s_count_lines(buf), 4);
    const char *names[] = {"debug", "info", "warn", "error"};
    const char *msgs[] = {"d", "i", "w", "e"};
    const char *p = buf;
    for (int i = 0; i < 4 && *p; i++) {
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        json_t *line = s_parse_line(p, (size_t)(nl - p));
        ASSERT(line != NULL);
        if (line) {
            ASSERT_STR_EQ(s_get_str(line, "level"), names[i]);
            ASSERT_STR_EQ(s_get_str(line, "msg"), msgs[i]);
            json_decref(line);
        }
        p = nl + 1;
    }
    free(buf);
}

static void test_request_id(void)
{
    bf_log_init("test_log", BF_DEBUG);
    bf_log_set_request("req-7f3a");
    s_capture_start();
    bf_log_emit(BF_WARN, "in a request");
    size_t len = 0;
    char *buf = s_capture_end(&len);
    json_t *o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "req"), "req-7f3a");
        ASSERT_STR_EQ(s_get_str(o, "level"), "warn");
        ASSERT_STR_EQ(s_get_str(o, "msg"), "in a request");
        ASSERT_EQ(json_object_size(o), 5);
        json_decref(o);
    }
    free(buf);

    /* a request id with characters that need escaping stays valid */
    bf_log_set_request("a\"b\\c\nd");
    s_capture_start();
    bf_log_emit(BF_INFO, "x");
    buf = s_capture_end(&len);
    o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "req"), "a\"b\\c\nd");
        json_decref(o);
    }
    free(buf);

    /* cleared: no req key any more */
    bf_log_set_request(NULL);
    s_capture_start();
    bf_log_emit(BF_INFO, "after");
    buf = s_capture_end(&len);
    o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT(json_object_get(o, "req") == NULL);
        json_decref(o);
    }
    free(buf);
}

static void *s_thread_log(void *arg)
{
    (void)arg;
    bf_log_emit(BF_INFO, "from another thread");
    return NULL;
}

static void test_request_id_is_per_thread(void)
{
    bf_log_init("test_log", BF_DEBUG);
    bf_log_set_request("main-thread-req");
    s_capture_start();
    pthread_t t;
    int rc = pthread_create(&t, NULL, s_thread_log, NULL);
    if (rc == 0) pthread_join(t, NULL);
    size_t len = 0;
    char *buf = s_capture_end(&len);
    bf_log_set_request(NULL);
    ASSERT_EQ(rc, 0);
    json_t *o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT(json_object_get(o, "req") == NULL);
        ASSERT_STR_EQ(s_get_str(o, "msg"), "from another thread");
        json_decref(o);
    }
    free(buf);
}

static void test_escaping(void)
{
    bf_log_init("svc\"q", BF_DEBUG); /* the service name is escaped too */
    bf_log_set_request(NULL);
    /* every control character, quotes, backslash, and some UTF-8 */
    char msg[128];
    size_t n = 0;
    msg[n++] = '"';
    msg[n++] = '\\';
    msg[n++] = '/';
    for (int c = 1; c < 0x20; c++) msg[n++] = (char)c;
    msg[n++] = 0x7f;
    const char *cn = "扶贫 ✓ 𠀀";
    memcpy(msg + n, cn, strlen(cn));
    n += strlen(cn);
    msg[n] = '\0';

    s_capture_start();
    bf_log_emit(BF_ERROR, "%s", msg);
    bf_log_emit(BF_ERROR, "line1\nline2\r\n\ttab \"quoted\" back\\slash");
    size_t len = 0;
    char *buf = s_capture_end(&len);
    ASSERT(buf != NULL);
    if (!buf) return;
    /* the newlines in the messages must not split lines */
    ASSERT_EQ(s_count_lines(buf), 2);
    const char *nl = strchr(buf, '\n');
    ASSERT(nl != NULL);
    if (!nl) {
        free(buf);
        return;
    }
    /* raw control bytes never appear in the output */
    for (const char *p = buf; p < buf + len; p++) {
        if ((unsigned char)*p < 0x20 && *p != '\n') {
            BF_FAIL_AT("raw control byte 0x%02x at offset %ld", (unsigned char)*p,
                       (long)(p - buf));
            break;
        }
    }
    json_t *o = s_parse_line(buf, (size_t)(nl - buf));
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "msg"), msg);
        ASSERT_STR_EQ(s_get_str(o, "service"), "svc\"q");
        json_decref(o);
    }
    const char *second = nl + 1;
    const char *nl2 = strchr(second, '\n');
    o = nl2 ? s_parse_line(second, (size_t)(nl2 - second)) : NULL;
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "msg"), "line1\nline2\r\n\ttab \"quoted\" back\\slash");
        json_decref(o);
    }
    free(buf);
    bf_log_init("test_log", BF_DEBUG);
}

static void test_invalid_utf8_stays_valid_json(void)
{
    bf_log_init("test_log", BF_DEBUG);
    bf_log_set_request(NULL);
    const char *bad[] = {
        "lone continuation \x80 byte",
        "truncated three-byte \xe6\x89",
        "overlong \xc0\x80 nul",
        "surrogate \xed\xa0\x80 half",
        "beyond U+10FFFF \xf4\x90\x80\x80",
        "just \xff\xfe",
        "ends in a lead byte \xe6",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_capture_start();
        bf_log_emit(BF_INFO, "%s", bad[i]);
        size_t len = 0;
        char *buf = s_capture_end(&len);
        json_t *o = s_single(buf, len);
        if (!o) BF_FAIL_AT("message %zu gave an invalid line", i);
        if (o) {
            const char *m = s_get_str(o, "msg");
            /* the valid prefix survives */
            ASSERT(m && strncmp(m, bad[i], 4) == 0);
            json_decref(o);
        }
        free(buf);
    }
}

static int s_evaluated;
static int s_side_effect(void)
{
    s_evaluated++;
    return 1;
}

static void test_level_filtering(void)
{
    bf_log_init("test_log", BF_WARN);
    ASSERT_EQ(bf_log_min_level, BF_WARN);
    s_evaluated = 0;
    s_capture_start();
    bf_log(BF_DEBUG, "debug %d", s_side_effect());
    bf_log(BF_INFO, "info %d", s_side_effect());
    size_t len = 0;
    char *buf = s_capture_end(&len);
    ASSERT_EQ(len, 0);
    /* the level is checked before any formatting: arguments not evaluated */
    ASSERT_EQ(s_evaluated, 0);
    free(buf);

    s_capture_start();
    bf_log(BF_WARN, "warn %d", s_side_effect());
    bf_log(BF_ERROR, "error %d", s_side_effect());
    buf = s_capture_end(&len);
    ASSERT_EQ(s_evaluated, 2);
    ASSERT(buf != NULL);
    if (buf) {
        ASSERT_EQ(s_count_lines(buf), 2);
        ASSERT(strstr(buf, "\"warn 1\"") != NULL);
        ASSERT(strstr(buf, "\"error 1\"") != NULL);
    }
    free(buf);

    bf_log_init(NULL, BF_ERROR); /* NULL keeps the service name */
    s_capture_start();
    bf_log(BF_WARN, "nothing");
    bf_log(BF_ERROR, "something");
    buf = s_capture_end(&len);
    json_t *o = s_single(buf, len);
    ASSERT(o != NULL);
    if (o) {
        ASSERT_STR_EQ(s_get_str(o, "service"), "test_log");
        ASSERT_STR_EQ(s_get_str(o, "msg"), "something");
        json_decref(o);
    }
    free(buf);
    bf_log_init("test_log", BF_DEBUG);
}

static void test_level_parse(void)
{
    bf_log_level_t l = BF_ERROR;
    ASSERT_EQ(bf_log_level_parse("debug", &l), 0);
    ASSERT_EQ(l, BF_DEBUG);
    ASSERT_EQ(bf_log_level_parse("info", &l), 0);
    ASSERT_EQ(l, BF_INFO);
    ASSERT_EQ(bf_log_level_parse("warn", &l), 0);
    ASSERT_EQ(l, BF_WARN);
    ASSERT_EQ(bf_log_level_parse("error", &l), 0);
    ASSERT_EQ(l, BF_ERROR);
    l = BF_INFO;
    ASSERT_EQ(bf_log_level_parse("verbose", &l), -1);
    ASSERT_EQ(bf_log_level_parse("", &l), -1);
    ASSERT_EQ(bf_log_level_parse("INFO ", &l), -1);
    ASSERT_EQ(bf_log_level_parse(NULL, &l), -1);
    ASSERT_EQ(l, BF_INFO); /* untouched on failure */
}

/* Checks a captured single line holding a truncated form of `full`. */
static void s_check_truncated(const char *buf, size_t len, const char *full)
{
    ASSERT(len <= 4096); /* one write(2) of one bounded line */
    json_t *o = s_single(buf, len);
    ASSERT(o != NULL);
    if (!o) return;
    const char *m = s_get_str(o, "msg");
    ASSERT(m != NULL);
    if (m) {
        size_t ml = strlen(m);
        ASSERT(ml > 500); /* truncated, not dropped */
        ASSERT(ml < strlen(full));
        /* a prefix of the original, then at most the U+FFFDs standing for
         * the bytes of a character cut in half */
        size_t cmp = ml;
        int repl = 0;
        while (cmp >= 3 && memcmp(m + cmp - 3, "\xef\xbf\xbd", 3) == 0) {
            cmp -= 3;
            repl++;
        }
        ASSERT(repl <= 3);
        ASSERT(strncmp(m, full, cmp) == 0);
    }
    ASSERT_STR_EQ(s_get_str(o, "level"), "info");
    json_decref(o);
}

static void test_long_messages_truncated(void)
{
    bf_log_init("test_log", BF_DEBUG);
    bf_log_set_request(NULL);
    size_t big = 20000;
    char *full = malloc(big * 3 + 1);
    ASSERT(full != NULL);
    if (!full) return;

    /* plain ASCII */
    memset(full, 'a', big);
    full[big] = '\0';
    s_capture_start();
    bf_log_emit(BF_INFO, "%s", full);
    size_t len = 0;
    char *buf = s_capture_end(&len);
    s_check_truncated(buf, len, full);
    free(buf);

    /* three-byte characters, at every alignment of the cut */
    const char *cn = "扶";
    for (int shift = 0; shift < 3; shift++) {
        size_t n = 0;
        for (int i = 0; i < shift; i++) full[n++] = 'x';
        for (size_t i = 0; i < big / 3; i++) {
            memcpy(full + n, cn, 3);
            n += 3;
        }
        full[n] = '\0';
        s_capture_start();
        bf_log_emit(BF_INFO, "%s", full);
        buf = s_capture_end(&len);
        s_check_truncated(buf, len, full);
        free(buf);
    }

    /* characters that expand when escaped: the cut never splits an escape */
    for (int shift = 0; shift < 6; shift++) {
        size_t n = 0;
        for (int i = 0; i < shift; i++) full[n++] = 'y';
        for (size_t i = 0; i < 3000; i++) full[n++] = (i % 2) ? '\x01' : '"';
        full[n] = '\0';
        s_capture_start();
        bf_log_emit(BF_INFO, "%s", full);
        buf = s_capture_end(&len);
        json_t *o = s_single(buf, len);
        ASSERT(o != NULL);
        if (o) {
            const char *m = s_get_str(o, "msg");
            ASSERT(m && strlen(m) > 300 && strncmp(m, full, strlen(m)) == 0);
            json_decref(o);
        }
        free(buf);
    }

    /* a long request id and a long message together */
    char *req = malloc(5000);
    ASSERT(req != NULL);
    if (req) {
        memset(req, 'r', 4999);
        req[4999] = '\0';
        memset(full, 'm', big);
        full[big] = '\0';
        bf_log_set_request(req);
        s_capture_start();
        bf_log_emit(BF_INFO, "%s", full);
        buf = s_capture_end(&len);
        bf_log_set_request(NULL);
        json_t *o = s_single(buf, len);
        ASSERT(o != NULL);
        if (o) json_decref(o);
        free(buf);
        free(req);
    }
    free(full);
}

enum { THREADS = 8, LINES_PER_THREAD = 300 };

static void *s_thread_spam(void *arg)
{
    long k = (long)arg;
    char pad[1500];
    memset(pad, 'a' + (int)k, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++) bf_log_emit(BF_INFO, "t%ld n%d %s", k, i, pad);
    return NULL;
}

static void test_threads_never_interleave(void)
{
    bf_log_init("test_log", BF_DEBUG);
    /* O_APPEND: each write(2) lands whole at the end, as on a pipe or journal */
    char path[] = "/tmp/bf_test_log_XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    if (fd < 0) return;
    unlink(path);
    fcntl(fd, F_SETFL, O_APPEND);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    pthread_t t[THREADS];
    for (long k = 0; k < THREADS; k++) pthread_create(&t[k], NULL, s_thread_spam, (void *)k);
    for (int k = 0; k < THREADS; k++) pthread_join(t[k], NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *buf = malloc((size_t)size + 1);
    ssize_t got = buf ? pread(fd, buf, (size_t)size, 0) : -1;
    close(fd);
    ASSERT(got == size);
    if (got != size) {
        free(buf);
        return;
    }
    buf[got] = '\0';
    ASSERT_EQ(s_count_lines(buf), THREADS * LINES_PER_THREAD);
    int bad = 0, seen[THREADS] = {0};
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl) break;
        json_t *o = s_parse_line(p, (size_t)(nl - p));
        if (!o) {
            bad++;
        } else {
            long k;
            int i;
            const char *m = s_get_str(o, "msg");
            if (m && sscanf(m, "t%ld n%d", &k, &i) == 2 && k >= 0 && k < THREADS) seen[k]++;
            json_decref(o);
        }
        p = nl + 1;
    }
    ASSERT_EQ(bad, 0);
    for (int k = 0; k < THREADS; k++) ASSERT_EQ(seen[k], LINES_PER_THREAD);
    free(buf);
}

int main(void)
{
    RUN(one_valid_line_per_call);
    RUN(request_id);
    RUN(request_id_is_per_thread);
    RUN(escaping);
    RUN(invalid_utf8_stays_valid_json);
    RUN(level_filtering);
    RUN(level_parse);
    RUN(long_messages_truncated);
    RUN(threads_never_interleave);
    return TEST_REPORT();
}
