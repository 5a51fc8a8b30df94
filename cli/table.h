/* table: aligned text tables for people, with CJK characters counted as two
 * columns.
 *
 * A terminal shows East Asian wide and fullwidth characters (汉字, ｆｕｌｌ
 * width forms, the ideographic space) in two columns, combining marks in
 * none. Aligning with byte or character counts breaks on 姓名 columns; this
 * module measures the display width of UTF-8 text itself (its own table of
 * the East Asian Width W/F ranges of Unicode 15 and of zero-width marks), so
 * it is right whatever the locale (wcwidth() needs a UTF-8 LC_CTYPE, which
 * scripts and containers often lack). Invalid UTF-8 bytes count one column.
 *
 *   table_t *t = table_new(3, (const char *[]){"ID", "NAME", "BALANCE"});
 *   table_align_right(t, 2);
 *   table_add(t, (const char *[]){"1", "东丽区专项", "12.34"});
 *   table_print(t, stdout);
 *   table_destroy(&t);
 *
 * Columns are separated by two blanks; the last column is not padded. A cell
 * is copied; a NULL cell is empty; line breaks and tabs in a cell are shown
 * as blanks so a row stays one line.
 */
#ifndef CLI_TABLE_H
#define CLI_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct table table_t;

/* Display columns of one code point: 0, 1 or 2. */
int table_cp_width(uint32_t cp);

/* Display columns of len bytes of UTF-8 text. */
size_t table_width_n(const char *s, size_t len);
size_t table_width(const char *s);

/* Writes s, then blanks up to width display columns (none if s is wider):
 * printf's %-12s for text that may hold CJK characters. */
void table_fput_padded(FILE *f, const char *s, size_t width);

/* A table of ncols columns with these headers (copied); NULL if out of memory. */
table_t *table_new(int ncols, const char *const *headers);
void table_destroy(table_t **self_p);

/* Right-aligns column col (numbers, amounts). */
void table_align_right(table_t *t, int col);

/* Appends a row of ncols cells (copied). Returns 0, -1 if out of memory. */
int table_add(table_t *t, const char *const *cells);

size_t table_rows(const table_t *t);

/* Writes the header and rows, aligned. */
void table_print(const table_t *t, FILE *f);

#endif
