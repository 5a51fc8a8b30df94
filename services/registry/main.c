/* bangfu-registry: main and the method table (see registry.h). */
#include "registry.h"
#include "bf_service.h"

#include <stdlib.h>
#include <string.h>

extern const bf_migration_t registry_migrations[];

static const bf_cfg_def_t s_registry_cfg[] = {
    {"registry.bind", BF_CFG_STR, "tcp://127.0.0.1:7101", 0, 0,
     "address the registry's RPC ROUTER socket binds"},
    {"registry.cap_county", BF_CFG_INT, "3", 0, 1000,
     "households a county-level leader may be responsible for (seed 001; 0 = no cap)"},
    {"registry.cap_division", BF_CFG_INT, "3", 0, 1000,
     "households a division-level cadre may be responsible for"},
    {"registry.cap_section", BF_CFG_INT, "3", 0, 1000,
     "households a section-level cadre may be responsible for (seed 001: 2-3)"},
    {"registry.cap_general", BF_CFG_INT, "2", 0, 1000,
     "households a general cadre may be responsible for (seed 001: 1-2)"},
    {"registry.cap_village", BF_CFG_INT, "0", 0, 1000,
     "households a village cadre / party member may be responsible for (seed: at least 1)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const bf_param_t p_region_put[] = {
    {"code", BF_T_STR, BF_REQ, 12, "12-digit statistical division code"},
    {"name", BF_T_STR, BF_REQ, 200, "name, e.g. 新立街道"},
    {"level", BF_T_STR, BF_REQ, 16, "province | city | county | township | village | group"},
    {"parent_code", BF_T_STR, 0, 12, "the parent region's code (must exist)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_region_get[] = {
    {"code", BF_T_STR, BF_REQ, 12, "12-digit code"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_region_list[] = {
    {"parent_code", BF_T_STR, 0, 12, "only children of this region"},
    {"level", BF_T_STR, 0, 16, "only this level"},
    {"cursor", BF_T_STR, 0, 64, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_village_create[] = {
    {"region_code", BF_T_STR, BF_REQ, 12, "its township or street"},
    {"name", BF_T_STR, BF_REQ, 200, "village name"},
    {"category", BF_T_STR, BF_REQ, 16, "difficult | poor | weak | other"},
    {"code", BF_T_STR, 0, 12, "its own 12-digit village code (unique)"},
    {"reasons", BF_T_LIST, 0, 16, "why it was selected (strings)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_id[] = {
    {"id", BF_T_INT, BF_REQ, 0, "entity id"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_village_list[] = {
    {"region_code", BF_T_STR, 0, 12, "villages in this region or below it"},
    {"category", BF_T_STR, 0, 16, "only this category"},
    {"cursor", BF_T_STR, 0, 64, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};

static const bf_method_t s_methods[] = {
    {"region.put", region_put, true, p_region_put, "create or update a region (idempotent)"},
    {"region.get", region_get, false, p_region_get, "one region"},
    {"region.list", region_list, false, p_region_list, "regions, paged"},
    {"village.create", village_create, true, p_village_create, "register a village"},
    {"village.get", village_get, false, p_id, "one village with its active helpers"},
    {"village.list", village_list, false, p_village_list, "villages, paged"},
    {NULL, NULL, false, NULL, NULL},
};

int registry_cap_for_rank(const registry_t *reg, const char *rank)
{
    if (!strcmp(rank, "county")) return reg->cap_county;
    if (!strcmp(rank, "division")) return reg->cap_division;
    if (!strcmp(rank, "section")) return reg->cap_section;
    if (!strcmp(rank, "general")) return reg->cap_general;
    return reg->cap_village;
}

int registry_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject)
{
    char type[128];
    snprintf(type, sizeof type, "bangfu.registry.%s", what);
    if (bf_event_commit(ev, r->db, REGISTRY_SERVICE, type, subject, r->actor) != 0)
        return bf_req_db_fail(r);
    return 0;
}

static int s_start(const bf_cfg_t *cfg, bf_db_t *db, void **svc)
{
    (void)db;
    registry_t *reg = calloc(1, sizeof *reg);
    if (!reg) return -1;
    reg->cap_county = (int)bf_cfg_int(cfg, "registry.cap_county");
    reg->cap_division = (int)bf_cfg_int(cfg, "registry.cap_division");
    reg->cap_section = (int)bf_cfg_int(cfg, "registry.cap_section");
    reg->cap_general = (int)bf_cfg_int(cfg, "registry.cap_general");
    reg->cap_village = (int)bf_cfg_int(cfg, "registry.cap_village");
    *svc = reg;
    return 0;
}

static void s_stop(void *svc) { free(svc); }

int main(int argc, char **argv)
{
    static const bf_service_def_t def = {
        .name = REGISTRY_SERVICE,
        .version = "0.1.0",
        .cfg_defs = s_registry_cfg,
        .migrations = registry_migrations,
        .methods = s_methods,
        .start = s_start,
        .stop = s_stop,
    };
    return bf_service_main(&def, argc, argv);
}
