/* bf_page: keyset paging for list methods; the contract is in bf_page.h.
 *
 * The cursor is checked by hand rather than with strtoll: strtoll takes
 * leading spaces and a sign and saturates on overflow, so " 5", "+5" and a
 * 20-digit number would all pass as something no page ever returned. */
#include "bf_page.h"
#include "bf_db.h"
#include "bf_mp.h"

#include <string.h>

/* 0 and *out set if s is a canonical non-negative int64 ("0", "42", ...
 * "9223372036854775807"), else -1. */
static int s_id_text(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || (s[0] == '0' && n > 1)) return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return -1;
    if (n == 19 && strcmp(s, "9223372036854775807") > 0) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    *out = v;
    return 0;
}

int bf_page_cursor(bf_req_t *r, int64_t *id)
{
    const char *cursor;
    int rc = bf_req_str(r, r->params, NULL, "cursor", false, BF_PAGE_CURSOR_MAX, &cursor);
    if (rc != 0) return rc;
    if (s_id_text(cursor, id) != 0)
        return bf_req_fail(r, BF_E_INVALID, "cursor", "cursor is not one this method returned");
    return 0;
}

int bf_page_params(bf_req_t *r, int64_t *after, int64_t *limit)
{
    *after = 0;
    *limit = BF_PAGE_DEFAULT;
    if (bf_page_cursor(r, after) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, BF_PAGE_MIN, BF_PAGE_MAX, limit) < 0)
        return -1;
    return 0;
}

int bf_page_shown(const PGresult *res, int64_t limit)
{
    int n = PQntuples(res);
    return n > limit ? (int)limit : n;
}

int bf_page_begin(bf_req_t *r, const PGresult *res, int64_t limit)
{
    int shown = bf_page_shown(res, limit);
    msgpack_pack_map(r->out, 2);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)shown);
    return shown;
}

void bf_page_end(bf_req_t *r, const PGresult *res, int64_t limit, const char *key_col)
{
    const char *next = NULL;
    if (PQntuples(res) > limit) next = bf_db_str(res, (int)limit - 1, key_col);
    bf_mp_kv_str(r->out, "next_cursor", next); /* NULL packs nil */
}
