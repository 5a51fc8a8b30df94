/* test_table.c: unit tests for cli/table (display width of UTF-8 text with
 * CJK double width, aligned tables). The module lives in cli/; its source
 * is included here, as test_csvread.c does. Output is captured with
 * open_memstream. */
#include "bf_test.h"

#include "../../cli/table.c"

#include <stdlib.h>

static void test_widths(void)
{
    ASSERT_EQ(table_width(""), 0);
    ASSERT_EQ(table_width(NULL), 0);
    ASSERT_EQ(table_width("abc"), 3);
    ASSERT_EQ(table_width("东丽区"), 6);                 /* CJK ideographs */
    ASSERT_EQ(table_width("稻地村 (3)"), 10);
    ASSERT_EQ(table_width("欧阳娜娜"), 8);
    ASSERT_EQ(table_width("（元）"), 6);                 /* fullwidth parentheses */
    ASSERT_EQ(table_width("。、「」"), 8);               /* CJK punctuation */
    ASSERT_EQ(table_width("\xe3\x80\x80"), 2);           /* ideographic space U+3000 */
    ASSERT_EQ(table_width("ｶﾀｶﾅ"), 4);                   /* halfwidth katakana: 1 each */
    ASSERT_EQ(table_width("한국"), 4);                   /* Hangul */
    ASSERT_EQ(table_width("e\xcc\x81"), 1);              /* e + combining acute */
    ASSERT_EQ(table_width("Ü"), 1);
    ASSERT_EQ(table_width("\xf0\xa0\x80\x80"), 2);       /* U+20000, CJK extension B */
    ASSERT_EQ(table_width("\xff\xfe" "ab"), 4);          /* invalid bytes: one column each */
    ASSERT_EQ(table_width("\xe4\xb8"), 2);               /* a cut sequence: its bytes */
    ASSERT_EQ(table_width_n("东丽区", 3), 2);
    ASSERT_EQ(table_cp_width(0x4E00), 2);
    ASSERT_EQ(table_cp_width(0x9FFF), 2);
    ASSERT_EQ(table_cp_width(0xA0), 1);
    ASSERT_EQ(table_cp_width(0x200B), 0);
    ASSERT_EQ(table_cp_width('\t'), 0);
}

static char *s_print(const table_t *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    table_print(t, f);
    fclose(f);
    return buf;
}

static void test_table_aligns_cjk(void)
{
    const char *hdr[] = {"ID", "NAME", "BALANCE"};
    table_t *t = table_new(3, hdr);
    ASSERT(t != NULL);
    table_align_right(t, 0);
    table_align_right(t, 2);
    ASSERT_EQ(table_add(t, (const char *[]){"1", "东丽区专项资金", "12.34"}), 0);
    ASSERT_EQ(table_add(t, (const char *[]){"22", "abc", "1000000.00"}), 0);
    ASSERT_EQ(table_add(t, (const char *[]){"333", "a\tb\nc", NULL}), 0);
    ASSERT_EQ(table_rows(t), 3);
    char *out = s_print(t);
    ASSERT_STR_EQ(out, " ID  NAME               BALANCE\n"
                       "  1  东丽区专项资金       12.34\n"
                       " 22  abc             1000000.00\n"
                       "333  a b c                     \n");
    /* every line has the same display width */
    size_t w0 = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!w0) w0 = table_width(line);
        ASSERT_EQ(table_width(line), w0);
    }
    free(out);
    table_destroy(&t);
    ASSERT(t == NULL);
    table_destroy(&t);
}

static void test_last_left_column_is_not_padded(void)
{
    table_t *t = table_new(2, (const char *[]){"村", "NAME"});
    table_add(t, (const char *[]){"稻地村", "张三"});
    table_add(t, (const char *[]){"x", "y"});
    char *out = s_print(t);
    ASSERT_STR_EQ(out, "村      NAME\n稻地村  张三\nx       y\n");
    free(out);
    table_destroy(&t);
    ASSERT(table_new(0, NULL) == NULL);
    /* many rows grow the table */
    t = table_new(1, (const char *[]){"N"});
    char cell[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(cell, sizeof cell, "%d", i);
        ASSERT_EQ(table_add(t, (const char *[]){cell}), 0);
    }
    ASSERT_EQ(table_rows(t), 1000);
    table_destroy(&t);
}

static void test_fput_padded_counts_display_columns(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    table_fput_padded(f, "张三", 6);
    fputc('|', f);
    table_fput_padded(f, "ab", 6);
    fputc('|', f);
    table_fput_padded(f, "欧阳娜娜", 6); /* wider: not cut, not padded */
    fputc('|', f);
    fclose(f);
    ASSERT_STR_EQ(buf, "张三  |ab    |欧阳娜娜|");
    free(buf);
}

int main(void)
{
    RUN(widths);
    RUN(table_aligns_cjk);
    RUN(last_left_column_is_not_padded);
    RUN(fput_padded_counts_display_columns);
    return TEST_REPORT();
}
