/* import.js: households from a CSV file, read the way `bangfu import
 * households` reads it (cli/import.c; docs/cli.md "Importing households").
 *
 * This file is the console's one copy of the CLI's mapping: the column
 * titles (English or Chinese, matched case-insensitively, in any order), the
 * value aliases (就业 -> employment, 户主 -> head, 男 -> male, ...), the
 * household grouping (one row per person; rows with the same household_ref
 * form one household and must be adjacent; an empty household_ref continues
 * the household above; household values must agree on all its rows), the
 * checks made before anything is sent, and the mapping of the registry's
 * rejects (rows[i], members[j].field) back to a CSV line and column title.
 * When cli/import.c changes its tables, change these with it.
 *
 * Full ID numbers are never put on the page: previews and reports show them
 * masked (the region only, as bf_id_mask does) or, when not a valid number,
 * only their length. Nothing here touches the DOM or the network; app.js
 * does (pageImport). */
"use strict";

const BfImport = (() => {
  /* ---- columns (cli/import.c s_cols) ---------------------------------- */
  const COLUMNS = [
    { key: "household_ref", aliases: ["户编号", "户号", "household"], household: false },
    { key: "village_id", aliases: ["村ID", "村id", "village", "村", "村名"], household: true },
    { key: "categories", aliases: ["类别", "户类别", "帮扶对象类别", "category"], household: true },
    { key: "cause_main", aliases: ["主要致贫原因", "致贫原因"], household: true },
    { key: "cause_secondary", aliases: ["次要致贫原因", "其他致贫原因"], household: true },
    { key: "route", aliases: ["帮扶路径", "帮扶措施"], household: true },
    { key: "income_yuan", aliases: ["年收入(元)", "年收入（元）", "年收入", "家庭年收入(元)", "家庭年收入（元）"], household: true },
    { key: "income_fen", aliases: ["年收入(分)", "年收入（分）"], household: true },
    { key: "name", aliases: ["姓名"], household: false },
    { key: "id_number", aliases: ["身份证号", "身份证号码", "公民身份号码"], household: false },
    { key: "relation", aliases: ["与户主关系"], household: false },
    { key: "gender", aliases: ["性别"], household: false },
    { key: "phone", aliases: ["电话", "联系电话", "手机", "手机号"], household: false },
    { key: "address", aliases: ["家庭住址", "住址", "地址"], household: true },
    { key: "labour", aliases: ["劳动技能", "劳动能力"], household: false },
    { key: "disability", aliases: ["是否残疾", "残疾人"], household: false },
  ];
  const REQUIRED = ["household_ref", "categories", "cause_main", "route", "name", "id_number", "relation"];

  /* ---- value aliases (cli/import.c s_routes ... s_causes) ---------------- */
  const ROUTES = { employment: "employment", industry: "industry", safety_net: "safety_net",
    "就业": "employment", "就业转移": "employment", "转移就业": "employment", "产业": "industry",
    "产业帮扶": "industry", "产业扶持": "industry", "兜底": "safety_net", "社会救助兜底": "safety_net",
    "社保兜底": "safety_net", "政策兜底": "safety_net" };
  const RELATIONS = { head: "head", spouse: "spouse", child: "child", parent: "parent",
    grandchild: "grandchild", sibling: "sibling", other: "other", "户主": "head", "本人": "head",
    "配偶": "spouse", "妻子": "spouse", "丈夫": "spouse", "子女": "child", "儿子": "child",
    "女儿": "child", "之子": "child", "之女": "child", "父母": "parent", "父亲": "parent",
    "母亲": "parent", "孙子女": "grandchild", "孙子": "grandchild", "孙女": "grandchild",
    "兄弟姐妹": "sibling", "兄弟": "sibling", "姐妹": "sibling", "其他": "other" };
  const LABOUR = { skilled: "skilled", ordinary: "ordinary", weak: "weak", lost: "lost", none: "none",
    "技能劳动力": "skilled", "普通劳动力": "ordinary", "弱劳动力": "weak", "弱劳力": "weak",
    "半劳动力": "weak", "丧失劳动力": "lost", "无劳动力": "none" };
  const YESNO = { true: "yes", false: "no", yes: "yes", no: "no", 1: "yes", 0: "no", y: "yes",
    n: "no", "是": "yes", "否": "no", "有": "yes", "无": "no" };
  const GENDERS = { male: "male", female: "female", "男": "male", "女": "female", m: "male", f: "female" };
  const CATEGORIES = { "低保": "dibao", "低保户": "dibao", "低收入": "low_income", "低收入户": "low_income",
    "特困供养": "extreme_poverty", "特困": "extreme_poverty", "特困户": "extreme_poverty",
    "散居孤儿": "orphan", "孤儿": "orphan", "留守儿童": "left_behind_child",
    "留守老人": "left_behind_elderly", "残疾": "disabled", "残疾人": "disabled",
    "大病": "serious_illness", "重病": "serious_illness", "建档立卡": "registered_poor",
    "建档立卡贫困户": "registered_poor", "贫困户": "registered_poor" };
  const CAUSES = { "因病": "illness", "疾病": "illness", "因残": "disability", "残疾": "disability",
    "缺劳力": "lack_of_labour", "缺劳动力": "lack_of_labour", "因学": "education",
    "缺技术": "lack_of_skills", "缺土地": "lack_of_land", "缺水": "lack_of_water", "因灾": "disaster",
    "缺资金": "lack_of_funds", "交通条件落后": "transport", "交通": "transport",
    "自身发展动力不足": "self_motivation", "内生动力不足": "self_motivation", "其他": "other" };

  /* The code for s in table (English case-insensitively), or null. */
  function lookup(table, s) {
    if (Object.prototype.hasOwnProperty.call(table, s)) return table[s];
    const low = s.toLowerCase();
    for (const k of Object.keys(table)) if (k.toLowerCase() === low) return table[k];
    return null;
  }

  /* Trims ASCII blanks and U+3000 (ideographic space) from both ends. */
  const trim = (s) => String(s).replace(/^[ \t\r\n\u3000]+|[ \t\r\n\u3000]+$/g, "");

  /* ---- ID numbers: masked as bf_id_mask does, never shown whole ---------- */
  const W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  function idValid(s) {
    if (!/^\d{17}[\dXx]$/.test(s)) return false;
    let sum = 0;
    for (let i = 0; i < 17; i++) sum += (s.charCodeAt(i) - 48) * W[i];
    return "10X98765432"[sum % 11] === s[17].toUpperCase();
  }
  function idShown(s, lengthText) {
    const n = [...s].length;
    return idValid(s) ? s.slice(0, 6) + "************" : lengthText ? lengthText(n) : "[" + n + " characters]";
  }
  /* Anything that looks like an ID number (15+ of [0-9Xx], 14+ digits) masked. */
  function scrub(text) {
    return String(text).replace(/[0-9Xx]{15,}/g, (m) => (m.replace(/[Xx]/g, "").length >= 14 ? idShown(m) : m));
  }

  /* ---- reading the file ----------------------------------------------------- */

  /* The file's bytes as text: UTF-8 (with or without BOM) when valid, else
   * GBK/GB18030 as Chinese spreadsheet software saves it (the CLI's
   * --encoding auto). */
  function decode(buf) {
    const b = new Uint8Array(buf);
    if (b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf)
      return { text: new TextDecoder("utf-8").decode(b.subarray(3)), encoding: "utf-8" };
    try {
      return { text: new TextDecoder("utf-8", { fatal: true }).decode(b), encoding: "utf-8" };
    } catch (e) {
      return { text: new TextDecoder("gb18030").decode(b), encoding: "gbk" };
    }
  }

  /* RFC 4180 records: [{line (where the record starts), fields, error}]. */
  function parseCsv(text) {
    const out = [];
    let i = 0, line = 1;
    const n = text.length;
    while (i < n) {
      const rec = { line, fields: [], error: null };
      let field = "", quoted = false, atStart = true;
      for (;;) {
        if (i >= n) { if (quoted) rec.error = "unterminated quoted field"; rec.fields.push(field); break; }
        const c = text[i];
        if (quoted) {
          if (c === '"') {
            if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
            quoted = false; i++; continue;
          }
          if (c === "\n") line++;
          field += c; i++; continue;
        }
        if (c === '"' && atStart) { quoted = true; atStart = false; i++; continue; }
        if (c === ",") { rec.fields.push(field); field = ""; atStart = true; i++; continue; }
        if (c === "\r" || c === "\n") {
          rec.fields.push(field);
          i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
          line++;
          break;
        }
        field += c; atStart = false; i++;
      }
      out.push(rec);
    }
    return out;
  }

  /* The column each header title maps to: {map: [key or null per field],
   * titles: {key: title as the file spells it}, missing: [key], duplicate}. */
  function autoMap(header) {
    return header.map((title) => {
      const s = trim(title).toLowerCase();
      if (!s) return null;
      for (const c of COLUMNS)
        if (c.key === s || c.aliases.some((a) => a.toLowerCase() === s)) return c.key;
      return null;
    });
  }
  function checkMap(header, map) {
    const col = {}, titles = {}, problems = [];
    map.forEach((k, i) => {
      if (!k) return;
      if (k in col) problems.push({ key: k, kind: "duplicate", columns: [col[k] + 1, i + 1] });
      else { col[k] = i; titles[k] = trim(header[i]) || k; }
    });
    const missing = REQUIRED.filter((k) => !(k in col));
    if (!("income_yuan" in col) && !("income_fen" in col)) missing.push("income_yuan");
    return { col, titles, missing, problems };
  }

  /* ---- households ---------------------------------------------------------------- */

  function items(s) {
    return (s || "").split(/[;；、]/).map(trim).filter((x) => x);
  }

  /* Builds household.create rows from records (the header excluded).
   * m = checkMap(...); villageDefault: a village id for rows without one.
   * Returns {households: [{line, ref, row, members: [{line, id}], incomeKey}],
   *          rejects: [{line, ref, field, message}], count, persons}. */
  function households(records, header, m, villageDefault) {
    const { col, titles } = m;
    const title = (k) => (k === "village_id" && !("village_id" in col) ? "village_id (default)" : titles[k] || k || "");
    const out = [], rejects = [], seen = new Set();
    let hh = null, count = 0, persons = 0;
    const get = (rec, k) => (k in col && col[k] < rec.fields.length ? trim(rec.fields[col[k]]) : "");
    const reject = (line, k, message) => {
      if (hh.rejected) return;
      hh.rejected = { line, ref: hh.ref, field: title(k), message: scrub(message) };
    };
    function finish() {
      if (!hh) return;
      count++;
      const v = hh.hv;
      let village = villageDefault || 0, villageRef = null, income = 0, incomeKey = null, route = null, cause = null;
      if (!hh.rejected) {
        if (v.village_id) {
          // as the CLI: an id, or a 12-digit code or a name the registry resolves
          const val = v.village_id.value;
          if (val.length === 12 || !/^\+?\d{1,18}$/.test(val)) { villageRef = val; village = 0; }
          else if (Number(val) <= 0)
            reject(v.village_id.line, "village_id", 'village_id "' + val + '" is not a positive integer');
          else village = Number(val);
        } else if (!village) reject(hh.line, "village_id", "missing village_id");
      }
      if (!hh.rejected && (!v.categories || !items(v.categories.value).length))
        reject(hh.line, "categories", "missing categories (for example 低保;留守老人)");
      if (!hh.rejected) {
        if (!v.cause_main) reject(hh.line, "cause_main", "missing cause_main (for example 因病)");
        else cause = lookup(CAUSES, v.cause_main.value) || v.cause_main.value;
      }
      if (!hh.rejected) {
        if (!v.route) reject(hh.line, "route", "missing route (employment, industry, safety_net or 就业, 产业, 兜底)");
        else if (!(route = lookup(ROUTES, v.route.value)))
          reject(v.route.line, "route", 'unknown route "' + v.route.value + '" (employment, industry, safety_net or 就业, 产业, 兜底)');
      }
      if (!hh.rejected) {
        const y = v.income_yuan, f = v.income_fen;
        const ym = y && /^\+?(\d{1,16})(?:\.(\d{1,2}))?$/.exec(y.value);
        const fy = ym ? BigInt(ym[1]) * 100n + BigInt((ym[2] || "").padEnd(2, "0")) : null;
        const ff = f && /^\+?\d{1,18}$/.test(f.value) ? BigInt(f.value) : null;
        if (f && ff === null) reject(f.line, "income_fen", 'income_fen "' + f.value + '" is not a whole number of fen');
        else if (y && fy === null)
          reject(y.line, "income_yuan", 'income "' + y.value + '" is not an amount in yuan (digits, at most 2 decimals, no separators: 12345.60)');
        else if (f && y && ff !== fy) reject(f.line, "income_fen", "income_fen " + f.value + " differs from income_yuan " + y.value);
        else if (!f && !y) reject(hh.line, "income_yuan" in col ? "income_yuan" : "income_fen", "missing income");
        else if ((f ? ff : fy) > BigInt(Number.MAX_SAFE_INTEGER)) reject((f || y).line, f ? "income_fen" : "income_yuan", "income too large");
        else { income = Number(f ? ff : fy); incomeKey = f ? "income_fen" : "income_yuan"; }
      }
      if (hh.rejected) { rejects.push(hh.rejected); hh = null; return; }
      const row = {
        categories: items(v.categories.value).map((c) => lookup(CATEGORIES, c) || c),
        causes: { main: cause, secondary: items(v.cause_secondary && v.cause_secondary.value).map((c) => lookup(CAUSES, c) || c) },
        route, income_fen: income,
        members: hh.members.map((p) => p.member),
      };
      if (villageRef !== null) row.village = villageRef;
      else row.village_id = village;
      if (v.address) row.address = v.address.value;
      out.push({ line: hh.line, ref: hh.ref, row, incomeKey,
        members: hh.members.map((p) => ({ line: p.line, id: idShown(p.member.id_number) })) });
      hh = null;
    }
    for (const rec of records) {
      if (!rec.error && rec.fields.every((f) => !trim(f))) continue; /* a row of empty cells */
      persons++;
      const ref = get(rec, "household_ref");
      if (!(hh && (ref === "" || ref === hh.ref))) {
        finish();
        hh = { ref, line: rec.line, hv: {}, members: [], rejected: null };
        if (!ref) reject(rec.line, "household_ref", "missing household_ref");
        else if (seen.has(ref))
          reject(rec.line, "household_ref", "this household_ref was used by rows further up; the rows of one household must be adjacent");
        else seen.add(ref);
      }
      if (hh.rejected) continue;
      if (rec.error) { reject(rec.line, null, rec.error); continue; }
      if (rec.fields.length > header.length && rec.fields.slice(header.length).some((f) => trim(f))) {
        reject(rec.line, null, "the row has " + rec.fields.length + " fields, the header only " + header.length);
        continue;
      }
      let bad = false;
      for (const c of COLUMNS) {
        if (!c.household) continue;
        const s = get(rec, c.key);
        if (!s) continue;
        if (!hh.hv[c.key]) hh.hv[c.key] = { value: s, line: rec.line };
        else if (hh.hv[c.key].value !== s) {
          reject(rec.line, c.key, '"' + s + '" differs from "' + hh.hv[c.key].value + '" on line ' + hh.hv[c.key].line + " of the same household");
          bad = true;
          break;
        }
      }
      if (bad) continue;
      if (hh.members.length === 1000) { reject(rec.line, null, "more than 1000 rows in one household"); continue; }
      const name = get(rec, "name"), id = get(rec, "id_number"), rel = get(rec, "relation");
      const gender = get(rec, "gender"), phone = get(rec, "phone"), labour = get(rec, "labour"), dis = get(rec, "disability");
      if (!name) { reject(rec.line, "name", "missing name"); continue; }
      if (!id) { reject(rec.line, "id_number", "missing id_number"); continue; }
      const relation = rel ? lookup(RELATIONS, rel) : null;
      if (!relation) {
        reject(rec.line, "relation", rel ? 'unknown relation "' + rel + '" (head, spouse, child, parent, grandchild, sibling, other or 户主, 配偶, 子女, 父母, 孙子女, 兄弟姐妹, 其他)' : "missing relation");
        continue;
      }
      const member = { name, id_number: id, relation };
      if (gender) {
        if (!(member.gender = lookup(GENDERS, gender))) { reject(rec.line, "gender", 'unknown gender "' + gender + '" (male, female or 男, 女)'); continue; }
      }
      if (phone) member.phone = phone;
      if (labour) {
        if (!(member.labour = lookup(LABOUR, labour))) {
          reject(rec.line, "labour", 'unknown labour "' + labour + '" (skilled, ordinary, weak, lost, none or 技能劳动力, 普通劳动力, 弱劳动力, 丧失劳动力, 无劳动力)');
          continue;
        }
      }
      if (dis) {
        const yn = lookup(YESNO, dis);
        if (!yn) { reject(rec.line, "disability", 'disability "' + dis + '" is not yes or no (是 / 否)'); continue; }
        member.disability = yn === "yes";
      }
      hh.members.push({ line: rec.line, member });
    }
    finish();
    return { households: out, rejects, count, persons };
  }

  /* The registry's field ("members[2].id_number", "route", "causes.main") of
   * household h as a CSV line and column title (cli/import.c s_field_to_col). */
  function mapReject(h, rej, m) {
    let f = rej.field || "", line = h.line, member = -1, key = null;
    const mm = /^members\[(\d+)\]\.(\w+)/.exec(f);
    if (mm) {
      member = Number(mm[1]);
      key = ["name", "id_number", "relation", "gender", "phone", "labour", "disability"].includes(mm[2]) ? mm[2] : null;
    } else if (f === "village_id" || f === "route" || f === "address") key = f;
    else if (f === "village") key = "village_id";
    else if (f.startsWith("categories")) key = "categories";
    else if (f === "causes.main") key = "cause_main";
    else if (f.startsWith("causes.secondary")) key = "cause_secondary";
    else if (f === "income_fen") key = h.incomeKey;
    let message = rej.message || rej.code || "";
    if (member >= 0 && member < h.members.length) {
      line = h.members[member].line;
      if (key === "id_number") message += " (ID " + h.members[member].id + ")";
    }
    const field = key ? (key === "village_id" && !("village_id" in m.col) ? "village_id (default)" : m.titles[key] || key) : f;
    return { line, ref: h.ref, field, message: scrub(message) };
  }

  /* Splits households into batches of at most maxRows households and about
   * maxBytes of JSON (well under the gateway's 1 MiB body limit). */
  function batches(hhs, maxRows, maxBytes) {
    const out = [];
    let cur = [], bytes = 0;
    for (const h of hhs) {
      const n = JSON.stringify(h.row).length + 1;
      if (cur.length && (cur.length >= maxRows || bytes + n > maxBytes)) { out.push(cur); cur = []; bytes = 0; }
      cur.push(h);
      bytes += n;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  return { COLUMNS, REQUIRED, decode, parseCsv, autoMap, checkMap, households, mapReject, batches,
           idShown, scrub, trim };
})();
