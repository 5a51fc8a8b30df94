/* fuzz_cfg: libFuzzer target for the config reader (bf_cfg.h, libinih).
 *
 * The input is a config file. Checked: loading never crashes or leaks; it
 * either succeeds (and every key of the tables then reads back through the
 * typed getters, integers within their bounds) or fails with a message.
 */
#include "bf_cfg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    static int fd = -1;
    if (fd < 0) fd = memfd_create("fuzz_cfg", 0);
    if (fd < 0) return 0;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, len, 0) != (ssize_t)len) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const bf_cfg_def_t *tables[] = {bf_cfg_common, NULL};
    char err[512] = "";
    bf_cfg_t *cfg = bf_cfg_load(tables, path, err, sizeof err);
    if (!cfg) {
        if (!err[0]) abort(); /* a failure always says why */
        return 0;
    }
    for (const bf_cfg_def_t *d = bf_cfg_common; d->key; d++) {
        if (d->type == BF_CFG_INT) {
            long long v = bf_cfg_int(cfg, d->key);
            if (v < d->min || v > d->max) abort();
        } else if (d->type == BF_CFG_BOOL) {
            (void)bf_cfg_bool(cfg, d->key);
        } else if (!bf_cfg_str(cfg, d->key)) {
            abort();
        }
    }
    bf_cfg_destroy(&cfg);
    return 0;
}
