/* table: aligned text tables, CJK double width counted; see table.h. */
#include "table.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Wide (W) and fullwidth (F) ranges of Unicode's EastAsianWidth.txt that a
 * terminal draws in two columns (the main blocks; sorted). */
static const uint32_t s_wide[][2] = {
    {0x1100, 0x115F},   /* Hangul Jamo initials */
    {0x231A, 0x231B},   {0x2329, 0x232A}, {0x23E9, 0x23EC}, {0x23F0, 0x23F0},
    {0x23F3, 0x23F3},   {0x25FD, 0x25FE}, {0x2614, 0x2615}, {0x2648, 0x2653},
    {0x267F, 0x267F},   {0x2693, 0x2693}, {0x26A1, 0x26A1}, {0x26AA, 0x26AB},
    {0x26BD, 0x26BE},   {0x26C4, 0x26C5}, {0x26CE, 0x26CE}, {0x26D4, 0x26D4},
    {0x26EA, 0x26EA},   {0x26F2, 0x26F3}, {0x26F5, 0x26F5}, {0x26FA, 0x26FA},
    {0x26FD, 0x26FD},   {0x2705, 0x2705}, {0x270A, 0x270B}, {0x2728, 0x2728},
    {0x274C, 0x274C},   {0x274E, 0x274E}, {0x2753, 0x2755}, {0x2757, 0x2757},
    {0x2795, 0x2797},   {0x27B0, 0x27B0}, {0x27BF, 0x27BF}, {0x2B1B, 0x2B1C},
    {0x2B50, 0x2B50},   {0x2B55, 0x2B55},
    {0x2E80, 0x303E},   /* CJK radicals, Kangxi, ideographic description, CJK symbols and punctuation (。、「」 U+3000) */
    {0x3041, 0x33FF},   /* Hiragana, Katakana, Bopomofo, Hangul compatibility, Kanbun, CJK strokes, enclosed, compatibility */
    {0x3400, 0x4DBF},   /* CJK extension A */
    {0x4E00, 0x9FFF},   /* CJK unified ideographs */
    {0xA000, 0xA4CF},   /* Yi */
    {0xA960, 0xA97F},   /* Hangul Jamo extended A */
    {0xAC00, 0xD7A3},   /* Hangul syllables */
    {0xF900, 0xFAFF},   /* CJK compatibility ideographs */
    {0xFE10, 0xFE19},   /* vertical forms */
    {0xFE30, 0xFE6F},   /* CJK compatibility forms, small form variants */
    {0xFF00, 0xFF60},   /* fullwidth forms (，（）：０-９Ａ-Ｚ) */
    {0xFFE0, 0xFFE6},   /* fullwidth signs (￥) */
    {0x16FE0, 0x16FE4}, {0x17000, 0x18CFF}, {0x1AFF0, 0x1B2FF}, /* Tangut, Kana supplements */
    {0x1F004, 0x1F004}, {0x1F0CF, 0x1F0CF}, {0x1F18E, 0x1F18E}, {0x1F191, 0x1F19A},
    {0x1F200, 0x1F251}, /* enclosed ideographic supplement */
    {0x1F300, 0x1F320}, {0x1F32D, 0x1F335}, {0x1F337, 0x1F37C}, {0x1F37E, 0x1F393},
    {0x1F3A0, 0x1F3CA}, {0x1F3CF, 0x1F3D3}, {0x1F3E0, 0x1F3F0}, {0x1F3F4, 0x1F3F4},
    {0x1F3F8, 0x1F43E}, {0x1F440, 0x1F440}, {0x1F442, 0x1F4FC}, {0x1F4FF, 0x1F53D},
    {0x1F54B, 0x1F54E}, {0x1F550, 0x1F567}, {0x1F57A, 0x1F57A}, {0x1F595, 0x1F596},
    {0x1F5A4, 0x1F5A4}, {0x1F5FB, 0x1F64F}, {0x1F680, 0x1F6C5}, {0x1F6CC, 0x1F6CC},
    {0x1F6D0, 0x1F6D2}, {0x1F6D5, 0x1F6D7}, {0x1F6EB, 0x1F6EC}, {0x1F6F4, 0x1F6FC},
    {0x1F7E0, 0x1F7EB}, {0x1F90C, 0x1F93A}, {0x1F93C, 0x1F945}, {0x1F947, 0x1F9FF},
    {0x1FA70, 0x1FAFF}, /* emoji */
    {0x20000, 0x2FFFD}, /* CJK extensions B-F, compatibility supplement */
    {0x30000, 0x3FFFD}, /* CJK extensions G, H */
};

/* Zero-width: combining marks, zero-width joiners, variation selectors. */
static const uint32_t s_zero[][2] = {
    {0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD}, {0x0610, 0x061A},
    {0x064B, 0x065F}, {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200F},
    {0x2028, 0x202E}, {0x2060, 0x2064}, {0x20D0, 0x20FF}, {0x302A, 0x302D},
    {0x3099, 0x309A}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xFEFF, 0xFEFF},
    {0xE0100, 0xE01EF},
};

static bool s_in(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

int table_cp_width(uint32_t cp)
{
    if (cp == 0) return 0;
    if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) return 0; /* controls */
    if (s_in(s_zero, sizeof s_zero / sizeof *s_zero, cp)) return 0;
    if (s_in(s_wide, sizeof s_wide / sizeof *s_wide, cp)) return 2;
    return 1;
}

/* Decodes one UTF-8 sequence at s[0..len); returns its length (>= 1) and the
 * code point, or length 1 and cp 0xFFFD for an invalid byte. */
static size_t s_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if (n > len) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = v;
    return n;
}

size_t table_width_n(const char *s, size_t len)
{
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += s_decode(p + i, len - i, &cp);
        w += (size_t)table_cp_width(cp);
    }
    return w;
}

size_t table_width(const char *s)
{
    return s ? table_width_n(s, strlen(s)) : 0;
}

void table_fput_padded(FILE *f, const char *s, size_t width)
{
    size_t w = table_width(s);
    fputs(s ? s : "", f);
    for (; w < width; w++) fputc(' ', f);
}

struct table {
    int ncols;
    char **cells; /* (rows + 1) * ncols, row 0 the header */
    size_t rows, cap;
    bool *right;
};

static char *s_cell(const char *s)
{
    char *c = strdup(s ? s : "");
    if (c)
        for (char *p = c; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    return c;
}

table_t *table_new(int ncols, const char *const *headers)
{
    if (ncols <= 0) return NULL;
    table_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ncols = ncols;
    t->right = calloc((size_t)ncols, sizeof *t->right);
    if (!t->right || table_add(t, headers) != 0) {
        table_destroy(&t);
        return NULL;
    }
    t->rows = 0; /* the header is row 0 of cells, not a row */
    return t;
}

void table_destroy(table_t **self_p)
{
    if (!self_p || !*self_p) return;
    table_t *t = *self_p;
    if (t->cells) {
        size_t n = (t->rows + 1) * (size_t)t->ncols;
        for (size_t i = 0; i < n; i++) free(t->cells[i]);
    }
    free(t->cells);
    free(t->right);
    free(t);
    *self_p = NULL;
}

void table_align_right(table_t *t, int col)
{
    if (t && col >= 0 && col < t->ncols) t->right[col] = true;
}

int table_add(table_t *t, const char *const *cells)
{
    /* slots used: the header plus rows; table_new calls this with no header yet */
    size_t used = t->cells ? t->rows + 1 : 0;
    if (used + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **p = realloc(t->cells, cap * (size_t)t->ncols * sizeof *p);
        if (!p) return -1;
        t->cells = p;
        t->cap = cap;
    }
    char **row = t->cells + used * (size_t)t->ncols;
    for (int c = 0; c < t->ncols; c++) {
        row[c] = s_cell(cells ? cells[c] : NULL);
        if (!row[c]) {
            while (c-- > 0) free(row[c]);
            if (used == 0) { /* the header: leave nothing table_destroy would free */
                free(t->cells);
                t->cells = NULL;
                t->cap = 0;
            }
            return -1;
        }
    }
    if (used > 0) t->rows++;
    return 0;
}

size_t table_rows(const table_t *t)
{
    return t ? t->rows : 0;
}

static void s_pad(FILE *f, size_t n)
{
    while (n--) fputc(' ', f);
}

void table_print(const table_t *t, FILE *f)
{
    if (!t) return;
    size_t *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w) return;
    for (size_t r = 0; r <= t->rows; r++)
        for (int c = 0; c < t->ncols; c++) {
            size_t cw = table_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (cw > w[c]) w[c] = cw;
        }
    for (size_t r = 0; r <= t->rows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * (size_t)t->ncols + (size_t)c];
            size_t pad = w[c] - table_width(s);
            bool last = c == t->ncols - 1;
            if (c > 0) fputs("  ", f);
            if (t->right[c]) s_pad(f, pad);
            fputs(s, f);
            if (!t->right[c] && !last) s_pad(f, pad);
        }
        fputc('\n', f);
    }
    free(w);
}
