/* weights.c: allocation weights from the registry (`weights_from`).
 *
 * An allocation with rule "weights" may name, instead of its recipients,
 * where their weights come from: {region_code, level?, measure}. Funds asks
 * the registry's region.figures (as itself, role service) and takes one
 * recipient per group (region:<code>, or village:<id> with level "village")
 * weighted by the measure: households, persons, or the households of one
 * category. Groups whose weight is 0 are left out. Each RPC worker thread has
 * its own client (clients are not thread-safe), freed by a thread-specific
 * data destructor when the thread ends.
 */
#include "funds.h"
#include "bf_client.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t s_key;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_free(void *p)
{
    bf_client_t *c = p;
    bf_client_destroy(&c);
}

static void s_make_key(void) { pthread_key_create(&s_key, s_free); }

static const char *s_endpoint(bf_req_t *r)
{
    const char *ep = bf_cfg_str(r->cfg, "funds.registry_rpc");
    if (!ep || !*ep) ep = getenv("BANGFU_REGISTRY_RPC");
    if (!ep || !*ep) ep = "tcp://127.0.0.1:7101";
    return ep;
}

static const msgpack_object *s_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (bf_mp_str_eq(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

static const char *const s_levels[] = {"province", "city", "county", "township", "village", NULL};
static const char *const s_keys[] = {"region_code", "level", "measure", NULL};

int funds_weights_from(bf_req_t *r, const msgpack_object *wf, const char ***names,
                       int64_t **weights, size_t *n)
{
    const char *code, *level = NULL, *measure;
    if (wf->type != MSGPACK_OBJECT_MAP)
        return bf_req_fail(r, BF_E_INVALID, "weights_from",
                           "weights_from must be a map {region_code, level?, measure}");
    for (uint32_t i = 0; i < wf->via.map.size; i++) {
        bool known = false;
        for (int k = 0; s_keys[k] && !known; k++)
            known = bf_mp_str_eq(&wf->via.map.ptr[i].key, s_keys[k]);
        if (!known)
            return bf_req_fail(r, BF_E_INVALID, "weights_from",
                               "weights_from has a key other than region_code, level, measure");
    }
    if (bf_req_str(r, wf, "weights_from", "region_code", true, 12, &code) != 0) return -1;
    if (bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "weights_from.region_code",
                           "weights_from.region_code must be a 12-digit division code");
    if (bf_req_enum(r, wf, "weights_from", "level", false, s_levels, &level) < 0) return -1;
    if (bf_req_str(r, wf, "weights_from", "measure", true, 32, &measure) != 0) return -1;
    if (!bf_req_in_region(r, code))
        return bf_req_fail(r, BF_E_PERMISSION, "weights_from.region_code",
                           "weights_from.region_code lies outside the region the caller is "
                           "bound to");

    pthread_once(&s_once, s_make_key);
    bf_client_t *cl = pthread_getspecific(s_key);
    const char *ep = s_endpoint(r);
    if (!cl) {
        cl = bf_client_open("registry", ep, (int)bf_cfg_int(r->cfg, "funds.registry_timeout_ms"));
        if (!cl)
            return bf_req_fail(r, BF_E_UNAVAILABLE, "weights_from", "cannot reach the registry "
                                                                    "at %s", ep);
        pthread_setspecific(s_key, cl);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, level ? 2 : 1);
    bf_mp_kv_str(&pk, "region_code", code);
    if (level) bf_mp_kv_str(&pk, "level", level);
    bf_reply_t reply;
    int rc = bf_client_call(cl, "region.figures", sb.data, sb.size, NULL, &reply);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        bf_log(BF_WARN, "registry region.figures: %s", reply.message);
        bf_reply_destroy(&reply);
        pthread_setspecific(s_key, NULL);
        bf_client_destroy(&cl); /* what it queued for a dead peer goes with it */
        return bf_req_fail(r, BF_E_UNAVAILABLE, "weights_from",
                           "the registry did not answer region.figures");
    }
    if (!reply.ok) {
        char c[32], m[512];
        snprintf(c, sizeof c, "%s", reply.code);
        snprintf(m, sizeof m, "%s", reply.message);
        bf_reply_destroy(&reply);
        if (!strcmp(c, BF_E_NOT_FOUND) || !strcmp(c, BF_E_INVALID))
            return bf_req_fail(r, c, "weights_from", "registry region.figures: %s", m);
        return bf_req_fail(r, BF_E_UNAVAILABLE, "weights_from", "registry region.figures: %s: %s",
                           c, m);
    }
    const msgpack_object *groups = s_get(reply.result, "groups");
    const msgpack_object *trunc = s_get(reply.result, "truncated");
    const msgpack_object *cats = s_get(reply.result, "categories");
    int ret = 0;
    bool by_village = level && !strcmp(level, "village");
    if (strcmp(measure, "households") != 0 && strcmp(measure, "persons") != 0 &&
        !s_get(cats, measure)) {
        ret = bf_req_fail(r, BF_E_INVALID, "weights_from.measure",
                          "weights_from.measure must be households, persons or a household "
                          "category code (dibao, low_income, ...)");
        goto done;
    }
    if (!groups || groups->type != MSGPACK_OBJECT_ARRAY ||
        (trunc && trunc->type == MSGPACK_OBJECT_BOOLEAN && trunc->via.boolean)) {
        ret = bf_req_fail(r, BF_E_INVALID, "weights_from",
                          "the registry's figures are too many groups for one allocation");
        goto done;
    }
    uint32_t g = groups->via.array.size;
    *names = bf_arena_alloc(r->arena, (g + 1) * sizeof **names);
    *weights = bf_arena_alloc(r->arena, (g + 1) * sizeof **weights);
    if (!*names || !*weights) {
        ret = bf_req_fail(r, BF_E_EXHAUSTED, "weights_from", "out of memory");
        goto done;
    }
    *n = 0;
    for (uint32_t i = 0; i < g; i++) {
        const msgpack_object *e = &groups->via.array.ptr[i];
        const msgpack_object *v = !strcmp(measure, "households") ? s_get(e, "households")
                                  : !strcmp(measure, "persons")  ? s_get(e, "persons")
                                                                 : s_get(s_get(e, "categories"),
                                                                         measure);
        if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 == 0) continue;
        const char *name = NULL;
        if (by_village) {
            const msgpack_object *id = s_get(e, "village_id");
            if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                name = bf_arena_printf(r->arena, "village:%llu", (unsigned long long)id->via.u64);
        } else {
            const msgpack_object *c = s_get(e, "code");
            if (c && c->type == MSGPACK_OBJECT_STR && c->via.str.size == 12)
                name = bf_arena_printf(r->arena, "region:%.*s", 12, c->via.str.ptr);
        }
        if (!name || funds_recipient_check(name) != 0) {
            ret = bf_req_fail(r, BF_E_UNAVAILABLE, "weights_from",
                              "the registry's figures have a group funds cannot name");
            goto done;
        }
        (*names)[*n] = name;
        (*weights)[*n] = (int64_t)v->via.u64;
        (*n)++;
    }
    if (*n == 0)
        ret = bf_req_fail(r, BF_E_PRECONDITION, "weights_from",
                          "the registry counts no %s in %s: nothing to weigh", measure, code);
done:
    bf_reply_destroy(&reply);
    return ret;
}
