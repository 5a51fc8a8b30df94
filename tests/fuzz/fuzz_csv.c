/* fuzz_csv: libFuzzer target for the CSV reader (cli/csvread.h).
 *
 * The first input byte picks the encoding (auto, UTF-8, GBK) and the chunk
 * size (so multibyte characters and CRLF pairs get cut at every boundary);
 * the rest is the file. Checked: the reader never crashes or leaks, returns
 * at most CSVREAD_MAX_FIELDS fields, every field is NUL-terminated at its
 * stated length, line numbers never go backwards, and it ends (0 or -1).
 */
#include "csvread.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (len < 1) return 0;
    csvread_enc_t enc = (csvread_enc_t)(data[0] % 3);
    size_t chunk = 1 + (data[0] >> 2) % 17;
    FILE *f = fmemopen((void *)(data + 1), len - 1 ? len - 1 : 1, "rb");
    if (!f) return 0;
    if (len == 1) {
        fclose(f);
        f = fopen("/dev/null", "rb");
        if (!f) return 0;
    }
    char err[256];
    csvread_t *r = csvread_new(f, enc, err, sizeof err);
    if (!r) {
        fclose(f);
        return 0;
    }
    csvread_set_chunk(r, chunk);
    csvread_record_t rec;
    long last_line = 0;
    int rc;
    size_t records = 0;
    while ((rc = csvread_next(r, &rec)) == 1) {
        if (rec.nfields > CSVREAD_MAX_FIELDS) abort();
        if (rec.line < last_line) abort();
        last_line = rec.line;
        for (size_t i = 0; i < rec.nfields; i++) {
            if (rec.lens[i] > CSVREAD_MAX_FIELD + 4) abort();
            if (rec.fields[i][rec.lens[i]] != '\0') abort();
        }
        if (++records > len + 1) abort(); /* every record consumes input */
    }
    if (rc != 0 && rc != -1) abort();
    csvread_destroy(&r);
    fclose(f);
    return 0;
}
