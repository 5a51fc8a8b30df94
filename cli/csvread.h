/* csvread: reads CSV records from a stream of any size, in UTF-8 or GBK.
 *
 * What Chinese spreadsheet software writes when asked for "CSV" is usually
 * GBK (strictly GB18030 on current systems); "CSV UTF-8" adds a byte order
 * mark. This module turns either into UTF-8 records, one at a time, holding
 * only the current chunk of input and the current record in memory:
 *
 *   bytes --(iconv GB18030 -> UTF-8, or UTF-8 as is)--> lines --(libcsv)--> records
 *
 * Parsing is Debian's libcsv in strict mode: fields separated by ',', quoted
 * with '"' ("" inside quotes is one quote), quoted fields may hold commas and
 * newlines, records end at LF, CRLF or a lone CR. Unquoted fields lose their
 * leading and trailing spaces and tabs. Blank lines are skipped.
 *
 * Every record carries the line number on which it starts (1-based, counting
 * LF, CRLF and lone CR each as one line end), so an error can point a person
 * at the row in their spreadsheet.
 *
 * Bad input never stops the reading, it marks the record: a field longer
 * than CSVREAD_MAX_FIELD bytes, more than CSVREAD_MAX_FIELDS fields, a stray
 * quote inside an unquoted field or text after a closing quote, an unterminated
 * quoted field at the end of the input. Such a record is returned with
 * `error` set (and possibly incomplete fields); reading goes on with the next
 * line. Bytes that are not valid in the input encoding reach the fields as an
 * 0xFF byte (never valid UTF-8), so whoever checks the text with
 * bf_valid_utf8() rejects that record and only that record.
 *
 * Encoding detection (CSVREAD_AUTO): a UTF-8 byte order mark means UTF-8
 * (the mark is dropped). Otherwise ASCII passes through undecided until the
 * first non-ASCII byte; the buffered input from there (up to a chunk) decides:
 * valid UTF-8 (a sequence cut by the chunk's end allowed) means UTF-8, anything
 * else GBK. A UTF-16 byte order mark is refused (Excel's "Unicode text" is
 * not CSV).
 *
 * Not thread-safe; one reader per thread. Returned records are borrowed and
 * valid until the next csvread_next() or csvread_destroy().
 */
#ifndef CSVREAD_H
#define CSVREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Longest field accepted, in bytes of UTF-8 (the RPC string limit). */
#define CSVREAD_MAX_FIELD 65536
/* Most fields in one record. */
#define CSVREAD_MAX_FIELDS 256

typedef enum { CSVREAD_AUTO = 0, CSVREAD_UTF8, CSVREAD_GBK } csvread_enc_t;

typedef struct csvread csvread_t;

typedef struct {
    long line;                 /* line the record starts on, 1-based */
    size_t nfields;
    const char *const *fields; /* each NUL-terminated, UTF-8 unless invalid */
    const size_t *lens;        /* byte lengths (fields may hold NUL bytes) */
    const char *error;         /* NULL, or why the record is malformed (static) */
} csvread_record_t;

/* Parses "auto", "utf-8" / "utf8", "gbk" / "gb18030" / "gb2312". Returns 0, or
 * -1 for anything else. */
int csvread_enc_parse(const char *name, csvread_enc_t *out);

/* A reader of in (borrowed: the caller closes it after csvread_destroy).
 * Returns NULL if memory runs out or iconv lacks GB18030 (message in err). */
csvread_t *csvread_new(FILE *in, csvread_enc_t enc, char *err, size_t errlen);

/* Frees the reader (iconv, libcsv, buffers); NULLs *self_p; safe on NULL. */
void csvread_destroy(csvread_t **self_p);

/* Reads up to n raw bytes at a time (default 64 KiB); for tests that need a
 * multibyte character or a CRLF cut by a chunk boundary. n >= 1. Call before
 * the first csvread_next(). */
void csvread_set_chunk(csvread_t *r, size_t n);

/* The next record. Returns 1 with *rec set, 0 at the end of the input, -1 if
 * reading failed (an I/O error, or UTF-16 input): the message is in
 * csvread_errmsg() and the reader is done. */
int csvread_next(csvread_t *r, csvread_record_t *rec);

/* Raw input bytes consumed so far (for a progress bar against the file size). */
uint64_t csvread_bytes(const csvread_t *r);

/* The encoding in use: "utf-8", "gbk", or "undecided" (only ASCII seen yet). */
const char *csvread_encoding(const csvread_t *r);

/* Why csvread_next() returned -1 ("" otherwise); borrowed. */
const char *csvread_errmsg(const csvread_t *r);

#endif
