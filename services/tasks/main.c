/* bangfu-tasks: main, config and the method table (see tasks.h, docs/tasks.md). */
#include "tasks.h"
#include "bf_log.h"
#include "bf_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bf_migration_t tasks_migrations[];

static const bf_cfg_def_t s_tasks_cfg[] = {
    {"tasks.bind", BF_CFG_STR, "tcp://127.0.0.1:7103", 0, 0,
     "address the tasks service's RPC ROUTER socket binds"},
    {"tasks.registry_rpc", BF_CFG_STR, "", 0, 0,
     "the registry's RPC address; empty = $BANGFU_REGISTRY_RPC or tcp://127.0.0.1:7101"},
    {"tasks.registry_timeout_ms", BF_CFG_INT, "3000", 50, 600000,
     "how long a registry lookup may take before the request fails as unavailable"},
    {"tasks.registry_cache_ttl_s", BF_CFG_INT, "30", 0, 86400,
     "seconds a positive registry answer (an id exists, its unit/leader/village) is reused "
     "per thread; 0 = ask every time"},
    {"tasks.timezone", BF_CFG_STR, "Asia/Shanghai", 0, 0,
     "zone in which dates mean days (\"by the 25th\" = the end of the 25th here)"},
    {"tasks.clock", BF_CFG_STR, "system", 0, 0,
     "system (a scheduler thread ticks every tasks.tick_seconds) or manual (time from "
     "clock.set, ticks only by scheduler.tick: for tests)"},
    {"tasks.tick_seconds", BF_CFG_INT, "5", 1, 3600, "scheduler period with the system clock"},
    {"tasks.schedule_horizon_days", BF_CFG_INT, "40", 1, 3660,
     "recurring tasks are created this many days before they are due"},
    {"tasks.due_soon", BF_CFG_STR, "72h", 0, 0,
     "lead time of the due-soon reminder (Nm, Nh or Nd), once per task"},
    {"tasks.escalation_steps", BF_CFG_STR, "0h,24h,72h,168h", 0, 0,
     "delay after due of each escalation step (up to 8, rising)"},
    {"tasks.escalation_levels", BF_CFG_STR, "owner,team_leader,helper_unit,org_department", 0,
     0, "who each step goes to (one per step): owner, team_leader, helper_unit, org_department"},
    {"tasks.org_department_id", BF_CFG_INT, "0", 0, 9223372036854775807LL,
     "recipient id of the organisation department level (e.g. its registry unit id)"},
    {"tasks.evidence_max_bytes", BF_CFG_INT, "10485760", 0, 1099511627776LL,
     "total declared size of the attachments of one submission"},
    {"tasks.evidence_max_files", BF_CFG_INT, "20", 0, 1000, "attachments per submission"},
    {"tasks.evidence_task_max_files", BF_CFG_INT, "200", 0, 1000000,
     "attachments a task may hold over all its submissions (0: no quota)"},
    {"tasks.evidence_task_max_bytes", BF_CFG_INT, "104857600", 0, 1099511627776LL,
     "declared bytes of attachments a task may hold over all its submissions (0: no quota)"},
    {"tasks.evidence_types", BF_CFG_STR,
     "image/jpeg,image/png,application/pdf,text/plain,application/msword,"
     "application/vnd.ms-excel,application/vnd.openxmlformats-officedocument.*",
     0, 0, "allowed attachment content types, comma-separated; a trailing * matches a prefix"},
    {"tasks.plan_signers", BF_CFG_STR, "township_secretary,township_head,county_leader", 0, 0,
     "roles whose sign-off a plan needs (seed 001), comma-separated"},
    {"tasks.weight_indicators", BF_CFG_INT, "50", 0, 1000, "assessment weight of indicators"},
    {"tasks.weight_timeliness", BF_CFG_INT, "30", 0, 1000,
     "assessment weight of tasks done on time"},
    {"tasks.weight_satisfaction", BF_CFG_INT, "20", 0, 1000,
     "assessment weight of satisfaction surveys"},
    {"tasks.pass_score_bp", BF_CFG_INT, "6000", 0, 10000,
     "assessment score (basis points) needed to pass the year"},
    {"tasks.help_request_due_hours", BF_CFG_INT, "72", 1, 8760,
     "how soon a household's help request must be answered (求助直通车, fast review)"},
    {"tasks.problem_due_days", BF_CFG_INT, "30", 1, 3650,
     "default rectification deadline of a problem"},
    {"tasks.scheduler_batch", BF_CFG_INT, "500", 1, 100000,
     "tasks handled per scheduler transaction"},
    {"tasks.monitor_days", BF_CFG_INT, "15", 1, 365,
     "days a flagged household's assistance task has (防返贫监测: measures within 15 days)"},
    {"tasks.monitor_income_line_fen", BF_CFG_INT, "600000", 0, 1000000000,
     "monitoring line: yearly income per person below this flags a household (fen)"},
    {"tasks.monitor_spending_fen", BF_CFG_INT, "1000000", 0, 100000000000LL,
     "a reported medical or disaster spending of at least this flags a household (fen)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* ---------------------------------------------------------------- params */

#define END {NULL, 0, 0, 0, NULL}
static const bf_param_t p_id[] = {{"id", BF_T_INT, BF_REQ, 0, "entity id"}, END};
static const bf_param_t p_none[] = {END};

static const bf_param_t p_task_create[] = {
    {"ref", BF_T_STR, 0, TASKS_REF_MAX, "caller's unique key (a repeat is already_exists)"},
    {"title", BF_T_STR, BF_REQ, TASKS_TITLE_MAX, "what is to be done"},
    {"description", BF_T_STR, 0, TASKS_TEXT_MAX, "details"},
    {"kind", BF_T_STR, 0, 32, "duty | report | visit | timeline | rectification | help_request "
                              "| plan | indicator | monitoring | other (default duty)"},
    {"owner", BF_T_MAP, BF_REQ, 0, "{kind: unit|team|cadre, id}"},
    {"team_id", BF_T_INT, 0, 0, "for a cadre owner: the team whose leader is the next escalation "
                                "level"},
    {"target", BF_T_MAP, 0, 0, "{kind: village|household|project|unit|team|cadre, id} or "
                               "{kind: region, code}"},
    {"due", BF_T_STR, BF_REQ, 40, "YYYY-MM-DD (end of that day in tasks.timezone) or RFC 3339"},
    {"vetoing", BF_T_BOOL, 0, 0, "failing it vetoes the owner's yearly assessment"},
    {"plan_id", BF_T_INT, 0, 0, "the plan this task carries out"},
    END};
static const bf_param_t p_task_list[] = {
    {"owner", BF_T_MAP, 0, 0, "{kind, id}"},
    {"target", BF_T_MAP, 0, 0, "{kind, id} or {kind: region, code}"},
    {"status", BF_T_STR, 0, 16, "open | in_progress | submitted | rejected | closed"},
    {"kind", BF_T_STR, 0, 32, "task kind"},
    {"overdue", BF_T_BOOL, 0, 0, "only tasks past due and not closed (true) or the others"},
    {"due_from", BF_T_STR, 0, 40, "due at or after (a date means its start)"},
    {"due_to", BF_T_STR, 0, 40, "due at or before (a date means its end)"},
    {"schedule_id", BF_T_INT, 0, 0, "occurrences of this schedule"},
    {"problem_id", BF_T_INT, 0, 0, "tasks fixing this problem"},
    {"village_id", BF_T_INT, 0, 0, "tasks about this village (or its households)"},
    {"timeline_id", BF_T_INT, 0, 0, "tasks of this timeline"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};
static const bf_param_t p_task_submit[] = {
    {"id", BF_T_INT, BF_REQ, 0, "task id"},
    {"evidence", BF_T_MAP, BF_REQ, 0,
     "{text, attachments: [{name, content_type, size, sha256, data?}]}"},
    END};
static const bf_param_t p_task_verify[] = {
    {"id", BF_T_INT, BF_REQ, 0, "task id"},
    {"note", BF_T_STR, 0, TASKS_TEXT_MAX, "the verifier's note"},
    END};
static const bf_param_t p_task_reject[] = {
    {"id", BF_T_INT, BF_REQ, 0, "task id"},
    {"reason", BF_T_STR, BF_REQ, TASKS_TEXT_MAX, "why it goes back"},
    END};

static const bf_param_t p_plan_create[] = {
    {"kind", BF_T_STR, BF_REQ, 16, "three_year | yearly | household (一户一策)"},
    {"subject", BF_T_MAP, BF_REQ, 0, "{kind: unit|village|household, id}"},
    {"title", BF_T_STR, BF_REQ, TASKS_TITLE_MAX, "title"},
    {"year", BF_T_INT, BF_REQ, 0, "first year (a three-year plan covers year..year+2)"},
    {"measures", BF_T_LIST, 0, 200, "[{what, owner?, due?, cost_fen?}]"},
    END};
static const bf_param_t p_plan_sign[] = {
    {"id", BF_T_INT, BF_REQ, 0, "plan id"},
    {"role", BF_T_STR, BF_REQ, 48, "one of tasks.plan_signers"},
    {"note", BF_T_STR, 0, TASKS_TEXT_MAX, "remark"},
    END};
static const bf_param_t p_plan_revise[] = {
    {"id", BF_T_INT, BF_REQ, 0, "the signed plan (latest revision)"},
    {"reason", BF_T_STR, BF_REQ, TASKS_TEXT_MAX, "why it changes"},
    {"title", BF_T_STR, 0, TASKS_TITLE_MAX, "new title (default: unchanged)"},
    {"measures", BF_T_LIST, 0, 200, "new measures (default: copied)"},
    END};
static const bf_param_t p_plan_list[] = {
    {"subject", BF_T_MAP, 0, 0, "{kind, id}"},
    {"kind", BF_T_STR, 0, 16, "plan kind"},
    {"status", BF_T_STR, 0, 16, "draft | submitted | signed"},
    {"current", BF_T_BOOL, 0, 0, "only latest revisions (default true)"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};

static const bf_param_t p_schedule_create[] = {
    {"ref", BF_T_STR, 0, TASKS_REF_MAX, "caller's unique key"},
    {"title", BF_T_STR, BF_REQ, TASKS_TITLE_MAX, "title of each occurrence"},
    {"description", BF_T_STR, 0, TASKS_TEXT_MAX, "details"},
    {"kind", BF_T_STR, 0, 32, "task kind of the occurrences (default report)"},
    {"rule", BF_T_STR, BF_REQ, 16, "monthly | quarterly | half_yearly | yearly"},
    {"day", BF_T_INT, BF_REQ, 0, "due day of the month, 1..31 (clipped to the month)"},
    {"month", BF_T_INT, 0, 0, "month within the period (default its last)"},
    {"owner", BF_T_MAP, 0, 0, "{kind, id}: one owner"},
    {"each_team_of_unit", BF_T_INT, 0, 0, "or: one occurrence for each team of this unit"},
    {"target", BF_T_MAP, 0, 0, "target of each occurrence"},
    {"starts_on", BF_T_STR, 0, 10, "first day (default today); earlier periods are skipped"},
    {"vetoing", BF_T_BOOL, 0, 0, "occurrences are vetoing"},
    END};
static const bf_param_t p_schedule_list[] = {
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};
static const bf_param_t p_timeline[] = {
    {"template", BF_T_STR, BF_REQ, 32, "county_2015 (seed 001)"},
    {"year", BF_T_INT, BF_REQ, 0, "the year"},
    {"region_code", BF_T_STR, BF_REQ, 12, "the county (or township) it runs in"},
    {"owner", BF_T_MAP, BF_REQ, 0, "{kind, id}: who answers for the steps"},
    {"owners", BF_T_MAP, 0, 0, "per-step owners {step: {kind, id}}"},
    END};

static const bf_param_t p_indicator_define[] = {
    {"code", BF_T_STR, BF_REQ, 64, "unique code, e.g. income_200k"},
    {"name", BF_T_STR, BF_REQ, TASKS_TITLE_MAX, "e.g. 村集体经营性收入达到20万元"},
    {"unit", BF_T_STR, BF_REQ, 32, "unit of the values: fen, households, bool, ..."},
    {"target", BF_T_INT, BF_REQ, 0, "target value (integer, in unit)"},
    {"direction", BF_T_STR, BF_REQ, 2, ">= | <= | ="},
    {"vetoing", BF_T_BOOL, 0, 0, "missing it vetoes the village's units"},
    {"category", BF_T_STR, 0, 64, "grouping"},
    {"description", BF_T_STR, 0, TASKS_TEXT_MAX, "details"},
    END};
static const bf_param_t p_indicator_list[] = {
    {"category", BF_T_STR, 0, 64, "only this category"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};
static const bf_param_t p_indicator_assign[] = {
    {"indicator_id", BF_T_INT, 0, 0, "the indicator (or code)"},
    {"code", BF_T_STR, 0, 64, "the indicator's code"},
    {"village_ids", BF_T_LIST, BF_REQ, 10000, "villages to set it to"},
    {"year", BF_T_INT, 0, 0, "the year (default the current one)"},
    {"target", BF_T_INT, 0, 0, "override of the indicator's target"},
    END};
static const bf_param_t p_indicator_report[] = {
    {"assignment_id", BF_T_INT, 0, 0, "the assignment, or indicator + village (+ year)"},
    {"indicator_id", BF_T_INT, 0, 0, "indicator"},
    {"code", BF_T_STR, 0, 64, "indicator code"},
    {"village_id", BF_T_INT, 0, 0, "village"},
    {"year", BF_T_INT, 0, 0, "year (default current)"},
    {"value", BF_T_INT, BF_REQ, 0, "actual value (integer, in the indicator's unit)"},
    {"note", BF_T_STR, 0, TASKS_TEXT_MAX, "remark"},
    {"evidence", BF_T_MAP, 0, 0, "{text, attachments}"},
    END};
static const bf_param_t p_rollup[] = {
    {"region_code", BF_T_STR, 0, 12, "province, city, county or township code"},
    {"village_id", BF_T_INT, 0, 0, "or one village: its indicators"},
    {"year", BF_T_INT, 0, 0, "year (default current)"},
    {"code", BF_T_STR, 0, 64, "only this indicator"},
    END};

static const bf_param_t p_problem_open[] = {
    {"ref", BF_T_STR, 0, TASKS_REF_MAX, "single problem: caller's unique key"},
    {"inspection", BF_T_MAP, 0, 0, "{title, held_on, kind?, ref?, region_code?}: bulk mode"},
    {"problems", BF_T_LIST, 0, 500, "bulk mode: problems found by the inspection"},
    {"title", BF_T_STR, 0, TASKS_TITLE_MAX, "single problem: what is wrong"},
    {"description", BF_T_STR, 0, TASKS_TEXT_MAX, "details"},
    {"ledger", BF_T_STR, 0, 16, "rectification | difficulty | livelihood | stability"},
    {"village_id", BF_T_INT, 0, 0, "where"},
    {"household_id", BF_T_INT, 0, 0, "whose"},
    {"unit_id", BF_T_INT, 0, 0, "responsible unit"},
    {"responsible", BF_T_LIST, 0, 50, "responsible cadre ids (责任清单)"},
    {"due", BF_T_STR, 0, 40, "rectification deadline (default tasks.problem_due_days)"},
    {"tasks", BF_T_LIST, 0, 50, "[{title, owner, due?}] (default one task)"},
    END};
static const bf_param_t p_problem_list[] = {
    {"ledger", BF_T_STR, 0, 16, "ledger"},
    {"status", BF_T_STR, 0, 16, "open | closed"},
    {"overdue", BF_T_BOOL, 0, 0, "open and past due"},
    {"village_id", BF_T_INT, 0, 0, "village"},
    {"unit_id", BF_T_INT, 0, 0, "responsible unit"},
    {"cadre_id", BF_T_INT, 0, 0, "responsible person"},
    {"inspection_id", BF_T_INT, 0, 0, "inspection"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};
static const bf_param_t p_ledger_summary[] = {
    {"by", BF_T_STR, BF_REQ, 16, "village | unit | person"},
    {"ledger", BF_T_STR, 0, 16, "only this ledger"},
    {"inspection_id", BF_T_INT, 0, 0, "only this inspection's problems"},
    {"limit", BF_T_INT, 0, 0, "rows, 1..10000 (default 1000)"},
    END};
static const bf_param_t p_help_request[] = {
    {"ref", BF_T_STR, 0, TASKS_REF_MAX, "caller's unique key (e.g. the WeChat message id)"},
    {"household_id", BF_T_INT, BF_REQ, 0, "the household asking"},
    {"text", BF_T_STR, BF_REQ, TASKS_TEXT_MAX, "what they need"},
    {"channel", BF_T_STR, 0, 16, "wechat | phone | card | visit | other"},
    {"owner", BF_T_MAP, 0, 0, "who answers (default the household's responsible cadre)"},
    {"due", BF_T_STR, 0, 40, "answer by (default tasks.help_request_due_hours)"},
    END};

static const bf_param_t p_monitor_report[] = {
    {"household_id", BF_T_INT, BF_REQ, 0, "the household at risk"},
    {"cause", BF_T_STR, BF_REQ, 32, "income_low | medical_spending | disaster_spending | job_lost"},
    {"note", BF_T_STR, BF_REQ, TASKS_TEXT_MAX, "what was found (who, when, how)"},
    {"income_fen", BF_T_INT, 0, 0, "newer yearly household income than the registry's (fen)"},
    {"spending_fen", BF_T_INT, 0, 0, "medical_spending / disaster_spending: the amount (fen)"},
    {"owner", BF_T_MAP, 0, 0, "who takes the measures (default the responsible cadre)"},
    END};
static const bf_param_t p_monitor_close[] = {
    {"id", BF_T_INT, BF_REQ, 0, "monitoring case id"},
    {"outcome", BF_T_STR, BF_REQ, 16, "risk_removed | assisted | relapsed"},
    {"note", BF_T_STR, BF_REQ, TASKS_TEXT_MAX, "what was done and found"},
    END};
static const bf_param_t p_monitor_list[] = {
    {"state", BF_T_STR, 0, 16, "open | closed"},
    {"cause", BF_T_STR, 0, 32, "cases with a report of this cause"},
    {"outcome", BF_T_STR, 0, 16, "closed with this outcome"},
    {"overdue", BF_T_BOOL, 0, 0, "assistance task past due and not closed"},
    {"region_code", BF_T_STR, 0, 12, "under this division"},
    {"village_id", BF_T_INT, 0, 0, "in this village"},
    {"household_id", BF_T_INT, 0, 0, "this household's cases"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    END};
static const bf_param_t p_monitor_summary[] = {
    {"region_code", BF_T_STR, BF_REQ, 12, "the region; rows are its children (villages below a "
                                          "township)"},
    {"year", BF_T_INT, 0, 0, "only cases opened in this year"},
    END};

static const bf_param_t p_survey[] = {
    {"unit_id", BF_T_INT, 0, 0, "the unit surveyed"},
    {"village_id", BF_T_INT, 0, 0, "or the village surveyed"},
    {"year", BF_T_INT, BF_REQ, 0, "year"},
    {"score", BF_T_INT, BF_REQ, 0, "satisfaction 0..100"},
    {"respondents", BF_T_INT, 0, 0, "how many answered"},
    {"ref", BF_T_STR, 0, TASKS_REF_MAX, "caller's unique key"},
    END};
static const bf_param_t p_year[] = {{"year", BF_T_INT, BF_REQ, 0, "year"}, END};
static const bf_param_t p_assessment_get[] = {
    {"year", BF_T_INT, BF_REQ, 0, "year"},
    {"run_id", BF_T_INT, 0, 0, "a given run (default the latest of the year)"},
    END};
static const bf_param_t p_clock_set[] = {
    {"now", BF_T_STR, BF_REQ, 40, "RFC 3339 time the manual clock shows from now on"},
    END};

/* Who may call what (docs/security.md, "Roles and region scoping"). Staff reads:
 * every reading role but cadre, whose reads are limited to its own tasks,
 * inbox and households. */
#define R_STAFF (BF_ROLE_READERS & ~BF_ROLE_CADRE)

static const bf_method_t s_methods[] = {
    {"task.create", task_create, true, p_task_create, "create a task", BF_ROLE_OPERATOR},
    {"task.get", task_get, false, p_id, "a task with its history, escalations and evidence", BF_ROLE_READERS},
    {"task.list", task_list, false, p_task_list, "tasks, filtered, paged", BF_ROLE_READERS},
    {"task.start", task_start, true, p_id, "open|rejected -> in_progress", BF_ROLE_OPERATOR | BF_ROLE_CADRE},
    {"task.submit", task_submit, true, p_task_submit, "in_progress -> submitted, with evidence", BF_ROLE_OPERATOR | BF_ROLE_CADRE},
    {"task.verify", task_verify, true, p_task_verify,
     "submitted -> closed (销号); the actor must not be the owner", BF_ROLE_OPERATOR},
    {"task.reject", task_reject, true, p_task_reject,
     "submitted -> rejected with a reason; the actor must not be the owner", BF_ROLE_OPERATOR},
    {"attachment.get", attachment_get, false, p_id, "an attachment with its data", BF_ROLE_READERS},
    {"plan.create", plan_create, true, p_plan_create, "a draft plan with measures", BF_ROLE_OPERATOR},
    {"plan.submit", plan_submit, true, p_id, "draft -> submitted for sign-off", BF_ROLE_OPERATOR},
    {"plan.sign", plan_sign, true, p_plan_sign, "one signer's sign-off; the last one signs it", BF_ROLE_APPROVER},
    {"plan.revise", plan_revise, true, p_plan_revise,
     "a new draft revision of a signed plan (the old one is kept)", BF_ROLE_OPERATOR},
    {"plan.get", plan_get, false, p_id, "a plan with measures, signatures and revisions", R_STAFF},
    {"plan.list", plan_list, false, p_plan_list, "plans, paged", R_STAFF},
    {"schedule.create", schedule_create, true, p_schedule_create, "a recurring duty", BF_ROLE_OPERATOR},
    {"schedule.get", schedule_get, false, p_id, "a schedule", R_STAFF},
    {"schedule.list", schedule_list, false, p_schedule_list, "schedules, paged", R_STAFF},
    {"timeline.instantiate", timeline_instantiate, true, p_timeline,
     "the tasks of a deadline template for a year and region (idempotent)", BF_ROLE_OPERATOR},
    {"indicator.define", indicator_define, true, p_indicator_define, "an indicator template", BF_ROLE_ADMIN},
    {"indicator.list", indicator_list, false, p_indicator_list, "indicators, paged", R_STAFF},
    {"indicator.assign", indicator_assign, true, p_indicator_assign,
     "set an indicator to villages for a year (idempotent)", BF_ROLE_OPERATOR},
    {"indicator.report", indicator_report, true, p_indicator_report,
     "report an actual value with evidence", BF_ROLE_OPERATOR},
    {"progress.rollup", progress_rollup, false, p_rollup,
     "indicator completion of a region and its children, or of one village", R_STAFF},
    {"problem.open", problem_open, true, p_problem_open,
     "open a problem, or many from an inspection, with the tasks that fix them", BF_ROLE_OPERATOR},
    {"problem.get", problem_get, false, p_id, "a problem with its tasks and responsible people", R_STAFF},
    {"problem.list", problem_list, false, p_problem_list, "problems, paged", R_STAFF},
    {"ledger.summary", ledger_summary, false, p_ledger_summary,
     "open / overdue / closed problems per village, unit or person", R_STAFF},
    {"help_request.create", help_request_create, true, p_help_request,
     "a household's help request becomes a livelihood problem and a task", BF_ROLE_OPERATOR},
    {"monitor.report", monitor_report, true, p_monitor_report,
     "report a relapse risk: the rule is checked, the first report opens a case and its "
     "assistance task", BF_ROLE_OPERATOR},
    {"monitor.close", monitor_close, true, p_monitor_close,
     "close a monitoring case with its outcome once its task is verified", BF_ROLE_OPERATOR},
    {"monitor.get", monitor_get, false, p_id, "a monitoring case with its reports", R_STAFF},
    {"monitor.list", monitor_list, false, p_monitor_list, "monitoring cases, filtered, paged",
     R_STAFF},
    {"monitor.summary", monitor_summary, false, p_monitor_summary,
     "flagged, open, overdue and closed cases, causes and outcomes per child region", R_STAFF},
    {"survey.record", survey_record, true, p_survey, "a satisfaction survey result", BF_ROLE_OPERATOR},
    {"assessment.run", assessment_run, BF_WRITE_SOLO, p_year, "score units and villages for a year", BF_ROLE_ADMIN},
    {"assessment.get", assessment_get, false, p_assessment_get, "an assessment's results", R_STAFF},
    {"clock.set", clock_set, BF_WRITE_SOLO, p_clock_set,
     "set the manual clock (tasks.clock = manual only)", BF_ROLE_ADMIN},
    {"clock.get", clock_get, false, p_none, "the service's now, in UTC and the local zone", BF_ROLE_READERS},
    {"scheduler.tick", scheduler_tick, BF_WRITE_SOLO, p_none,
     "run one scheduler pass now and say what it did", BF_ROLE_ADMIN},
    {NULL, NULL, false, NULL, NULL, 0},
};

/* ---------------------------------------------------------------- start */

/* Splits a comma list into out[max][len]; returns the count or -1. */
static int s_split(const char *s, char *out, size_t len, int max)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && (*p == ' ')) {
            p++;
            l--;
        }
        while (l && p[l - 1] == ' ') l--;
        if (l == 0 || l >= len || n >= max) return -1;
        memcpy(out + (size_t)n * len, p, l);
        out[(size_t)n * len + l] = '\0';
        n++;
        if (!e) break;
        p = e + 1;
    }
    return n;
}

static int s_start(const bf_cfg_t *cfg, bf_db_t *db, void **svc)
{
    tasks_t *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->cfg = cfg;
    snprintf(t->timezone, sizeof t->timezone, "%s", bf_cfg_str(cfg, "tasks.timezone"));
    const char *clock = bf_cfg_str(cfg, "tasks.clock");
    if (strcmp(clock, "system") && strcmp(clock, "manual")) {
        bf_log(BF_ERROR, "config: tasks.clock must be system or manual");
        goto fail;
    }
    t->manual_clock = !strcmp(clock, "manual");
    const char *reg = bf_cfg_str(cfg, "tasks.registry_rpc");
    if (!reg || !*reg) reg = getenv("BANGFU_REGISTRY_RPC");
    if (!reg || !*reg) reg = "tcp://127.0.0.1:7101";
    snprintf(t->registry_rpc, sizeof t->registry_rpc, "%s", reg);
    t->registry_timeout_ms = (int)bf_cfg_int(cfg, "tasks.registry_timeout_ms");
    t->cache_ttl_s = (int)bf_cfg_int(cfg, "tasks.registry_cache_ttl_s");
    t->tick_seconds = (int)bf_cfg_int(cfg, "tasks.tick_seconds");
    t->horizon_days = (int)bf_cfg_int(cfg, "tasks.schedule_horizon_days");
    t->due_soon_s = tasks_parse_duration(bf_cfg_str(cfg, "tasks.due_soon"));
    if (t->due_soon_s < 0) {
        bf_log(BF_ERROR, "config: tasks.due_soon must look like 72h, 3d or 30m");
        goto fail;
    }
    char steps[TASKS_MAX_STEPS][16];
    int ns = s_split(bf_cfg_str(cfg, "tasks.escalation_steps"), &steps[0][0], 16,
                     TASKS_MAX_STEPS);
    int nl = s_split(bf_cfg_str(cfg, "tasks.escalation_levels"), &t->step_level[0][0], 16,
                     TASKS_MAX_STEPS);
    if (ns < 0 || nl != ns) {
        bf_log(BF_ERROR, "config: tasks.escalation_steps and tasks.escalation_levels must list "
                         "the same number (at most %d) of entries",
               TASKS_MAX_STEPS);
        goto fail;
    }
    t->nsteps = ns;
    for (int i = 0; i < ns; i++) {
        t->step_delay_s[i] = tasks_parse_duration(steps[i]);
        if (t->step_delay_s[i] < 0 || (i && t->step_delay_s[i] < t->step_delay_s[i - 1])) {
            bf_log(BF_ERROR, "config: tasks.escalation_steps: %s is not a rising duration",
                   steps[i]);
            goto fail;
        }
        const char *lv = t->step_level[i];
        if (strcmp(lv, "owner") && strcmp(lv, "team_leader") && strcmp(lv, "helper_unit") &&
            strcmp(lv, "org_department")) {
            bf_log(BF_ERROR, "config: tasks.escalation_levels: unknown level %s", lv);
            goto fail;
        }
    }
    t->org_department_id = bf_cfg_int(cfg, "tasks.org_department_id");
    t->evidence_max_bytes = bf_cfg_int(cfg, "tasks.evidence_max_bytes");
    t->evidence_max_files = (int)bf_cfg_int(cfg, "tasks.evidence_max_files");
    t->evidence_task_max_files = bf_cfg_int(cfg, "tasks.evidence_task_max_files");
    t->evidence_task_max_bytes = bf_cfg_int(cfg, "tasks.evidence_task_max_bytes");
    t->ntypes = s_split(bf_cfg_str(cfg, "tasks.evidence_types"), &t->types[0][0], 96,
                        TASKS_MAX_TYPES);
    t->nsigners = s_split(bf_cfg_str(cfg, "tasks.plan_signers"), &t->signers[0][0], 48,
                          TASKS_MAX_SIGNERS);
    if (t->ntypes < 0 || t->nsigners < 1) {
        bf_log(BF_ERROR, "config: tasks.evidence_types or tasks.plan_signers is malformed");
        goto fail;
    }
    t->w_ind = (int)bf_cfg_int(cfg, "tasks.weight_indicators");
    t->w_time = (int)bf_cfg_int(cfg, "tasks.weight_timeliness");
    t->w_sat = (int)bf_cfg_int(cfg, "tasks.weight_satisfaction");
    if (t->w_ind + t->w_time + t->w_sat == 0) {
        bf_log(BF_ERROR, "config: the assessment weights must not all be 0");
        goto fail;
    }
    t->pass_bp = (int)bf_cfg_int(cfg, "tasks.pass_score_bp");
    t->help_due_hours = (int)bf_cfg_int(cfg, "tasks.help_request_due_hours");
    t->problem_due_days = (int)bf_cfg_int(cfg, "tasks.problem_due_days");
    t->batch = (int)bf_cfg_int(cfg, "tasks.scheduler_batch");
    t->monitor_days = (int)bf_cfg_int(cfg, "tasks.monitor_days");
    t->monitor_income_line_fen = bf_cfg_int(cfg, "tasks.monitor_income_line_fen");
    t->monitor_spending_fen = bf_cfg_int(cfg, "tasks.monitor_spending_fen");

    /* the zone must be one PostgreSQL knows: all date math happens there */
    const char *zp[] = {t->timezone};
    PGresult *res = bf_db_exec(db, "SELECT now() AT TIME ZONE $1", 1, zp);
    if (!res) {
        bf_log(BF_ERROR, "config: tasks.timezone %s is not a known time zone", t->timezone);
        goto fail;
    }
    PQclear(res);
    if (!t->manual_clock && tasks_scheduler_start(t) != 0) goto fail;
    bf_log(BF_INFO, "tasks: clock %s, zone %s, registry %s, %d escalation steps", clock,
           t->timezone, t->registry_rpc, t->nsteps);
    *svc = t;
    return 0;
fail:
    free(t);
    return -1;
}

static void s_stop(void *svc)
{
    tasks_t *t = svc;
    if (!t) return;
    tasks_scheduler_stop(t);
    free(t);
}

int main(int argc, char **argv)
{
    static const bf_service_def_t def = {
        .name = TASKS_SERVICE,
        .version = "0.1.0",
        .cfg_defs = s_tasks_cfg,
        .migrations = tasks_migrations,
        .methods = s_methods,
        .start = s_start,
        .stop = s_stop,
    };
    return bf_service_main(&def, argc, argv);
}
