/* registry: the service that owns who helps whom (docs/registry.md).
 *
 * Regions, villages, households and their members (persons), helper units,
 * cadres, work teams and pairings, with the rules of the seed documents:
 * per-rank caps on households per cadre, full coverage of poor households by
 * a responsible cadre, pairing changes as recorded and approved events. Each
 * group of methods lives in its own file; this header lists the handlers that
 * main.c puts in the method table, and the state they share.
 */
#ifndef REGISTRY_H
#define REGISTRY_H

#include "bf_cfg.h"
#include "bf_outbox.h"
#include "bf_rpc.h"

#define REGISTRY_SERVICE "registry"

/* Read-only after start; shared by every worker. */
typedef struct {
    int cap_county, cap_division, cap_section, cap_general, cap_village; /* 0 = no cap */
} registry_t;

/* The cap of households per cadre for a rank (0 = none). */
int registry_cap_for_rank(const registry_t *reg, const char *rank);

/* Emits an event of type "bangfu.registry.<what>" in the open transaction;
 * data is the packed event being built. Returns 0 or fails the request. */
int registry_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject);

/* region.c */
int region_put(bf_req_t *r);
int region_get(bf_req_t *r);
int region_list(bf_req_t *r);

/* village.c */
int village_create(bf_req_t *r);
int village_get(bf_req_t *r);
int village_list(bf_req_t *r);

#endif
