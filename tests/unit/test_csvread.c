/* test_csvread.c: unit tests for cli/csvread (the CLI's streaming CSV reader:
 * UTF-8 / GBK input, byte order marks, quoting, CRLF, embedded newlines, line
 * numbers, bounded fields, recovery after a bad line).
 *
 * The module lives in cli/ and the Makefile links unit tests against
 * libbangfu.a only, so the source is included here. Most inputs are read
 * several times with different chunk sizes (1, 2, 3, 5, 7 bytes and the
 * default), so a multibyte character, a CRLF or a quoted newline cut by a
 * read boundary is exercised on every case. Inputs come from fmemopen().
 */
#include "bf_test.h"

#include "../../cli/csvread.c"

#include <iconv.h>

static const size_t s_chunks[] = {1, 2, 3, 5, 7, 0};
#define NCHUNKS (sizeof s_chunks / sizeof s_chunks[0])

/* One record as read, for comparisons after the reader is gone. */
typedef struct {
    long line;
    int nfields;
    char fields[8][256];
    size_t lens[8];
    char error[128];
} rec_t;

/* Reads all of data[0..len) with the given encoding and chunk (0 = default)
 * into recs (up to max); returns the count, or -1 if csvread_next failed
 * (then errmsg holds the message). enc_out gets the encoding name. */
static int s_read_all(const char *data, size_t len, csvread_enc_t enc, size_t chunk, rec_t *recs,
                      int max, char *enc_out, char *errmsg)
{
    FILE *f = fmemopen((void *)data, len, "r");
    if (!f) return -2;
    char err[256];
    csvread_t *r = csvread_new(f, enc, err, sizeof err);
    if (!r) {
        fclose(f);
        return -2;
    }
    if (chunk) csvread_set_chunk(r, chunk);
    int n = 0, rc;
    csvread_record_t rec;
    while ((rc = csvread_next(r, &rec)) == 1) {
        if (n < max) {
            rec_t *o = &recs[n];
            memset(o, 0, sizeof *o);
            o->line = rec.line;
            o->nfields = (int)rec.nfields;
            for (size_t i = 0; i < rec.nfields && i < 8; i++) {
                snprintf(o->fields[i], sizeof o->fields[i], "%s", rec.fields[i]);
                o->lens[i] = rec.lens[i];
            }
            snprintf(o->error, sizeof o->error, "%s", rec.error ? rec.error : "");
        }
        n++;
    }
    if (enc_out) snprintf(enc_out, 16, "%s", csvread_encoding(r));
    if (rc < 0) {
        if (errmsg) snprintf(errmsg, 256, "%s", csvread_errmsg(r));
        n = -1;
    }
    ASSERT_EQ(csvread_bytes(r), rc < 0 ? csvread_bytes(r) : len);
    csvread_destroy(&r);
    ASSERT(r == NULL);
    fclose(f);
    return n;
}

/* UTF-8 -> GB18030 with iconv, into a malloc'd buffer. */
static char *s_to_gbk(const char *utf8, size_t *outlen)
{
    iconv_t cd = iconv_open("GB18030", "UTF-8");
    if (cd == (iconv_t)-1) return NULL;
    size_t inleft = strlen(utf8), cap = inleft * 2 + 16, outleft = cap;
    char *buf = malloc(cap), *out = buf, *in = (char *)utf8;
    if (!buf || iconv(cd, &in, &inleft, &out, &outleft) == (size_t)-1) {
        free(buf);
        iconv_close(cd);
        return NULL;
    }
    iconv_close(cd);
    *outlen = cap - outleft;
    return buf;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_plain_rows_and_line_numbers(void)
{
    const char *csv = "household_ref,name,relation\n"
                      "H1,Zhang San,head\n"
                      "\n"
                      "H1, Li Si ,spouse\n"
                      "H2,Wang,head";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[8];
        char enc[16];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 8, enc, NULL);
        ASSERT_EQ(n, 4);
        ASSERT_EQ(recs[0].line, 1);
        ASSERT_EQ(recs[0].nfields, 3);
        ASSERT_STR_EQ(recs[0].fields[0], "household_ref");
        ASSERT_EQ(recs[1].line, 2);
        ASSERT_STR_EQ(recs[1].fields[1], "Zhang San");
        ASSERT_EQ(recs[2].line, 4); /* the blank line 3 is skipped but counted */
        ASSERT_STR_EQ(recs[2].fields[1], "Li Si"); /* unquoted: blanks trimmed */
        ASSERT_EQ(recs[3].line, 5);                /* no final newline */
        ASSERT_STR_EQ(recs[3].fields[2], "head");
        ASSERT_STR_EQ(recs[3].error, "");
        ASSERT_STR_EQ(enc, "undecided"); /* ASCII only */
    }
}

static void test_quotes_commas_and_embedded_newlines(void)
{
    const char *csv = "a,b,c\n"
                      "\"x, y\",\"say \"\"hi\"\"\",\"line1\nline2\nline3\"\n"
                      "next,\"\",\"  kept  \"\n";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[4];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 4, NULL, NULL);
        ASSERT_EQ(n, 3);
        ASSERT_STR_EQ(recs[1].fields[0], "x, y");
        ASSERT_STR_EQ(recs[1].fields[1], "say \"hi\"");
        ASSERT_STR_EQ(recs[1].fields[2], "line1\nline2\nline3");
        ASSERT_EQ(recs[1].line, 2);
        ASSERT_EQ(recs[2].line, 5); /* the quoted newlines took lines 3 and 4 */
        ASSERT_STR_EQ(recs[2].fields[1], "");
        ASSERT_STR_EQ(recs[2].fields[2], "  kept  "); /* quoted: blanks kept */
    }
}

static void test_crlf_and_lone_cr(void)
{
    const char *crlf = "a,b\r\n1,2\r\n\r\n\"q\r\nr\",3\r\nlast,4\r\n";
    const char *cr = "a,b\r1,2\r\rlast,4\r";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[8];
        int n = s_read_all(crlf, strlen(crlf), CSVREAD_AUTO, s_chunks[c], recs, 8, NULL, NULL);
        ASSERT_EQ(n, 4);
        ASSERT_STR_EQ(recs[1].fields[1], "2"); /* no CR left in the field */
        ASSERT_EQ(recs[1].lens[1], 1);
        ASSERT_EQ(recs[2].line, 4);
        ASSERT_STR_EQ(recs[2].fields[0], "q\r\nr"); /* quoted line end kept as is */
        ASSERT_EQ(recs[3].line, 6);
        ASSERT_STR_EQ(recs[3].fields[0], "last");

        n = s_read_all(cr, strlen(cr), CSVREAD_AUTO, s_chunks[c], recs, 8, NULL, NULL);
        ASSERT_EQ(n, 3);
        ASSERT_EQ(recs[1].line, 2);
        ASSERT_EQ(recs[2].line, 4);
        ASSERT_STR_EQ(recs[2].fields[1], "4");
    }
}

static void test_utf8_bom_is_dropped(void)
{
    const char *csv = "\xEF\xBB\xBF户编号,姓名\nH1,张三\n";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[4];
        char enc[16];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 4, enc, NULL);
        ASSERT_EQ(n, 2);
        ASSERT_STR_EQ(recs[0].fields[0], "户编号");
        ASSERT_STR_EQ(recs[1].fields[1], "张三");
        ASSERT_STR_EQ(enc, "utf-8");
        /* forced UTF-8 drops it too */
        n = s_read_all(csv, strlen(csv), CSVREAD_UTF8, s_chunks[c], recs, 4, enc, NULL);
        ASSERT_STR_EQ(recs[0].fields[0], "户编号");
    }
}

static void test_utf8_without_bom_is_detected(void)
{
    const char *csv = "ref,name\nH1,\"欧阳, 娜娜\"\nH2,李四\n";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[4];
        char enc[16];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 4, enc, NULL);
        ASSERT_EQ(n, 3);
        ASSERT_STR_EQ(enc, "utf-8");
        ASSERT_STR_EQ(recs[1].fields[1], "欧阳, 娜娜");
        ASSERT_STR_EQ(recs[2].fields[1], "李四");
    }
}

static void test_gbk_is_detected_and_converted(void)
{
    const char *utf8 = "户编号,姓名,与户主关系,帮扶路径\r\n"
                       "H1,张三,户主,就业\r\n"
                       "H1,\"王 小红, 二\",配偶,就业\r\n"
                       "H2,欧阳娜娜,户主,\"兜底\n备注\"\r\n";
    size_t len;
    char *gbk = s_to_gbk(utf8, &len);
    ASSERT(gbk != NULL);
    if (!gbk) return;
    ASSERT(!bf_valid_utf8(gbk, len)); /* the input really is not UTF-8 */
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[8];
        char enc[16];
        int n = s_read_all(gbk, len, CSVREAD_AUTO, s_chunks[c], recs, 8, enc, NULL);
        ASSERT_EQ(n, 4);
        ASSERT_STR_EQ(enc, "gbk");
        ASSERT_STR_EQ(recs[0].fields[0], "户编号");
        ASSERT_STR_EQ(recs[0].fields[3], "帮扶路径");
        ASSERT_STR_EQ(recs[1].fields[1], "张三");
        ASSERT_STR_EQ(recs[2].fields[1], "王 小红, 二");
        ASSERT_STR_EQ(recs[3].fields[3], "兜底\n备注");
        ASSERT_EQ(recs[3].line, 4);
        /* forced gbk reads the same */
        n = s_read_all(gbk, len, CSVREAD_GBK, s_chunks[c], recs, 8, enc, NULL);
        ASSERT_EQ(n, 4);
        ASSERT_STR_EQ(recs[2].fields[2], "配偶");
        /* forced utf-8 passes the bytes on: the fields are not valid UTF-8 */
        n = s_read_all(gbk, len, CSVREAD_UTF8, s_chunks[c], recs, 8, enc, NULL);
        ASSERT_EQ(n, 4);
        ASSERT(!bf_valid_utf8(recs[1].fields[1], strlen(recs[1].fields[1])));
    }
    free(gbk);
}

static void test_gbk_after_a_long_ascii_start(void)
{
    /* the first non-ASCII byte comes after several default-sized chunks */
    size_t pad = 200000;
    const char *tail_utf8 = "H9,张三\n";
    size_t tlen;
    char *tail = s_to_gbk(tail_utf8, &tlen);
    ASSERT(tail != NULL);
    if (!tail) return;
    char *csv = malloc(pad + tlen);
    memcpy(csv, "ref,name\n", 9);
    size_t pos = 9;
    int rows = 0;
    while (pos + 16 < pad) {
        pos += (size_t)sprintf(csv + pos, "R%06d,abc\n", rows);
        rows++;
    }
    memcpy(csv + pos, tail, tlen);
    rec_t *recs = calloc((size_t)rows + 4, sizeof *recs);
    char enc[16];
    int n = s_read_all(csv, pos + tlen, CSVREAD_AUTO, 0, recs, rows + 4, enc, NULL);
    ASSERT_EQ(n, rows + 2);
    ASSERT_STR_EQ(enc, "gbk");
    ASSERT_STR_EQ(recs[rows + 1].fields[1], "张三");
    ASSERT_EQ(recs[rows + 1].line, rows + 2);
    free(recs);
    free(csv);
    free(tail);
}

static void test_invalid_gbk_bytes_mark_only_their_record(void)
{
    /* 0x81 0x2C is not GB18030 (second byte out of range): the ',' must still
     * separate fields; 0xFF is never valid. */
    const char csv[] = "ref,name\n"
                       "H1,\xD5\xC5\xC8\xFD\n" /* 张三 */
                       "H2,a\x81,b\n"
                       "H3,\xFF\xD5\xC5\n"
                       "H4,\xC0\xEE\xCB\xC4\n"; /* 李四 */
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[8];
        char enc[16];
        int n = s_read_all(csv, sizeof csv - 1, CSVREAD_GBK, s_chunks[c], recs, 8, enc, NULL);
        ASSERT_EQ(n, 5);
        ASSERT_STR_EQ(recs[1].fields[1], "张三");
        ASSERT_EQ(recs[2].nfields, 3);
        ASSERT(!bf_valid_utf8(recs[2].fields[1], strlen(recs[2].fields[1])));
        ASSERT_STR_EQ(recs[2].fields[2], "b");
        ASSERT(!bf_valid_utf8(recs[3].fields[1], strlen(recs[3].fields[1])));
        ASSERT_STR_EQ(recs[4].fields[1], "李四");
        ASSERT_EQ(recs[4].line, 5);
    }
}

static void test_field_over_64k_rejects_that_record_only(void)
{
    for (int quoted = 0; quoted < 2; quoted++) {
        size_t big = CSVREAD_MAX_FIELD + 10000;
        char *csv = malloc(big + 100);
        size_t pos = (size_t)sprintf(csv, "a,b\nH1,ok\nH2,%s", quoted ? "\"" : "");
        memset(csv + pos, 'x', big);
        pos += big;
        pos += (size_t)sprintf(csv + pos, "%s,tail\nH3,fine\n", quoted ? "\"" : "");
        for (size_t c = 0; c < NCHUNKS; c++) {
            if (s_chunks[c] && s_chunks[c] < 5) continue; /* slow, and nothing new */
            rec_t recs[8];
            int n = s_read_all(csv, pos, CSVREAD_AUTO, s_chunks[c], recs, 8, NULL, NULL);
            ASSERT_EQ(n, 4);
            ASSERT_STR_EQ(recs[1].error, "");
            ASSERT_EQ(recs[2].line, 3);
            ASSERT(strstr(recs[2].error, "longer than 65536") != NULL);
            ASSERT_EQ(recs[3].line, 4);
            ASSERT_STR_EQ(recs[3].fields[0], "H3");
            ASSERT_STR_EQ(recs[3].error, "");
        }
        free(csv);
    }
    /* exactly the limit is fine */
    char *csv = malloc(CSVREAD_MAX_FIELD + 16);
    memcpy(csv, "a\n", 2);
    memset(csv + 2, 'y', CSVREAD_MAX_FIELD);
    csv[CSVREAD_MAX_FIELD + 2] = '\n';
    rec_t recs[2];
    int n = s_read_all(csv, CSVREAD_MAX_FIELD + 3, CSVREAD_AUTO, 0, recs, 2, NULL, NULL);
    ASSERT_EQ(n, 2);
    ASSERT_STR_EQ(recs[1].error, "");
    ASSERT_EQ(recs[1].lens[0], CSVREAD_MAX_FIELD);
    free(csv);
}

static void test_malformed_quotes_reject_the_line_and_reading_goes_on(void)
{
    const char *csv = "a,b\n"
                      "ab\"c,1\n"        /* quote inside an unquoted field */
                      "\"closed\"x,2\n"  /* text after a closing quote */
                      "ok,3\n";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[8];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 8, NULL, NULL);
        ASSERT_EQ(n, 4);
        ASSERT_EQ(recs[1].line, 2);
        ASSERT(strstr(recs[1].error, "quot") != NULL);
        ASSERT_EQ(recs[2].line, 3);
        ASSERT(strstr(recs[2].error, "quot") != NULL);
        ASSERT_EQ(recs[3].line, 4);
        ASSERT_STR_EQ(recs[3].error, "");
        ASSERT_STR_EQ(recs[3].fields[1], "3");
    }
}

static void test_unterminated_quote_at_end(void)
{
    const char *csv = "a,b\nH1,\"never closed\nstill in it\n";
    for (size_t c = 0; c < NCHUNKS; c++) {
        rec_t recs[4];
        int n = s_read_all(csv, strlen(csv), CSVREAD_AUTO, s_chunks[c], recs, 4, NULL, NULL);
        ASSERT_EQ(n, 2);
        ASSERT_EQ(recs[1].line, 2);
        ASSERT(strstr(recs[1].error, "unterminated") != NULL);
    }
}

static void test_too_many_fields(void)
{
    char csv[2048];
    size_t pos = (size_t)sprintf(csv, "a\n");
    for (int i = 0; i < CSVREAD_MAX_FIELDS + 5; i++) pos += (size_t)sprintf(csv + pos, "%d,", i);
    pos += (size_t)sprintf(csv + pos, "\nok\n");
    rec_t recs[4];
    int n = s_read_all(csv, pos, CSVREAD_AUTO, 0, recs, 4, NULL, NULL);
    ASSERT_EQ(n, 3);
    ASSERT(strstr(recs[1].error, "256") != NULL);
    ASSERT_STR_EQ(recs[2].error, "");
    ASSERT_EQ(recs[2].line, 3);
}

static void test_utf16_is_refused_and_empty_input_is_empty(void)
{
    const char utf16[] = "\xFF\xFE" "a\0,\0b\0\n\0";
    char msg[256] = "";
    rec_t recs[2];
    int n = s_read_all(utf16, sizeof utf16 - 1, CSVREAD_AUTO, 0, recs, 2, NULL, msg);
    ASSERT_EQ(n, -1);
    ASSERT(strstr(msg, "UTF-16") != NULL);
    n = s_read_all("", 0, CSVREAD_AUTO, 0, recs, 2, NULL, NULL);
    ASSERT_EQ(n, 0);
    n = s_read_all("\n\r\n  \n", 6, CSVREAD_AUTO, 0, recs, 2, NULL, NULL);
    ASSERT_EQ(n, 0);
}

static void test_encoding_names(void)
{
    csvread_enc_t e;
    ASSERT_EQ(csvread_enc_parse("auto", &e), 0);
    ASSERT_EQ(e, CSVREAD_AUTO);
    ASSERT_EQ(csvread_enc_parse("UTF-8", &e), 0);
    ASSERT_EQ(e, CSVREAD_UTF8);
    ASSERT_EQ(csvread_enc_parse("gb18030", &e), 0);
    ASSERT_EQ(e, CSVREAD_GBK);
    ASSERT_EQ(csvread_enc_parse("latin1", &e), -1);
}

int main(void)
{
    RUN(plain_rows_and_line_numbers);
    RUN(quotes_commas_and_embedded_newlines);
    RUN(crlf_and_lone_cr);
    RUN(utf8_bom_is_dropped);
    RUN(utf8_without_bom_is_detected);
    RUN(gbk_is_detected_and_converted);
    RUN(gbk_after_a_long_ascii_start);
    RUN(invalid_gbk_bytes_mark_only_their_record);
    RUN(field_over_64k_rejects_that_record_only);
    RUN(malformed_quotes_reject_the_line_and_reading_goes_on);
    RUN(unterminated_quote_at_end);
    RUN(too_many_fields);
    RUN(utf16_is_refused_and_empty_input_is_empty);
    RUN(encoding_names);
    return TEST_REPORT();
}
