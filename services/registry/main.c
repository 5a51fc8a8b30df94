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
    {"registry.exit_notice_days", BF_CFG_INT, "7", 1, 365,
     "days the public notice (公示) of an exit runs before the county may approve it"},
    {"registry.exit_income_line_fen", BF_CFG_INT, "400000", 0, 100000000,
     "yearly income per person, in fen, a household needs to exit (2020 line: 4,000 yuan)"},
    {"registry.exit_incidence_permille", BF_CFG_INT, "20", 0, 1000,
     "a village exits when its incidence of poverty is below this, per mille (2 %)"},
    {"registry.exit_incidence_west_permille", BF_CFG_INT, "30", 0, 1000,
     "the same for villages in the western provinces (3 %)"},
    {"registry.exit_west_provinces", BF_CFG_STR, "15,45,50,51,52,53,54,61,62,63,64,65", 0, 0,
     "2-digit codes of the provinces the western threshold applies to"},
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

static const bf_param_t p_household_create[] = {
    {"village_id", BF_T_INT, 0, 0, "the household's village (or village)"},
    {"village", BF_T_STR, 0, 400, "the village's name, 12-digit code or REGION/NAME"},
    {"categories", BF_T_LIST, BF_REQ, 9, "category codes (dibao, low_income, ...), 1..9 distinct"},
    {"causes", BF_T_MAP, BF_REQ, 0, "{main: cause code, secondary?: [cause codes]}"},
    {"route", BF_T_STR, BF_REQ, 16, "employment | industry | safety_net"},
    {"income_fen", BF_T_INT, BF_REQ, 0, "yearly income in fen, >= 0"},
    {"address", BF_T_STR, 0, 500, "address"},
    {"phone", BF_T_STR, 0, 32, "contact mobile number (11 digits)"},
    {"members", BF_T_LIST, BF_REQ, 30,
     "1..30 persons {name, id_number, relation, gender?, phone?, disability?, labour?}, "
     "exactly one relation head"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_get[] = {
    {"id", BF_T_INT, BF_REQ, 0, "household id"},
    {"reveal", BF_T_ANY, 0, 0, "refused: full ID numbers only through household.reveal"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_reveal[] = {
    {"id", BF_T_INT, BF_REQ, 0, "household id"},
    {"reason", BF_T_STR, BF_REQ, 1000, "why the full ID numbers are needed (recorded), non-blank"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_update[] = {
    {"id", BF_T_INT, BF_REQ, 0, "household id"},
    {"categories", BF_T_LIST, 0, 9, "category codes, replaces the list"},
    {"causes", BF_T_MAP, 0, 0, "{main, secondary?}, replaces both"},
    {"route", BF_T_STR, 0, 16, "employment | industry | safety_net"},
    {"income_fen", BF_T_INT, 0, 0, "yearly income in fen, >= 0"},
    {"address", BF_T_STR, 0, 500, "address (\"\" clears it)"},
    {"phone", BF_T_STR, 0, 32, "mobile number (\"\" clears it)"},
    {"status", BF_T_STR, 0, 16, "active | exited (admin only: exits go through household.exit_*)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_list[] = {
    {"village_id", BF_T_INT, 0, 0, "only this village"},
    {"region_code", BF_T_STR, 0, 12, "only villages in this region or below"},
    {"route", BF_T_STR, 0, 16, "only this route"},
    {"category", BF_T_STR, 0, 32, "only households with this category"},
    {"status", BF_T_STR, 0, 16, "active | exited"},
    {"uncovered", BF_T_BOOL, 0, 0, "true: only households without an active responsible cadre; "
                                  "false: only those with one"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_import[] = {
    {"rows", BF_T_LIST, BF_REQ, REGISTRY_MAX_IMPORT_ROWS,
     "household.create params, one map per household, up to 5000"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_add_member[] = {
    {"household_id", BF_T_INT, BF_REQ, 0, "household id"},
    {"member", BF_T_MAP, BF_REQ, 0, "{name, id_number, relation (not head), gender?, phone?, "
                                    "disability?, labour?}"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_household_remove_member[] = {
    {"household_id", BF_T_INT, BF_REQ, 0, "household id"},
    {"person_id", BF_T_INT, BF_REQ, 0, "the member (not the head)"},
    {"reason", BF_T_STR, BF_REQ, 1000, "why (moved away, married out, died, ...), non-empty"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_unit_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "unique name, e.g. 区建委"},
    {"kind", BF_T_STR, BF_REQ, 16, "department | enterprise | street | party_office | social"},
    {"region_code", BF_T_STR, 0, 12, "where the unit sits (must exist)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_unit_list[] = {
    {"kind", BF_T_STR, 0, 16, "only this kind"},
    {"region_code", BF_T_STR, 0, 12, "only units in this region or below"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_unit_set_contact[] = {
    {"id", BF_T_INT, BF_REQ, 0, "unit id"},
    {"cadre_id", BF_T_INT, 0, 0, "a cadre of this unit; absent or nil clears the contact"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_cadre_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "name"},
    {"rank", BF_T_STR, BF_REQ, 16, "county | division | section | general | village"},
    {"unit_id", BF_T_INT, BF_REQ, 0, "the cadre's unit"},
    {"party_member", BF_T_BOOL, BF_REQ, 0, "party member (team leaders must be)"},
    {"phone", BF_T_STR, 0, 32, "mobile number (11 digits)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_cadre_list[] = {
    {"unit_id", BF_T_INT, 0, 0, "only this unit's cadres"},
    {"rank", BF_T_STR, 0, 16, "only this rank"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_team_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "unique name"},
    {"unit_id", BF_T_INT, BF_REQ, 0, "the unit the team comes from"},
    {"leader_id", BF_T_INT, BF_REQ, 0, "the leader (组长), a party member"},
    {"member_ids", BF_T_LIST, BF_REQ, 50, "the other cadres (not the leader), distinct"},
    {"village_ids", BF_T_LIST, BF_REQ, 50, "villages the team is paired with (team_village)"},
    {"starts_on", BF_T_STR, 0, 10, "YYYY-MM-DD the village pairings start (default today)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_team_list[] = {
    {"unit_id", BF_T_INT, 0, 0, "only this unit's teams"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_pairing_create[] = {
    {"kind", BF_T_STR, BF_REQ, 32,
     "unit_village | team_village | cadre_household | district_county | helper_household"},
    {"helper_id", BF_T_INT, BF_REQ, 0, "the unit, team or cadre that helps"},
    {"target_id", BF_T_INT, 0, 0, "the village or household helped (required unless "
                                  "district_county)"},
    {"target_code", BF_T_STR, 0, 12, "district_county: the county's 12-digit code"},
    {"starts_on", BF_T_STR, BF_REQ, 10, "YYYY-MM-DD"},
    {"ends_on", BF_T_STR, 0, 10, "YYYY-MM-DD, the planned end (>= starts_on)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_pairing_end[] = {
    {"id", BF_T_INT, BF_REQ, 0, "pairing id"},
    {"reason", BF_T_STR, BF_REQ, 1000, "why (transfer, resignation, health, ...), non-empty"},
    {"approval_ref", BF_T_STR, BF_REQ, 200, "the approving document's reference, non-empty"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_pairing_list[] = {
    {"helper_id", BF_T_INT, 0, 0, "only this helper"},
    {"target_id", BF_T_INT, 0, 0, "only this target"},
    {"target_code", BF_T_STR, 0, 12, "only this county (district_county)"},
    {"kind", BF_T_STR, 0, 32, "only this kind"},
    {"active", BF_T_BOOL, 0, 0, "true: only active; false: only ended; absent: both"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_review_household[] = {
    {"id", BF_T_INT, BF_REQ, 0, "household id"},
    {"year", BF_T_INT, BF_REQ, 0, "the year of exit"},
    {"review_date", BF_T_STR, BF_REQ, 10, "YYYY-MM-DD of the village's democratic review"},
    {"votes_for", BF_T_INT, BF_REQ, 0, "votes for the exit (must outnumber those against)"},
    {"votes_against", BF_T_INT, BF_REQ, 0, "votes against"},
    {"note", BF_T_STR, BF_REQ, 2000, "the review's minutes, non-empty"},
    {"assured", BF_T_LIST, BF_REQ, 6,
     "food, clothing, education, medical, housing, water: all six must be confirmed"},
    {"evidence", BF_T_LIST, 0, 20, "document references (strings)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_review_village[] = {
    {"id", BF_T_INT, BF_REQ, 0, "village id"},
    {"year", BF_T_INT, BF_REQ, 0, "the year of exit"},
    {"review_date", BF_T_STR, BF_REQ, 10, "YYYY-MM-DD of the review"},
    {"votes_for", BF_T_INT, BF_REQ, 0, "votes for the exit (must outnumber those against)"},
    {"votes_against", BF_T_INT, BF_REQ, 0, "votes against"},
    {"note", BF_T_STR, BF_REQ, 2000, "the review's minutes, non-empty"},
    {"population", BF_T_INT, BF_REQ, 0, "the village's registered population (户籍人口), > 0"},
    {"evidence", BF_T_LIST, 0, 20, "document references (strings)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_verify[] = {
    {"case_id", BF_T_INT, BF_REQ, 0, "exit case id"},
    {"notice_start", BF_T_STR, BF_REQ, 10, "YYYY-MM-DD the public notice was posted"},
    {"note", BF_T_STR, BF_REQ, 2000, "the township's verification, non-empty"},
    {"evidence", BF_T_LIST, 0, 20, "document references (strings)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_object[] = {
    {"case_id", BF_T_INT, BF_REQ, 0, "exit case id"},
    {"objection", BF_T_STR, BF_REQ, 2000, "what was objected, non-empty"},
    {"raised_by", BF_T_STR, 0, 200, "who objected, as given (may be absent: anonymous)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_resolve[] = {
    {"case_id", BF_T_INT, BF_REQ, 0, "exit case id"},
    {"objection_id", BF_T_INT, BF_REQ, 0, "the open objection"},
    {"upheld", BF_T_BOOL, BF_REQ, 0, "true: the objection stands and the case is rejected"},
    {"note", BF_T_STR, BF_REQ, 2000, "how it was looked into, non-empty"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_approve[] = {
    {"case_id", BF_T_INT, BF_REQ, 0, "exit case id"},
    {"approval_ref", BF_T_STR, BF_REQ, 200, "the county's approving document, non-empty"},
    {"note", BF_T_STR, 0, 2000, "note"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_reject[] = {
    {"case_id", BF_T_INT, BF_REQ, 0, "exit case id"},
    {"reason", BF_T_STR, BF_REQ, 2000, "why, non-empty"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_exit_list[] = {
    {"kind", BF_T_STR, 0, 16, "household | village"},
    {"state", BF_T_STR, 0, 16, "reviewed | notice | exited | rejected"},
    {"region_code", BF_T_STR, 0, 12, "only cases in this region or below"},
    {"year", BF_T_INT, 0, 0, "only this year of exit"},
    {"cursor", BF_T_STR, 0, 20, "from a previous page's next_cursor"},
    {"limit", BF_T_INT, 0, 0, "page size, 1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_coverage_report[] = {
    {"region_code", BF_T_STR, 0, 12, "only this region and below"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_org_import[] = {
    {"rows", BF_T_LIST, BF_REQ, REGISTRY_MAX_ORG_IMPORT_ROWS,
     "one map per row, named by natural keys (docs/registry.md), up to 1000"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_village_resolve[] = {
    {"ref", BF_T_STR, BF_REQ, 400, "a village's name, 12-digit code, or REGION/NAME"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_region_figures[] = {
    {"region_code", BF_T_STR, BF_REQ, 12, "the region whose figures are wanted"},
    {"level", BF_T_STR, 0, 16, "break down by province | city | county | township | village "
                               "(default: the region itself)"},
    {NULL, 0, 0, 0, NULL},
};

/* Who may call what (docs/security.md, "Roles and region scoping"). Staff reads:
 * every reading role but cadre, whose reads are limited to its own tasks,
 * inbox and households. */
#define R_STAFF (BF_ROLE_READERS & ~BF_ROLE_CADRE)

static const bf_method_t s_methods[] = {
    {"region.put", region_put, true, p_region_put, "create or update a region (idempotent)", BF_ROLE_ADMIN},
    {"region.get", region_get, false, p_region_get, "one region", BF_ROLE_READERS},
    {"region.list", region_list, false, p_region_list, "regions, paged", BF_ROLE_READERS},
    {"village.create", village_create, true, p_village_create, "register a village", BF_ROLE_OPERATOR},
    {"village.get", village_get, false, p_id, "one village with its active helpers", BF_ROLE_READERS},
    {"village.list", village_list, false, p_village_list, "villages, paged", BF_ROLE_READERS},
    {"household.create", household_create, true, p_household_create,
     "register a household and its members", BF_ROLE_OPERATOR},
    {"household.get", household_get, false, p_household_get,
     "one household: members (ID numbers masked), responsible cadres, helpers", BF_ROLE_READERS},
    {"household.reveal", household_reveal, true, p_household_reveal,
     "one household with its members' full ID numbers, for an auditor with a reason (recorded)",
     BF_ROLE_AUDITOR},
    {"household.update", household_update, true, p_household_update,
     "change a household's categories, causes, route, income, address, phone or status", BF_ROLE_OPERATOR},
    {"household.list", household_list, false, p_household_list, "households, paged, filtered", BF_ROLE_READERS},
    {"household.import", household_import, BF_WRITE_SOLO, p_household_import,
     "register many households; good rows land, bad rows are reported", BF_ROLE_OPERATOR},
    {"household.add_member", household_add_member, true, p_household_add_member,
     "add a person to a household", BF_ROLE_OPERATOR},
    {"household.remove_member", household_remove_member, true, p_household_remove_member,
     "a person leaves a household (kept as history)", BF_ROLE_OPERATOR},
    {"unit.create", unit_create, true, p_unit_create, "register a helper unit", BF_ROLE_OPERATOR},
    {"unit.get", unit_get, false, p_id, "one unit with its contact and active pairings", BF_ROLE_READERS},
    {"unit.list", unit_list, false, p_unit_list, "units, paged", R_STAFF},
    {"unit.set_contact", unit_set_contact, true, p_unit_set_contact,
     "set or clear the unit's contact cadre", BF_ROLE_OPERATOR},
    {"cadre.create", cadre_create, true, p_cadre_create, "register a cadre", BF_ROLE_OPERATOR},
    {"cadre.get", cadre_get, false, p_id, "one cadre with households, cap and teams", BF_ROLE_READERS},
    {"cadre.list", cadre_list, false, p_cadre_list, "cadres, paged", BF_ROLE_READERS},
    {"team.create", team_create, true, p_team_create,
     "form a work team and pair it with its villages", BF_ROLE_OPERATOR},
    {"team.get", team_get, false, p_id, "one team with leader, members and villages", BF_ROLE_READERS},
    {"team.list", team_list, false, p_team_list, "teams, paged", BF_ROLE_READERS},
    {"pairing.create", pairing_create, true, p_pairing_create, "pair a helper with a target", BF_ROLE_OPERATOR},
    {"pairing.end", pairing_end, true, p_pairing_end,
     "end a pairing, with reason and approval (kept as history)", BF_ROLE_OPERATOR},
    {"pairing.get", pairing_get, false, p_id, "one pairing", BF_ROLE_READERS},
    {"pairing.list", pairing_list, false, p_pairing_list, "pairings with history, paged", BF_ROLE_READERS},
    {"household.exit_review", exit_review, true, p_exit_review_household,
     "exit: record the village's democratic review of a household (民主评议)",
     BF_ROLE_OPERATOR | BF_ROLE_CADRE},
    {"household.exit_verify", exit_verify, true, p_exit_verify,
     "exit: township verification; opens the public notice (公示)", BF_ROLE_OPERATOR},
    {"household.exit_object", exit_object, true, p_exit_object,
     "exit: record an objection raised during the notice", BF_ROLE_OPERATOR | BF_ROLE_CADRE},
    {"household.exit_resolve", exit_resolve, true, p_exit_resolve,
     "exit: resolve an objection (upheld rejects the case)", BF_ROLE_OPERATOR},
    {"household.exit_approve", exit_approve, true, p_exit_approve,
     "exit: county approval after the notice; the household is struck off (销号)",
     BF_ROLE_APPROVER},
    {"household.exit_reject", exit_reject, true, p_exit_reject, "exit: turn the case down",
     BF_ROLE_OPERATOR | BF_ROLE_APPROVER},
    {"village.exit_review", exit_review, true, p_exit_review_village,
     "exit: record a village's review with its population (incidence below the threshold)",
     BF_ROLE_OPERATOR},
    {"village.exit_verify", exit_verify, true, p_exit_verify,
     "exit: township verification; opens the public notice (公示)", BF_ROLE_OPERATOR},
    {"village.exit_object", exit_object, true, p_exit_object,
     "exit: record an objection raised during the notice", BF_ROLE_OPERATOR},
    {"village.exit_resolve", exit_resolve, true, p_exit_resolve,
     "exit: resolve an objection (upheld rejects the case)", BF_ROLE_OPERATOR},
    {"village.exit_approve", exit_approve, true, p_exit_approve,
     "exit: county approval after the notice; the village is struck off (销号)",
     BF_ROLE_APPROVER},
    {"village.exit_reject", exit_reject, true, p_exit_reject, "exit: turn the case down",
     BF_ROLE_OPERATOR | BF_ROLE_APPROVER},
    {"exit.get", exit_get, false, p_id, "one exit case with its objections", BF_ROLE_READERS},
    {"exit.list", exit_list, false, p_exit_list, "exit cases, paged, filtered", BF_ROLE_READERS},
    {"unit.import", unit_import, BF_WRITE_SOLO, p_org_import,
     "register many units by name; existing names are reported, bad rows rejected", BF_ROLE_OPERATOR},
    {"cadre.import", cadre_import, BF_WRITE_SOLO, p_org_import,
     "register many cadres by unit name; idempotent on (unit, name)", BF_ROLE_OPERATOR},
    {"team.import", team_import, BF_WRITE_SOLO, p_org_import,
     "form many teams by name with their villages; idempotent on the name", BF_ROLE_OPERATOR},
    {"pairing.import", pairing_import, BF_WRITE_SOLO, p_org_import,
     "many pairings by names and codes, caps applied row by row; idempotent", BF_ROLE_OPERATOR},
    {"village.resolve", village_resolve, false, p_village_resolve,
     "a village's id from its name or division code (ambiguous names refused)", BF_ROLE_READERS},
    {"region.figures", region_figures, false, p_region_figures,
     "households, persons and households by category in a region, by sub-region", R_STAFF},
    {"coverage.report", coverage_report, false, p_coverage_report,
     "uncovered households, cadres over their cap, villages without helpers", R_STAFF},
    {NULL, NULL, false, NULL, NULL, 0},
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
    reg->exit_notice_days = (int)bf_cfg_int(cfg, "registry.exit_notice_days");
    reg->exit_income_line_fen = bf_cfg_int(cfg, "registry.exit_income_line_fen");
    reg->exit_incidence_permille = (int)bf_cfg_int(cfg, "registry.exit_incidence_permille");
    reg->exit_incidence_west_permille =
        (int)bf_cfg_int(cfg, "registry.exit_incidence_west_permille");
    reg->exit_west_provinces = strdup(bf_cfg_str(cfg, "registry.exit_west_provinces"));
    if (!reg->exit_west_provinces) {
        free(reg);
        return -1;
    }
    *svc = reg;
    return 0;
}

static void s_stop(void *svc)
{
    registry_t *reg = svc;
    if (reg) free((char *)reg->exit_west_provinces);
    free(reg);
}

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
