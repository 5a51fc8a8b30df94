/* project.c: assistance projects (帮扶项目) and staged disbursement (分阶段拨付).
 *
 * A project is admitted only with a performance target (the national
 * project-library rule) and is funded from a budget when it is created: its
 * amount moves from the budget into the project's own account. A project's
 * (or a budget's) money is paid out in tranches: planned with a sequence
 * number (the next one) and an amount within what is not yet planned,
 * approved by an actor other than the one who planned it, then disbursed,
 * only after approval and only after every earlier tranche is disbursed.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_kinds[] = {"industry", "infrastructure", "education", "health",
                                      "training", "employment",     "other",     NULL};

int project_create(bf_req_t *r)
{
    const char *name, *kind, *location, *target = NULL, *description = NULL;
    int64_t unit_id, beneficiaries, budget_id, amount;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_enum(r, r->params, NULL, "kind", true, s_kinds, &kind) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "location", true, 12, &location) != 0) return -1;
    if (bf_division_check(location, strlen(location)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "location",
                           "location must be a 12-digit statistical division code");
    if (funds_scope_location(r, location, true, "location", "project", 0) != 0) return -1;
    if (funds_req_id(r, "unit_id", true, &unit_id) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "beneficiaries", true, 0, 100000000, &beneficiaries) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "target", false, 1000, &target) < 0) return -1;
    if (!target || !*target)
        return bf_req_fail(r, BF_E_INVALID, "target",
                           "a project needs a performance target (绩效目标) to be admitted");
    if (bf_req_str(r, r->params, NULL, "description", false, 2000, &description) < 0) return -1;
    if (funds_req_id(r, "budget_id", true, &budget_id) != 0) return -1;
    if (funds_req_amount(r, r->params, NULL, "amount_fen", true, 1, &amount) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    const char *bid = bf_req_itoa(r, budget_id);
    const char *bp[] = {bid, name};
    PGresult *res = bf_db_prep(r->db, "funds_project_budget",
                               "SELECT b.root_id, b.year, "
                               "  (SELECT j.id FROM project j WHERE j.budget_id = b.id "
                               "    AND j.name = $2) AS existing "
                               "FROM budget b WHERE b.id = $1",
                               2, bp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                           (long long)budget_id);
    }
    int64_t root = bf_db_int(res, 0, "root_id"), existing = bf_db_int(res, 0, "existing");
    int year = (int)bf_db_int(res, 0, "year");
    PQclear(res);
    if (existing)
        return bf_req_fail(r, BF_E_EXISTS, "name", "budget %lld already has a project named %s "
                           "(id %lld)", (long long)budget_id, name, (long long)existing);
    int64_t id = funds_account_create(r, "project", NULL,
                                      bf_arena_printf(r->arena, "project %s", name));
    if (!id) return -1;
    char ben[24];
    snprintf(ben, sizeof ben, "%lld", (long long)beneficiaries);
    const char *p[] = {bf_req_itoa(r, id), bid, name, kind, location,
                       bf_req_itoa(r, unit_id), ben, target, bf_req_itoa(r, amount),
                       description, r->actor};
    res = bf_db_prep(r->db, "funds_project_create",
                     "INSERT INTO project (id, budget_id, name, kind, location, unit_id, "
                     "  beneficiaries, target, amount_fen, description, created_by) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                     11, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    funds_xfer_t x = {.from = budget_id,
                      .to = id,
                      .amount = amount,
                      .kind = "project_funding",
                      .year = year,
                      .budget_id = root,
                      .project_id = id,
                      .ref = bf_arena_printf(r->arena, "project/%lld", (long long)id)};
    if (funds_ledger_append(r, &head, &x, 1, idem.key, "amount_fen") != 0) return -1;

    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 10);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_str(pk, "location", location);
    bf_mp_kv_int(pk, "unit_id", unit_id);
    bf_mp_kv_int(pk, "beneficiaries", beneficiaries);
    bf_mp_kv_str(pk, "target", target);
    bf_mp_kv_int(pk, "budget_id", budget_id);
    bf_mp_kv_int(pk, "amount_fen", amount);
    bf_mp_kv_int(pk, "transfer_id", x.id);
    if (funds_emit(r, &ev, "project.created",
                   bf_arena_printf(r->arena, "project/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "account_id", id);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_int(r->out, "budget_id", budget_id);
    bf_mp_kv_int(r->out, "amount_fen", amount);
    bf_mp_kv_int(r->out, "transfer_id", x.id);
    return funds_idem_commit(r, &idem);
}

static const char *s_tranche_cols =
    "t.id, t.payer_id, t.project_id, t.budget_id, t.seq, t.amount_fen, t.recipient, t.purpose, "
    "t.state, t.requested_by, t.approved_by, t.approval_note, t.disbursed_by, t.transfer_id, "
    "to_char(t.requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS requested_at";

/* One statement: the project, its location (the region scope is checked on it,
 * out of scope answering not_found as funds_scope_project does), its figures
 * and its tranches (a JSON array, funds_pack_json_list): each tranche is
 * {id, project_id, budget_id, seq, amount_fen, recipient, purpose, state,
 * requested_by, requested_at, approved_by, approval_note, disbursed_by,
 * transfer_id}, absent ids nil. */
int project_get(bf_req_t *r)
{
    int64_t id;
    if (funds_req_id(r, "id", true, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(
        r->db, "funds_project_get1",
        "SELECT j.id, j.budget_id, j.name, j.kind, j.location, j.unit_id, j.beneficiaries, "
        "  j.target, j.amount_fen, j.description, j.created_by, a.balance_fen, "
        "  (SELECT COALESCE(sum(m.amount_fen), 0) FROM movement m "
        "    WHERE m.project_id = j.id AND m.kind = 'project_funding') AS funded_fen, "
        "  (SELECT COALESCE(sum(m.amount_fen), 0) FROM movement m "
        "    WHERE m.project_id = j.id AND m.kind = 'disbursement') AS disbursed_fen, "
        "  (SELECT json_agg(json_build_object('id', t.id, 'project_id', t.project_id, "
        "     'budget_id', t.budget_id, 'seq', t.seq, 'amount_fen', t.amount_fen, "
        "     'recipient', t.recipient, 'purpose', t.purpose, 'state', t.state, "
        "     'requested_by', t.requested_by, 'requested_at', "
        "     to_char(t.requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "     'approved_by', t.approved_by, 'approval_note', t.approval_note, "
        "     'disbursed_by', t.disbursed_by, 'transfer_id', t.transfer_id) "
        "     ORDER BY t.seq)::text FROM tranche t WHERE t.payer_id = j.id) AS tranches "
        "FROM project j JOIN account a ON a.id = j.id WHERE j.id = $1",
        1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no project %lld", (long long)id);
    }
    const char *loc = bf_db_null(res, 0, "location")
                          ? NULL
                          : bf_arena_strndup(r->arena, bf_db_str(res, 0, "location"), 12);
    if (funds_scope_location(r, loc, false, "id", "project", id) != 0) {
        PQclear(res);
        return -1;
    }
    msgpack_pack_map(r->out, 15);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "budget_id", bf_db_int(res, 0, "budget_id"));
    bf_mp_kv_str(r->out, "name", bf_db_str(res, 0, "name"));
    bf_mp_kv_str(r->out, "kind", bf_db_str(res, 0, "kind"));
    bf_mp_kv_str(r->out, "location", bf_db_str(res, 0, "location"));
    bf_mp_kv_int(r->out, "unit_id", bf_db_int(res, 0, "unit_id"));
    bf_mp_kv_int(r->out, "beneficiaries", bf_db_int(res, 0, "beneficiaries"));
    bf_mp_kv_str(r->out, "target", bf_db_str(res, 0, "target"));
    bf_mp_kv_str(r->out, "description", bf_db_str(res, 0, "description"));
    bf_mp_kv_int(r->out, "amount_fen", bf_db_int(res, 0, "amount_fen"));
    bf_mp_kv_int(r->out, "funded_fen", bf_db_int(res, 0, "funded_fen"));
    bf_mp_kv_int(r->out, "disbursed_fen", bf_db_int(res, 0, "disbursed_fen"));
    bf_mp_kv_int(r->out, "balance_fen", bf_db_int(res, 0, "balance_fen"));
    bf_mp_kv_str(r->out, "created_by", bf_db_str(res, 0, "created_by"));
    bf_mp_key(r->out, "tranches");
    int rc = funds_pack_json_list(r, res, 0, "tranches");
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------ tranches */

int tranche_plan(bf_req_t *r)
{
    int64_t project_id = 0, budget_id = 0, seq, amount;
    const char *recipient = NULL, *purpose = NULL;
    if (funds_req_id(r, "project_id", false, &project_id) < 0) return -1;
    if (funds_req_id(r, "budget_id", false, &budget_id) < 0) return -1;
    if ((project_id != 0) == (budget_id != 0))
        return bf_req_fail(r, BF_E_INVALID, "project_id",
                           "give exactly one of project_id and budget_id");
    if (bf_req_int(r, r->params, NULL, "seq", true, 1, 1000000, &seq) != 0) return -1;
    if (funds_req_amount(r, r->params, NULL, "amount_fen", true, 1, &amount) != 0) return -1;
    if (funds_req_recipient(r, r->params, NULL, "recipient", budget_id != 0, &recipient) < 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "purpose", false, 500, &purpose) < 0) return -1;
    if (project_id ? funds_scope_project(r, project_id, true, "project_id")
                   : funds_scope_location(r, NULL, true, "budget_id", "budget", budget_id))
        return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    int64_t payer = project_id ? project_id : budget_id;
    const char *pp[] = {bf_req_itoa(r, payer)};
    /* the payer's row serialises planning on it */
    PGresult *res;
    if (project_id)
        res = bf_db_prep(r->db, "funds_plan_project",
                         "SELECT j.unit_id FROM project j JOIN account a ON a.id = j.id "
                         "WHERE j.id = $1 FOR UPDATE OF a",
                         1, pp, NULL, NULL);
    else
        res = bf_db_prep(r->db, "funds_plan_budget",
                         "SELECT b.id FROM budget b JOIN account a ON a.id = b.id "
                         "WHERE b.id = $1 FOR UPDATE OF a",
                         1, pp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        if (project_id)
            return bf_req_fail(r, BF_E_NOT_FOUND, "project_id", "no project %lld",
                               (long long)project_id);
        return bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                           (long long)budget_id);
    }
    if (!recipient)
        recipient = bf_arena_printf(r->arena, "unit:%lld", (long long)bf_db_int(res, 0, "unit_id"));
    PQclear(res);
    res = bf_db_prep(r->db, "funds_plan_state",
                     "SELECT COALESCE(max(seq), 0) AS last_seq, "
                     "  COALESCE(sum(amount_fen) FILTER (WHERE state <> 'reversed'), 0) AS planned "
                     "FROM tranche WHERE payer_id = $1",
                     1, pp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t last_seq = bf_db_int(res, 0, "last_seq"), planned = bf_db_int(res, 0, "planned");
    PQclear(res);
    if (seq <= last_seq)
        return bf_req_fail(r, BF_E_EXISTS, "seq", "tranche %lld is already planned; the next is %lld",
                           (long long)seq, (long long)last_seq + 1);
    if (seq != last_seq + 1)
        return bf_req_fail(r, BF_E_INVALID, "seq", "tranches are numbered in order: the next is %lld",
                           (long long)last_seq + 1);
    int64_t cap, remaining, after;
    if (funds_account_net_in(r, payer, &cap) != 0) return -1;
    if (bf_money_sub(cap, planned, &remaining) != 0) remaining = 0;
    if (bf_money_add(planned, amount, &after) != 0 || amount > remaining)
        return bf_req_fail(r, BF_E_PRECONDITION, "amount_fen",
                           "amount_fen %s yuan exceeds what is left to plan (%s of %s yuan)",
                           funds_yuan(r, amount), funds_yuan(r, remaining), funds_yuan(r, cap));
    char seqs[16];
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    const char *p[] = {pp[0],
                       project_id ? bf_req_itoa(r, project_id) : NULL,
                       budget_id ? bf_req_itoa(r, budget_id) : NULL,
                       seqs,
                       bf_req_itoa(r, amount),
                       recipient,
                       purpose,
                       r->actor};
    res = bf_db_prep(r->db, "funds_tranche_plan",
                     "INSERT INTO tranche (payer_id, project_id, budget_id, seq, amount_fen, "
                     "  recipient, purpose, requested_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                     "RETURNING id",
                     8, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "id", id);
    if (project_id)
        bf_mp_kv_int(pk, "project_id", project_id);
    else
        bf_mp_kv_nil(pk, "project_id");
    if (budget_id)
        bf_mp_kv_int(pk, "budget_id", budget_id);
    else
        bf_mp_kv_nil(pk, "budget_id");
    bf_mp_kv_int(pk, "seq", seq);
    bf_mp_kv_int(pk, "amount_fen", amount);
    bf_mp_kv_str(pk, "recipient", recipient);
    bf_mp_kv_str(pk, "purpose", purpose);
    if (funds_emit(r, &ev, "tranche.planned",
                   bf_arena_printf(r->arena, "tranche/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "seq", seq);
    bf_mp_kv_int(r->out, "amount_fen", amount);
    bf_mp_kv_str(r->out, "recipient", recipient);
    bf_mp_kv_str(r->out, "state", "planned");
    bf_mp_kv_int(r->out, "remaining_to_plan_fen", remaining - amount);
    return funds_idem_commit(r, &idem);
}

/* Reads and locks a tranche row; fills the subject string. */
static PGresult *s_tranche_lock(bf_req_t *r, int64_t id)
{
    const char *p[] = {bf_req_itoa(r, id)};
    char *sql = bf_arena_printf(r->arena, "SELECT %s FROM tranche t WHERE t.id = $1 FOR UPDATE",
                                s_tranche_cols);
    PGresult *res = bf_db_prep(r->db, "funds_tranche_lock", sql, 1, p, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return NULL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_req_fail(r, BF_E_NOT_FOUND, "tranche_id", "no tranche %lld", (long long)id);
        return NULL;
    }
    return res;
}

int tranche_approve(bf_req_t *r)
{
    int64_t id;
    const char *note = NULL;
    if (funds_req_id(r, "tranche_id", true, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    if (funds_scope_tranche(r, id, "tranche_id") != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    /* the approval enters the evidence chain at commit: take its head before
     * the tranche row (lock order: request key, head, entity rows) */
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    PGresult *t = s_tranche_lock(r, id);
    if (!t) return -1;
    const char *state = bf_db_str(t, 0, "state");
    if (!strcmp(bf_db_str(t, 0, "requested_by"), r->actor)) {
        PQclear(t);
        return bf_req_fail(r, BF_E_PERMISSION, "actor",
                           "a tranche is approved by someone other than its requester (%s)",
                           r->actor);
    }
    if (strcmp(state, "planned") != 0) {
        const char *st = bf_arena_strndup(r->arena, state, strlen(state));
        PQclear(t);
        return bf_req_fail(r, BF_E_PRECONDITION, "tranche_id",
                           "tranche %lld is %s; only a planned tranche can be approved",
                           (long long)id, st);
    }
    int64_t seq = bf_db_int(t, 0, "seq"), amount = bf_db_int(t, 0, "amount_fen");
    PQclear(t);
    const char *p[] = {bf_req_itoa(r, id), r->actor, note};
    PGresult *res = bf_db_prep(r->db, "funds_tranche_approve",
                               "UPDATE tranche SET state = 'approved', approved_by = $2, "
                               "  approved_at = now(), approval_note = $3 WHERE id = $1",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_int(pk, "seq", seq);
    bf_mp_kv_int(pk, "amount_fen", amount);
    bf_mp_kv_str(pk, "approved_by", r->actor);
    bf_mp_kv_str(pk, "note", note);
    if (funds_emit(r, &ev, "tranche.approved",
                   bf_arena_printf(r->arena, "tranche/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "state", "approved");
    bf_mp_kv_str(r->out, "approved_by", r->actor);
    return funds_idem_commit(r, &idem);
}

int tranche_disburse(bf_req_t *r)
{
    int64_t id;
    if (funds_req_id(r, "tranche_id", true, &id) != 0) return -1;
    if (funds_scope_tranche(r, id, "tranche_id") != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    PGresult *t = s_tranche_lock(r, id);
    if (!t) return -1;
    const char *st = bf_db_str(t, 0, "state");
    const char *state = bf_arena_strndup(r->arena, st, strlen(st));
    int64_t payer = bf_db_int(t, 0, "payer_id"), seq = bf_db_int(t, 0, "seq");
    int64_t amount = bf_db_int(t, 0, "amount_fen"), project_id = bf_db_int(t, 0, "project_id");
    int64_t budget_id = bf_db_int(t, 0, "budget_id");
    const char *rc_ = bf_db_str(t, 0, "recipient");
    const char *recipient = bf_arena_strndup(r->arena, rc_, strlen(rc_));
    PQclear(t);
    if (strcmp(state, "approved") != 0)
        return bf_req_fail(r, BF_E_PRECONDITION, "tranche_id",
                           "tranche %lld is %s; a tranche is disbursed only once approved",
                           (long long)id, state);
    char seqs[16];
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    const char *op[] = {bf_req_itoa(r, payer), seqs};
    PGresult *res = bf_db_prep(r->db, "funds_tranche_earlier",
                               "SELECT min(seq) AS pending FROM tranche WHERE payer_id = $1 "
                               "AND seq < $2 AND state IN ('planned', 'approved')",
                               2, op, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t pending = bf_db_int(res, 0, "pending");
    PQclear(res);
    if (pending)
        return bf_req_fail(r, BF_E_PRECONDITION, "tranche_id",
                           "tranches are disbursed in order: tranche %lld of this %s is not "
                           "disbursed yet",
                           (long long)pending, project_id ? "project" : "budget");
    /* the root budget and year the money belongs to */
    const char *bp[] = {bf_req_itoa(r, project_id ? project_id : budget_id)};
    res = project_id ? bf_db_prep(r->db, "funds_tranche_dims_p",
                                  "SELECT b.root_id, b.year FROM project j "
                                  "JOIN budget b ON b.id = j.budget_id WHERE j.id = $1",
                                  1, bp, NULL, NULL)
                     : bf_db_prep(r->db, "funds_tranche_dims_b",
                                  "SELECT root_id, year FROM budget WHERE id = $1", 1, bp, NULL,
                                  NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t root = bf_db_int(res, 0, "root_id");
    int year = (int)bf_db_int(res, 0, "year");
    PQclear(res);
    /* the recipient's account */
    const char *rp[] = {recipient};
    res = bf_db_prep(r->db, "funds_recipient_account",
                     "WITH ins AS (INSERT INTO account (kind, ref, name, floor_fen) "
                     "  VALUES ('recipient', $1, $1, 0) ON CONFLICT (kind, ref) DO NOTHING "
                     "  RETURNING id) "
                     "SELECT id FROM ins UNION ALL "
                     "SELECT id FROM account WHERE kind = 'recipient' AND ref = $1",
                     1, rp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t to = bf_db_int(res, 0, "id");
    PQclear(res);
    funds_xfer_t x = {.from = payer,
                      .to = to,
                      .amount = amount,
                      .kind = "disbursement",
                      .year = year,
                      .budget_id = root,
                      .project_id = project_id,
                      .ref = bf_arena_printf(r->arena, "tranche/%lld", (long long)id)};
    if (funds_ledger_append(r, &head, &x, 1, idem.key, "tranche_id") != 0) return -1;
    const char *up[] = {bf_req_itoa(r, id), r->actor, bf_req_itoa(r, x.id)};
    res = bf_db_prep(r->db, "funds_tranche_disbursed",
                     "UPDATE tranche SET state = 'disbursed', disbursed_by = $2, "
                     "  disbursed_at = now(), transfer_id = $3 WHERE id = $1",
                     3, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_int(pk, "seq", seq);
    bf_mp_kv_int(pk, "amount_fen", amount);
    bf_mp_kv_str(pk, "recipient", recipient);
    bf_mp_kv_int(pk, "transfer_id", x.id);
    if (project_id)
        bf_mp_kv_int(pk, "project_id", project_id);
    else
        bf_mp_kv_nil(pk, "project_id");
    if (budget_id)
        bf_mp_kv_int(pk, "budget_id", budget_id);
    else
        bf_mp_kv_nil(pk, "budget_id");
    if (funds_emit(r, &ev, "tranche.disbursed",
                   bf_arena_printf(r->arena, "tranche/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "state", "disbursed");
    bf_mp_kv_int(r->out, "transfer_id", x.id);
    bf_mp_kv_int(r->out, "amount_fen", amount);
    bf_mp_kv_str(r->out, "recipient", recipient);
    return funds_idem_commit(r, &idem);
}
