/* bangfu-funds: main and the method table (see funds.h, docs/funds.md). */
#include "funds.h"
#include "bf_service.h"

#include <stdlib.h>

extern const bf_migration_t funds_migrations[];

static const bf_cfg_def_t s_funds_cfg[] = {
    {"funds.bind", BF_CFG_STR, "tcp://127.0.0.1:7102", 0, 0,
     "address the funds service's RPC ROUTER socket binds"},
    {"funds.chunk_rows", BF_CFG_INT, "2000", 1, 200000,
     "recipients or lines per transaction of a long ledger operation (allocation.apply, "
     "disbursement.batch): each chunk holds the ledger head only for its own rows"},
    {"funds.registry_rpc", BF_CFG_STR, "", 0, 0,
     "the registry's RPC address, for allocation weights_from; empty = $BANGFU_REGISTRY_RPC or "
     "tcp://127.0.0.1:7101"},
    {"funds.registry_timeout_ms", BF_CFG_INT, "5000", 50, 600000,
     "how long the registry's figures (allocation weights_from) may take before the request "
     "fails as unavailable"},
    {NULL, 0, NULL, 0, 0, NULL},
};

#define P_KEY {"request_key", BF_T_STR, BF_REQ, FUNDS_KEY_MAX, \
               "client-chosen key: a retry with the same params replays the first result"}
#define P_END {NULL, 0, 0, 0, NULL}

static const bf_param_t p_source_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "unique name, e.g. 东丽区对口帮扶专项资金"},
    {"kind", BF_T_STR, BF_REQ, 16,
     "central | provincial | prefecture | county | sector | social | unit_raised | donation | "
     "loan"},
    {"provider", BF_T_STR, 0, 200, "who provides it, e.g. 东丽区财政局"},
    P_KEY, P_END,
};
static const bf_param_t p_source_receive[] = {
    {"source_id", BF_T_INT, BF_REQ, 0, "the source"},
    {"amount_fen", BF_T_INT, BF_REQ, 0, "amount received, fen > 0"},
    {"year", BF_T_INT, BF_REQ, 0, "the year the money is for, 2000..2100"},
    {"note", BF_T_STR, 0, 500, "e.g. the appropriation document number"},
    P_KEY, P_END,
};
static const bf_param_t p_id[] = {
    {"id", BF_T_INT, BF_REQ, 0, "entity id"},
    P_END,
};
static const bf_param_t p_source_list[] = {
    {"kind", BF_T_STR, 0, 16, "only this kind"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    P_END,
};
static const bf_param_t p_budget_create[] = {
    {"recipient", BF_T_STR, BF_REQ, FUNDS_RECIPIENT_MAX,
     "region:<code> | village:<id> | household:<id> | person:<id> | unit:<id> | program:<name>"},
    {"year", BF_T_INT, BF_REQ, 0, "budget year, 2000..2100"},
    {"name", BF_T_STR, 0, 200, "distinguishes several budgets of one recipient and year"},
    {"carrier", BF_T_STR, 0, 200, "the carrier unit (帮扶载体单位), e.g. 东丽开发区"},
    {"funding", BF_T_LIST, BF_REQ, 32, "[{source_id, amount_fen}], at least one"},
    P_KEY, P_END,
};
static const bf_param_t p_budget_fund[] = {
    {"budget_id", BF_T_INT, BF_REQ, 0, "a root budget"},
    {"funding", BF_T_LIST, BF_REQ, 32, "[{source_id, amount_fen}], at least one"},
    {"note", BF_T_STR, 0, 500, "why"},
    P_KEY, P_END,
};
static const bf_param_t p_alloc_preview[] = {
    {"budget_id", BF_T_INT, BF_REQ, 0, "the budget to split"},
    {"rule", BF_T_STR, BF_REQ, 16, "fixed | weights"},
    {"amount_fen", BF_T_INT, 0, 0, "the whole to split (required for weights)"},
    {"recipients", BF_T_LIST, 0, FUNDS_MAX_RECIPIENTS,
     "[{recipient, amount_fen}] (fixed) or [{recipient, weight}] (weights); or weights_from"},
    {"weights_from", BF_T_MAP, 0, 0,
     "rule weights: {region_code, level?, measure} - recipients and weights from the "
     "registry's region.figures (measure: households | persons | a category)"},
    {"include_parts", BF_T_BOOL, 0, 0, "return every part (default true)"},
    P_END,
};
static const bf_param_t p_alloc_apply[] = {
    {"budget_id", BF_T_INT, BF_REQ, 0, "the budget to split"},
    {"rule", BF_T_STR, BF_REQ, 16, "fixed | weights"},
    {"amount_fen", BF_T_INT, 0, 0, "the whole to split (required for weights)"},
    {"recipients", BF_T_LIST, 0, FUNDS_MAX_RECIPIENTS,
     "[{recipient, amount_fen}] (fixed) or [{recipient, weight}] (weights); or weights_from"},
    {"weights_from", BF_T_MAP, 0, 0,
     "rule weights: {region_code, level?, measure} - recipients and weights from the "
     "registry's region.figures (measure: households | persons | a category)"},
    P_KEY, P_END,
};
static const bf_param_t p_project_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "e.g. 东丽小学"},
    {"kind", BF_T_STR, BF_REQ, 16,
     "industry | infrastructure | education | health | training | employment | other"},
    {"location", BF_T_STR, BF_REQ, 12, "12-digit division code where it is built or run"},
    {"unit_id", BF_T_INT, BF_REQ, 0, "the responsible unit (registry unit id)"},
    {"beneficiaries", BF_T_INT, BF_REQ, 0, "people who benefit"},
    {"target", BF_T_STR, 0, 1000, "performance target (绩效目标); required to be admitted"},
    {"description", BF_T_STR, 0, 2000, "what it is"},
    {"budget_id", BF_T_INT, BF_REQ, 0, "the budget that funds it"},
    {"amount_fen", BF_T_INT, BF_REQ, 0, "its budget, moved from the budget now"},
    P_KEY, P_END,
};
static const bf_param_t p_tranche_plan[] = {
    {"project_id", BF_T_INT, 0, 0, "the paying project (or budget_id)"},
    {"budget_id", BF_T_INT, 0, 0, "the paying budget (or project_id)"},
    {"seq", BF_T_INT, BF_REQ, 0, "the tranche number: the next one (1, 2, ...)"},
    {"amount_fen", BF_T_INT, BF_REQ, 0, "within what is not yet planned"},
    {"recipient", BF_T_STR, 0, FUNDS_RECIPIENT_MAX,
     "who is paid (default for a project: unit:<its unit_id>)"},
    {"purpose", BF_T_STR, 0, 500, "what the stage pays for"},
    P_KEY, P_END,
};
static const bf_param_t p_tranche_approve[] = {
    {"tranche_id", BF_T_INT, BF_REQ, 0, "a planned tranche"},
    {"note", BF_T_STR, 0, 500, "approval reference or remark"},
    P_KEY, P_END,
};
static const bf_param_t p_tranche_disburse[] = {
    {"tranche_id", BF_T_INT, BF_REQ, 0, "an approved tranche whose predecessors are disbursed"},
    P_KEY, P_END,
};
static const bf_param_t p_batch[] = {
    {"batch_key", BF_T_STR, BF_REQ, FUNDS_KEY_MAX, "names the batch; lines are unique in it"},
    {"budget_id", BF_T_INT, 0, 0, "the paying budget (or project_id)"},
    {"project_id", BF_T_INT, 0, 0, "the paying project (or budget_id)"},
    {"purpose", BF_T_STR, 0, 500, "e.g. 公益岗位工资 2020-06"},
    {"lines", BF_T_LIST, BF_REQ, FUNDS_MAX_LINES,
     "[{line_key, recipient, amount_fen, note?}]"},
    P_KEY, P_END,
};
static const bf_param_t p_reverse[] = {
    {"transfer_id", BF_T_INT, BF_REQ, 0, "the transfer to reverse (once)"},
    {"reason", BF_T_STR, BF_REQ, 500, "why (kept in the ledger)"},
    P_KEY, P_END,
};
static const bf_param_t p_account_get[] = {
    {"id", BF_T_INT, 0, 0, "account id (or recipient)"},
    {"recipient", BF_T_STR, 0, FUNDS_RECIPIENT_MAX, "a recipient's account (or id)"},
    {"limit", BF_T_INT, 0, 0, "recent entries, 1..1000 (default 20)"},
    {"cursor", BF_T_STR, 0, 20, "older entries: a previous page's next_cursor"},
    P_END,
};
static const bf_param_t p_report[] = {
    {"by", BF_T_STR, BF_REQ, 16,
     "budget | year | recipient | source | source_kind | project | project_kind"},
    {"year", BF_T_INT, 0, 0, "only this budget year"},
    {"budget_id", BF_T_INT, 0, 0, "only this root budget"},
    P_END,
};
static const bf_param_t p_trace[] = {
    {"recipient", BF_T_STR, BF_REQ, FUNDS_RECIPIENT_MAX, "the recipient reference"},
    P_END,
};
static const bf_param_t p_budget_list[] = {
    {"year", BF_T_INT, 0, 0, "only this budget year"},
    {"source_id", BF_T_INT, 0, 0, "only budgets (and their children) funded by this source"},
    {"parent_id", BF_T_INT, 0, 0, "only the child budgets of this budget"},
    {"root", BF_T_BOOL, 0, 0, "true: only root budgets; false: only child budgets"},
    {"recipient", BF_T_STR, 0, FUNDS_RECIPIENT_MAX, "only this recipient, e.g. village:42"},
    {"region", BF_T_STR, 0, 12, "only region:<code> recipients under this division code"},
    {"status", BF_T_STR, 0, 8, "open (balance > 0) | spent (balance 0)"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    P_END,
};
static const bf_param_t p_project_list[] = {
    {"year", BF_T_INT, 0, 0, "only projects of budgets of this year"},
    {"budget_id", BF_T_INT, 0, 0, "only projects funded by this budget"},
    {"source_id", BF_T_INT, 0, 0, "only projects whose root budget this source funded"},
    {"kind", BF_T_STR, 0, 16, "only this kind"},
    {"region", BF_T_STR, 0, 12, "only projects located under this division code"},
    {"status", BF_T_STR, 0, 8, "open (balance > 0) | spent (balance 0)"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    P_END,
};
static const bf_param_t p_none[] = {P_END};

/* the points supermarket (爱心超市) */
static const bf_param_t p_rule_define[] = {
    {"region", BF_T_STR, BF_REQ, 12, "the village (12-digit division code) whose rule it is"},
    {"code", BF_T_STR, BF_REQ, 32, "short code, unique in the region, e.g. sanxiang_pingyi"},
    {"name", BF_T_STR, BF_REQ, 200, "the behaviour, e.g. 参加三项评议"},
    {"points", BF_T_INT, BF_REQ, 0, "points it earns, 1..100000"},
    P_KEY, P_END,
};
static const bf_param_t p_rule_list[] = {
    {"region", BF_T_STR, BF_REQ, 12, "the village"},
    P_END,
};
static const bf_param_t p_points_earn[] = {
    {"region", BF_T_STR, BF_REQ, 12, "the household's village"},
    {"household_id", BF_T_INT, BF_REQ, 0, "registry household id"},
    {"rule_code", BF_T_STR, BF_REQ, 32, "a rule of the region"},
    {"note", BF_T_STR, 0, 500, "what was done, when"},
    P_KEY, P_END,
};
static const bf_param_t p_points_approve[] = {
    {"earning_id", BF_T_INT, BF_REQ, 0, "a proposed earning (not proposed by the caller)"},
    {"note", BF_T_STR, 0, 500, "approval remark"},
    P_KEY, P_END,
};
static const bf_param_t p_points_reject[] = {
    {"earning_id", BF_T_INT, BF_REQ, 0, "a proposed earning (not proposed by the caller)"},
    {"reason", BF_T_STR, BF_REQ, 500, "why"},
    P_KEY, P_END,
};
static const bf_param_t p_goods_define[] = {
    {"region", BF_T_STR, BF_REQ, 12, "the village whose supermarket holds it"},
    {"name", BF_T_STR, BF_REQ, 200, "unique in the region, e.g. 大米 10kg"},
    {"unit", BF_T_STR, BF_REQ, 16, "what a quantity counts, e.g. 袋"},
    {"price_points", BF_T_INT, BF_REQ, 0, "points per unit, 1..1000000"},
    P_KEY, P_END,
};
static const bf_param_t p_goods_stock_in[] = {
    {"goods_id", BF_T_INT, BF_REQ, 0, "the goods"},
    {"quantity", BF_T_INT, BF_REQ, 0, "units received, 1..1000000"},
    {"donor", BF_T_STR, BF_REQ, 200, "unit:<registry unit id> or the donor's name"},
    {"note", BF_T_STR, 0, 500, "e.g. the donation receipt"},
    P_KEY, P_END,
};
static const bf_param_t p_goods_list[] = {
    {"region", BF_T_STR, 0, 12, "only goods under this division code"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    P_END,
};
static const bf_param_t p_points_redeem[] = {
    {"household_id", BF_T_INT, BF_REQ, 0, "the household spending its points"},
    {"goods_id", BF_T_INT, BF_REQ, 0, "goods of the household's village"},
    {"quantity", BF_T_INT, BF_REQ, 0, "units, 1..10000"},
    {"note", BF_T_STR, 0, 500, "remark"},
    P_KEY, P_END,
};
static const bf_param_t p_points_reverse[] = {
    {"entry_id", BF_T_INT, BF_REQ, 0, "the points entry to reverse (a redemption's both)"},
    {"reason", BF_T_STR, BF_REQ, 500, "why (kept in the ledger)"},
    P_KEY, P_END,
};
static const bf_param_t p_points_account[] = {
    {"household_id", BF_T_INT, BF_REQ, 0, "the household"},
    {"limit", BF_T_INT, 0, 0, "recent entries, 1..1000 (default 20)"},
    {"cursor", BF_T_STR, 0, 20, "older entries: a previous page's next_cursor"},
    P_END,
};
static const bf_param_t p_points_statement[] = {
    {"region", BF_T_STR, BF_REQ, 12, "the village (or a township, county...)"},
    {"month", BF_T_STR, BF_REQ, 7, "YYYY-MM (UTC)"},
    P_END,
};

/* Who may call what (docs/security.md, "Roles and region scoping"). Staff reads:
 * every reading role but cadre, whose reads are limited to its own tasks,
 * inbox and households. */
#define R_STAFF (BF_ROLE_READERS & ~BF_ROLE_CADRE)

/* The writes that move money share commit groups (docs/performance.md): each
 * group takes the ledger head first (.group_prologue in main()), so its members
 * run one after another under one hold of it and one commit. The rest stay alone:
 * allocation.apply commits in chunks, points has a chain of its own, and the
 * others are rare. */
#define W_GROUP BF_WRITE_GROUP_KEYED

static const bf_method_t s_methods[] = {
    {"source.create", source_create, true, p_source_create, "register a fund source", BF_ROLE_FINANCE},
    {"source.receive", source_receive, W_GROUP, p_source_receive,
     "record money received by a source for a year", BF_ROLE_FINANCE},
    {"source.get", source_get, false, p_id, "one source with what it received, by year", R_STAFF},
    {"source.list", source_list, false, p_source_list, "sources, paged", R_STAFF},
    {"budget.create", budget_create, W_GROUP, p_budget_create,
     "a budget for a recipient and year, funded by sources", BF_ROLE_FINANCE},
    {"budget.fund", budget_fund, W_GROUP, p_budget_fund, "more funding for a root budget", BF_ROLE_FINANCE},
    {"budget.get", budget_get, false, p_id, "one budget with its figures", R_STAFF},
    {"budget.list", budget_list, false, p_budget_list,
     "budgets, paged, by year, source, parent, recipient, region, status", R_STAFF},
    {"allocation.preview", allocation_preview, false, p_alloc_preview,
     "split an amount across recipients, without effect", R_STAFF},
    {"allocation.apply", allocation_apply, true, p_alloc_apply,
     "split an amount into the recipients' child budgets, all or nothing", BF_ROLE_FINANCE},
    {"project.create", project_create, W_GROUP, p_project_create,
     "admit a project (target required) and fund it from a budget", BF_ROLE_FINANCE},
    {"project.get", project_get, false, p_id, "one project with its tranches", R_STAFF},
    {"project.list", project_list, false, p_project_list,
     "projects, paged, by year, budget, source, kind, region, status", R_STAFF},
    {"tranche.plan", tranche_plan, true, p_tranche_plan, "plan the next payment stage", BF_ROLE_FINANCE},
    {"tranche.approve", tranche_approve, W_GROUP, p_tranche_approve,
     "approve a planned tranche (not by its requester)", BF_ROLE_APPROVER},
    {"tranche.disburse", tranche_disburse, W_GROUP, p_tranche_disburse,
     "pay an approved tranche, in order", BF_ROLE_FINANCE},
    {"disbursement.batch", disbursement_batch, W_GROUP, p_batch,
     "pay many recipients; per-line results; idempotent per batch and line", BF_ROLE_FINANCE},
    {"transfer.reverse", transfer_reverse, W_GROUP, p_reverse,
     "correct a transfer with a reversing one", BF_ROLE_FINANCE},
    {"transfer.get", transfer_get, false, p_id, "one ledger entry with its hashes", R_STAFF},
    {"account.get", account_get, false, p_account_get, "balance and recent entries", R_STAFF},
    {"report.utilisation", report_utilisation, false, p_report,
     "budgeted, allocated, disbursed, remaining by a dimension", R_STAFF},
    {"trace.recipient", trace_recipient, false, p_trace,
     "a recipient's money back to its sources", R_STAFF},
    {"ledger.verify", ledger_verify, false, p_none,
     "re-walk the hash chain and re-derive every balance", R_STAFF},
    {"points.rule.define", points_rule_define, true, p_rule_define,
     "a behaviour a village rewards with points", BF_ROLE_OPERATOR},
    {"points.rule.list", points_rule_list, false, p_rule_list, "a village's point rules",
     R_STAFF},
    {"points.earn", points_earn, true, p_points_earn,
     "propose points for a household's behaviour (credited once approved)", BF_ROLE_OPERATOR},
    {"points.approve", points_approve, true, p_points_approve,
     "approve a proposed earning and credit the points (not by its proposer)",
     BF_ROLE_OPERATOR | BF_ROLE_APPROVER},
    {"points.reject", points_reject, true, p_points_reject,
     "reject a proposed earning (not by its proposer)", BF_ROLE_OPERATOR | BF_ROLE_APPROVER},
    {"goods.define", goods_define, true, p_goods_define,
     "goods a village supermarket hands out, with a price in points", BF_ROLE_OPERATOR},
    {"goods.stock_in", goods_stock_in, true, p_goods_stock_in,
     "goods received from a donor onto the shelf", BF_ROLE_OPERATOR},
    {"goods.list", goods_list, false, p_goods_list, "goods with stock on hand, paged", R_STAFF},
    {"points.redeem", points_redeem, true, p_points_redeem,
     "a household spends points on goods; refused when points or stock are short",
     BF_ROLE_OPERATOR},
    {"points.reverse", points_reverse, true, p_points_reverse,
     "correct a points entry with a reversing one (not by who made it)", BF_ROLE_APPROVER},
    {"points.account", points_account, false, p_points_account,
     "a household's points balance and recent entries", R_STAFF},
    {"points.statement", points_statement, false, p_points_statement,
     "a village's monthly points and goods statement (台账)", R_STAFF},
    {"points.verify", points_verify, false, p_none,
     "re-walk the points hash chain and re-derive every balance and stock", R_STAFF},
    {NULL, NULL, false, NULL, NULL, 0},
};

int main(int argc, char **argv)
{
    static const bf_service_def_t def = {
        .name = FUNDS_SERVICE,
        .version = "0.1.0",
        .cfg_defs = s_funds_cfg,
        .migrations = funds_migrations,
        .methods = s_methods,
        .group_prologue = "SELECT 1 FROM ledger_head FOR UPDATE",
    };
    return bf_service_main(&def, argc, argv);
}
