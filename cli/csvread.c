/* csvread: streaming CSV reader with UTF-8 / GBK input; see csvread.h.
 *
 * Three stages, each holding at most a chunk of data:
 *   raw    bytes from the file (plus a multibyte sequence cut by the last read)
 *   text   the same bytes as UTF-8 (iconv for GBK), not yet given to libcsv
 *   record the fields of the record libcsv is building
 * Text goes to libcsv one line at a time (a "segment" ends at LF, CRLF or a
 * lone CR; a line longer than what is buffered goes in several segments).
 * That is how records get their line numbers without reaching into libcsv's
 * state: a record starts on the first line that has content while no record
 * is open, and libcsv ends a record only at a line end, i.e. at the end of a
 * segment. A parse error (strict mode) or a field over the size cap makes
 * libcsv stop inside a segment; the record is then marked, the parser is
 * re-made and the rest of that physical line is skipped, so one bad line
 * never costs more than itself.
 */
#include "csvread.h"

#include <csv.h>
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bf_valid.h"

#define S_DEFAULT_CHUNK (64 * 1024)
/* libcsv's entry buffer may grow to this; a field that needs more stops the
 * parser (ENOMEM), one between MAX_FIELD and this is caught in s_on_field. The
 * slack leaves room for a closing quote and trailing blanks that libcsv
 * stores before trimming them. */
#define S_ENTRY_CAP (CSVREAD_MAX_FIELD + 4096)
/* Bytes after the first non-ASCII one that auto-detection looks at. */
#define S_SNIFF 4096

#define S_OPTIONS (CSV_STRICT | CSV_STRICT_FINI)

enum { S_UNDECIDED = 0, S_UTF8, S_GBK };

struct csvread {
    FILE *in;
    int enc;          /* S_UNDECIDED / S_UTF8 / S_GBK */
    bool auto_detect; /* enc may still change from S_UNDECIDED */
    iconv_t cd;       /* (iconv_t)-1 unless GBK */
    size_t chunk;
    bool eof, started, done, failed;
    uint64_t bytes;

    char *raw; /* unconverted input */
    size_t raw_len, raw_cap;

    char *text; /* UTF-8 not yet parsed: text[text_off..text_len) */
    size_t text_off, text_len, text_cap;

    struct csv_parser csv;
    long line;         /* line of the next segment */
    bool between_rows; /* no record open */
    bool skip_to_eol;  /* dropping the rest of a line after an error */

    char *rec_buf; /* the record's fields, each followed by a NUL */
    size_t rec_len, rec_cap;
    size_t nfields;
    size_t offs[CSVREAD_MAX_FIELDS];
    size_t lens[CSVREAD_MAX_FIELDS];
    const char *ptrs[CSVREAD_MAX_FIELDS];
    long rec_line;
    const char *rec_error;
    bool rec_ready;   /* a complete record waits for csvread_next */
    bool rec_handed;  /* the last one was returned: clear it first */

    char errmsg[256];
};

int csvread_enc_parse(const char *name, csvread_enc_t *out)
{
    if (!strcasecmp(name, "auto")) {
        *out = CSVREAD_AUTO;
    } else if (!strcasecmp(name, "utf-8") || !strcasecmp(name, "utf8")) {
        *out = CSVREAD_UTF8;
    } else if (!strcasecmp(name, "gbk") || !strcasecmp(name, "gb18030") ||
               !strcasecmp(name, "gb2312") || !strcasecmp(name, "cp936")) {
        *out = CSVREAD_GBK;
    } else {
        return -1;
    }
    return 0;
}

/* libcsv has no per-parser context for its allocator; the cap is a constant,
 * so none is needed. Refusing to grow is how an endless field is stopped. */
static void *s_capped_realloc(void *p, size_t n)
{
    if (n > S_ENTRY_CAP) return NULL;
    return realloc(p, n);
}

static int s_csv_init(csvread_t *r)
{
    if (csv_init(&r->csv, S_OPTIONS) != 0) return -1;
    csv_set_realloc_func(&r->csv, s_capped_realloc);
    csv_set_blk_size(&r->csv, 4096);
    return 0;
}

static int s_open_iconv(csvread_t *r)
{
    r->cd = iconv_open("UTF-8", "GB18030");
    return r->cd == (iconv_t)-1 ? -1 : 0;
}

csvread_t *csvread_new(FILE *in, csvread_enc_t enc, char *err, size_t errlen)
{
    csvread_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->in = in;
    r->cd = (iconv_t)-1;
    r->chunk = S_DEFAULT_CHUNK;
    r->line = 1;
    r->between_rows = true;
    r->auto_detect = enc == CSVREAD_AUTO;
    r->enc = enc == CSVREAD_UTF8 ? S_UTF8 : enc == CSVREAD_GBK ? S_GBK : S_UNDECIDED;
    if (r->enc == S_GBK && s_open_iconv(r) != 0) {
        snprintf(err, errlen, "iconv cannot convert GB18030 to UTF-8: %s", strerror(errno));
        free(r);
        return NULL;
    }
    s_csv_init(r);
    return r;
}

void csvread_destroy(csvread_t **self_p)
{
    if (!self_p || !*self_p) return;
    csvread_t *r = *self_p;
    if (r->cd != (iconv_t)-1) iconv_close(r->cd);
    csv_free(&r->csv);
    free(r->raw);
    free(r->text);
    free(r->rec_buf);
    free(r);
    *self_p = NULL;
}

void csvread_set_chunk(csvread_t *r, size_t n)
{
    r->chunk = n ? n : 1;
}

uint64_t csvread_bytes(const csvread_t *r)
{
    return r->bytes;
}

const char *csvread_encoding(const csvread_t *r)
{
    return r->enc == S_UTF8 ? "utf-8" : r->enc == S_GBK ? "gbk" : "undecided";
}

const char *csvread_errmsg(const csvread_t *r)
{
    return r->errmsg;
}

static int s_fail(csvread_t *r, const char *msg)
{
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
    r->failed = true;
    return -1;
}

/* Makes room for n more bytes at the end of a buffer. */
static int s_reserve(char **buf, size_t *cap, size_t len, size_t n)
{
    if (len + n <= *cap) return 0;
    size_t want = *cap ? *cap : 256;
    while (want < len + n) want *= 2;
    char *p = realloc(*buf, want);
    if (!p) return -1;
    *buf = p;
    *cap = want;
    return 0;
}

/* ---- the record being built (libcsv callbacks) ---------------------------- */

static void s_rec_begin(csvread_t *r)
{
    r->rec_line = r->line;
    r->nfields = 0;
    r->rec_len = 0;
    r->rec_error = NULL;
}

static void s_on_field(void *s, size_t len, void *data)
{
    csvread_t *r = data;
    if (r->rec_error) return; /* the record is lost anyway: keep nothing more */
    if (r->nfields == CSVREAD_MAX_FIELDS) {
        r->rec_error = "more than 256 fields";
        return;
    }
    if (len > CSVREAD_MAX_FIELD) {
        r->rec_error = "a field is longer than 65536 bytes";
        return;
    }
    if (s_reserve(&r->rec_buf, &r->rec_cap, r->rec_len, len + 1) != 0) {
        r->rec_error = "out of memory";
        return;
    }
    if (len) memcpy(r->rec_buf + r->rec_len, s, len);
    r->rec_buf[r->rec_len + len] = '\0';
    r->offs[r->nfields] = r->rec_len;
    r->lens[r->nfields] = len;
    r->nfields++;
    r->rec_len += len + 1;
}

static void s_on_record(int c, void *data)
{
    (void)c;
    csvread_t *r = data;
    r->rec_ready = true;
    r->between_rows = true;
}

/* ---- text -> records ------------------------------------------------------ */

static bool s_has_content(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return true;
    return false;
}

/* Gives one segment to libcsv. ends_line: it ends with a line end. */
static void s_feed(csvread_t *r, const char *seg, size_t n, bool ends_line)
{
    if (r->skip_to_eol) {
        if (ends_line) {
            r->skip_to_eol = false;
            r->line++;
        }
        return;
    }
    if (r->between_rows && s_has_content(seg, n)) {
        r->between_rows = false;
        s_rec_begin(r);
    }
    size_t used = csv_parse(&r->csv, seg, n, s_on_field, s_on_record, r);
    if (used < n) {
        int status = csv_error(&r->csv);
        if (!r->rec_error)
            r->rec_error = status == CSV_EPARSE
                               ? "malformed quoting (a quote inside an unquoted field, or "
                                 "text after a closing quote)"
                               : "a field is longer than 65536 bytes";
        csv_free(&r->csv);
        s_csv_init(r);
        r->rec_ready = true;
        r->between_rows = true;
        if (!ends_line) r->skip_to_eol = true;
    }
    if (ends_line) r->line++;
}

/* Feeds the next segment of pending text. Returns 1 if one was fed, 0 if
 * more input is needed first (or, at EOF, nothing is left). */
static int s_next_segment(csvread_t *r)
{
    size_t n = r->text_len - r->text_off;
    if (n == 0) return 0; /* text may still be NULL: no pointer arithmetic on it */
    const char *t = r->text + r->text_off;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\n') {
            r->text_off += i + 1;
            s_feed(r, t, i + 1, true);
            return 1;
        }
        if (t[i] == '\r') {
            if (i + 1 < n) {
                size_t len = t[i + 1] == '\n' ? i + 2 : i + 1;
                r->text_off += len;
                s_feed(r, t, len, true);
                return 1;
            }
            if (r->eof) {
                r->text_off += i + 1;
                s_feed(r, t, i + 1, true);
                return 1;
            }
            /* a CR at the end: is it CRLF? Feed what comes before it. */
            if (i == 0) return 0;
            r->text_off += i;
            s_feed(r, t, i, false);
            return 1;
        }
    }
    r->text_off += n;
    s_feed(r, t, n, false);
    return 1;
}

/* ---- raw -> text ---------------------------------------------------------- */

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence (a lead byte whose continuation bytes are not all there yet). */
static size_t s_utf8_complete(const unsigned char *s, size_t n)
{
    size_t back = n < 3 ? n : 3;
    for (size_t k = 1; k <= back; k++) {
        unsigned char c = s[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? n - k : n;
    }
    return n;
}

static void s_text_compact(csvread_t *r)
{
    if (r->text_off == 0) return;
    memmove(r->text, r->text + r->text_off, r->text_len - r->text_off);
    r->text_len -= r->text_off;
    r->text_off = 0;
}

static int s_text_append(csvread_t *r, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (s_reserve(&r->text, &r->text_cap, r->text_len, n) != 0) return -1;
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    return 0;
}

static void s_raw_consume(csvread_t *r, size_t n)
{
    if (n == 0) return;
    memmove(r->raw, r->raw + n, r->raw_len - n);
    r->raw_len -= n;
}

/* Converts GB18030 raw bytes to text. Bytes of a sequence cut by the end of
 * the read stay in raw; invalid ones become 0xFF. */
static int s_convert_gbk(csvread_t *r)
{
    char *in = r->raw;
    size_t inleft = r->raw_len;
    while (inleft > 0) {
        /* GB18030 -> UTF-8 at most doubles (2 bytes -> 3, 4 -> 4, 1 -> 1) */
        if (s_reserve(&r->text, &r->text_cap, r->text_len, inleft * 2 + 16) != 0) return -1;
        char *out = r->text + r->text_len;
        size_t outleft = r->text_cap - r->text_len;
        size_t rc = iconv(r->cd, &in, &inleft, &out, &outleft);
        r->text_len = (size_t)(out - r->text);
        if (rc != (size_t)-1) break;
        if (errno == E2BIG) continue;
        if (errno == EINVAL && !r->eof) break; /* cut sequence: wait for more */
        /* EILSEQ, or a cut sequence at the very end: mark one byte, go on.
         * Only one byte is skipped so that an ASCII ',' or '\n' that follows
         * an invalid lead byte still counts. */
        if (s_reserve(&r->text, &r->text_cap, r->text_len, 1) != 0) return -1;
        r->text[r->text_len++] = (char)0xFF;
        in++;
        inleft--;
    }
    s_raw_consume(r, r->raw_len - inleft);
    return 0;
}

/* Moves what raw holds into text, deciding the encoding when needed. Returns
 * 0, 1 if more raw input is needed to decide, -1 on failure. */
static int s_convert(csvread_t *r)
{
    if (!r->started) {
        const unsigned char *u = (const unsigned char *)r->raw;
        if (r->raw_len < 3 && !r->eof) return 1;
        r->started = true;
        if (r->raw_len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF)))
            return s_fail(r, "the file is UTF-16 (Excel \"Unicode text\"); save it as "
                             "\"CSV UTF-8\" or plain CSV");
        if (r->raw_len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF &&
            r->enc != S_GBK) {
            s_raw_consume(r, 3);
            r->enc = S_UTF8;
        }
    }
    if (r->enc == S_UNDECIDED) {
        size_t i = 0;
        while (i < r->raw_len && !((unsigned char)r->raw[i] & 0x80)) i++;
        if (i == r->raw_len) { /* all ASCII: the same either way */
            if (s_text_append(r, r->raw, i) != 0) return s_fail(r, "out of memory");
            r->raw_len = 0;
            return 0;
        }
        size_t window = r->raw_len - i;
        if (window < S_SNIFF && !r->eof) {
            /* pass the ASCII on now; keep the rest until the window fills */
            if (s_text_append(r, r->raw, i) != 0) return s_fail(r, "out of memory");
            s_raw_consume(r, i);
            return 1;
        }
        const unsigned char *w = (const unsigned char *)r->raw + i;
        size_t check = r->eof ? window : s_utf8_complete(w, window);
        r->enc = bf_valid_utf8((const char *)w, check) ? S_UTF8 : S_GBK;
        if (r->enc == S_GBK && s_open_iconv(r) != 0)
            return s_fail(r, "iconv cannot convert GB18030 to UTF-8");
    }
    if (r->enc == S_UTF8) {
        if (s_text_append(r, r->raw, r->raw_len) != 0) return s_fail(r, "out of memory");
        r->raw_len = 0;
        return 0;
    }
    if (s_convert_gbk(r) != 0) return s_fail(r, "out of memory");
    return 0;
}

/* Reads one chunk into raw and converts what it can. -1 on failure. */
static int s_read_more(csvread_t *r)
{
    s_text_compact(r);
    for (;;) {
        if (s_reserve(&r->raw, &r->raw_cap, r->raw_len, r->chunk) != 0)
            return s_fail(r, "out of memory");
        size_t got = fread(r->raw + r->raw_len, 1, r->chunk, r->in);
        r->raw_len += got;
        r->bytes += got;
        if (got < r->chunk) {
            if (ferror(r->in)) {
                char msg[200];
                snprintf(msg, sizeof msg, "read error: %s", strerror(errno));
                return s_fail(r, msg);
            }
            r->eof = feof(r->in) != 0;
        }
        int rc = s_convert(r);
        if (rc <= 0) return rc; /* 1: undecided, read on (never at EOF) */
    }
}

static void s_hand_out(csvread_t *r, csvread_record_t *rec)
{
    for (size_t i = 0; i < r->nfields; i++) r->ptrs[i] = r->rec_buf + r->offs[i];
    rec->line = r->rec_line;
    rec->nfields = r->nfields;
    rec->fields = r->ptrs;
    rec->lens = r->lens;
    rec->error = r->rec_error;
    r->rec_ready = false;
    r->rec_handed = true;
}

int csvread_next(csvread_t *r, csvread_record_t *rec)
{
    if (r->failed) return -1;
    if (r->rec_handed) {
        r->rec_handed = false;
        r->nfields = 0;
        r->rec_len = 0;
        r->rec_error = NULL;
    }
    for (;;) {
        if (r->rec_ready) {
            s_hand_out(r, rec);
            return 1;
        }
        if (r->done) return 0;
        if (s_next_segment(r)) continue;
        if (!r->eof) {
            if (s_read_more(r) != 0) return -1;
            continue;
        }
        /* end of input: whatever record is open ends here */
        r->done = true;
        if (csv_fini(&r->csv, s_on_field, s_on_record, r) != 0) {
            if (!r->rec_error) r->rec_error = "unterminated quoted field (runs to the end of the file)";
            r->rec_ready = true;
        }
    }
}
