/* bf_principals: who each CURVE public key is (docs/security.md).
 *
 * The table comes from <keys.dir>/principals.conf, an INI file with one
 * section per principal:
 *
 *   [finance.zhang]
 *   key = <public key, 40 Z85 characters>
 *   roles = finance, auditor        ; role names, comma-separated
 *   region = 120110000000           ; optional: bound to this division
 *   act_for = false                 ; may name another actor and pass auth
 *   cadre_id = 42                   ; optional: the cadre this principal is
 *
 * A bad entry (bad name, key, role, region, cadre_id; a duplicate key) is
 * logged by name and skipped; the rest still load. The file is re-read when
 * it changes (its mtime, size or inode), checked at most once a second and at
 * once when an unknown key connects, so adding a principal needs no restart.
 * Thread-safe (a rwlock); lookups copy the entry out.
 */
#ifndef BF_PRINCIPALS_H
#define BF_PRINCIPALS_H

#include "bf_keys.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    char name[BF_KEY_NAME_MAX + 1];
    char key[BF_KEY_Z85];
    unsigned roles;   /* BF_ROLE_* */
    char region[13];  /* "" = everywhere */
    bool act_for;
    int64_t cadre_id; /* 0 = none */
} bf_principal_t;

/* The principal whose public key (Z85) is key. Returns 0, or -1 if none. */
int bf_principals_by_key(const char *key, bf_principal_t *out);
/* The principal called name. Returns 0, or -1 if none. */
int bf_principals_by_name(const char *name, bf_principal_t *out);

/* Parses a principals file into a new array (for tests and `bangfu keygen`):
 * returns the count, *out (free()) and logs skipped entries; -1 if the file
 * cannot be read. */
int bf_principals_parse(const char *path, bf_principal_t **out);

/* Forgets the loaded table (the next lookup re-reads the file). */
void bf_principals_reset(void);

#endif
