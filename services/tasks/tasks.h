/* tasks: the service that tracks the work of pairing assistance (docs/tasks.md).
 *
 * Plans signed off at three levels, tasks with an owner, a target, a due time
 * and a life (open -> in_progress -> submitted -> closed, or sent back),
 * evidence with attachments, recurring duties (the monthly report due on the
 * 25th), the seed 001 timeline as a template, indicators rolled up by region,
 * rectification ledgers closed one by one after verification (台账销号),
 * overdue escalation up a configurable ladder, and the yearly assessment with
 * the one-vote veto, relapse-risk monitoring (防返贫监测). Owners and targets are registry ids checked over RPC
 * (registry.c); the scheduler (scheduler.c) is one function that the
 * scheduler thread (system clock) or scheduler.tick (manual clock) runs, and
 * does each piece of work exactly once however many instances run, by row
 * locks and unique keys. Each group of methods lives in its own file; this
 * header lists what main.c puts in the method table and what they share.
 */
#ifndef TASKS_H
#define TASKS_H

#include "bf_arena.h"
#include "bf_cfg.h"
#include "bf_outbox.h"
#include "bf_rpc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TASKS_SERVICE "tasks"
#define TASKS_MAX_STEPS 8
#define TASKS_MAX_TYPES 32
#define TASKS_MAX_SIGNERS 8
#define TASKS_TITLE_MAX 500
#define TASKS_TEXT_MAX 20000
#define TASKS_REF_MAX 200
/* Items named in a scheduler.tick result (counts are always exact). */
#define TASKS_TICK_ITEMS 1000

/* Read-only after start, shared by every worker and the scheduler thread. */
typedef struct {
    const bf_cfg_t *cfg;
    char timezone[64];
    bool manual_clock;
    char registry_rpc[256];
    int registry_timeout_ms;
    int cache_ttl_s;
    int tick_seconds;
    int horizon_days;
    int64_t due_soon_s;
    int nsteps;
    int64_t step_delay_s[TASKS_MAX_STEPS];
    char step_level[TASKS_MAX_STEPS][16]; /* owner | team_leader | helper_unit | org_department */
    int64_t org_department_id;
    int64_t evidence_max_bytes;
    int evidence_max_files;
    int64_t evidence_task_max_files; /* quota per task, all its submissions; 0 = none */
    int64_t evidence_task_max_bytes;
    int ntypes;
    char types[TASKS_MAX_TYPES][96];
    int nsigners;
    char signers[TASKS_MAX_SIGNERS][48];
    int w_ind, w_time, w_sat;
    int pass_bp;
    int help_due_hours;
    int problem_due_days;
    int batch;
    /* relapse-risk monitoring (monitor.c) */
    int monitor_days;
    int64_t monitor_income_line_fen;
    int64_t monitor_spending_fen;
    /* the scheduler thread (system clock only) */
    pthread_t sched_thread;
    bool sched_started;
    volatile int sched_stop;
} tasks_t;

static inline const tasks_t *tasks_of(const bf_req_t *r) { return (const tasks_t *)r->svc; }

/* ---- scope.c ------------------------------------------------------------- */

/* True when the caller's only reading role is cadre: it sees its own tasks. */
bool tasks_scope_cadre_only(const bf_req_t *r);
/* The caller's cadre id: r->cadre_id, else the id of a "cadre:N" actor; 0 if none. */
int64_t tasks_scope_cadre_id(const bf_req_t *r);
/* For list SQL `($n::bigint IS NULL OR (owner_kind = 'cadre' AND owner_id = $n))`:
 * the cadre id of a cadre-only caller, or NULL. (The region filter uses
 * bf_req_region_prefix: `($m::text IS NULL OR region_code LIKE $m || '%')`.) */
const char *tasks_scope_cadre_param(bf_req_t *r);
/* A write that creates work at code (a 12-digit division code, NULL if the
 * work has no place): 0, or permission_denied naming field when the caller is
 * bound to a region and code is not under it. */
int tasks_scope_write_code(bf_req_t *r, const char *code, const char *field);
/* A read of the `what` with this id, lying at code: 0, or not_found naming
 * field when the caller is bound to a region and code is not under it. */
int tasks_scope_read_code(bf_req_t *r, const char *code, const char *field, const char *what,
                          int64_t id);
/* May the caller see (write false) or act on (write true) task id? 0, or
 * not_found (read) / permission_denied (write) naming field. */
int tasks_scope_task(bf_req_t *r, int64_t id, bool write, const char *field);
/* The same rule on a task row already read (columns region_code, owner_kind,
 * owner_id), for reads that fold the check into their one statement: true if
 * the caller may see it. */
bool tasks_scope_task_row(const bf_req_t *r, const PGresult *res, int row);
/* May a region-bound caller see (write false) or change (write true) what
 * belongs to subject kind/id? Villages and households are asked of the
 * registry; units lie in no region. 0, or not_found / permission_denied
 * naming field. */
int tasks_scope_subject(bf_req_t *r, const char *kind, int64_t id, bool write,
                        const char *field);

/* ---- util.c -------------------------------------------------------------- */

/* Emits "bangfu.tasks.<what>" with subject "<entity>/<id>" in the open
 * transaction; ev holds the packed data map. Returns 0 or fails the request. */
int tasks_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *entity, int64_t id);

/* The current time of the service's clock as timestamptz text (UTC): the
 * system clock, or in manual mode the clock table (real time until set).
 * Arena string, or NULL with the request failed. */
const char *tasks_now(bf_req_t *r);

/* For reads that must stay one statement: the clock as an SQL expression
 * instead of a statement of its own. sys is the system clock's text
 * (tasks_now_params) and manual 't' or 'f'; both are parameters of the
 * statement, named by their placeholders ("$4"). In manual mode the clock
 * table's time is used (real time until set), as tasks_now does. */
#define TASKS_NOW_SQL(sys, manual)                                                            \
    "COALESCE(CASE WHEN " manual "::bool THEN (SELECT now_at FROM clock WHERE id = 1) END, "  \
    sys "::timestamptz)"
/* The two parameters of TASKS_NOW_SQL: arena text, or -1 with the request
 * failed. */
int tasks_now_params(bf_req_t *r, const char **sys, const char **manual);

/* Fails with invalid_argument naming "prefix.key" if map has a key that is
 * not in allowed (NULL-terminated). Returns 0 or -1. */
int tasks_check_keys(bf_req_t *r, const msgpack_object *map, const char *prefix,
                     const char *const *allowed);

/* A due time parameter: "YYYY-MM-DD" (the end of that day in tasks.timezone)
 * or an RFC 3339 timestamp with zone ("2025-09-25T18:00:00+08:00"). *out gets
 * timestamptz text (UTC). 0, 1 (absent, not required) or -1. */
int tasks_due_param(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                    bool required, const char **out);
/* The same, but a bare date means the start of that day (for "from" bounds). */
int tasks_from_param(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                     bool required, const char **out);

/* A date parameter YYYY-MM-DD; 0, 1 or -1. */
int tasks_date_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, const char **out);

/* A non-blank string (not only spaces, tabs, newlines or U+3000) of at most
 * max bytes; 0, 1 or -1. */
int tasks_text_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, size_t max, const char **out);

/* The local calendar year of the service's clock (for year defaults). */
int tasks_current_year(bf_req_t *r, int64_t *year);

/* A list of distinct positive ids; *out (arena) and *n. 0 or -1. */
int tasks_id_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                  int64_t **out, size_t *n);

/* A PostgreSQL array literal of ints ({1,2,3}) in the arena. */
const char *tasks_int_array(bf_req_t *r, const int64_t *v, size_t n);

/* Parses a duration "24h", "3d", "30m", "0h" into seconds; -1 if malformed. */
int64_t tasks_parse_duration(const char *s);

/* basis points met/total, floor; 0 when total is 0. */
int64_t tasks_bp(int64_t met, int64_t total);

/* A map being built whose entries are counted as they are added, so the
 * header is always right: tasks_map_begin, the tm_* adders (tm_key adds a key
 * whose value the caller packs next with tm_pk), then tasks_map_end packs
 * {n entries} into out and frees the buffer. */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint32_t n;
} tasks_map_t;
void tasks_map_begin(tasks_map_t *m);
void tasks_map_end(tasks_map_t *m, msgpack_packer *out);
void tm_key(tasks_map_t *m, const char *key);
void tm_str(tasks_map_t *m, const char *key, const char *val);
void tm_int(tasks_map_t *m, const char *key, int64_t val);
void tm_bool(tasks_map_t *m, const char *key, bool val);
/* column values of a result row: text (nil if NULL), int (nil if NULL), bool */
void tm_col_str(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col);
void tm_col_int(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col);
void tm_col_bool(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col);
#define tm_pk(m) (&(m)->pk)
/* Adds key with the JSON array of a column as its msgpack value (NULL packs
 * []): one-statement reads build their lists with json_agg in the reply's
 * keys and order. 0, or -1 with the request failed (internal). */
int tm_json_list(bf_req_t *r, tasks_map_t *m, const char *key, const PGresult *res, int row,
                 const char *col);

/* ---- registry.c: registry ids checked over RPC ---------------------------- */

/* What the tasks service needs to know about a registry entity. */
typedef struct {
    int64_t id;
    int64_t unit_id;       /* cadre, team: their unit */
    int64_t leader_id;     /* team: its leader */
    int64_t team_id;       /* cadre: a team it belongs to, if the registry says */
    int64_t village_id;    /* household: its village */
    char region_code[13];  /* village: its township or street ("" if unknown) */
} tasks_entity_t;

/* Checks that the registry has entity kind ("unit", "team", "cadre",
 * "village", "household") with id and fills facts (may be NULL). An unknown
 * id fails the request with not_found naming field; an unreachable registry
 * with unavailable. Positive answers are cached per thread for
 * tasks.registry_cache_ttl_s. Returns 0 or -1. */
int tasks_registry_check(bf_req_t *r, const char *kind, int64_t id, const char *field,
                         tasks_entity_t *facts);

/* Checks a region code with region.get. 0 or -1 (not_found naming field). */
int tasks_registry_region(bf_req_t *r, const char *code, const char *field);

/* Member cadre ids of a team (leader included), responsible cadre ids of a
 * household, team ids of a unit: arena arrays. 0 or -1. */
int tasks_registry_team_members(bf_req_t *r, int64_t team_id, const char *field, int64_t **ids,
                                size_t *n);
int tasks_registry_responsible(bf_req_t *r, int64_t household_id, const char *field,
                               int64_t **ids, size_t *n);
int tasks_registry_unit_teams(bf_req_t *r, int64_t unit_id, const char *field, int64_t **ids,
                              size_t *n);
/* Active helper unit ids of a village (unit_village pairings). */
int tasks_registry_village_units(bf_req_t *r, int64_t village_id, const char *field,
                                 int64_t **ids, size_t *n);
/* A household's yearly income (fen) and its number of members, as the
 * registry has them now (never cached). 0 or -1. */
int tasks_registry_household_figures(bf_req_t *r, int64_t household_id, const char *field,
                                     int64_t *income_fen, int64_t *persons);

/* The exits of a year (registry exit cases in state exited with that year),
 * all pages: for each, its village id and whether the village itself exited
 * (else a household of it). Arena arrays. 0 or -1. */
int tasks_registry_exits(bf_req_t *r, int64_t year, const char *field, int64_t **village_ids,
                         bool **is_village, size_t *n);

/* Frees the calling thread's client and cache (the thread-exit destructor
 * does this too). */
void tasks_registry_thread_done(void);

/* ---- owners and targets (task.c) ------------------------------------------ */

typedef struct {
    const char *kind; /* unit | team | cadre */
    int64_t id;
} tasks_owner_t;

typedef struct {
    const char *kind; /* village | household | project | unit | team | cadre | region; NULL = none */
    int64_t id;
    const char *code; /* region: the 12-digit code */
} tasks_target_t;

/* Facts a task keeps from the registry (docs/tasks.md, "What is copied"). */
typedef struct {
    int64_t village_id, esc_team_id, esc_leader_id, esc_unit_id;
    const char *region_code; /* NULL if none */
} tasks_copies_t;

/* Reads and checks an owner map {kind, id} (registry lookup) and fills the
 * escalation chain into c (may be NULL). team_id, if > 0, is the team a
 * cadre owner works in. 0, 1 (absent) or -1. */
int tasks_owner_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                      const char *key, bool required, int64_t team_id, tasks_owner_t *o,
                      tasks_copies_t *c);
/* Resolves the escalation chain of an owner already read. 0 or -1. */
int tasks_owner_chain(bf_req_t *r, const tasks_owner_t *o, int64_t team_id, const char *field,
                      tasks_copies_t *c);
/* Reads and checks a target map {kind, id} or {kind:"region", code}. Fills
 * village_id and region_code of c when the target tells them. 0, 1, -1. */
int tasks_target_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                       const char *key, bool required, tasks_target_t *t, tasks_copies_t *c);

/* Inserts a task in the open transaction and emits task.created. Optional
 * links (schedule/period, timeline/step, problem, plan) are 0/NULL when
 * unused. With on_conflict_skip, a duplicate occurrence or timeline step
 * inserts nothing and *id is set to 0. Returns 0 or -1 (request failed). */
typedef struct {
    const char *ref, *title, *description, *kind, *due;
    tasks_owner_t owner;
    tasks_target_t target;
    tasks_copies_t copies;
    bool vetoing;
    int64_t schedule_id;
    const char *period;
    int64_t timeline_id;
    const char *timeline_step;
    int64_t problem_id, plan_id;
} tasks_new_task_t;
int tasks_insert_task(bf_req_t *r, const tasks_new_task_t *t, bool on_conflict_skip,
                      int64_t *id);

/* Evidence: text plus attachments {name, content_type, size, sha256, data?}.
 * tasks_evidence_param reads and checks the map under key against the limits
 * (tasks.evidence_max_bytes in total, tasks.evidence_max_files, the allowed
 * content types, data length = size, SHA-256 of data = sha256), naming the
 * offending field ("evidence.attachments[1].size"); call it before the
 * transaction. tasks_evidence_store writes it in the open transaction,
 * first checking a task's quota (tasks.evidence_task_max_files and
 * tasks.evidence_task_max_bytes over all its evidence): beyond it, the
 * transaction is rolled back and the answer is resource_exhausted naming
 * evidence.attachments. */
typedef struct {
    const char *name, *content_type;
    char sha256[65];
    int64_t size;
    const char *data; /* into the request's msgpack zone; NULL if not sent */
    size_t data_len;
} tasks_attachment_t;
typedef struct {
    const char *text; /* NULL if none */
    size_t n;
    tasks_attachment_t *att;
    int64_t total_bytes;
} tasks_evidence_t;
int tasks_evidence_param(bf_req_t *r, const msgpack_object *in, const char *key, bool required,
                         tasks_evidence_t *ev);
int tasks_evidence_store(bf_req_t *r, const tasks_evidence_t *ev, int64_t task_id,
                         const char *now, int64_t *evidence_id);

/* Packs a task row selected with TASKS_TASK_COLS. */
void tasks_pack_task(msgpack_packer *pk, const PGresult *res, int row);

/* The SELECT list for tasks_pack_task; $1 must be the clock's now and $2 the
 * time zone in the statement using it. */
#define TASKS_TASK_COLS TASKS_TASK_COLS_AT("$1::timestamptz")
/* The same with now given as an SQL expression (TASKS_NOW_SQL in one-statement
 * reads); $2 is still the time zone. */
#define TASKS_TASK_COLS_AT(now)                                                               \
    "t.id, t.ref, t.title, t.description, t.kind, t.status, t.owner_kind, t.owner_id, "        \
    "t.target_kind, t.target_id, t.target_code, t.village_id, t.region_code, "                 \
    "rfc3339(t.due_at) AS due, rfc3339_local(t.due_at, $2) AS due_local, t.vetoing, "          \
    "(t.status <> 'closed' AND t.due_at < " now ") AS overdue, "                              \
    "t.schedule_id, t.period, t.timeline_id, t.timeline_step, t.problem_id, t.plan_id, "      \
    "t.submissions, t.reject_reason, rfc3339(t.created_at) AS created_at, "                   \
    "rfc3339(t.submitted_at) AS submitted_at, rfc3339(t.closed_at) AS closed_at, t.closed_by, " \
    "t.esc_next_step AS escalation_steps, t.esc_team_id, t.esc_leader_id, t.esc_unit_id"

/* Packs the recipient-explicit event data of a scheduler event (due_soon,
 * overdue, escalated) from a row selected with TASKS_TASK_COLS; extra is the
 * number of key/value pairs the caller packs after (step, level, recipient). */
void tasks_pack_task_event(msgpack_packer *pk, const PGresult *res, int row, int extra);

/* ---- handlers ------------------------------------------------------------- */

/* task.c */
int task_create(bf_req_t *r);
int task_get(bf_req_t *r);
int task_list(bf_req_t *r);
int task_start(bf_req_t *r);
int task_submit(bf_req_t *r);
int task_verify(bf_req_t *r);
int task_reject(bf_req_t *r);
int attachment_get(bf_req_t *r);

/* plan.c */
int plan_create(bf_req_t *r);
int plan_submit(bf_req_t *r);
int plan_sign(bf_req_t *r);
int plan_revise(bf_req_t *r);
int plan_get(bf_req_t *r);
int plan_list(bf_req_t *r);

/* schedule.c */
/* Period arithmetic of recurring schedules: rule is monthly | quarterly |
 * half_yearly | yearly; a period is (year, index) with index 1..per-year. */
int tasks_period_months(const char *rule);
int tasks_period_index_of_month(const char *rule, int month);
void tasks_period_label(const char *rule, int year, int index, char *out, size_t n);
/* The due date YYYY-MM-DD of a period: day `day` (clipped to the month's
 * length) of month `month_in_period` of the period. */
void tasks_period_due_date(const char *rule, int year, int index, int month_in_period, int day,
                           char out[11]);
void tasks_period_next(const char *rule, int *year, int *index);
int schedule_create(bf_req_t *r);
int schedule_get(bf_req_t *r);
int schedule_list(bf_req_t *r);
int timeline_instantiate(bf_req_t *r);

/* indicator.c */
int indicator_define(bf_req_t *r);
int indicator_list(bf_req_t *r);
int indicator_assign(bf_req_t *r);
int indicator_report(bf_req_t *r);
int progress_rollup(bf_req_t *r);

/* problem.c */
int problem_open(bf_req_t *r);
int problem_get(bf_req_t *r);
int problem_list(bf_req_t *r);
int ledger_summary(bf_req_t *r);
int help_request_create(bf_req_t *r);
/* Closes a problem whose tasks are all closed, in the open transaction
 * (called by task.verify). 0 or -1. */
int tasks_problem_maybe_close(bf_req_t *r, int64_t problem_id);

/* assess.c */
int survey_record(bf_req_t *r);
int assessment_run(bf_req_t *r);
int assessment_get(bf_req_t *r);

/* monitor.c: relapse-risk monitoring (防返贫监测) */
int monitor_report(bf_req_t *r);
int monitor_close(bf_req_t *r);
int monitor_get(bf_req_t *r);
int monitor_list(bf_req_t *r);
int monitor_summary(bf_req_t *r);

/* scheduler.c */
int clock_set(bf_req_t *r);
int clock_get(bf_req_t *r);
int scheduler_tick(bf_req_t *r);
/* Starts / stops the scheduler thread (system clock). 0 or -1. */
int tasks_scheduler_start(tasks_t *t);
void tasks_scheduler_stop(tasks_t *t);

#endif
