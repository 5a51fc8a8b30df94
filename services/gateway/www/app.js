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
  },
};
let LANG = localStorage.getItem("bf_lang") || "zh-CN";
let ME = null;
let METHODS = null; // paths of the OpenAPI document, to see what the services offer

const $ = (sel, el) => (el || document).querySelector(sel);
const t = (k) => (T[LANG] && T[LANG][k]) || T["zh-CN"][k] || k;

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined)
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
  if (typeof v === "number" && MONEY.test(k)) return h("td", { class: "num" }, fenText(v));
  if (typeof v === "number") return h("td", { class: "num" }, String(v));
  if (typeof v === "object") return h("td", {}, h("pre", {}, JSON.stringify(v, null, 1)));
  return h("td", {}, String(v));
}

/* rows: objects; cols: keys to show (default: the first row's scalar keys);
 * extra(row) -> a node for a last column of actions. */
function table(rows, cols, extra, rowClass) {
  if (!rows || !rows.length) return h("p", { class: "muted" }, t("none"));
  cols = cols || Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object" || rows[0][k] === null);
  return h("table", {},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)), extra ? h("th", {}, "") : null)),
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
      ul.append(h("li", {}, "🏠 " + v.name + " (" + t("households") + " " + v.households + ") ",
        button(t("open"), () => village(v))));
    }
  }
  async function village(v) {
    detail.replaceChildren(h("h3", {}, v.name + " — " + t("village_hh")));
    const res = await api("registry", "household.list", { village_id: v.id, limit: 200 });
    detail.append(table(items(res), null, (r) => button(t("open"), () => householdPage(r.id))));
  }
  await children(tree.appendChild(h("ul", {})), null);
}

async function householdPage(id) {
  const root = $("#page");
  root.replaceChildren(h("h2", {}, t("household") + " #" + id));
  const hh = await api("registry", "household.get", { id });
  const scalars = Object.fromEntries(Object.entries(hh).filter(([, v]) => typeof v !== "object" || v === null));
  root.append(table([scalars]));
  const members = hh.members || [];
  const list = h("div", {}, table(members));
  root.append(h("h3", {}, "members"), list);
  /* household.reveal {id, reason} (an audited write for auditors) shows the
   * full ID numbers, when the registry offers it */
  if (METHODS && METHODS["/v1/registry/household.reveal"] && hasRole("auditor")) {
    const reason = h("input", { id: "reveal-reason", placeholder: t("reason"), size: 30 });
    root.append(h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
      h("label", {}, t("reason"), reason),
      button(t("reveal"), async () => {
        const r = await api("registry", "household.reveal", { id, reason: reason.value }, true);
        list.replaceChildren(table(r.members || items(r)));
      }, { id: "reveal-button" })));
  }
}

async function pageFunds(root) {
  root.append(h("h2", {}, t("sources")));
  root.append(table(items(await api("funds", "source.list", { limit: 100 }))));
  const out = h("div", {});
  const bid = h("input", { id: "budget-id", size: 8, inputmode: "numeric" });
  const pid = h("input", { id: "project-id", size: 8, inputmode: "numeric" });
  root.append(h("form", { class: "inline", on: { submit: (e) => e.preventDefault() } },
    h("label", {}, t("budget_id"), bid), button(t("lookup"), async () => showPayer("budget", bid.value, out)),
    h("label", {}, t("project_id"), pid), button(t("lookup"), async () => showPayer("project", pid.value, out), { id: "project-lookup" })));
  root.append(out);
  const hash = location.hash.split("/");
  if (hash[1] === "project" && hash[2]) { pid.value = hash[2]; await showPayer("project", hash[2], out); }
}

async function showPayer(kind, idText, out) {
  const id = parseInt(idText, 10);
  if (!(id > 0)) throw new Error("id");
  const p = await api("funds", kind + ".get", { id });
  const scalars = Object.fromEntries(Object.entries(p).filter(([, v]) => typeof v !== "object" || v === null));
  out.replaceChildren(h("h3", {}, t(kind) + " #" + id), table([scalars]), h("h3", {}, t("tranches")));
  out.append(table(p.tranches || [], ["id", "seq", "amount_fen", "recipient", "purpose", "state", "requested_by", "approved_by"],
    (tr) => tr.state === "planned" && hasRole("approver") ? button(t("approve"), async () => {
      await api("funds", "tranche.approve", { tranche_id: tr.id, request_key: newKey() }, true);
      msg(t("done"), true);
      await showPayer(kind, idText, out);
    }, { class: "approve", "data-tranche": tr.id }) : null));
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

const PAGES = { regions: pageRegions, funds: pageFunds, tasks: pageTasks, inbox: pageInbox, queues: pageQueues };

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
