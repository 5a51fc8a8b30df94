/* exit.c: the exit procedure (退出) for households and villages.
 *
 * A household or a village leaves poverty by the national procedure, one
 * step per method, each step by a different person (docs/registry.md, "Exit"):
 *   {household,village}.exit_review   the village's democratic review
 *                                     (民主评议), by its cadre or an operator;
 *                                     the figures it rests on are checked:
 *                                     a household's income per person is at
 *                                     least registry.exit_income_line_fen and
 *                                     the two assurances and three guarantees
 *                                     (两不愁三保障) are all confirmed; a village's
 *                                     incidence (persons of its active poor
 *                                     households / its population) is below
 *                                     the threshold of its province
 *   .exit_verify                      township verification (乡镇核实) by an
 *                                     operator, which opens the public notice
 *                                     (公示) for registry.exit_notice_days
 *   .exit_object / .exit_resolve      objections during the notice; one
 *                                     upheld rejects the case
 *   .exit_approve                     county approval (县级审批) by an approver
 *                                     after the notice ran out with no open
 *                                     objection; the subject is struck off
 *                                     the register (销号): status "exited"
 *   .exit_reject                      the case is turned down
 *   exit.get / exit.list              the cases, with objections
 * Every step emits an event (docs/events.md). Exited households and villages
 * keep their history and stay in lists and reports with status "exited".
 */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* China's calendar day, which the notice period counts in. */
#define S_TODAY "(now() AT TIME ZONE 'Asia/Shanghai')::date"

/* 两不愁三保障 and safe drinking water: each must be confirmed at review. */
static const char *const s_assurances[] = {"food", "clothing", "education", "medical",
                                           "housing", "water", NULL};

static const char *s_case_cols =
    "c.id, c.kind, c.subject_id, c.household_id, c.village_id, c.region_code, c.year, "
    "c.state, c.review_date::text AS review_date, c.votes_for, c.votes_against, "
    "c.review_note, c.review_evidence::text AS review_evidence, c.reviewed_by, "
    REGISTRY_TS("c.reviewed_at") " AS reviewed_at, c.persons, c.income_fen, c.population, "
    "c.poor_persons, c.verified_by, " REGISTRY_TS("c.verified_at") " AS verified_at, "
    "c.verify_note, c.verify_evidence::text AS verify_evidence, "
    "c.notice_start::text AS notice_start, c.notice_until::text AS notice_until, "
    "c.decided_by, " REGISTRY_TS("c.decided_at") " AS decided_at, c.decision_note, "
    "c.approval_ref, (SELECT count(*) FROM exit_objection o WHERE o.case_id = c.id "
    "  AND o.outcome IS NULL) AS open_objections";

/* "household" or "village", from the method's name. */
static const char *s_kind(const bf_req_t *r)
{
    return strncmp(r->method, "village.", 8) == 0 ? "village" : "household";
}

static void s_kv_int_or_nil(msgpack_packer *pk, const char *key, const PGresult *res, int row,
                            const char *col)
{
    bf_mp_key(pk, key);
    if (bf_db_str(res, row, col))
        msgpack_pack_int64(pk, bf_db_int(res, row, col));
    else
        msgpack_pack_nil(pk);
}

static void s_kv_text_array(msgpack_packer *pk, const char *key, const char *lit)
{
    bf_mp_key(pk, key);
    if (lit)
        registry_pack_text_array(pk, lit);
    else
        msgpack_pack_array(pk, 0);
}

/* Packs one case row (s_case_cols) as a map of 26 + extra entries. */
static void s_pack_case(msgpack_packer *pk, const PGresult *res, int i, size_t extra)
{
    msgpack_pack_map(pk, 26 + extra);
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "kind"));
    s_kv_int_or_nil(pk, "household_id", res, i, "household_id");
    bf_mp_kv_int(pk, "village_id", bf_db_int(res, i, "village_id"));
    bf_mp_kv_str(pk, "region_code", bf_db_str(res, i, "region_code"));
    bf_mp_kv_int(pk, "year", bf_db_int(res, i, "year"));
    bf_mp_kv_str(pk, "state", bf_db_str(res, i, "state"));
    bf_mp_kv_str(pk, "review_date", bf_db_str(res, i, "review_date"));
    bf_mp_kv_int(pk, "votes_for", bf_db_int(res, i, "votes_for"));
    bf_mp_kv_int(pk, "votes_against", bf_db_int(res, i, "votes_against"));
    bf_mp_kv_str(pk, "review_note", bf_db_str(res, i, "review_note"));
    s_kv_text_array(pk, "review_evidence", bf_db_str(res, i, "review_evidence"));
    bf_mp_kv_str(pk, "reviewed_by", bf_db_str(res, i, "reviewed_by"));
    bf_mp_kv_str(pk, "reviewed_at", bf_db_str(res, i, "reviewed_at"));
    s_kv_int_or_nil(pk, "persons", res, i, "persons");
    s_kv_int_or_nil(pk, "income_fen", res, i, "income_fen");
    s_kv_int_or_nil(pk, "population", res, i, "population");
    s_kv_int_or_nil(pk, "poor_persons", res, i, "poor_persons");
    bf_mp_kv_str(pk, "verified_by", bf_db_str(res, i, "verified_by"));
    bf_mp_kv_str(pk, "verified_at", bf_db_str(res, i, "verified_at"));
    s_kv_text_array(pk, "verify_evidence", bf_db_str(res, i, "verify_evidence"));
    bf_mp_kv_str(pk, "notice_start", bf_db_str(res, i, "notice_start"));
    bf_mp_kv_str(pk, "notice_until", bf_db_str(res, i, "notice_until"));
    bf_mp_kv_str(pk, "decided_by", bf_db_str(res, i, "decided_by"));
    bf_mp_kv_str(pk, "decision_note", bf_db_str(res, i, "decision_note"));
    bf_mp_kv_int(pk, "open_objections", bf_db_int(res, i, "open_objections"));
}

/* Emits bangfu.registry.<kind>.<what> for a case in the open transaction;
 * every exit event carries the same seven fields (docs/events.md). */
static int s_emit(bf_req_t *r, const char *kind, const char *what, int64_t case_id,
                  int64_t subject_id, int64_t village_id, int year, const char *state,
                  const char *note)
{
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "case_id", case_id);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_int(pk, strcmp(kind, "village") ? "household_id" : "village_id", subject_id);
    bf_mp_kv_int(pk, "village_id", village_id);
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_str(pk, "state", state);
    bf_mp_kv_str(pk, "note", note);
    char type[64];
    snprintf(type, sizeof type, "%s.%s", kind, what);
    return registry_emit(r, &ev, type, registry_subject(r, kind, subject_id));
}

/* The incidence threshold, in per mille, for a village in region code: the
 * western provinces' (a comma-separated list of 2-digit codes) or the rest's. */
static int s_threshold(const registry_t *reg, const char *code)
{
    for (const char *w = reg->exit_west_provinces; *w;) {
        while (*w == ',' || *w == ' ') w++;
        size_t n = strcspn(w, ", ");
        if (n == 2 && w[0] == code[0] && w[1] == code[1])
            return reg->exit_incidence_west_permille;
        w += n;
    }
    return reg->exit_incidence_permille;
}

/* Persons of the village's active households, the village's region, status. */
static PGresult *s_village_figures(bf_req_t *r, int64_t village_id, const char *stmt_suffix)
{
    const char *p[] = {bf_req_itoa(r, village_id)};
    char name[48];
    snprintf(name, sizeof name, "exit_vfig_%s", stmt_suffix);
    return bf_db_prep(r->db, name,
                      "SELECT v.region_code, v.status, "
                      " (SELECT count(*) FROM person pe JOIN household h ON h.id = pe.household_id "
                      "  WHERE h.village_id = v.id AND h.status = 'active') AS poor_persons "
                      "FROM village v WHERE v.id = $1::bigint FOR UPDATE OF v",
                      1, p, NULL, NULL);
}

/* Fails with failed_precondition unless poor * 1000 < threshold * population. */
static int s_incidence_ok(bf_req_t *r, const char *field, const char *code, int64_t poor,
                          int64_t population)
{
    int t = s_threshold(r->svc, code);
    if (poor * 1000 < (int64_t)t * population) return 0;
    return bf_req_fail(r, BF_E_PRECONDITION, field,
                       "incidence %lld/%lld = %lld.%lld%% is not below the exit threshold of "
                       "%d.%d%% for this province",
                       (long long)poor, (long long)population,
                       (long long)(poor * 1000 / population / 10),
                       (long long)(poor * 1000 / population % 10), t / 10, t % 10);
}

/* ---------------------------------------------------------------- review */

int exit_review(bf_req_t *r)
{
    const registry_t *reg = r->svc;
    const char *kind = s_kind(r);
    bool hh = !strcmp(kind, "household");
    int64_t id, year, vfor, vagainst, population = 0;
    const char *rdate, *note;
    const msgpack_object_array *evidence = NULL, *assured = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    if (registry_date_param(r, "review_date", true, &rdate) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "votes_for", true, 0, 1000000, &vfor) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "votes_against", true, 0, 1000000, &vagainst) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "note", true, 2000, &note) != 0) return -1;
    if (!*note) return bf_req_fail(r, BF_E_INVALID, "note", "note must not be empty");
    if (bf_req_list(r, r->params, NULL, "evidence", false, 20, &evidence) < 0) return -1;
    const char *ev_lit = registry_text_array(r, evidence, "evidence", 500);
    if (!ev_lit) return -1;
    if (hh) {
        if (bf_req_list(r, r->params, NULL, "assured", true, 6, &assured) != 0) return -1;
        const char **got;
        size_t n;
        if (registry_enum_list(r, assured, "assured", s_assurances, &got, &n) != 0) return -1;
        for (const char *const *a = s_assurances; *a; a++) {
            bool have = false;
            for (size_t i = 0; i < n; i++) have = have || !strcmp(got[i], *a);
            if (!have)
                return bf_req_fail(r, BF_E_PRECONDITION, "assured",
                                   "%s is not assured: a household exits only when food, "
                                   "clothing, education, medical care, housing and safe "
                                   "water are all assured (两不愁三保障)", *a);
        }
    } else if (bf_req_int(r, r->params, NULL, "population", true, 1, 100000000, &population) !=
               0) {
        return -1;
    }
    if (vfor <= vagainst)
        return bf_req_fail(r, BF_E_PRECONDITION, "votes_for",
                           "the review did not agree to the exit (%lld for, %lld against)",
                           (long long)vfor, (long long)vagainst);

    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *dp[] = {rdate};
    PGresult *res = bf_db_prep(r->db, "exit_date_ok",
                               "SELECT $1::date <= " S_TODAY " AS ok", 1, dp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    bool date_ok = !strcmp(bf_db_str(res, 0, "ok"), "t");
    PQclear(res);
    if (!date_ok)
        return bf_req_fail(r, BF_E_INVALID, "review_date", "review_date lies in the future");

    int64_t village_id, persons = 0, income = 0, poor = 0;
    const char *region;
    if (hh) {
        const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
        res = bf_db_prep(r->db, "exit_hh_lock",
                         "SELECT h.village_id, v.region_code, h.status, h.income_fen, "
                         " (SELECT count(*) FROM person pe WHERE pe.household_id = h.id) AS persons "
                         "FROM household h JOIN village v ON v.id = h.village_id "
                         "WHERE h.id = $1::bigint AND "
                         REGISTRY_HH_VISIBLE("h.id", "v.region_code", "$2", "$3")
                         " FOR UPDATE OF h",
                         3, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        if (PQntuples(res) == 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no household with id %lld",
                               (long long)id);
        }
        village_id = bf_db_int(res, 0, "village_id");
        region = bf_arena_strndup(r->arena, bf_db_str(res, 0, "region_code"), 12);
        bool active = !strcmp(bf_db_str(res, 0, "status"), "active");
        income = bf_db_int(res, 0, "income_fen");
        persons = bf_db_int(res, 0, "persons");
        PQclear(res);
        if (!active)
            return bf_req_fail(r, BF_E_PRECONDITION, "id", "household %lld has exited already",
                               (long long)id);
        if (persons < 1 || income < reg->exit_income_line_fen * persons)
            return bf_req_fail(r, BF_E_PRECONDITION, "income_fen",
                               "yearly income %lld fen for %lld persons is below the exit "
                               "line of %lld fen per person",
                               (long long)income, (long long)persons,
                               (long long)reg->exit_income_line_fen);
    } else {
        village_id = id;
        res = s_village_figures(r, id, "review");
        if (!res) return bf_req_db_fail(r);
        if (PQntuples(res) == 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no village with id %lld", (long long)id);
        }
        region = bf_arena_strndup(r->arena, bf_db_str(res, 0, "region_code"), 12);
        bool active = !strcmp(bf_db_str(res, 0, "status"), "active");
        poor = bf_db_int(res, 0, "poor_persons");
        PQclear(res);
        /* a cadre-only caller sees only villages of its own households */
        if (sc.cadre) return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no village with id %lld",
                                         (long long)id);
        if (!active)
            return bf_req_fail(r, BF_E_PRECONDITION, "id", "village %lld has exited already",
                               (long long)id);
    }
    if (!region) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    if (registry_region_denied(r, "id", region) != 0) return -1;
    if (!hh && s_incidence_ok(r, "population", region, poor, population) != 0) return -1;

    const char *ip[] = {kind,
                        bf_req_itoa(r, id),
                        hh ? bf_req_itoa(r, id) : NULL,
                        bf_req_itoa(r, village_id),
                        region,
                        bf_req_itoa(r, year),
                        rdate,
                        bf_req_itoa(r, vfor),
                        bf_req_itoa(r, vagainst),
                        note,
                        ev_lit,
                        r->actor,
                        hh ? bf_req_itoa(r, persons) : NULL,
                        hh ? bf_req_itoa(r, income) : NULL,
                        hh ? NULL : bf_req_itoa(r, population),
                        hh ? NULL : bf_req_itoa(r, poor)};
    res = bf_db_prep(r->db, "exit_case_insert",
                     "INSERT INTO exit_case (kind, subject_id, household_id, village_id, "
                     " region_code, year, state, review_date, votes_for, votes_against, "
                     " review_note, review_evidence, reviewed_by, persons, income_fen, "
                     " population, poor_persons) "
                     "VALUES ($1, $2::bigint, $3::bigint, $4::bigint, $5, $6::int, 'reviewed', "
                     " $7::date, $8::int, $9::int, $10, $11::text[], $12, $13::int, $14::bigint, "
                     " $15::int, $16::int) RETURNING id",
                     16, ip, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "id", "%s %lld already has an open exit case",
                               kind, (long long)id);
        }
        return bf_req_db_fail(r);
    }
    int64_t case_id = bf_db_int(res, 0, "id");
    PQclear(res);
    if (s_emit(r, kind, "exit_reviewed", case_id, id, village_id, (int)year, "reviewed", note) !=
        0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "case_id", case_id);
    bf_mp_kv_str(r->out, "state", "reviewed");
    return 0;
}

/* ---------------------------------------------------------------- one case */

typedef struct {
    int64_t id, subject_id, village_id, year;
    const char *kind, *state, *region, *reviewed_by, *verified_by, *notice_until;
    int64_t population, open_objections;
    bool notice_over; /* today is after notice_until */
} s_case_t;

/* Opens a transaction and locks case case_id (params "case_id"), which must be
 * of the method's kind and visible to the caller. 0 or -1 (failed). */
static int s_case_lock(bf_req_t *r, s_case_t *c)
{
    if (bf_req_int(r, r->params, NULL, "case_id", true, 1, INT64_MAX, &c->id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, c->id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "exit_case_lock",
        "SELECT c.kind, c.subject_id, c.village_id, c.year, c.state, c.region_code, "
        " c.reviewed_by, c.verified_by, c.notice_until::text AS notice_until, c.population, "
        " (c.notice_until IS NOT NULL AND " S_TODAY " > c.notice_until) AS notice_over, "
        " (SELECT count(*) FROM exit_objection o WHERE o.case_id = c.id "
        "  AND o.outcome IS NULL) AS open_objections "
        "FROM exit_case c WHERE c.id = $1::bigint "
        " AND ($2::text IS NULL OR c.region_code::text LIKE $2) "
        " AND ($3::bigint IS NULL OR (c.kind = 'household' AND "
        REGISTRY_HH_VISIBLE("c.household_id", "c.region_code", "$2", "$3") ")) "
        "FOR UPDATE OF c",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "case_id", "no exit case with id %lld",
                           (long long)c->id);
    }
    bf_arena_t *a = r->arena;
    c->kind = bf_arena_strndup(a, bf_db_str(res, 0, "kind"), 16);
    c->subject_id = bf_db_int(res, 0, "subject_id");
    c->village_id = bf_db_int(res, 0, "village_id");
    c->year = bf_db_int(res, 0, "year");
    c->state = bf_arena_strndup(a, bf_db_str(res, 0, "state"), 16);
    c->region = bf_arena_strndup(a, bf_db_str(res, 0, "region_code"), 12);
    c->reviewed_by = bf_arena_strndup(a, bf_db_str(res, 0, "reviewed_by"), 256);
    const char *vb = bf_db_str(res, 0, "verified_by");
    c->verified_by = vb ? bf_arena_strndup(a, vb, 256) : NULL;
    const char *nu = bf_db_str(res, 0, "notice_until");
    c->notice_until = nu ? bf_arena_strndup(a, nu, 16) : NULL;
    c->population = bf_db_str(res, 0, "population") ? bf_db_int(res, 0, "population") : 0;
    c->notice_over = !strcmp(bf_db_str(res, 0, "notice_over"), "t");
    c->open_objections = bf_db_int(res, 0, "open_objections");
    PQclear(res);
    if (!c->kind || !c->state || !c->region || !c->reviewed_by || (vb && !c->verified_by) ||
        (nu && !c->notice_until))
        return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    if (strcmp(c->kind, s_kind(r)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "case_id",
                           "exit case %lld is a %s's: use %s.%s", (long long)c->id, c->kind,
                           c->kind, strchr(r->method, '.') + 1);
    return registry_region_denied(r, "case_id", c->region);
}

static int s_need_state(bf_req_t *r, const s_case_t *c, const char *want, const char *want2)
{
    if (!strcmp(c->state, want) || (want2 && !strcmp(c->state, want2))) return 0;
    return bf_req_fail(r, BF_E_PRECONDITION, "case_id",
                       "exit case %lld is %s; %s needs it %s%s%s", (long long)c->id, c->state,
                       r->method, want, want2 ? " or " : "", want2 ? want2 : "");
}

/* Fails with permission_denied if the actor already took an earlier step. */
static int s_other_person(bf_req_t *r, const s_case_t *c, const char *step)
{
    if (!strcmp(c->reviewed_by, r->actor) || (c->verified_by && !strcmp(c->verified_by, r->actor)))
        return bf_req_fail(r, BF_E_PERMISSION, "actor",
                           "each step of an exit is taken by a different person: %s recorded "
                           "an earlier step of case %lld and cannot %s it",
                           r->actor, (long long)c->id, step);
    return 0;
}

static int s_reply_state(bf_req_t *r, int64_t case_id, const char *state)
{
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "case_id", case_id);
    bf_mp_kv_str(r->out, "state", state);
    return 0;
}

/* ---------------------------------------------------------------- verify */

int exit_verify(bf_req_t *r)
{
    const registry_t *reg = r->svc;
    const char *start, *note;
    const msgpack_object_array *evidence = NULL;
    if (registry_date_param(r, "notice_start", true, &start) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", true, 2000, &note) != 0) return -1;
    if (!*note) return bf_req_fail(r, BF_E_INVALID, "note", "note must not be empty");
    if (bf_req_list(r, r->params, NULL, "evidence", false, 20, &evidence) < 0) return -1;
    const char *ev_lit = registry_text_array(r, evidence, "evidence", 500);
    if (!ev_lit) return -1;
    s_case_t c;
    if (s_case_lock(r, &c) != 0) return -1;
    if (s_need_state(r, &c, "reviewed", NULL) != 0) return -1;
    if (s_other_person(r, &c, "verify") != 0) return -1;
    const char *p[] = {bf_req_itoa(r, c.id), start, bf_req_itoa(r, reg->exit_notice_days),
                       r->actor, note, ev_lit};
    PGresult *res = bf_db_prep(
        r->db, "exit_verify",
        "UPDATE exit_case SET state = 'notice', verified_by = $4, verified_at = now(), "
        " verify_note = $5, verify_evidence = $6::text[], notice_start = $2::date, "
        " notice_until = $2::date + ($3::int - 1) "
        "WHERE id = $1::bigint AND $2::date >= review_date AND $2::date <= " S_TODAY " "
        "RETURNING notice_until::text AS notice_until",
        6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INVALID, "notice_start",
                           "notice_start lies before the review or in the future");
    }
    const char *until = bf_arena_strndup(r->arena, bf_db_str(res, 0, "notice_until"), 16);
    PQclear(res);
    char *msg = bf_arena_printf(r->arena, "public notice %s .. %s", start, until ? until : "?");
    if (s_emit(r, c.kind, "exit_verified", c.id, c.subject_id, c.village_id, (int)c.year,
               "notice", msg) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_int(r->out, "case_id", c.id);
    bf_mp_kv_str(r->out, "state", "notice");
    bf_mp_kv_str(r->out, "notice_start", start);
    bf_mp_kv_str(r->out, "notice_until", until);
    return 0;
}

/* ---------------------------------------------------------------- objections */

int exit_object(bf_req_t *r)
{
    const char *text, *raised_by = NULL;
    if (bf_req_str(r, r->params, NULL, "objection", true, 2000, &text) != 0) return -1;
    if (!*text) return bf_req_fail(r, BF_E_INVALID, "objection", "objection must not be empty");
    if (bf_req_str(r, r->params, NULL, "raised_by", false, 200, &raised_by) < 0) return -1;
    s_case_t c;
    if (s_case_lock(r, &c) != 0) return -1;
    if (s_need_state(r, &c, "notice", NULL) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, c.id), text, raised_by, r->actor};
    PGresult *res = bf_db_prep(r->db, "exit_object",
                               "INSERT INTO exit_objection (case_id, objection, raised_by, "
                               " recorded_by) VALUES ($1::bigint, $2, $3, $4) RETURNING id",
                               4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t oid = bf_db_int(res, 0, "id");
    PQclear(res);
    char *msg = bf_arena_printf(r->arena, "objection %lld recorded", (long long)oid);
    if (s_emit(r, c.kind, "exit_objected", c.id, c.subject_id, c.village_id, (int)c.year,
               "notice", msg) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "case_id", c.id);
    bf_mp_kv_int(r->out, "objection_id", oid);
    return 0;
}

int exit_resolve(bf_req_t *r)
{
    int64_t oid;
    bool upheld;
    const char *note;
    if (bf_req_int(r, r->params, NULL, "objection_id", true, 1, INT64_MAX, &oid) != 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "upheld", true, &upheld) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", true, 2000, &note) != 0) return -1;
    if (!*note) return bf_req_fail(r, BF_E_INVALID, "note", "note must not be empty");
    s_case_t c;
    if (s_case_lock(r, &c) != 0) return -1;
    if (s_need_state(r, &c, "notice", NULL) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, oid), bf_req_itoa(r, c.id), upheld ? "upheld" : "dismissed",
                       note, r->actor};
    PGresult *res = bf_db_prep(r->db, "exit_resolve",
                               "UPDATE exit_objection SET outcome = $3, outcome_note = $4, "
                               " resolved_by = $5, resolved_at = now() "
                               "WHERE id = $1::bigint AND case_id = $2::bigint "
                               " AND outcome IS NULL RETURNING id",
                               5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res);
    PQclear(res);
    if (!found)
        return bf_req_fail(r, BF_E_NOT_FOUND, "objection_id",
                           "no open objection %lld on exit case %lld", (long long)oid,
                           (long long)c.id);
    char *msg = bf_arena_printf(r->arena, "objection %lld %s: %s", (long long)oid,
                                upheld ? "upheld" : "dismissed", note);
    if (s_emit(r, c.kind, "exit_objection_resolved", c.id, c.subject_id, c.village_id,
               (int)c.year, upheld ? "rejected" : "notice", msg) != 0)
        return -1;
    const char *state = "notice";
    if (upheld) {
        const char *up[] = {bf_req_itoa(r, c.id), r->actor, msg};
        res = bf_db_prep(r->db, "exit_reject_upheld",
                         "UPDATE exit_case SET state = 'rejected', decided_by = $2, "
                         " decided_at = now(), decision_note = $3 WHERE id = $1::bigint",
                         3, up, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        if (s_emit(r, c.kind, "exit_rejected", c.id, c.subject_id, c.village_id, (int)c.year,
                   "rejected", msg) != 0)
            return -1;
        state = "rejected";
    }
    return s_reply_state(r, c.id, state);
}

/* ---------------------------------------------------------------- decisions */

int exit_approve(bf_req_t *r)
{
    const char *ref, *note = NULL;
    if (bf_req_str(r, r->params, NULL, "approval_ref", true, 200, &ref) != 0) return -1;
    if (!*ref) return bf_req_fail(r, BF_E_INVALID, "approval_ref", "approval_ref must not be empty");
    if (bf_req_str(r, r->params, NULL, "note", false, 2000, &note) < 0) return -1;
    s_case_t c;
    if (s_case_lock(r, &c) != 0) return -1;
    if (s_need_state(r, &c, "notice", NULL) != 0) return -1;
    if (s_other_person(r, &c, "approve") != 0) return -1;
    if (!c.notice_over)
        return bf_req_fail(r, BF_E_PRECONDITION, "case_id",
                           "the public notice of exit case %lld runs until %s: approval comes "
                           "after it", (long long)c.id, c.notice_until ? c.notice_until : "?");
    if (c.open_objections > 0)
        return bf_req_fail(r, BF_E_PRECONDITION, "case_id",
                           "exit case %lld has %lld open objection(s): resolve them first",
                           (long long)c.id, (long long)c.open_objections);
    bool hh = !strcmp(c.kind, "household");
    PGresult *res;
    if (!hh) {
        /* the village's incidence again, on today's register */
        res = s_village_figures(r, c.village_id, "approve");
        if (!res) return bf_req_db_fail(r);
        int64_t poor = PQntuples(res) ? bf_db_int(res, 0, "poor_persons") : 0;
        PQclear(res);
        if (s_incidence_ok(r, "case_id", c.region, poor, c.population) != 0) return -1;
    }
    const char *up[] = {bf_req_itoa(r, c.id), r->actor, note, ref};
    res = bf_db_prep(r->db, "exit_approve",
                     "UPDATE exit_case SET state = 'exited', decided_by = $2, decided_at = now(), "
                     " decision_note = $3, approval_ref = $4 WHERE id = $1::bigint",
                     4, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *sp[] = {bf_req_itoa(r, c.subject_id), r->actor};
    res = hh ? bf_db_prep(r->db, "exit_strike_hh",
                          "UPDATE household SET status = 'exited', updated_by = $2, "
                          " updated_at = now() WHERE id = $1::bigint",
                          2, sp, NULL, NULL)
             : bf_db_prep(r->db, "exit_strike_village",
                          "UPDATE village SET status = 'exited' WHERE id = $1::bigint", 1, sp,
                          NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    if (s_emit(r, c.kind, "exited", c.id, c.subject_id, c.village_id, (int)c.year, "exited",
               ref) != 0)
        return -1;
    return s_reply_state(r, c.id, "exited");
}

int exit_reject(bf_req_t *r)
{
    const char *reason;
    if (bf_req_str(r, r->params, NULL, "reason", true, 2000, &reason) != 0) return -1;
    if (!*reason) return bf_req_fail(r, BF_E_INVALID, "reason", "reason must not be empty");
    s_case_t c;
    if (s_case_lock(r, &c) != 0) return -1;
    if (s_need_state(r, &c, "reviewed", "notice") != 0) return -1;
    const char *up[] = {bf_req_itoa(r, c.id), r->actor, reason};
    PGresult *res = bf_db_prep(r->db, "exit_reject",
                               "UPDATE exit_case SET state = 'rejected', decided_by = $2, "
                               " decided_at = now(), decision_note = $3 WHERE id = $1::bigint",
                               3, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    if (s_emit(r, c.kind, "exit_rejected", c.id, c.subject_id, c.village_id, (int)c.year,
               "rejected", reason) != 0)
        return -1;
    return s_reply_state(r, c.id, "rejected");
}

/* ---------------------------------------------------------------- reads */

/* The WHERE clause of what the caller may see ($1 region pattern, $2 cadre). */
#define S_CASE_VISIBLE                                                                    \
    "($1::text IS NULL OR c.region_code::text LIKE $1) AND ($2::bigint IS NULL OR "       \
    "(c.kind = 'household' AND " REGISTRY_HH_VISIBLE("c.household_id", "c.region_code", "$1", \
                                                     "$2") "))"

int exit_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {sc.region, sc.cadre, bf_req_itoa(r, id)};
    char *sql = bf_arena_printf(
        r->arena,
        "SELECT %s, (SELECT json_agg(json_build_object('id', o.id, 'objection', o.objection, "
        "  'raised_by', o.raised_by, 'recorded_by', o.recorded_by, 'recorded_at', "
        "  " REGISTRY_TS("o.recorded_at") ", 'outcome', o.outcome, 'outcome_note', "
        "  o.outcome_note, 'resolved_by', o.resolved_by) ORDER BY o.id)::text "
        "  FROM exit_objection o WHERE o.case_id = c.id) AS objections "
        "FROM exit_case c WHERE c.id = $3::bigint AND " S_CASE_VISIBLE,
        s_case_cols);
    if (!sql) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, "exit_get", sql, 3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no exit case with id %lld", (long long)id);
    }
    s_pack_case(r->out, res, 0, 1);
    bf_mp_key(r->out, "objections");
    /* the objections come as one JSON array from the same statement; r->out
     * packs into the request's result sbuffer (bf_rpc.c), so the array's
     * msgpack encoding is appended to it in place */
    int rc = bf_req_json_column(r, (msgpack_sbuffer *)r->out->data, res, 0, "objections",
                                "objections");
    PQclear(res);
    return rc;
}

int exit_list(bf_req_t *r)
{
    static const char *const kinds[] = {"household", "village", NULL};
    static const char *const states[] = {"reviewed", "notice", "exited", "rejected", NULL};
    const char *kind = NULL, *state = NULL, *region = NULL;
    int64_t year = 0, limit, after;
    if (bf_req_enum(r, r->params, NULL, "kind", false, kinds, &kind) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "state", false, states, &state) < 0) return -1;
    if (registry_code_param(r, "region_code", false, &region) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "year", false, 2000, 2100, &year) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    char prefix[16] = "";
    if (region) snprintf(prefix, sizeof prefix, "%.*s%%", registry_prefix_len(region), region);
    const char *p[] = {sc.region, sc.cadre, kind, state, region ? prefix : NULL,
                       year ? bf_req_itoa(r, year) : NULL, bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    char *sql = bf_arena_printf(r->arena,
                                "SELECT %s FROM exit_case c WHERE " S_CASE_VISIBLE
                                " AND ($3::text IS NULL OR c.kind = $3) "
                                " AND ($4::text IS NULL OR c.state = $4) "
                                " AND ($5::text IS NULL OR c.region_code::text LIKE $5) "
                                " AND ($6::int IS NULL OR c.year = $6::int) "
                                " AND c.id > $7::bigint ORDER BY c.id LIMIT $8::int",
                                s_case_cols);
    if (!sql) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, "exit_list", sql, 8, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_case(r->out, res, i, 0);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
