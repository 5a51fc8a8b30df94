/* bf_page: keyset paging for list methods, written once.
 *
 * Wire contract (the "Lists" paragraphs of docs/registry.md, docs/funds.md,
 * docs/tasks.md). A list method takes two optional params:
 *   cursor  a string: the next_cursor of the previous page (an id);
 *   limit   the page size, BF_PAGE_MIN..BF_PAGE_MAX, default BF_PAGE_DEFAULT.
 * Its result is {items: [...], next_cursor}, items in ascending key order;
 * next_cursor is the key of the last item shown, as a string, or nil when
 * there is no further page.
 *
 * Why keyset and one row extra: the handler asks for rows with key > cursor,
 * ORDER BY key LIMIT limit + 1. Pages stay stable while rows are inserted, no
 * page costs an OFFSET scan, and the extra row tells whether another page
 * exists without a count(*). The extra row is never shown.
 *
 *     int64_t after, limit;
 *     if (bf_page_params(r, &after, &limit) != 0) return -1;
 *     const char *p[] = {..., bf_req_itoa(r, after), bf_req_itoa(r, limit + 1)};
 *     PGresult *res = ... "AND id > $n::bigint ORDER BY id LIMIT $m::int" ...;
 *     if (!res) return bf_req_db_fail(r);
 *     int shown = bf_page_begin(r, res, limit);
 *     for (int i = 0; i < shown; i++) pack row i as one item;
 *     bf_page_end(r, res, limit, "id");
 *     PQclear(res);
 *
 * A list keyed by something other than an id (region.list pages by code)
 * reads its own cursor and still uses bf_page_begin / bf_page_end with its
 * key column. The packers only write to r->out; nothing here allocates
 * except through r->arena, so no error path has anything to free.
 */
#ifndef BF_PAGE_H
#define BF_PAGE_H

#include "bf_rpc.h"

#include <libpq-fe.h>
#include <stdint.h>

#define BF_PAGE_DEFAULT 100 /* rows when limit is absent */
#define BF_PAGE_MIN 1
#define BF_PAGE_MAX 1000
#define BF_PAGE_CURSOR_MAX 20 /* bytes of an id cursor: INT64_MAX has 19 digits */

/* Reads the optional "cursor" param of r->params as an id: the decimal text
 * of a non-negative int64 as PostgreSQL prints a bigint (digits only, no
 * sign, spaces or leading zeros; "0" itself is allowed). Returns 0 with *id
 * set, 1 if absent (*id untouched), or -1 with r->err set: invalid_argument
 * naming "cursor" ("cursor is not one this method returned", or the getter's
 * message for a non-string or one longer than BF_PAGE_CURSOR_MAX bytes). For
 * methods that page by id with their own limit or direction. */
int bf_page_cursor(bf_req_t *r, int64_t *id);

/* Reads the paging params of an ascending id list: *after gets the cursor
 * (0 if absent, so "id > 0" is the first page), *limit the page size (1..1000,
 * default 100; out of range is invalid_argument naming "limit"). The cursor
 * is read first, as by bf_page_cursor. Returns 0, or -1 with r->err set (the
 * outputs are then unspecified). */
int bf_page_params(bf_req_t *r, int64_t *after, int64_t *limit);

/* The number of rows of res to show for a page of limit rows fetched with
 * LIMIT limit + 1: min(rows, limit). */
int bf_page_shown(const PGresult *res, int64_t limit);

/* Packs into r->out the result map's header (2 entries), the key "items"
 * and the items array's header; returns bf_page_shown(res, limit). The caller
 * packs exactly that many items, then calls bf_page_end. */
int bf_page_begin(bf_req_t *r, const PGresult *res, int64_t limit);

/* Packs the key "next_cursor" and its value into r->out: the text of column
 * key_col of the last row shown when res holds more than limit rows, else
 * nil. Usable on its own at the end of a larger map (account.get's entries). */
void bf_page_end(bf_req_t *r, const PGresult *res, int64_t limit, const char *key_col);

#endif
