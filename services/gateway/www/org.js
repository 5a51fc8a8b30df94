/* org.js: the helpers pages of the console (#org/...): helper units (帮扶单位),
 * cadres (帮扶干部) with the households each is responsible for against the
 * cap of the cadre's rank (registry.cap_*, returned by cadre.list/cadre.get
 * as `cap`, 0 = no cap), work teams (驻村工作队) and pairings (结对) with their
 * history. Uses app.js's helpers (h, api, table, button, t, msg, ...), which
 * is loaded before this file; registers its page and strings there. */
"use strict";

Object.assign(T["zh-CN"], {
  units: "帮扶单位", cadres: "帮扶干部", teams: "驻村工作队", pairings: "结对",
  caps: "各职级帮扶户数上限", cap_none: "不限", load: "负责户数 / 上限",
  "rank.county": "县级", "rank.division": "处级", "rank.section": "科级", "rank.general": "一般干部",
  "rank.village": "村干部", "kind.unit_village": "单位包村", "kind.team_village": "工作队驻村",
  "kind.cadre_household": "干部包户", "kind.district_county": "区县对口帮扶",
  "kind.helper_household": "社会帮扶到户", all: "全部", active_only: "有效", ended_only: "已结束",
  villages_paired: "结对村", counties_paired: "对口县", households_paired: "结对户",
  contact: "联系人", end_pairing: "结束结对", new_pairing: "新建结对", create: "创建",
  cadres_count: "干部人数", show: "显示",
  caps_note: "上限由注册服务配置（registry.cap_*），此处列出本页干部所属职级的上限。",
});
Object.assign(T.en, {
  units: "Helper units", cadres: "Cadres", teams: "Work teams", pairings: "Pairings",
  caps: "Households per cadre: cap by rank", cap_none: "no cap", load: "Households / cap",
  "rank.county": "county", "rank.division": "division", "rank.section": "section",
  "rank.general": "general", "rank.village": "village", "kind.unit_village": "unit → village",
  "kind.team_village": "team → village", "kind.cadre_household": "cadre → household",
  "kind.district_county": "district → county", "kind.helper_household": "social helper → household",
  all: "All", active_only: "Active", ended_only: "Ended", villages_paired: "Paired villages",
  counties_paired: "Paired counties", households_paired: "Paired households", contact: "Contact",
  end_pairing: "End the pairing", new_pairing: "New pairing", create: "Create",
  cadres_count: "Cadres", show: "Show",
  caps_note: "The caps are the registry's configuration (registry.cap_*); shown for the ranks of the cadres listed here.",
});

const RANKS = ["county", "division", "section", "general", "village"];
const PAIRING_KINDS = ["unit_village", "team_village", "cadre_household", "district_county", "helper_household"];

const rankText = (r) => (r ? t("rank." + r) : "–");
const capText = (cap) => (cap > 0 ? String(cap) : t("cap_none"));
const loadText = (c) => c.households + " / " + capText(c.cap);
const atCap = (c) => c.cap > 0 && c.households >= c.cap;
const link = (href, text, cls) => h("a", { href, class: cls || null }, String(text));

/* where a pairing's helper and target are shown */
function helperLink(p) {
  if (p.kind === "cadre_household") return link("#org/cadre/" + p.helper_id, p.helper_id);
  if (p.kind === "team_village") return link("#org/team/" + p.helper_id, p.helper_id);
  return link("#org/unit/" + p.helper_id, p.helper_id);
}
function targetText(p) {
  if (p.kind === "cadre_household" || p.kind === "helper_household")
    return link("#household/" + p.target_id, t("household") + " " + p.target_id);
  return p.target_code || String(p.target_id);
}

/* a table whose cells may be nodes (links) */
function nodeTable(rows, cols, rowClass) {
  if (!rows.length) return h("p", { class: "muted" }, t("none"));
  return h("table", {},
    h("thead", {}, h("tr", {}, cols.map(([k, label]) => h("th", { "data-col": k }, label)))),
    h("tbody", {}, rows.map((r) => h("tr", { class: rowClass ? rowClass(r) : null, "data-id": r.id },
      cols.map(([k, , fn]) => {
        const v = fn ? fn(r) : r[k];
        if (v instanceof Node) return h("td", {}, v);
        return cell(k, v);
      })))));
}

async function pageOrg(root) {
  const parts = location.hash.slice(1).split("/");
  const sub = parts[1] || "units";
  const id = parseInt(parts[2], 10);
  root.append(h("div", { class: "tabs" }, ["units", "cadres", "teams", "pairings"].map((s) =>
    h("a", { href: "#org/" + s, class: sub === s || sub === s.slice(0, -1) ? "active" : null, "data-tab": s }, t(s)))));
  const view = { units: orgUnits, unit: orgUnit, cadres: orgCadres, cadre: orgCadre, teams: orgTeams,
                 team: orgTeam, pairings: orgPairings }[sub] || orgUnits;
  await view(root, id);
}

/* -------------------------------------------------------------- units */

async function orgUnits(root) {
  root.append(h("h2", {}, t("units")));
  const res = items(await api("registry", "unit.list", { limit: 200 }));
  root.append(nodeTable(res, [["id", colLabel("id")], ["name", colLabel("name"), (u) => link("#org/unit/" + u.id, u.name, "unit")],
    ["kind", colLabel("kind")], ["region_code", colLabel("region_code")],
    ["contact_cadre_id", t("contact"), (u) => (u.contact_cadre_id ? link("#org/cadre/" + u.contact_cadre_id, u.contact_cadre_id) : null)]]));
}

async function orgUnit(root, id) {
  const u = await api("registry", "unit.get", { id });
  root.append(h("h2", {}, t("units") + " #" + id + " " + u.name));
  root.append(table([{ id: u.id, name: u.name, kind: u.kind, region_code: u.region_code,
    [t("contact")]: u.contact ? u.contact.name + " (" + u.contact.id + ")" : null, [t("cadres_count")]: u.cadres }]));
  root.append(h("h3", {}, t("villages_paired")), table(u.villages || [], ["pairing_id", "village_id", "name", "starts_on", "ends_on"]));
  if ((u.counties || []).length)
    root.append(h("h3", {}, t("counties_paired")), table(u.counties, ["pairing_id", "code", "name", "starts_on", "ends_on"]));
  if ((u.household_ids || []).length)
    root.append(h("h3", {}, t("households_paired")), h("p", {}, u.household_ids.flatMap((x) => [link("#household/" + x, t("household") + " " + x), " "])));
  root.append(h("h3", {}, t("cadres")));
  await cadreList(root, { unit_id: id });
}

/* ------------------------------------------------------------- cadres */

async function cadreList(root, filter) {
  const res = items(await api("registry", "cadre.list", Object.assign({ limit: 200 }, filter)));
  /* the cap of each rank seen (the registry returns it with every cadre) */
  const caps = {};
  for (const c of res) caps[c.rank] = c.cap;
  const seen = RANKS.filter((r) => r in caps);
  if (seen.length)
    root.append(h("p", { id: "caps", title: t("caps_note") }, t("caps") + "： ",
      seen.map((r, i) => h("span", { class: "cap", "data-rank": r }, (i ? " · " : "") + rankText(r) + " " + capText(caps[r])))));
  root.append(nodeTable(res, [["id", colLabel("id")], ["name", colLabel("name"), (c) => link("#org/cadre/" + c.id, c.name, "cadre")],
    ["rank", colLabel("rank"), (c) => rankText(c.rank)], ["unit_id", colLabel("unit_id"), (c) => link("#org/unit/" + c.unit_id, c.unit_id)],
    ["party_member", colLabel("party_member")], ["phone", colLabel("phone")],
    ["load", t("load"), (c) => h("span", { class: "load" }, loadText(c))]], (c) => (atCap(c) ? "full" : null)));
}

async function orgCadres(root) {
  root.append(h("h2", {}, t("cadres")));
  const rank = h("select", { id: "cadre-rank" }, h("option", { value: "" }, t("all")),
    RANKS.map((r) => h("option", { value: r }, rankText(r))));
  const out = h("div", {});
  const load = async () => { out.replaceChildren(); await cadreList(out, rank.value ? { rank: rank.value } : {}); };
  rank.addEventListener("change", () => load().catch((e) => msg(e.message)));
  root.append(h("label", {}, colLabel("rank"), rank), out);
  await load();
}

async function orgCadre(root, id) {
  const c = await api("registry", "cadre.get", { id });
  root.append(h("h2", {}, t("cadres") + " #" + id + " " + c.name));
  root.append(nodeTable([c], [["name", colLabel("name")], ["rank", colLabel("rank"), (x) => rankText(x.rank)],
    ["unit", colLabel("unit_id"), (x) => link("#org/unit/" + x.unit_id, x.unit_name + " (" + x.unit_id + ")")],
    ["party_member", colLabel("party_member")], ["phone", colLabel("phone")],
    ["load", t("load"), (x) => h("span", { class: "load" }, loadText(x))]], (x) => (atCap(x) ? "full" : null)));
  root.append(h("h3", {}, t("households_paired")),
    (c.household_ids || []).length ? h("p", {}, c.household_ids.flatMap((x) => [link("#household/" + x, t("household") + " " + x, "household"), " "]))
                                   : h("p", { class: "muted" }, t("none")));
  root.append(h("h3", {}, t("teams")), nodeTable(c.teams || [], [["team_id", colLabel("team_id"), (x) => link("#org/team/" + x.team_id, x.team_id)],
    ["name", colLabel("name")], ["role", colLabel("role")]]));
}

/* -------------------------------------------------------------- teams */

async function orgTeams(root) {
  root.append(h("h2", {}, t("teams")));
  const res = items(await api("registry", "team.list", { limit: 200 }));
  root.append(nodeTable(res, [["id", colLabel("id")], ["name", colLabel("name"), (x) => link("#org/team/" + x.id, x.name, "team")],
    ["unit_id", colLabel("unit_id"), (x) => link("#org/unit/" + x.unit_id, x.unit_id)],
    ["leader_id", colLabel("leader_id"), (x) => link("#org/cadre/" + x.leader_id, x.leader_id)],
    ["member_ids", colLabel("member_ids")], ["village_ids", colLabel("village_ids")]]));
}

async function orgTeam(root, id) {
  const x = await api("registry", "team.get", { id });
  root.append(h("h2", {}, t("teams") + " #" + id + " " + x.name));
  root.append(nodeTable(x.members || [], [["id", colLabel("id")], ["name", colLabel("name"), (m) => link("#org/cadre/" + m.id, m.name)],
    ["rank", colLabel("rank"), (m) => rankText(m.rank)], ["role", colLabel("role")],
    ["party_member", colLabel("party_member")], ["phone", colLabel("phone")]]));
  root.append(h("h3", {}, t("villages_paired")), table(x.villages || [], ["pairing_id", "village_id", "name", "region_code", "starts_on", "ends_on"]));
}

/* ----------------------------------------------------------- pairings */

async function orgPairings(root) {
  root.append(h("h2", {}, t("pairings")));
  const kind = h("select", { id: "pairing-kind" }, h("option", { value: "" }, t("all")),
    PAIRING_KINDS.map((k) => h("option", { value: k }, t("kind." + k))));
  const active = h("select", { id: "pairing-active" }, h("option", { value: "" }, t("all")),
    h("option", { value: "true" }, t("active_only")), h("option", { value: "false" }, t("ended_only")));
  const helper = h("input", { id: "pairing-helper", size: 6, inputmode: "numeric" });
  const out = h("div", {});
  const operator = hasRole("county_operator");
  const load = async () => {
    const params = { limit: 200 };
    if (kind.value) params.kind = kind.value;
    if (active.value) params.active = active.value;
    if (helper.value) params.helper_id = helper.value;
    const res = items(await api("registry", "pairing.list", params));
    const cols = [["id", colLabel("id")], ["kind", colLabel("kind"), (p) => t("kind." + p.kind)],
      ["helper_id", colLabel("helper_id"), helperLink], ["target_id", colLabel("target_id"), targetText],
      ["starts_on", colLabel("starts_on")], ["ends_on", colLabel("ends_on")], ["active", colLabel("active")],
      ["created_by", colLabel("created_by")], ["ended_at", colLabel("ended_at")], ["reason", colLabel("reason")],
      ["approval_ref", colLabel("approval_ref")]];
    if (operator) cols.push(["end", "", (p) => (p.active ? endForm(p, load) : null)]);
    out.replaceChildren(nodeTable(res, cols, (p) => (p.active ? null : "muted")));
  };
  for (const e of [kind, active]) e.addEventListener("change", () => load().catch((er) => msg(er.message)));
  root.append(h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
    h("label", {}, colLabel("kind"), kind), h("label", {}, colLabel("active"), active),
    h("label", {}, colLabel("helper_id"), helper), button(t("show"), load)), out);
  await load();
  if (operator) root.append(createForm(load));
}

/* pairing.end needs a reason and the approving document (seed 000) */
function endForm(p, reload) {
  const reason = h("input", { size: 10, placeholder: t("reason"), class: "end-reason" });
  const ref = h("input", { size: 12, placeholder: colLabel("approval_ref"), class: "end-ref" });
  return h("details", {}, h("summary", {}, t("end_pairing")), reason, " ", ref, " ",
    button(t("end_pairing"), async () => {
      await api("registry", "pairing.end", { id: p.id, reason: reason.value, approval_ref: ref.value }, true);
      await reload();
      msg(t("done"), true);
    }, { class: "end", "data-id": p.id }));
}

/* pairing.create: the registry refuses a cadre at the cap of the rank
 * (failed_precondition, helper_id), shown as the error below the page */
function createForm(reload) {
  const kind = h("select", { id: "new-kind" }, PAIRING_KINDS.map((k) => h("option", { value: k }, t("kind." + k))));
  const helper = h("input", { id: "new-helper", size: 6, inputmode: "numeric" });
  const target = h("input", { id: "new-target", size: 14 });
  const starts = h("input", { id: "new-starts", type: "date", value: new Date().toISOString().slice(0, 10) });
  return h("div", {}, h("h3", {}, t("new_pairing")), h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
    h("label", {}, colLabel("kind"), kind), h("label", {}, colLabel("helper_id"), helper),
    h("label", {}, colLabel("target_id"), target), h("label", {}, colLabel("starts_on"), starts),
    button(t("create"), async () => {
      const params = { kind: kind.value, helper_id: parseInt(helper.value, 10), starts_on: starts.value };
      if (kind.value === "district_county") params.target_code = target.value.trim();
      else params.target_id = parseInt(target.value, 10);
      await api("registry", "pairing.create", params, true);
      await reload();
      msg(t("done"), true);
    }, { id: "new-pairing" })));
}

PAGES.org = pageOrg;
