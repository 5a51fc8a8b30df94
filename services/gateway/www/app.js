/* bangfu console: one page, plain JavaScript, talks only to the gateway's
 * HTTP API (docs/http.md) with the session cookie (HttpOnly, so this script
 * never sees the token) and the X-Bangfu-CSRF header on writes.
 * Amounts: the services keep integer fen; this page shows yuan (万元 when
 * large) and parses what people type as a decimal string, never through
 * floating point. zh-CN first; English by the button in the header. */
"use strict";

const T = {
  "zh-CN": {
    title: "帮扶管理台", "nav.regions": "区域", "nav.funds": "资金", "nav.tasks": "任务",
    "nav.inbox": "收件箱", "nav.queues": "队列", logout: "退出", "login.title": "登录",
    "login.user": "用户名", "login.password": "密码", "login.submit": "登录",
    lang: "English", regions: "区域与全覆盖", households: "户数", uncovered: "未结对户",
    villages: "村", without_helper: "无帮扶单位村", open: "展开", village_hh: "本村农户",
    household: "农户", reveal: "查看完整证件号", reason: "理由", sources: "资金来源",
    project: "项目", budget: "预算", lookup: "查询", approve: "审批通过", tranches: "分期拨付",
    plan: "计划拨付", amount_yuan: "金额（元）", recipient: "收款方", budget_id: "预算编号",
    project_id: "项目编号", tasks: "任务", overdue_only: "只看逾期", refresh: "刷新",
    inbox: "收件箱", person: "对象", queues: "队列", dead: "死信", retry: "重试",
    drop: "丢弃", retry_all: "全部重试", drop_all: "全部丢弃", pause: "暂停", resume: "恢复",
    payload: "内容", done: "完成", confirm_all: "确定对全部死信执行此操作？",
    signed_in_as: "已登录：", none: "无", note: "备注", more: "更多",
    "nav.import": "导入", "nav.org": "帮扶力量", yes: "是", no: "否", members: "家庭成员",
    responsible: "帮扶责任人", social_helpers: "社会帮扶", back: "返回",
    budgets: "预算", projects: "项目", receive: "资金到账", year: "年度", allocation: "资金分配",
    alloc_rule: "分配方式", rule_fixed: "按固定金额（元）", rule_weights: "按权重",
    alloc_whole: "分配总额（元）", alloc_lines: "每行一个：收款方,金额（元）或 收款方,权重",
    preview: "预览", apply: "执行分配", sufficient: "余额足够", insufficient: "余额不足",
    disburse: "拨付", funding: "资金构成",
    import_title: "导入农户（CSV）",
    import_help: "每人一行；同一户编号的行为一户，且须相邻（户编号为空则属上一户）。列名与命令行 bangfu import households 相同，中英文均可。",
    import_file: "CSV 文件", import_village: "默认村ID（可选）", import_mapping: "列对应",
    import_column: "文件中的列", import_field: "对应字段", import_ignore: "（忽略）",
    import_preview: "预览（前 {n} 行，身份证号已遮盖）",
    import_missing: "缺少必需的列：", import_dup: "以下字段对应了多列：",
    import_summary: "读取 {hh} 户（{rows} 行，编码 {enc}）；{bad} 户在发送前即被拒绝。",
    import_send: "导入", import_progress: "已发送 {done}/{total} 批……",
    import_done: "已导入 {accepted} 户，拒绝 {rejected} 户。", import_stopped: "导入中止：",
    id_chars: "[{n} 个字符]", import_too_big: "文件超过 20 MiB：请用命令行 bangfu import households 导入。", rejects: "被拒绝的行", line: "行", ref: "户编号", field: "列", message: "原因",
  },
  en: {
    title: "bangfu console", "nav.regions": "Regions", "nav.funds": "Funds", "nav.tasks": "Tasks",
    "nav.inbox": "Inbox", "nav.queues": "Queues", logout: "Sign out", "login.title": "Sign in",
    "login.user": "Username", "login.password": "Password", "login.submit": "Sign in",
    lang: "中文", regions: "Regions and full coverage", households: "Households",
    uncovered: "Uncovered households", villages: "Villages", without_helper: "Villages without a helper",
    open: "Open", village_hh: "Households of the village", household: "Household",
    reveal: "Reveal the full ID number", reason: "Reason", sources: "Fund sources",
    project: "Project", budget: "Budget", lookup: "Look up", approve: "Approve",
    tranches: "Tranches", plan: "Plan a tranche", amount_yuan: "Amount (yuan)",
    recipient: "Recipient", budget_id: "Budget id", project_id: "Project id", tasks: "Tasks",
    overdue_only: "Overdue only", refresh: "Refresh", inbox: "Inbox", person: "Person",
    queues: "Queues", dead: "Dead letters", retry: "Retry", drop: "Drop",
    retry_all: "Retry all", drop_all: "Drop all", pause: "Pause", resume: "Resume",
    payload: "Payload", done: "Done", confirm_all: "Do this to every dead letter?",
    signed_in_as: "Signed in: ", none: "none", note: "Note", more: "More",
    "nav.import": "Import", "nav.org": "Helpers", yes: "yes", no: "no", members: "Members",
    responsible: "Responsible cadres", social_helpers: "Social helpers", back: "Back",
    budgets: "Budgets", projects: "Projects", receive: "Money received", year: "Year",
    allocation: "Allocation", alloc_rule: "Rule", rule_fixed: "Fixed amounts (yuan)",
    rule_weights: "Weights", alloc_whole: "Whole to split (yuan)",
    alloc_lines: "One per line: recipient,amount (yuan) or recipient,weight",
    preview: "Preview", apply: "Apply", sufficient: "balance suffices", insufficient: "balance too low",
    disburse: "Disburse", funding: "Funding",
    import_title: "Import households (CSV)",
    import_help: "One row per person; rows with the same household_ref form one household and must be adjacent (an empty household_ref continues the household above). Column titles as for the CLI's bangfu import households, in English or Chinese.",
    import_file: "CSV file", import_village: "Default village id (optional)", import_mapping: "Column mapping",
    import_column: "Column in the file", import_field: "Field", import_ignore: "(ignored)",
    import_preview: "Preview (first {n} rows, ID numbers masked)",
    import_missing: "Required columns missing: ", import_dup: "Fields mapped to more than one column: ",
    import_summary: "{hh} households read ({rows} rows, {enc}); {bad} rejected before sending.",
    import_send: "Import", import_progress: "Sent {done} of {total} batches…",
    import_done: "Imported {accepted} households, rejected {rejected}.", import_stopped: "Import stopped: ",
    id_chars: "[{n} characters]", import_too_big: "The file is over 20 MiB: import it with the CLI, bangfu import households.", rejects: "Rejected rows", line: "Line", ref: "household_ref", field: "Column", message: "Reason",
  },
};

/* Column titles of tables (the key itself when none is given here). */
const COLS = {
  "zh-CN": {
    id: "编号", name: "名称", kind: "类别", rank: "职级", unit_id: "单位", unit_name: "单位名称",
    party_member: "党员", phone: "电话", households: "户数", cap: "上限", region_code: "区划代码",
    contact_cadre_id: "联系人", leader_id: "组长", member_ids: "成员", village_ids: "村",
    helper_id: "帮扶方", target_id: "帮扶对象", target_code: "对象区划", starts_on: "开始",
    ends_on: "结束", active: "有效", reason: "原因", approval_ref: "批准文号", created_by: "创建人",
    created_at: "创建时间", ended_at: "结束时间", ended_by: "结束人", id_number: "身份证号",
    relation: "与户主关系", gender: "性别", disability: "残疾", labour: "劳动技能", role: "角色",
    village_id: "村", village_name: "村名", categories: "类别", route: "帮扶路径", status: "状态",
    income_fen: "年收入", address: "住址", covered: "有责任人", pairing_id: "结对",
    cadre_id: "干部", provider: "提供方", external_account_id: "外部账户", recipient: "收款方",
    year: "年度", parent_id: "上级预算", root_id: "根预算", carrier: "帮扶载体", budget_id: "预算",
    location: "地点", beneficiaries: "受益人数", tranches: "分期", tranches_disbursed: "已拨付期数",
    seq: "期次", purpose: "用途", state: "状态", requested_by: "计划人", approved_by: "审批人",
    source_id: "来源", amount_fen: "金额", balance_fen: "余额", received_fen: "到账",
    allocated_fen: "已分配", disbursed_fen: "已拨付", funded_fen: "已拨入", held_fen: "冻结",
    total_fen: "总额", budget_balance_fen: "预算余额", weight: "权重", title: "标题",
    due_at: "截止", escalation_level: "督办级别", team_id: "工作队", causes: "致贫原因",
    household_status: "状态", updated_at: "更新时间", id_numbers_revealed: "已显示完整证件号",
    line: "行", ref: "户编号", field: "列", message: "原因", code: "代码",
  },
  en: {
    id: "ID", name: "Name", kind: "Kind", rank: "Rank", unit_id: "Unit", unit_name: "Unit name",
    party_member: "Party member", phone: "Phone", households: "Households", cap: "Cap",
    region_code: "Region code", contact_cadre_id: "Contact", leader_id: "Leader", member_ids: "Members",
    village_ids: "Villages", helper_id: "Helper", target_id: "Target", target_code: "Target code",
    starts_on: "Starts", ends_on: "Ends", active: "Active", reason: "Reason", approval_ref: "Approval ref",
    created_by: "Created by", created_at: "Created", ended_at: "Ended", ended_by: "Ended by",
    id_number: "ID number", relation: "Relation", gender: "Gender", disability: "Disability",
    labour: "Labour", role: "Role", village_id: "Village", village_name: "Village name",
    categories: "Categories", route: "Route", status: "Status", income_fen: "Income",
    address: "Address", covered: "Has a cadre", pairing_id: "Pairing", cadre_id: "Cadre",
    provider: "Provider", external_account_id: "External account", recipient: "Recipient",
    year: "Year", parent_id: "Parent budget", root_id: "Root budget", carrier: "Carrier",
    budget_id: "Budget", location: "Location", beneficiaries: "Beneficiaries", tranches: "Tranches",
    tranches_disbursed: "Disbursed tranches", seq: "Seq", purpose: "Purpose", state: "State",
    requested_by: "Planned by", approved_by: "Approved by", source_id: "Source", amount_fen: "Amount",
    balance_fen: "Balance", received_fen: "Received", allocated_fen: "Allocated",
    disbursed_fen: "Disbursed", funded_fen: "Funded", held_fen: "Held", total_fen: "Total",
    budget_balance_fen: "Budget balance", weight: "Weight", title: "Title", due_at: "Due",
    escalation_level: "Escalation", team_id: "Team", causes: "Causes", household_status: "Status",
    updated_at: "Updated", id_numbers_revealed: "Full ID numbers shown", line: "Line",
    ref: "household_ref", field: "Column", message: "Reason", code: "Code",
  },
};
let LANG = localStorage.getItem("bf_lang") || "zh-CN";
let ME = null;
let METHODS = null; // paths of the OpenAPI document, to see what the services offer

const $ = (sel, el) => (el || document).querySelector(sel);
const t = (k) => (T[LANG] && T[LANG][k]) || T["zh-CN"][k] || k;
/* Codes the services return, in Chinese (English shows the code itself). */
const VALS_ZH = {
  route: { employment: "就业", industry: "产业", safety_net: "兜底" },
  relation: { head: "户主", spouse: "配偶", child: "子女", parent: "父母", grandchild: "孙子女",
              sibling: "兄弟姐妹", other: "其他" },
  gender: { male: "男", female: "女" },
  labour: { skilled: "技能劳动力", ordinary: "普通劳动力", weak: "弱劳动力", lost: "丧失劳动力", none: "无劳动力" },
  rank: { county: "县级", division: "处级", section: "科级", general: "一般干部", village: "村干部" },
  categories: { dibao: "低保", low_income: "低收入", extreme_poverty: "特困供养", orphan: "散居孤儿",
                left_behind_child: "留守儿童", left_behind_elderly: "留守老人", disabled: "残疾",
                serious_illness: "大病", registered_poor: "建档立卡" },
  causes: { illness: "因病", disability: "因残", lack_of_labour: "缺劳力", education: "因学",
            lack_of_skills: "缺技术", lack_of_land: "缺土地", lack_of_water: "缺水", disaster: "因灾",
            lack_of_funds: "缺资金", transport: "交通条件落后", self_motivation: "自身发展动力不足", other: "其他" },
  household_status: { active: "在册", exited: "已退出" },
  state: { planned: "待审批", approved: "已审批", disbursed: "已拨付", reversed: "已冲正" },
};
const valText = (k, v) => (LANG === "en" || typeof v !== "string" ? v : (VALS_ZH[k] && VALS_ZH[k][v]) || v);

/* t with {name} placeholders filled from vars */
const tf = (k, vars) => t(k).replace(/\{(\w+)\}/g, (m, v) => (v in vars ? String(vars[v]) : m));
const colLabel = (k) => (COLS[LANG] && COLS[LANG][k]) || k;

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined)
    e.append(k instanceof Node ? k : String(k));
  return e;
}

function msg(text, ok) {
  const m = $("#msg");
  m.textContent = text || "";
  m.className = ok ? "ok" : "error";
}

/* ------------------------------------------------------------- money */

/* "1234.5" -> 123450 (fen), exactly, from the decimal text. */
function yuanToFen(text) {
  const s = String(text).trim().replace(/,/g, "");
  const m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(s);
  if (!m) throw new Error(LANG === "en" ? "amount: yuan with at most 2 decimals"
                                        : "金额：元，最多两位小数");
  const fen = BigInt(m[1]) * 100n + BigInt((m[2] || "").padEnd(2, "0"));
  if (fen <= 0n || fen > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("amount out of range");
  return Number(fen);
}

/* 123450 fen -> "1,234.50 元", or "12.3456 万元" from 1,000,000 fen (10,000 yuan). */
function fenText(fen) {
  if (typeof fen !== "number" || !Number.isInteger(fen)) return String(fen);
  const neg = fen < 0;
  const f = BigInt(Math.abs(fen));
  let out;
  if (f >= 1000000n) {
    const whole = f / 1000000n, rest = (f % 1000000n).toString().padStart(6, "0").replace(/0+$/, "");
    out = whole.toLocaleString("en-US") + (rest ? "." + rest : "") + (LANG === "en" ? " ×10k yuan" : " 万元");
  } else {
    out = (f / 100n).toLocaleString("en-US") + "." + (f % 100n).toString().padStart(2, "0") +
          (LANG === "en" ? " yuan" : " 元");
  }
  return (neg ? "-" : "") + out;
}

/* --------------------------------------------------------------- API */

async function api(svc, method, params, write) {
  const opts = { method: write ? "POST" : "GET", credentials: "same-origin", headers: {} };
  let url = "/v1/" + svc + "/" + method;
  if (write) {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Bangfu-CSRF"] = "1";
    opts.body = JSON.stringify(params || {});
  } else if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params))
      if (v !== undefined && v !== null && v !== "")
        q.set(k, typeof v === "object" ? JSON.stringify(v) : String(v));
    if ([...q].length) url += "?" + q;
  }
  const r = await fetch(url, opts);
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 && svc !== "session") { showLogin(); }
  if (!r.ok) {
    const e = body.error || { code: String(r.status), message: r.statusText };
    const err = new Error(e.code + ": " + e.message + (e.field ? " (" + e.field + ")" : ""));
    err.status = r.status;
    throw err;
  }
  return body.result;
}

function hasRole(...roles) {
  return ME && ME.roles.some((r) => r === "admin" || roles.includes(r));
}

function newKey() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return "console-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/* ------------------------------------------------------------- tables */

const MONEY = /(_fen|^amount)$/;

function cell(k, v) {
  if (v === null || v === undefined) return h("td", { class: "muted" }, "–");
  if (typeof v === "string") v = valText(k, v);
  if (Array.isArray(v)) v = v.map((x) => valText(k, x));
  if (typeof v === "number" && MONEY.test(k)) return h("td", { class: "num" }, fenText(v));
  if (typeof v === "number") return h("td", { class: "num" }, String(v));
  if (typeof v === "boolean") return h("td", {}, v ? t("yes") : t("no"));
  if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object"))
    return h("td", {}, v.join(", "));
  if (typeof v === "object") return h("td", {}, h("pre", {}, JSON.stringify(v, null, 1)));
  return h("td", {}, String(v));
}

/* rows: objects; cols: keys to show (default: the first row's scalar keys);
 * extra(row) -> a node for a last column of actions. */
function table(rows, cols, extra, rowClass) {
  if (!rows || !rows.length) return h("p", { class: "muted" }, t("none"));
  cols = cols || Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object" || rows[0][k] === null);
  return h("table", {},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { "data-col": c }, colLabel(c))), extra ? h("th", {}, "") : null)),
    h("tbody", {}, rows.map((r) => h("tr", { class: rowClass ? rowClass(r) : null },
      cols.map((c) => cell(c, r[c])), extra ? h("td", {}, extra(r)) : null))));
}

const items = (res) => (Array.isArray(res) ? res : (res && res.items) || []);

function button(label, fn, attrs) {
  return h("button", Object.assign({ type: "button", on: { click: async (ev) => {
    ev.target.disabled = true;
    try { await fn(ev); } catch (e) { msg(e.message); } finally { ev.target.disabled = false; }
  } } }, attrs || {}), label);
}

/* -------------------------------------------------------------- pages */

async function pageRegions(root) {
  root.append(h("h2", {}, t("regions")));
  const cov = await api("registry", "coverage.report", ME.region ? { region_code: ME.region } : {});
  root.append(table([{
    [t("households")]: cov.households.total, [t("uncovered")]: cov.households.uncovered,
    [t("villages")]: cov.villages.total, [t("without_helper")]: cov.villages.without_helper,
  }]));
  const tree = h("div", { class: "tree" });
  root.append(tree);
  const detail = h("div", { id: "village" });
  root.append(detail);
  async function children(ul, parent) {
    const res = await api("registry", "region.list", parent ? { parent_code: parent } : { level: "province" });
    for (const r of items(res)) {
      const sub = h("ul", {});
      const li = h("li", {}, button("+", async (ev) => {
        ev.target.remove();
        if (r.level === "township" || r.level === "county" || r.level === "village") await villages(sub, r.code);
        if (r.level !== "village") await children(sub, r.code);
      }), " " + r.name + " ", h("span", { class: "muted" }, r.code + " " + r.level), sub);
      ul.append(li);
    }
  }
  async function villages(ul, code) {
    const res = await api("registry", "village.list", { region_code: code, limit: 200 });
    for (const v of items(res).filter((v) => v.region_code.startsWith(code.replace(/0+$/, "")))) {
      ul.append(h("li", {}, v.name + " (" + t("households") + " " + v.households + ") ",
        button(t("open"), () => village(v))));
    }
  }
  async function village(v) {
    detail.replaceChildren(h("h3", {}, v.name + " — " + t("village_hh")));
    const res = await api("registry", "household.list", { village_id: v.id, limit: 200 });
    detail.append(table(items(res), ["id", "categories", "route", "income_fen", "status", "covered"],
      (r) => h("a", { href: "#household/" + r.id, class: "household" }, t("open"))));
  }
  await children(tree.appendChild(h("ul", {})), null);
}

/* #household/<id>: the household page. ID numbers are masked as the registry
 * returns them; for auditors, when the registry offers household.reveal
 * (found in /v1/openapi.json), a reason and a button show the full numbers
 * (household.reveal {id, reason}, an audited write). */
async function pageHousehold(root) {
  const id = parseInt(location.hash.split("/")[1], 10);
  if (!(id > 0)) throw new Error("id");
  root.append(h("h2", {}, t("household") + " #" + id));
  const hh = await api("registry", "household.get", { id });
  const scalars = Object.fromEntries(Object.entries(hh).filter(([, v]) => typeof v !== "object" || v === null));
  scalars.categories = hh.categories;
  if (hh.causes) scalars.causes = [hh.causes.main].concat(hh.causes.secondary || []);
  scalars.household_status = scalars.status;
  delete scalars.status;
  root.append(table([scalars], ["id", "village_id", "village_name", "region_code", "categories", "causes",
    "route", "income_fen", "household_status", "address", "phone", "created_at", "updated_at"]));
  const MEMBER_COLS = ["id", "name", "id_number", "relation", "gender", "phone", "disability", "labour"];
  const list = h("div", { id: "members" }, table(hh.members || [], MEMBER_COLS));
  root.append(h("h3", {}, t("members")), list);
  if (METHODS && METHODS["/v1/registry/household.reveal"] && hasRole("auditor")) {
    const reason = h("input", { id: "reveal-reason", placeholder: t("reason"), size: 30 });
    root.append(h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
      h("label", {}, t("reason"), reason),
      button(t("reveal"), async () => {
        const r = await api("registry", "household.reveal", { id, reason: reason.value }, true);
        list.replaceChildren(table(r.members || [], MEMBER_COLS));
        msg(t("done"), true);
      }, { id: "reveal-button" })));
  }
  root.append(h("h3", {}, t("responsible")), table(hh.responsible || [],
    ["pairing_id", "cadre_id", "name", "rank", "phone", "starts_on", "ends_on"],
    (c) => h("a", { href: "#org/cadre/" + c.cadre_id }, t("open"))));
  if ((hh.helpers || []).length)
    root.append(h("h3", {}, t("social_helpers")), table(hh.helpers,
      ["pairing_id", "unit_id", "name", "contact_cadre_id", "starts_on", "ends_on"],
      (u) => h("a", { href: "#org/unit/" + u.unit_id }, t("open"))));
}

/* Every amount here is shown in yuan (万元 from 10,000 yuan on) and typed in
 * yuan; what is sent is integer fen (yuanToFen). */
async function pageFunds(root) {
  root.append(h("h2", {}, t("sources")));
  const sources = items(await api("funds", "source.list", { limit: 100 }));
  root.append(table(sources, ["id", "name", "kind", "provider", "received_fen", "balance_fen"]));
  if (hasRole("finance") && sources.length) {
    const src = h("select", { id: "receive-source" }, sources.map((x) => h("option", { value: x.id }, x.id + " " + x.name)));
    const amount = h("input", { id: "receive-amount", size: 14, placeholder: "12345.67" });
    const year = h("input", { id: "receive-year", size: 6, value: String(new Date().getFullYear()) });
    const note = h("input", { id: "receive-note", size: 20 });
    root.append(h("h3", {}, t("receive")), h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
      h("label", {}, t("sources"), src), h("label", {}, t("amount_yuan"), amount),
      h("label", {}, t("year"), year), h("label", {}, t("note"), note),
      button(t("receive"), async () => {
        const params = { source_id: parseInt(src.value, 10), amount_fen: yuanToFen(amount.value),
          year: parseInt(year.value, 10), request_key: newKey() };
        if (note.value) params.note = note.value;
        await api("funds", "source.receive", params, true);
        await show("funds");
        msg(t("done"), true);
      }, { id: "receive-button" })));
  }
  const out = h("div", { id: "payer" });
  const bid = h("input", { id: "budget-id", size: 8, inputmode: "numeric" });
  const pid = h("input", { id: "project-id", size: 8, inputmode: "numeric" });
  root.append(h("h2", {}, t("budgets") + " / " + t("projects")), h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
    h("label", {}, t("budget_id"), bid), button(t("lookup"), async () => showPayer("budget", bid.value, out), { id: "budget-lookup" }),
    h("label", {}, t("project_id"), pid), button(t("lookup"), async () => showPayer("project", pid.value, out), { id: "project-lookup" })));
  root.append(out);
  const hash = location.hash.split("/");
  if ((hash[1] === "project" || hash[1] === "budget") && hash[2]) {
    (hash[1] === "project" ? pid : bid).value = hash[2];
    await showPayer(hash[1], hash[2], out);
  }
  const budgets = items(await api("funds", "budget.list", { limit: 50 }));
  root.append(h("h3", {}, t("budgets")), table(budgets,
    ["id", "parent_id", "recipient", "year", "name", "carrier", "balance_fen", "held_fen"],
    (b) => h("a", { href: "#funds/budget/" + b.id }, t("open"))));
  const projects = items(await api("funds", "project.list", { limit: 50 }));
  root.append(h("h3", {}, t("projects")), table(projects,
    ["id", "budget_id", "year", "name", "kind", "location", "amount_fen", "balance_fen", "tranches", "tranches_disbursed"],
    (x) => h("a", { href: "#funds/project/" + x.id }, t("open"))));
}

async function showPayer(kind, idText, out) {
  const id = parseInt(idText, 10);
  if (!(id > 0)) throw new Error("id");
  const p = await api("funds", kind + ".get", { id });
  const scalars = Object.fromEntries(Object.entries(p).filter(([, v]) => typeof v !== "object" || v === null));
  out.replaceChildren(h("h3", {}, t(kind) + " #" + id), table([scalars]));
  if (p.funding) out.append(h("h4", {}, t("funding")), table(p.funding, ["source_id", "name", "kind", "amount_fen"]));
  out.append(h("h3", {}, t("tranches")));
  out.append(table(p.tranches || [], ["id", "seq", "amount_fen", "recipient", "purpose", "state", "requested_by", "approved_by"],
    (tr) => tr.state === "planned" && hasRole("approver") ? button(t("approve"), async () => {
      await api("funds", "tranche.approve", { tranche_id: tr.id, request_key: newKey() }, true);
      msg(t("done"), true);
      await showPayer(kind, idText, out);
    }, { class: "approve", "data-tranche": tr.id })
    : tr.state === "approved" && hasRole("finance") ? button(t("disburse"), async () => {
      await api("funds", "tranche.disburse", { tranche_id: tr.id, request_key: newKey() }, true);
      msg(t("done"), true);
      await showPayer(kind, idText, out);
    }, { class: "disburse", "data-tranche": tr.id }) : null));
  if (hasRole("finance")) {
    const amount = h("input", { id: "plan-amount", size: 14, placeholder: "12345.67" });
    const rcpt = h("input", { id: "plan-recipient", size: 18, placeholder: "household:1" });
    const seq = h("input", { id: "plan-seq", size: 4, value: String((p.tranches || []).length + 1) });
    out.append(h("h3", {}, t("plan")), h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
      h("label", {}, "seq", seq), h("label", {}, t("amount_yuan"), amount), h("label", {}, t("recipient"), rcpt),
      button(t("plan"), async () => {
        const params = { [kind === "budget" ? "budget_id" : "project_id"]: id,
          seq: parseInt(seq.value, 10), amount_fen: yuanToFen(amount.value), request_key: newKey() };
        if (rcpt.value) params.recipient = rcpt.value;
        await api("funds", "tranche.plan", params, true);
        msg(t("done"), true);
        await showPayer(kind, idText, out);
      })));
  }
  if (kind === "budget") out.append(allocationForm(id, () => showPayer(kind, idText, out)));
}

/* allocation.preview / allocation.apply on a budget: recipients one per line,
 * "recipient,amount in yuan" (fixed) or "recipient,weight" (weights, with the
 * whole in yuan). Parts are shown in yuan. */
function allocationForm(budgetId, reload) {
  const rule = h("select", { id: "alloc-rule" }, h("option", { value: "fixed" }, t("rule_fixed")),
    h("option", { value: "weights" }, t("rule_weights")));
  const whole = h("input", { id: "alloc-whole", size: 14, placeholder: "100000.00" });
  const lines = h("textarea", { id: "alloc-lines", rows: 4, cols: 40, placeholder: "village:1,5000.00\nvillage:2,2500.50" });
  const res = h("div", { id: "alloc-result" });
  const params = () => {
    const recipients = lines.value.split(/\n/).map((l) => l.trim()).filter((l) => l).map((l, i) => {
      const m = /^([^,，]+)[,，]\s*(.+)$/.exec(l);
      if (!m) throw new Error(t("alloc_lines") + " (" + (i + 1) + ")");
      if (rule.value === "fixed") return { recipient: m[1].trim(), amount_fen: m[2].trim() === "0" ? 0 : yuanToFen(m[2]) };
      if (!/^\d{1,15}$/.test(m[2].trim())) throw new Error(colLabel("weight") + " (" + (i + 1) + ")");
      return { recipient: m[1].trim(), weight: parseInt(m[2].trim(), 10) };
    });
    const p = { budget_id: budgetId, rule: rule.value, recipients };
    if (rule.value === "weights" || whole.value.trim()) p.amount_fen = yuanToFen(whole.value);
    return p;
  };
  const wrap = h("div", {}, h("h3", {}, t("allocation")),
    h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
      h("label", {}, t("alloc_rule"), rule), h("label", {}, t("alloc_whole"), whole),
      h("label", {}, t("alloc_lines"), lines),
      button(t("preview"), async () => {
        const r = await api("funds", "allocation.preview", params(), true);
        res.replaceChildren(h("p", { class: r.sufficient ? "" : "error" }, colLabel("total_fen") + " " + fenText(r.total_fen) +
          " · " + colLabel("budget_balance_fen") + " " + fenText(r.budget_balance_fen) + " · " +
          (r.sufficient ? t("sufficient") : t("insufficient"))), table(r.parts || [], ["recipient", "amount_fen"]));
      }, { id: "alloc-preview" }),
      hasRole("finance") ? button(t("apply"), async () => {
        const p = params();
        p.request_key = newKey();
        await api("funds", "allocation.apply", p, true);
        await reload();
        msg(t("done"), true);
      }, { id: "alloc-apply" }) : null),
    res);
  return wrap;
}

async function pageTasks(root) {
  root.append(h("h2", {}, t("tasks")));
  const overdue = h("input", { type: "checkbox" });
  const out = h("div", {});
  const load = async () => {
    const res = await api("tasks", "task.list", overdue.checked ? { overdue: true, limit: 200 } : { limit: 200 });
    const now = Date.now();
    out.replaceChildren(table(items(res), ["id", "kind", "title", "status", "due_at", "escalation_level"], null,
      (r) => (r.status !== "closed" && r.due_at && Date.parse(r.due_at) < now ? "overdue" : null)));
  };
  root.append(h("label", {}, t("overdue_only"), overdue), button(t("refresh"), load), out);
  overdue.addEventListener("change", () => load().catch((e) => msg(e.message)));
  await load();
}

async function pageInbox(root) {
  const person = ME.cadre_id ? "cadre:" + ME.cadre_id : "user:" + ME.username;
  root.append(h("h2", {}, t("inbox") + " — " + person));
  const res = await api("notify", "inbox.list", { person, limit: 100 });
  root.append(table(items(res)));
}

async function pageQueues(root) {
  root.append(h("h2", {}, t("queues")));
  const st = await api("notify", "queues.stats");
  const admin = hasRole();
  root.append(table(st.queues, ["name", "length", "pending", "lag", "oldest_age_ms", "consumers",
    "delivered_1m", "failed_1m", "delivered_1h", "failed_1h", "retry", "dead", "paused"],
    admin ? (q) => button(q.paused ? t("resume") : t("pause"), async () => {
      await api("notify", q.paused ? "queues.resume" : "queues.pause", { queue: q.name }, true);
      await show("queues");
      msg(t("done"), true);
    }, { class: "pause", "data-queue": q.name }) : null, (q) => (q.paused ? "paused" : null)));
  root.append(h("p", {}, "retry: " + st.retry.size + " · dead: " + st.dead.size));
  root.append(h("h3", {}, t("dead")));
  const dead = items(await api("notify", "queues.dead.list", { limit: 100 }));
  if (admin && dead.length) root.append(h("p", {},
    button(t("retry_all"), async () => { if (confirm(t("confirm_all"))) { await api("notify", "queues.dead.retry", { all: true }, true); await show("queues"); msg(t("done"), true); } }),
    " ", button(t("drop_all"), async () => { if (confirm(t("confirm_all"))) { await api("notify", "queues.dead.drop", { all: true }, true); await show("queues"); msg(t("done"), true); } })));
  /* the payload (the whole event) is fetched when a row is opened */
  const payload = (d) => {
    const pre = h("pre", {}, "…");
    const det = h("details", {}, h("summary", {}, t("payload")), pre);
    det.addEventListener("toggle", async () => {
      if (!det.open || det.dataset.loaded) return;
      try {
        pre.textContent = JSON.stringify(await api("notify", "queues.dead.show", { id: d.id }), null, 1);
        det.dataset.loaded = "1";
      } catch (e) { pre.textContent = e.message; }
    });
    return det;
  };
  const DEAD_COLS = ["id", "channel", "event_type", "type", "recipient", "endpoint_id", "attempts", "last_error", "dead_at"];
  root.append(table(dead, dead.length ? DEAD_COLS.filter((c) => c in dead[0]) : null, (d) => h("span", {}, payload(d),
      admin ? button(t("retry"), async () => { await api("notify", "queues.dead.retry", { id: d.id }, true); await show("queues"); msg(t("done"), true); }, { class: "retry", "data-id": d.id }) : null,
      admin ? button(t("drop"), async () => { await api("notify", "queues.dead.drop", { id: d.id }, true); await show("queues"); msg(t("done"), true); }, { class: "drop", "data-id": d.id }) : null)));
}

/* #import: households from a CSV file, mapped as the CLI maps them (import.js),
 * sent in batches to registry household.import; rejects per CSV line. */
async function pageImport(root) {
  root.append(h("h2", {}, t("import_title")), h("p", { class: "muted" }, t("import_help")));
  const file = h("input", { type: "file", id: "import-file", accept: ".csv,text/csv" });
  const village = h("input", { id: "import-village", size: 8, inputmode: "numeric" });
  const mapping = h("div", { id: "import-mapping" });
  const preview = h("div", { id: "import-preview" });
  const check = h("div", { id: "import-check" });
  const result = h("div", { id: "import-result" });
  root.append(h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
    h("label", {}, t("import_file"), file), h("label", {}, t("import_village"), village)),
    mapping, preview, check, result);
  let records = null, header = null, map = null, enc = "";

  const rejectsTable = (rows) => table(rows.sort((x, y) => x.line - y.line), ["line", "ref", "field", "message"]);
  const labelOf = (k) => { const c = BfImport.COLUMNS.find((x) => x.key === k); return k + " " + c.aliases[0]; };
  function plan() {
    const m = BfImport.checkMap(header, map);
    const vd = parseInt(village.value, 10) > 0 ? parseInt(village.value, 10) : 0;
    if (!vd && !("village_id" in m.col) && !m.missing.includes("village_id")) m.missing.unshift("village_id");
    return { m, r: m.missing.length || m.problems.length ? null : BfImport.households(records.slice(1), header, m, vd) };
  }
  function render() {
    mapping.replaceChildren(h("h3", {}, t("import_mapping")), h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, t("import_column")), h("th", {}, t("import_field")))),
      h("tbody", {}, header.map((title, i) => {
        const sel = h("select", { "data-column": i, on: { change: () => { map[i] = sel.value || null; render(); } } },
          h("option", { value: "" }, t("import_ignore")),
          BfImport.COLUMNS.map((c) => h("option", { value: c.key, selected: map[i] === c.key }, labelOf(c.key))));
        return h("tr", {}, h("td", {}, BfImport.scrub(BfImport.trim(title))), h("td", {}, sel));
      }))));
    const N = 10;
    const idCol = map.indexOf("id_number");
    preview.replaceChildren(h("h3", {}, tf("import_preview", { n: N })), h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, t("line")), header.map((x) => h("th", {}, BfImport.scrub(x))))),
      h("tbody", {}, records.slice(1, 1 + N).map((rec) => h("tr", {}, h("td", { class: "num" }, String(rec.line)),
        rec.fields.map((f, i) => h("td", {}, i === idCol && BfImport.trim(f) ? BfImport.idShown(BfImport.trim(f), (n) => tf("id_chars", { n })) : BfImport.scrub(f))))))));
    const { m, r } = plan();
    check.replaceChildren();
    if (m.missing.length) check.append(h("p", { class: "error", id: "import-missing" }, t("import_missing") + m.missing.map(labelOf).join(", ")));
    if (m.problems.length) check.append(h("p", { class: "error" }, t("import_dup") + m.problems.map((x) => x.key).join(", ")));
    if (!r) return;
    check.append(h("p", { id: "import-summary" }, tf("import_summary", { hh: r.count, rows: r.persons, enc, bad: r.rejects.length })));
    if (r.rejects.length) check.append(rejectsTable(r.rejects.slice()));
    if (hasRole("county_operator") && r.households.length)
      check.append(button(t("import_send"), () => send(m, r), { id: "import-button" }));
  }
  async function send(m, r) {
    const batches = BfImport.batches(r.households, 500, 512 * 1024);
    const rejects = r.rejects.slice();
    let accepted = 0, rejected = r.rejects.length, done = 0, stopped = null;
    const progress = h("p", { id: "import-progress" });
    result.replaceChildren(progress);
    for (const b of batches) {
      progress.textContent = tf("import_progress", { done, total: batches.length });
      let res = null;
      for (let attempt = 0; ; attempt++) {
        try {
          res = await api("registry", "household.import", { rows: b.map((x) => x.row) }, true);
          break;
        } catch (e) {
          /* conflict: the batch was rolled back entirely (a deadlock with another import); safe to resend */
          if (e.status === 409 && e.message.startsWith("conflict") && attempt < 3) continue;
          stopped = e.message;
          break;
        }
      }
      if (!res) break;
      const hit = new Set();
      for (const rej of res.rejected || []) {
        if (!(rej.row >= 0 && rej.row < b.length)) continue;
        rejects.push(BfImport.mapReject(b[rej.row], rej, m));
        hit.add(rej.row);
      }
      accepted += typeof res.accepted === "number" ? res.accepted : b.length - hit.size;
      rejected += hit.size;
      done++;
    }
    progress.remove();
    result.append(h("p", { id: "import-done", class: "ok", "data-accepted": accepted, "data-rejected": rejected },
      tf("import_done", { accepted, rejected })));
    if (stopped) result.append(h("p", { class: "error" }, t("import_stopped") + stopped));
    if (rejects.length) result.append(h("h3", {}, t("rejects")), h("div", { id: "import-rejects" }, rejectsTable(rejects)));
    const btn = $("#import-button");
    if (btn) btn.remove(); /* one import per file read: read the file again to resend */
  }
  const reread = () => {
    const f = file.files[0];
    if (!f) return;
    if (f.size > 20 * 1024 * 1024) { msg(t("import_too_big")); return; }
    const fr = new FileReader();
    fr.onload = () => {
      try {
        const d = BfImport.decode(fr.result);
        enc = d.encoding;
        records = BfImport.parseCsv(d.text);
        if (!records.length) throw new Error("empty file");
        header = records[0].fields;
        map = BfImport.autoMap(header);
        result.replaceChildren();
        render();
      } catch (e) { msg(e.message); }
    };
    fr.onerror = () => msg(String(fr.error));
    fr.readAsArrayBuffer(f);
  };
  file.addEventListener("change", reread);
  village.addEventListener("change", () => { if (records) render(); });
}

const PAGES = { regions: pageRegions, household: pageHousehold, funds: pageFunds, import: pageImport,
                tasks: pageTasks, inbox: pageInbox, queues: pageQueues }; /* org.js adds org */

async function show(name) {
  const root = $("#page");
  root.replaceChildren();
  msg("");
  for (const a of document.querySelectorAll("#nav a"))
    a.classList.toggle("active", a.getAttribute("href") === "#" + name);
  try {
    await (PAGES[name] || pageRegions)(root);
    root.setAttribute("data-loaded", name);
  } catch (e) {
    msg(e.message);
  }
}

/* ------------------------------------------------------ session, i18n */

function translate() {
  document.documentElement.lang = LANG;
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.getAttribute("data-i18n"));
  $("#lang").textContent = t("lang");
  document.title = t("title");
  if (ME) $("#who").textContent = t("signed_in_as") + ME.username + " (" + ME.roles.join(", ") + ")";
}

function showLogin() {
  ME = null;
  $("#login").hidden = false;
  $("#page").hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
}

async function signedIn(user) {
  ME = user;
  $("#login").hidden = true;
  $("#page").hidden = false;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  translate();
  if (!METHODS) {
    try { METHODS = (await (await fetch("/v1/openapi.json")).json()).paths; } catch (e) { METHODS = {}; }
  }
  show(location.hash.slice(1).split("/")[0] || "regions");
}

async function start() {
  translate();
  $("#lang").addEventListener("click", () => {
    LANG = LANG === "zh-CN" ? "en" : "zh-CN";
    localStorage.setItem("bf_lang", LANG);
    translate();
    if (ME) show(location.hash.slice(1).split("/")[0] || "regions");
  });
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await fetch("/v1/session", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("#username").value, password: $("#password").value }) });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error.code + ": " + body.error.message);
      $("#password").value = "";
      await signedIn(body.user);
    } catch (err) { msg(err.message); }
  });
  $("#logout").addEventListener("click", async () => {
    await fetch("/v1/session", { method: "DELETE", credentials: "same-origin", headers: { "X-Bangfu-CSRF": "1" } });
    showLogin();
  });
  window.addEventListener("hashchange", () => { if (ME) show(location.hash.slice(1).split("/")[0]); });
  const r = await fetch("/v1/session", { credentials: "same-origin" });
  if (r.ok) await signedIn((await r.json()).user);
  else showLogin();
}

document.addEventListener("DOMContentLoaded", start);
