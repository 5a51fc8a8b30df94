/* bf_log: structured logging, one JSON object per line on stderr.
 *
 * Every line carries time (RFC 3339, UTC, milliseconds), level, service and,
 * when the calling thread is serving a request, that request's id. The level
 * check happens before any formatting (the bf_log macro), as in Redis.
 * Personal ID numbers must never be passed to the logger: callers log ids of
 * entities, never the numbers themselves.
 *
 * Thread-safe: each line is formatted into a local buffer and written with one
 * write(2), so lines from worker threads never interleave.
 */
#ifndef BF_LOG_H
#define BF_LOG_H

typedef enum { BF_DEBUG = 0, BF_INFO = 1, BF_WARN = 2, BF_ERROR = 3 } bf_log_level_t;

extern bf_log_level_t bf_log_min_level;

/* Sets the service name used on every line (borrowed: must outlive the logger)
 * and the minimum level. */
void bf_log_init(const char *service, bf_log_level_t level);

/* Parses "debug" / "info" / "warn" / "error". Returns 0, or -1 if unknown. */
int bf_log_level_parse(const char *s, bf_log_level_t *out);

/* Sets (or clears with NULL) the request id of the calling thread. The string
 * is borrowed and must stay valid until cleared. */
void bf_log_set_request(const char *request_id);

/* Formats and writes one line. Use the bf_log macro, which skips formatting
 * below the minimum level. */
void bf_log_emit(bf_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define bf_log(level, ...)                                                     \
    do {                                                                       \
        if ((level) >= bf_log_min_level) bf_log_emit((level), __VA_ARGS__);    \
    } while (0)

#endif
