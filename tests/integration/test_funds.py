"""The funds service (docs/funds.md) against real PostgreSQL: sources, budgets,
allocation, projects and tranches, batch disbursement, reversal, reports,
idempotency under concurrency, and the hash-chained ledger that nobody can
bend. After every test the books must balance (books_balance())."""
import os
import random
import signal
import subprocess
import threading
import time

import bftest
from bftest import Stack, check, eq, expect_error

S = None
RUN = bftest.uid()  # makes names and keys unique across runs sharing a database


def setup_module():
    global S
    S = Stack(["funds"]).__enter__()


def teardown_module():
    if S is not None:
        S.__exit__(None, None, None)


def c():
    return S.client("funds", timeout_ms=120000)


def key(tag=""):
    return "%s-%s-%s" % (RUN, tag, bftest.uid())


# ---------------------------------------------------------------- helpers

def books_balance():
    """The books balance: every cached balance equals what the ledger says,
    the balances sum to zero (total debits == total credits), no account is
    below its floor, every reversal mirrors the transfer it reverses, and the
    hash chain verifies."""
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("""
            SELECT a.id, a.balance_fen, COALESCE(i.s, 0) - COALESCE(o.s, 0)
            FROM funds.account a
            LEFT JOIN (SELECT to_account AS id, sum(amount_fen) AS s FROM funds.transfer
                       GROUP BY 1) i ON i.id = a.id
            LEFT JOIN (SELECT from_account AS id, sum(amount_fen) AS s FROM funds.transfer
                       GROUP BY 1) o ON o.id = a.id
            WHERE a.balance_fen <> COALESCE(i.s, 0) - COALESCE(o.s, 0)""")
        eq(cur.fetchall(), [], "accounts whose cached balance differs from the ledger")
        cur.execute("""SELECT (SELECT COALESCE(sum(amount_fen), 0) FROM funds.transfer),
                              (SELECT COALESCE(sum(s), 0) FROM (SELECT sum(amount_fen) AS s
                                 FROM funds.transfer GROUP BY from_account) d),
                              (SELECT COALESCE(sum(s), 0) FROM (SELECT sum(amount_fen) AS s
                                 FROM funds.transfer GROUP BY to_account) k),
                              (SELECT COALESCE(sum(balance_fen), 0) FROM funds.account)""")
        total, debits, credits, balances = cur.fetchone()
        eq(debits, total, "total debits")
        eq(credits, total, "total credits")
        eq(balances, 0, "sum of all balances (debits == credits)")
        cur.execute("""SELECT id, balance_fen, floor_fen FROM funds.account
                       WHERE floor_fen IS NOT NULL AND balance_fen < floor_fen""")
        eq(cur.fetchall(), [], "accounts below their floor")
        cur.execute("""SELECT v.id FROM funds.transfer v JOIN funds.transfer o ON o.id = v.reverses_id
                       WHERE v.from_account <> o.to_account OR v.to_account <> o.from_account
                          OR v.amount_fen <> o.amount_fen OR o.kind = 'reversal'""")
        eq(cur.fetchall(), [], "reversals that do not mirror their original")
        cur.execute("SELECT count(*) FROM funds.transfer WHERE amount_fen <= 0")
        eq(cur.fetchone()[0], 0, "non-positive transfers")
    finally:
        conn.close()
    v = c().call("ledger.verify", actor=None)
    check(v["ok"], "ledger.verify: %r" % v)


def new_source(cl, amount=0, year=2017, kind="central", name=None):
    src = cl.call("source.create", {"name": name or "src-" + key(), "kind": kind,
                                    "provider": "区财政局", "request_key": key("sc")})
    if amount:
        cl.call("source.receive", {"source_id": src["id"], "amount_fen": amount, "year": year,
                                   "request_key": key("sr")})
    return src


def new_budget(cl, amount, year=2017, recipient=None, sources=None):
    if sources is None:
        sources = [new_source(cl, amount, year)]
        funding = [{"source_id": sources[0]["id"], "amount_fen": amount}]
    else:
        funding = sources
    return cl.call("budget.create", {"recipient": recipient or "program:" + key(),
                                     "year": year, "funding": funding,
                                     "request_key": key("bc")})


def balance(cl, account_id):
    return cl.call("account.get", {"id": account_id, "limit": 1})["balance_fen"]


def ledger_count(where, *args):
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM funds.transfer WHERE " + where, args)
        return cur.fetchone()[0]
    finally:
        conn.close()


def new_project(cl, budget_id, amount, **kw):
    params = {"name": "项目-" + key(), "kind": "education", "location": "130821000000",
              "unit_id": 7, "beneficiaries": 600, "target": "建成1所小学，容纳600名学生",
              "budget_id": budget_id, "amount_fen": amount, "request_key": key("pc")}
    params.update(kw)
    return cl.call("project.create", params)


# ---------------------------------------------------------------- contract

def test_methods_are_listed_with_writes():
    ms = {m["name"]: m for m in c().call("sys.methods", actor=None)}
    for name in ("source.create", "source.receive", "budget.create", "allocation.preview",
                 "allocation.apply", "project.create", "tranche.plan", "tranche.approve",
                 "tranche.disburse", "disbursement.batch", "transfer.reverse", "account.get",
                 "report.utilisation", "trace.recipient", "ledger.verify"):
        check(name in ms, name + " missing from sys.methods")
    eq(ms["allocation.preview"]["writes"], False)
    eq(ms["allocation.apply"]["writes"], True)
    for name, m in ms.items():
        if m["writes"]:
            check("request_key" in [p["name"] for p in m["params"]],
                  name + " writes without a request_key")
    books_balance()


def test_ledger_is_append_only_by_trigger():
    cl = c()
    new_budget(cl, 1000)
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("""SELECT t.tgname FROM pg_trigger t JOIN pg_class k ON k.oid = t.tgrelid
                       JOIN pg_namespace n ON n.oid = k.relnamespace
                       WHERE n.nspname = 'funds' AND k.relname = 'transfer'
                         AND NOT t.tgisinternal AND t.tgenabled = 'O' ORDER BY 1""")
        eq([r[0] for r in cur.fetchall()], ["transfer_append_only", "transfer_no_truncate"])
        cur.execute("SELECT max(id) FROM funds.transfer")
        tid = cur.fetchone()[0]
        for sql in ("UPDATE funds.transfer SET amount_fen = amount_fen + 1 WHERE id = %s",
                    "DELETE FROM funds.transfer WHERE id = %s"):
            try:
                cur.execute(sql, (tid,))
                raise bftest.TestFailure("the ledger accepted: " + sql)
            except bftest.TestFailure:
                raise
            except Exception as e:  # psycopg2 error from the trigger
                check("append-only" in str(e), "unexpected error: %s" % e)
        try:
            cur.execute("TRUNCATE funds.transfer CASCADE")
            raise bftest.TestFailure("the ledger accepted TRUNCATE")
        except bftest.TestFailure:
            raise
        except Exception as e:
            check("append-only" in str(e), "unexpected error: %s" % e)
        for table in ("account", "budget"):
            try:
                cur.execute("DELETE FROM funds.%s WHERE id = (SELECT max(id) FROM funds.%s)"
                            % (table, table))
                raise bftest.TestFailure("funds.%s accepted a DELETE" % table)
            except bftest.TestFailure:
                raise
            except Exception as e:
                check("never removed" in str(e), "unexpected error: %s" % e)
    finally:
        conn.close()
    books_balance()


# ---------------------------------------------------------------- sources and budgets

def test_source_receives_per_year():
    cl = c()
    src = new_source(cl)
    r1 = cl.call("source.receive", {"source_id": src["id"], "amount_fen": 2_000_000_000,
                                    "year": 2016, "request_key": key()})
    eq(r1["balance_fen"], 2_000_000_000)
    cl.call("source.receive", {"source_id": src["id"], "amount_fen": 500, "year": 2017,
                               "note": "津财预〔2017〕1号", "request_key": key()})
    got = cl.call("source.get", {"id": src["id"]})
    eq(got["received_fen"], 2_000_000_500)
    eq(got["balance_fen"], 2_000_000_500)
    eq(got["received_by_year"], [{"year": 2016, "received_fen": 2_000_000_000},
                                 {"year": 2017, "received_fen": 500}])
    expect_error(cl, "source.create", {"name": got["name"], "kind": "social",
                                       "request_key": key()}, "already_exists", "name")
    page = cl.call("source.list", {"kind": "central", "limit": 1})
    eq(len(page["items"]), 1)
    check(page["next_cursor"] is not None, "a second page exists")
    books_balance()


def test_gets_are_one_statement_with_the_same_shape():
    """source.get, budget.get, project.get and account.get each read in one
    statement, their lists as JSON arrays turned into msgpack or as joined
    rows: keys, their order and int types must be as the packers had them,
    empty lists stay [] and an account without entries has no next page."""
    cl = c()
    src = new_source(cl)
    got = cl.call("source.get", {"id": src["id"]})
    eq((got["received_by_year"], got["received_fen"]), ([], 0))
    acc = cl.call("account.get", {"id": src["id"]})
    eq(list(acc), ["id", "kind", "ref", "name", "floor_fen", "balance_fen", "in_fen", "out_fen",
                   "entries", "next_cursor"])
    eq((acc["id"], acc["entries"], acc["next_cursor"], acc["in_fen"]), (src["id"], [], None, 0))
    for year in (2015, 2016, 2016):
        cl.call("source.receive", {"source_id": src["id"], "amount_fen": 300_000, "year": year,
                                   "request_key": key()})
    got = cl.call("source.get", {"id": src["id"]})
    eq(list(got)[-1], "received_by_year")
    eq([list(y) for y in got["received_by_year"]], [["year", "received_fen"]] * 2)
    eq(got["received_by_year"], [{"year": 2015, "received_fen": 300_000},
                                 {"year": 2016, "received_fen": 600_000}])
    check(all(type(y["received_fen"]) is int for y in got["received_by_year"]))
    bud = new_budget(cl, 900_000, sources=[{"source_id": src["id"], "amount_fen": 900_000}])
    got = cl.call("budget.get", {"id": bud["id"]})
    eq(list(got), ["id", "parent_id", "root_id", "recipient", "year", "name", "carrier",
                   "balance_fen", "received_fen", "allocated_fen", "disbursed_fen", "children",
                   "projects", "created_by", "funding"])
    eq(got["funding"], [{"source_id": src["id"], "name": got["funding"][0]["name"],
                         "kind": "central", "amount_fen": 900_000}])
    eq([list(f) for f in got["funding"]], [["source_id", "name", "kind", "amount_fen"]])
    eq((got["received_fen"], got["balance_fen"], got["parent_id"]), (900_000, 900_000, None))
    pj = new_project(cl, bud["id"], 400_000)
    got = cl.call("project.get", {"id": pj["id"]}, actor=None)
    eq(got["tranches"], [])
    cl.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 150_000,
                             "purpose": "地基", "request_key": key()})
    got = cl.call("project.get", {"id": pj["id"]}, actor=None)
    eq(list(got)[-1], "tranches")
    eq([list(t) for t in got["tranches"]],
       [["id", "project_id", "budget_id", "seq", "amount_fen", "recipient", "purpose", "state",
         "requested_by", "requested_at", "approved_by", "approval_note", "disbursed_by",
         "transfer_id"]])
    t = got["tranches"][0]
    eq((t["project_id"], t["budget_id"], t["seq"], t["amount_fen"], t["purpose"], t["state"],
        t["approved_by"], t["transfer_id"]),
       (pj["id"], None, 1, 150_000, "地基", "planned", None, None))
    check(type(t["id"]) is int and t["requested_at"].endswith("Z"), t)
    eq((got["funded_fen"], got["balance_fen"]), (400_000, 400_000))
    # the budget's account: newest entry first, a page of one with a next page
    page = cl.call("account.get", {"id": bud["id"], "limit": 1})
    eq((len(page["entries"]), page["entries"][0]["direction"]), (1, "out"))
    eq(page["entries"][0]["amount_fen"], 400_000)
    check(page["next_cursor"] is not None, "a second page exists")
    last = cl.call("account.get", {"id": bud["id"], "limit": 1, "cursor": page["next_cursor"]})
    eq((last["entries"][0]["direction"], last["entries"][0]["amount_fen"], last["next_cursor"]),
       ("in", 900_000, None))
    eq((last["in_fen"], last["out_fen"], last["balance_fen"]), (900_000, 400_000, 500_000))


def test_budget_from_several_sources_and_floor_of_a_source():
    cl = c()
    a = new_source(cl, 1_000_000, kind="central")
    b = new_source(cl, 500_000, kind="social")
    bud = cl.call("budget.create", {
        "recipient": "region:130821000000", "year": 2016, "name": key(), "carrier": "东丽开发区",
        "funding": [{"source_id": a["id"], "amount_fen": 800_000},
                    {"source_id": b["id"], "amount_fen": 200_000}],
        "request_key": key()})
    eq(bud["total_fen"], 1_000_000)
    eq(balance(cl, bud["id"]), 1_000_000)
    eq(balance(cl, a["id"]), 200_000)
    got = cl.call("budget.get", {"id": bud["id"]})
    eq(got["received_fen"], 1_000_000)
    eq(got["carrier"], "东丽开发区")
    eq(sorted(f["amount_fen"] for f in got["funding"]), [200_000, 800_000])
    # a source cannot give more than it received
    e = expect_error(cl, "budget.create", {
        "recipient": "region:130821000000", "year": 2017, "name": key(),
        "funding": [{"source_id": b["id"], "amount_fen": 300_001}],
        "request_key": key()}, "failed_precondition", "funding")
    check("insufficient" in e["message"], e["message"])
    eq(balance(cl, b["id"]), 300_000)
    # same recipient, year and name again
    expect_error(cl, "budget.create", {
        "recipient": "region:130821000000", "year": 2016, "name": got["name"],
        "funding": [{"source_id": a["id"], "amount_fen": 1}], "request_key": key()},
        "already_exists", "recipient")
    # more funding later
    f = cl.call("budget.fund", {"budget_id": bud["id"], "funding": [
        {"source_id": a["id"], "amount_fen": 100_000}], "request_key": key()})
    eq(f["balance_fen"], 1_100_000)
    books_balance()


def test_invalid_amounts_are_invalid_argument_naming_the_field():
    cl = c()
    src = new_source(cl, 1000)
    base = {"source_id": src["id"], "year": 2017}
    for bad in (12.5, -5, 0, "100", 2**64 - 1, 2**63):
        e = cl.err("source.receive", dict(base, amount_fen=bad, request_key=key()))
        eq(e["code"], "invalid_argument", "amount %r" % (bad,))
        eq(e["field"], "amount_fen", "amount %r" % (bad,))
    # a sum that overflows 64 bits
    big = 2**63 - 1
    expect_error(cl, "budget.create", {
        "recipient": "program:x", "year": 2017,
        "funding": [{"source_id": src["id"], "amount_fen": big},
                    {"source_id": new_source(cl)["id"], "amount_fen": big}],
        "request_key": key()}, "invalid_argument", "funding[1].amount_fen")
    expect_error(cl, "budget.create", {"recipient": "program:x", "year": 2017,
                                       "funding": [{"source_id": src["id"], "amount_fen": 1.0}],
                                       "request_key": key()},
                 "invalid_argument", "funding[0].amount_fen")
    big_src = new_source(cl)
    cl.call("source.receive", {"source_id": big_src["id"], "amount_fen": big, "year": 2017,
                               "request_key": key()})
    e = expect_error(cl, "source.receive", {"source_id": big_src["id"], "amount_fen": 1,
                                            "year": 2017, "request_key": key()},
                     "invalid_argument", "amount_fen")
    check("overflow" in e["message"], e["message"])
    eq(balance(cl, big_src["id"]), big)
    # allocation amounts and weights
    bud = new_budget(cl, 1000)
    for rule, item in (("fixed", {"recipient": "village:1", "amount_fen": 1.5}),
                       ("fixed", {"recipient": "village:1", "amount_fen": -1}),
                       ("weights", {"recipient": "village:1", "weight": 0.5})):
        params = {"budget_id": bud["id"], "rule": rule, "recipients": [item]}
        if rule == "weights":
            params["amount_fen"] = 10
        e = cl.err("allocation.preview", params, actor=None)
        eq(e["code"], "invalid_argument")
        check(e["field"].startswith("recipients[0]."), e["field"])
    expect_error(cl, "allocation.preview", {
        "budget_id": bud["id"], "rule": "weights", "amount_fen": 10,
        "recipients": [{"recipient": "village:1", "weight": big},
                       {"recipient": "village:2", "weight": big}]},
        "invalid_argument", "recipients", actor=None)
    expect_error(cl, "allocation.preview", {
        "budget_id": bud["id"], "rule": "weights", "amount_fen": 10.0,
        "recipients": [{"recipient": "village:1", "weight": 1}]},
        "invalid_argument", "amount_fen", actor=None)
    books_balance()


def test_unknown_ids_are_not_found():
    cl = c()
    missing = 9_000_000_000_000
    expect_error(cl, "source.receive", {"source_id": missing, "amount_fen": 1, "year": 2017,
                                        "request_key": key()}, "not_found", "source_id")
    expect_error(cl, "budget.create", {"recipient": "program:x", "year": 2017,
                                       "funding": [{"source_id": missing, "amount_fen": 1}],
                                       "request_key": key()},
                 "not_found", "funding[0].source_id")
    expect_error(cl, "budget.get", {"id": missing}, "not_found", "id", actor=None)
    expect_error(cl, "budget.fund", {"budget_id": missing, "funding": [
        {"source_id": 1, "amount_fen": 1}], "request_key": key()}, "not_found", "budget_id")
    expect_error(cl, "allocation.apply", {"budget_id": missing, "rule": "fixed", "recipients": [
        {"recipient": "village:1", "amount_fen": 1}], "request_key": key()},
        "not_found", "budget_id")
    expect_error(cl, "project.create", {
        "name": "x", "kind": "health", "location": "130821000000", "unit_id": 1,
        "beneficiaries": 1, "target": "t", "budget_id": missing, "amount_fen": 1,
        "request_key": key()}, "not_found", "budget_id")
    expect_error(cl, "project.get", {"id": missing}, "not_found", "id", actor=None)
    expect_error(cl, "tranche.plan", {"project_id": missing, "seq": 1, "amount_fen": 1,
                                      "request_key": key()}, "not_found", "project_id")
    expect_error(cl, "tranche.approve", {"tranche_id": missing, "request_key": key()},
                 "not_found", "tranche_id")
    expect_error(cl, "tranche.disburse", {"tranche_id": missing, "request_key": key()},
                 "not_found", "tranche_id")
    expect_error(cl, "disbursement.batch", {"batch_key": key(), "budget_id": missing, "lines": [
        {"line_key": "1", "recipient": "person:1", "amount_fen": 1}], "request_key": key()},
        "not_found", "budget_id")
    expect_error(cl, "transfer.reverse", {"transfer_id": missing, "reason": "x",
                                          "request_key": key()}, "not_found", "transfer_id")
    expect_error(cl, "transfer.get", {"id": missing}, "not_found", "id", actor=None)
    expect_error(cl, "account.get", {"id": missing}, "not_found", "id", actor=None)
    expect_error(cl, "source.get", {"id": missing}, "not_found", "id", actor=None)
    expect_error(cl, "trace.recipient", {"recipient": "village:987654321987"}, "not_found",
                 "recipient", actor=None)
    books_balance()


def test_bad_references_and_missing_keys_are_invalid():
    cl = c()
    src = new_source(cl, 100)
    for bad in ("village", "village:0", "village:x", "region:12345", "planet:1", "program:",
                "village:99999999999999999999"):
        expect_error(cl, "budget.create", {"recipient": bad, "year": 2017, "funding": [
            {"source_id": src["id"], "amount_fen": 1}], "request_key": key()},
            "invalid_argument", "recipient")
    expect_error(cl, "source.receive", {"source_id": src["id"], "amount_fen": 1, "year": 2017},
                 "invalid_argument", "request_key")
    expect_error(cl, "source.receive", {"source_id": src["id"], "amount_fen": 1, "year": 2017,
                                        "request_key": "k" * 129}, "invalid_argument",
                 "request_key")
    expect_error(cl, "source.receive", {"source_id": src["id"], "amount_fen": 1, "year": 1999,
                                        "request_key": key()}, "invalid_argument", "year")
    expect_error(cl, "source.create", {"name": "x", "kind": "lottery", "request_key": key()},
                 "invalid_argument", "kind")
    # the principal (admin) may not claim another actor (docs/protocol.md)
    e = cl.request("source.receive", {"source_id": src["id"], "amount_fen": 1, "year": 2017,
                                      "request_key": key()}, extra={"actor": "cadre:intruder"})
    eq(e["error"]["code"], "permission_denied")
    eq(e["error"]["field"], "actor")
    books_balance()


def test_more_error_paths_name_their_field():
    cl = c()
    bud = new_budget(cl, 10_000)
    expect_error(cl, "source.receive", {"source_id": 1, "amount_fen": 1, "year": 2017,
                                        "request_key": ""}, "invalid_argument", "request_key")
    expect_error(cl, "account.get", {"id": bud["id"], "recipient": "village:1"},
                 "invalid_argument", "id", actor=None)
    expect_error(cl, "account.get", {}, "invalid_argument", "id", actor=None)
    expect_error(cl, "account.get", {"id": bud["id"], "cursor": "abc"}, "invalid_argument",
                 "cursor", actor=None)
    expect_error(cl, "disbursement.batch", {"batch_key": key(), "budget_id": bud["id"],
                                            "project_id": bud["id"], "lines": [
        {"line_key": "1", "recipient": "person:1", "amount_fen": 1}], "request_key": key()},
        "invalid_argument", "budget_id")
    expect_error(cl, "disbursement.batch", {"batch_key": key(), "budget_id": bud["id"],
                                            "lines": [], "request_key": key()},
                 "invalid_argument", "lines")
    expect_error(cl, "disbursement.batch", {"batch_key": key(), "budget_id": bud["id"],
                                            "lines": [{}] * 20001, "request_key": key()},
                 "invalid_argument", "lines")
    expect_error(cl, "transfer.reverse", {"transfer_id": 1, "reason": "", "request_key": key()},
                 "invalid_argument", "reason")
    expect_error(cl, "allocation.preview", {"budget_id": bud["id"], "rule": "weights",
                                            "amount_fen": 5, "recipients": [
        {"recipient": "village:1", "weigth": 1}]}, "invalid_argument", "recipients[0].weight",
        actor=None)
    expect_error(cl, "allocation.preview", {"budget_id": bud["id"], "rule": "weights",
                                            "amount_fen": 5, "recipients": [
        {"recipient": "village:1", "weight": 1, "extra": 2}]}, "invalid_argument",
        "recipients[0]", actor=None)
    expect_error(cl, "allocation.preview", {"budget_id": bud["id"], "rule": "weights",
                                            "recipients": [{"recipient": "village:1",
                                                            "weight": 1}]},
                 "invalid_argument", "amount_fen", actor=None)
    expect_error(cl, "allocation.preview", {"budget_id": bud["id"], "rule": "evenly",
                                            "recipients": []}, "invalid_argument", "rule",
                 actor=None)
    # a child budget is funded by allocation, not by sources
    a = cl.call("allocation.apply", {"budget_id": bud["id"], "rule": "fixed", "request_key": key(),
                                     "recipients": [{"recipient": "village:42",
                                                     "amount_fen": 100}]})
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT to_account FROM funds.transfer WHERE id = %s", (a["first_transfer_id"],))
    child = cur.fetchone()[0]
    conn.close()
    got = cl.call("budget.get", {"id": child}, actor=None)
    eq((got["parent_id"], got["recipient"], got["balance_fen"]), (bud["id"], "village:42", 100))
    expect_error(cl, "budget.fund", {"budget_id": child, "funding": [
        {"source_id": 1, "amount_fen": 1}], "request_key": key()}, "failed_precondition",
        "budget_id")
    pj = new_project(cl, bud["id"], 100)
    expect_error(cl, "project.create", {
        "name": cl.call("project.get", {"id": pj["id"]}, actor=None)["name"], "kind": "health",
        "location": "130821000000", "unit_id": 1, "beneficiaries": 1, "target": "t",
        "budget_id": bud["id"], "amount_fen": 1, "request_key": key()},
        "already_exists", "name")
    # paging through an account's entries
    for i in range(3):
        cl.call("disbursement.batch", {"batch_key": key(), "budget_id": bud["id"],
                                       "request_key": key(), "lines": [
            {"line_key": "x", "recipient": "person:%d" % (40 + i), "amount_fen": 10}]})
    page1 = cl.call("account.get", {"id": bud["id"], "limit": 2}, actor=None)
    page2 = cl.call("account.get", {"id": bud["id"], "limit": 2, "cursor": page1["next_cursor"]},
                    actor=None)
    ids = [e["id"] for e in page1["entries"] + page2["entries"]]
    eq(ids, sorted(ids, reverse=True))
    eq(len(set(ids)), 4)
    eq(page1["entries"][0]["direction"], "out")
    books_balance()


# ---------------------------------------------------------------- idempotency

def test_same_key_same_params_replays_and_different_params_conflict():
    cl = c()
    src = new_source(cl)
    k = key("idem")
    params = {"source_id": src["id"], "amount_fen": 777, "year": 2018, "request_key": k}
    first = cl.call("source.receive", params)
    # same params in another key order: the same first result, no second effect
    again = cl.call("source.receive", dict(reversed(list(params.items()))))
    eq(again, first)
    eq(ledger_count("request_key = %s", k), 1)
    eq(balance(cl, src["id"]), 777)
    expect_error(cl, "source.receive", dict(params, amount_fen=778), "conflict", "request_key")
    expect_error(cl, "source.create", {"name": "x" + k, "kind": "social", "request_key": k},
                 "conflict", "request_key")
    # a different actor with the same key is a different request
    expect_error(cl, "source.receive", params, "conflict", "request_key", actor="cadre:9")
    # a failed request does not use up its key
    k2 = key("fail")
    expect_error(cl, "source.receive", {"source_id": 9_000_000_000_000, "amount_fen": 1,
                                        "year": 2018, "request_key": k2}, "not_found")
    ok = cl.call("source.receive", {"source_id": src["id"], "amount_fen": 1, "year": 2018,
                                    "request_key": k2})
    eq(ok["balance_fen"], 778)
    books_balance()


def _parallel(n, fn):
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        cl = bftest.Client(S.endpoint("funds"), timeout_ms=120000)
        try:
            barrier.wait()
            results[i] = fn(cl, i)
        except Exception as e:  # kept and checked by the caller
            results[i] = e
        finally:
            cl.close()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def test_same_request_key_100_times_concurrently_makes_one_transfer():
    cl = c()
    src = new_source(cl)
    k = key("hundred")
    params = {"source_id": src["id"], "amount_fen": 12345, "year": 2019, "request_key": k}
    replies = _parallel(100, lambda cl_, i: cl_.request("source.receive", params, "admin"))
    for r in replies:
        check(isinstance(r, dict), "a request failed: %r" % (r,))
        check(r.get("ok"), "a request was refused: %r" % (r,))
    results = [r["result"] for r in replies]
    for r in results:
        eq(r, results[0], "every reply carries the first result")
    eq(ledger_count("request_key = %s", k), 1)
    eq(balance(cl, src["id"]), 12345)
    books_balance()


def test_50_concurrent_disbursements_never_overspend_a_budget():
    cl = c()
    bud = new_budget(cl, 30 * 100_000)  # room for exactly 30 of the 50

    def pay(cl_, i):
        return cl_.call("disbursement.batch", {
            "batch_key": key("pay%d" % i), "budget_id": bud["id"], "purpose": "并发测试",
            "lines": [{"line_key": "only", "recipient": "person:%d" % (1000 + i),
                       "amount_fen": 100_000}],
            "request_key": key("req%d" % i)})
    results = _parallel(50, pay)
    for r in results:
        check(isinstance(r, dict), "a request failed: %r" % (r,))
    ok = [r for r in results if r["lines"][0]["status"] == "ok"]
    refused = [r for r in results if r["lines"][0]["status"] == "error"]
    eq(len(ok), 30, "accepted disbursements")
    eq(len(refused), 20, "refused disbursements")
    for r in refused:
        eq(r["lines"][0]["error"]["code"], "failed_precondition")
    eq(balance(cl, bud["id"]), 0)
    ids = [r["lines"][0]["transfer_id"] for r in ok]
    eq(len(set(ids)), 30, "distinct transfers")
    eq(ledger_count("from_account = %s AND kind = 'disbursement'", bud["id"]), 30)
    for r in ok:  # each accepted one recorded exactly once
        t = cl.call("transfer.get", {"id": r["lines"][0]["transfer_id"]}, actor=None)
        eq(t["amount_fen"], 100_000)
        eq(t["from_account"], bud["id"])
    books_balance()


def test_concurrent_project_funding_never_overspends():
    cl = c()
    bud = new_budget(cl, 10 * 5000)
    results = _parallel(25, lambda cl_, i: cl_.request("project.create", {
        "name": "并发项目-%d-%s" % (i, RUN), "kind": "industry", "location": "620921000000",
        "unit_id": 3, "beneficiaries": 10, "target": "带动10户增收", "budget_id": bud["id"],
        "amount_fen": 5000, "request_key": key("pj%d" % i)}, "admin"))
    ok = [r for r in results if isinstance(r, dict) and r.get("ok")]
    eq(len(ok), 10)
    for r in results:
        if isinstance(r, dict) and not r.get("ok"):
            eq(r["error"]["code"], "failed_precondition")
    eq(balance(cl, bud["id"]), 0)
    books_balance()


# ---------------------------------------------------------------- reversal

def test_reversal_restores_balances_and_keeps_both_entries():
    cl = c()
    bud = new_budget(cl, 50_000)
    src_id = cl.call("budget.get", {"id": bud["id"]}, actor=None)["funding"][0]["source_id"]
    paid = cl.call("disbursement.batch", {
        "batch_key": key(), "budget_id": bud["id"], "request_key": key(),
        "lines": [{"line_key": "a", "recipient": "household:77", "amount_fen": 20_000}]})
    tid = paid["lines"][0]["transfer_id"]
    person = cl.call("account.get", {"recipient": "household:77"}, actor=None)
    before_person = person["balance_fen"]
    eq(balance(cl, bud["id"]), 30_000)
    rev = cl.call("transfer.reverse", {"transfer_id": tid, "reason": "重复发放，更正",
                                       "request_key": key()})
    eq(rev["reverses_id"], tid)
    eq(rev["to_balance_fen"], 50_000)
    eq(balance(cl, bud["id"]), 50_000)
    eq(balance(cl, person["id"]), before_person - 20_000)
    orig = cl.call("transfer.get", {"id": tid}, actor=None)
    eq(orig["reversed_by"], rev["transfer_id"])
    eq(orig["amount_fen"], 20_000)
    back = cl.call("transfer.get", {"id": rev["transfer_id"]}, actor=None)
    eq(back["kind"], "reversal")
    eq(back["reverses_id"], tid)
    eq(back["note"], "重复发放，更正")
    entries = cl.call("account.get", {"id": bud["id"]}, actor=None)["entries"]
    eq([e["id"] for e in entries][:2], [rev["transfer_id"], tid])
    # once only, and never a reversal of a reversal
    expect_error(cl, "transfer.reverse", {"transfer_id": tid, "reason": "again",
                                          "request_key": key()}, "failed_precondition",
                 "transfer_id")
    expect_error(cl, "transfer.reverse", {"transfer_id": rev["transfer_id"], "reason": "undo",
                                          "request_key": key()}, "failed_precondition",
                 "transfer_id")
    # reversing money that has moved on would break a floor: refused
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT id FROM funds.transfer WHERE to_account = %s AND kind = 'funding'",
                (bud["id"],))
    funding_id = cur.fetchone()[0]
    conn.close()
    cl.call("disbursement.batch", {
        "batch_key": key(), "budget_id": bud["id"], "request_key": key(),
        "lines": [{"line_key": "b", "recipient": "household:78", "amount_fen": 1}]})
    expect_error(cl, "transfer.reverse", {"transfer_id": funding_id, "reason": "撤回",
                                          "request_key": key()}, "failed_precondition",
                 "transfer_id")
    eq(balance(cl, src_id), 0)
    books_balance()


# ---------------------------------------------------------------- allocation

def _reference_split(amount, items):
    """Largest remainder with ties by recipient name (the documented rule)."""
    total = sum(w for _, w in items)
    parts = [amount * w // total for _, w in items]
    rems = [(-(amount * w % total), name, i) for i, (name, w) in enumerate(items)]
    left = amount - sum(parts)
    for _, _, i in sorted(rems)[:left]:
        parts[i] += 1
    return parts


def test_allocation_parts_always_sum_to_the_whole():
    cl = c()
    bud = new_budget(cl, 10**9)
    rng = random.Random(20170713)
    cases = [
        (1, [("village:%d" % i, 1) for i in range(1, 1001)]),            # 1 fen, many
        (999, [("village:1", 0), ("village:2", 0), ("village:3", 5)]),   # zero weights
        (100, [("village:%d" % i, 7) for i in range(1, 4)]),             # equal weights
        (10, [("village:%d" % i, 1) for i in range(1, 8)]),              # ties by name
        (2**62, [("village:1", 2**62), ("village:2", 3)]),              # big numbers
        (7, [("program:only", 1)]),
    ]
    for _ in range(300):
        n = rng.randint(1, 60)
        items = [("village:%d" % rng.randint(1, 10**9), rng.choice([0, 1, 2, 3, 10**6,
                                                                  rng.randint(0, 10**12)]))
                 for _ in range(n)]
        items = list({nm: w for nm, w in items}.items())
        if sum(w for _, w in items) == 0:
            items[0] = (items[0][0], 1)
        cases.append((rng.choice([1, 2, 99, 10**4, rng.randint(1, 10**15)]), items))
    for amount, items in cases:
        got = cl.call("allocation.preview", {
            "budget_id": bud["id"], "rule": "weights", "amount_fen": amount,
            "recipients": [{"recipient": nm, "weight": w} for nm, w in items]}, actor=None)
        parts = [p["amount_fen"] for p in got["parts"]]
        eq(sum(parts), amount, "parts of %d over %d recipients" % (amount, len(items)))
        eq([p["recipient"] for p in got["parts"]], [nm for nm, _ in items])
        eq(parts, _reference_split(amount, items), "largest remainder")
        for (nm, w), p in zip(items, parts):
            if w == 0:
                eq(p, 0, "a zero weight gets nothing")
        eq(got["total_fen"], amount)
    # the same split applied moves exactly those parts, and nothing if it can't
    items = [("village:%d" % i, i) for i in range(1, 11)]
    res = cl.call("allocation.apply", {
        "budget_id": bud["id"], "rule": "weights", "amount_fen": 1001,
        "recipients": [{"recipient": nm, "weight": w} for nm, w in items],
        "request_key": key()})
    eq(res["transfers"], 10)
    eq(res["budget_balance_fen"], 10**9 - 1001)
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT b.recipient, a.balance_fen FROM funds.budget b JOIN funds.account a "
                "ON a.id = b.id WHERE b.parent_id = %s", (bud["id"],))
    got = dict(cur.fetchall())
    conn.close()
    want = dict(zip([nm for nm, _ in items], _reference_split(1001, items)))
    eq(got, want)
    expect_error(cl, "allocation.apply", {
        "budget_id": bud["id"], "rule": "fixed",
        "recipients": [{"recipient": "village:1", "amount_fen": 10**9}],
        "request_key": key()}, "failed_precondition", "amount_fen")
    eq(balance(cl, bud["id"]), 10**9 - 1001)
    # fixed rule checks: a stated whole must match, a recipient appears once
    expect_error(cl, "allocation.preview", {
        "budget_id": bud["id"], "rule": "fixed", "amount_fen": 5,
        "recipients": [{"recipient": "village:1", "amount_fen": 4}]}, "invalid_argument",
        "amount_fen", actor=None)
    expect_error(cl, "allocation.preview", {
        "budget_id": bud["id"], "rule": "weights", "amount_fen": 5,
        "recipients": [{"recipient": "village:1", "weight": 1},
                       {"recipient": "village:1", "weight": 2}]}, "invalid_argument",
        "recipients[1].recipient", actor=None)
    expect_error(cl, "allocation.preview", {
        "budget_id": bud["id"], "rule": "weights", "amount_fen": 5,
        "recipients": [{"recipient": "village:1", "weight": 0}]}, "invalid_argument",
        "recipients", actor=None)
    books_balance()


def test_allocation_to_130000_recipients_applies_in_one_call():
    cl = c()
    n = 130_000
    amount = 128_000 * 1_000_000_00 // 1000  # 12.8 M yuan, not a multiple of n
    bud = new_budget(cl, amount)
    recipients = [{"recipient": "village:%d" % (i + 1), "weight": 1 + (i * 7919) % 13}
                  for i in range(n)]
    t0 = time.time()
    res = cl.call("allocation.apply", {"budget_id": bud["id"], "rule": "weights",
                                       "amount_fen": amount, "recipients": recipients,
                                       "request_key": key("big")})
    took = time.time() - t0
    eq(res["recipients"], n)
    eq(res["transfers"], n)
    eq(res["budget_balance_fen"], 0)
    eq(res["last_transfer_id"] - res["first_transfer_id"] + 1, n)
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT count(*), sum(a.balance_fen) FROM funds.budget b JOIN funds.account a "
                "ON a.id = b.id WHERE b.parent_id = %s", (bud["id"],))
    count, total = cur.fetchone()
    conn.close()
    eq(count, n)
    eq(total, amount)
    # how long it took is for make bench (P5), never a test's assertion
    print("# 130,000-recipient allocation applied in %.1f s" % took)
    books_balance()


# ---------------------------------------------------------------- projects and tranches

def test_project_without_target_is_not_admitted():
    cl = c()
    bud = new_budget(cl, 1000)
    base = {"name": "无目标项目", "kind": "industry", "location": "620523000000", "unit_id": 2,
            "beneficiaries": 5, "budget_id": bud["id"], "amount_fen": 100}
    expect_error(cl, "project.create", dict(base, request_key=key()), "invalid_argument", "target")
    expect_error(cl, "project.create", dict(base, target="", request_key=key()),
                 "invalid_argument", "target")
    expect_error(cl, "project.create", dict(base, target="x", kind="casino", request_key=key()),
                 "invalid_argument", "kind")
    expect_error(cl, "project.create", dict(base, target="x", location="62052", request_key=key()),
                 "invalid_argument", "location")
    expect_error(cl, "project.create", dict(base, target="x", amount_fen=1001, request_key=key()),
                 "failed_precondition", "amount_fen")
    eq(balance(cl, bud["id"]), 1000)
    books_balance()


def test_tranches_are_planned_approved_by_another_and_disbursed_in_order():
    cl = c()
    bud = new_budget(cl, 1_000_000)
    pj = new_project(cl, bud["id"], 900_000)
    eq(balance(cl, bud["id"]), 100_000)
    plan = lambda seq, amt, actor="cadre:1": cl.call("tranche.plan", {  # noqa: E731
        "project_id": pj["id"], "seq": seq, "amount_fen": amt, "purpose": "第%d期" % seq,
        "request_key": key()}, actor=actor)
    t1 = plan(1, 300_000)
    eq(t1["recipient"], "unit:7")
    t2 = plan(2, 300_000)
    expect_error(cl, "tranche.plan", {"project_id": pj["id"], "seq": 4, "amount_fen": 1,
                                      "request_key": key()}, "invalid_argument", "seq")
    expect_error(cl, "tranche.plan", {"project_id": pj["id"], "seq": 2, "amount_fen": 1,
                                      "request_key": key()}, "already_exists", "seq")
    expect_error(cl, "tranche.plan", {"project_id": pj["id"], "seq": 3, "amount_fen": 300_001,
                                      "request_key": key()}, "failed_precondition", "amount_fen")
    t3 = plan(3, 300_000)
    eq(t3["remaining_to_plan_fen"], 0)
    # the requester may not approve
    expect_error(cl, "tranche.approve", {"tranche_id": t1["id"], "request_key": key()},
                 "permission_denied", "actor", actor="cadre:1")
    # not approved yet
    expect_error(cl, "tranche.disburse", {"tranche_id": t1["id"], "request_key": key()},
                 "failed_precondition", "tranche_id")
    cl.call("tranche.approve", {"tranche_id": t2["id"], "note": "区财政局审批", "request_key": key()},
            actor="cadre:2")
    # out of order: 2 before 1
    e = expect_error(cl, "tranche.disburse", {"tranche_id": t2["id"], "request_key": key()},
                     "failed_precondition", "tranche_id")
    check("order" in e["message"], e["message"])
    cl.call("tranche.approve", {"tranche_id": t1["id"], "request_key": key()}, actor="cadre:2")
    expect_error(cl, "tranche.approve", {"tranche_id": t1["id"], "request_key": key()},
                 "failed_precondition", "tranche_id", actor="cadre:3")
    d1 = cl.call("tranche.disburse", {"tranche_id": t1["id"], "request_key": key()})
    eq(d1["state"], "disbursed")
    d2 = cl.call("tranche.disburse", {"tranche_id": t2["id"], "request_key": key()})
    expect_error(cl, "tranche.disburse", {"tranche_id": t2["id"], "request_key": key()},
                 "failed_precondition", "tranche_id")
    got = cl.call("project.get", {"id": pj["id"]}, actor=None)
    eq([t["state"] for t in got["tranches"]], ["disbursed", "disbursed", "planned"])
    eq(got["disbursed_fen"], 600_000)
    eq(got["balance_fen"], 300_000)
    eq(got["tranches"][1]["approved_by"], "cadre:2")
    eq(balance(cl, cl.call("account.get", {"recipient": "unit:7"}, actor=None)["id"]) >= 600_000,
       True)
    # reversing a disbursed tranche's payment marks it reversed and frees its amount
    cl.call("transfer.reverse", {"transfer_id": d2["transfer_id"], "reason": "工程未验收",
                                 "request_key": key()})
    got = cl.call("project.get", {"id": pj["id"]}, actor=None)
    eq([t["state"] for t in got["tranches"]], ["disbursed", "reversed", "planned"])
    t4 = plan(4, 300_000)
    eq(t4["remaining_to_plan_fen"], 0)
    # a budget pays in tranches too
    tb = cl.call("tranche.plan", {"budget_id": bud["id"], "seq": 1, "amount_fen": 50_000,
                                  "recipient": "village:3", "request_key": key()})
    cl.call("tranche.approve", {"tranche_id": tb["id"], "request_key": key()}, actor="cadre:5")
    cl.call("tranche.disburse", {"tranche_id": tb["id"], "request_key": key()})
    eq(balance(cl, bud["id"]), 50_000)
    expect_error(cl, "tranche.plan", {"budget_id": bud["id"], "seq": 2, "amount_fen": 1,
                                      "request_key": key()}, "invalid_argument", "recipient")
    expect_error(cl, "tranche.plan", {"budget_id": bud["id"], "project_id": pj["id"], "seq": 2,
                                      "amount_fen": 1, "request_key": key()},
                 "invalid_argument", "project_id")
    books_balance()


# ---------------------------------------------------------------- batches

def test_batch_is_idempotent_per_batch_and_per_line_with_per_line_results():
    cl = c()
    bud = new_budget(cl, 1_000_000, recipient="program:公益岗位-" + RUN)
    bkey = key("payroll")
    lines = [{"line_key": "p%d" % i, "recipient": "person:%d" % (500 + i), "amount_fen": 100_000}
             for i in range(8)]
    lines.append({"line_key": "bad", "recipient": "person:x", "amount_fen": 100_000})
    lines.append({"line_key": "neg", "recipient": "person:9", "amount_fen": -3})
    lines.append({"line_key": "p0", "recipient": "person:500", "amount_fen": 100_000})
    k1 = key()
    r1 = cl.call("disbursement.batch", {"batch_key": bkey, "budget_id": bud["id"],
                                        "purpose": "公益岗位工资 2020-06", "lines": lines,
                                        "request_key": k1})
    eq(r1["paid"], 8)
    eq(r1["failed"], 3)
    eq(r1["paid_fen"], 800_000)
    st = [l["status"] for l in r1["lines"]]
    eq(st, ["ok"] * 8 + ["error"] * 3)
    eq(r1["lines"][8]["error"]["field"], "lines[8].recipient")
    eq(r1["lines"][9]["error"]["field"], "lines[9].amount_fen")
    eq(r1["lines"][10]["error"]["field"], "lines[10].line_key")
    # the same request again: the first result
    eq(cl.call("disbursement.batch", {"batch_key": bkey, "budget_id": bud["id"],
                                      "purpose": "公益岗位工资 2020-06", "lines": lines,
                                      "request_key": k1}), r1)
    # a new submission of the batch: paid lines are duplicates, new ones paid, changed ones conflict
    more = [dict(lines[0]), dict(lines[1], amount_fen=5), {"line_key": "p8",
            "recipient": "person:508", "amount_fen": 100_000},
            {"line_key": "p9", "recipient": "person:509", "amount_fen": 100_000},
            {"line_key": "p10", "recipient": "person:510", "amount_fen": 100_000}]
    r2 = cl.call("disbursement.batch", {"batch_key": bkey, "budget_id": bud["id"], "lines": more,
                                        "request_key": key()})
    eq([l["status"] for l in r2["lines"]], ["ok", "error", "ok", "ok", "error"])
    eq(r2["lines"][0]["duplicate"], True)
    eq(r2["lines"][0]["transfer_id"], r1["lines"][0]["transfer_id"])
    eq(r2["lines"][1]["error"]["code"], "conflict")
    eq(r2["lines"][4]["error"]["code"], "failed_precondition")  # the budget ran out
    eq(r2["paid"], 2)
    eq(r2["duplicates"], 1)
    eq(balance(cl, bud["id"]), 0)
    # each result names the payer's balance after it and the transfers it made
    eq(r1["payer_balance_fen"], 200_000)
    eq(r2["payer_balance_fen"], 0)
    ids = [l["transfer_id"] for l in r1["lines"][:8]]
    ids += [r2["lines"][i]["transfer_id"] for i in (2, 3)]
    eq(ledger_count("id = ANY(%s) AND from_account = %s AND amount_fen = 100000",
                    ids, bud["id"]), 10)
    eq(ledger_count("from_account = %s AND kind = 'disbursement'", bud["id"]), 10)
    # the batch key is bound to its payer
    other = new_budget(cl, 10)
    expect_error(cl, "disbursement.batch", {"batch_key": bkey, "budget_id": other["id"],
                                            "lines": lines[:1], "request_key": key()},
                 "conflict", "batch_key")
    books_balance()


# ---------------------------------------------------------------- reports and trace

def test_reports_and_trace_follow_the_money():
    cl = c()
    year = 2020
    central = new_source(cl, 600_000, year, "central")
    social = new_source(cl, 400_000, year, "social")
    county = "region:62052%s" % ("%07d" % random.randint(1000, 9999999))[:7]
    bud = cl.call("budget.create", {
        "recipient": county, "year": year, "carrier": "华明街",
        "funding": [{"source_id": central["id"], "amount_fen": 600_000},
                    {"source_id": social["id"], "amount_fen": 400_000}],
        "request_key": key()})
    pj = new_project(cl, bud["id"], 500_000, kind="training")
    t = cl.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 200_000,
                                 "request_key": key()})
    cl.call("tranche.approve", {"tranche_id": t["id"], "request_key": key()}, actor="cadre:8")
    cl.call("tranche.disburse", {"tranche_id": t["id"], "request_key": key()})
    village = "village:%d" % random.randint(10**9, 10**10)
    cl.call("allocation.apply", {"budget_id": bud["id"], "rule": "fixed",
                                 "recipients": [{"recipient": village, "amount_fen": 100_000}],
                                 "request_key": key()})
    rep = cl.call("report.utilisation", {"by": "budget", "budget_id": bud["id"]}, actor=None)
    eq(rep["rows"], [{"key": str(bud["id"]), "label": "%s %d" % (county, year),
                      "budgeted_fen": 1_000_000, "allocated_fen": 600_000,
                      "disbursed_fen": 200_000, "remaining_fen": 800_000}])
    rep = cl.call("report.utilisation", {"by": "source", "budget_id": bud["id"]}, actor=None)
    eq([(r["label"], r["budgeted_fen"], r["allocated_fen"], r["disbursed_fen"])
        for r in rep["rows"]],
       [(central["name"], 600_000, 360_000, 120_000), (social["name"], 400_000, 240_000, 80_000)])
    rep = cl.call("report.utilisation", {"by": "project", "budget_id": bud["id"]}, actor=None)
    eq([(r["budgeted_fen"], r["allocated_fen"], r["disbursed_fen"], r["remaining_fen"])
        for r in rep["rows"]], [(500_000, 200_000, 200_000, 300_000)])
    for by in ("year", "recipient", "source_kind", "project_kind"):
        rep = cl.call("report.utilisation", {"by": by, "budget_id": bud["id"]}, actor=None)
        check(len(rep["rows"]) >= 1, by)
    rep = cl.call("report.utilisation", {"by": "year", "year": year}, actor=None)
    eq([r["key"] for r in rep["rows"]], [str(year)])
    tr = cl.call("trace.recipient", {"recipient": "unit:7"}, actor=None)
    check(tr["received_fen"] >= 200_000, "unit:7 received")
    tr = cl.call("trace.recipient", {"recipient": village}, actor=None)
    eq(tr["received_fen"], 100_000)
    eq(sorted((s["source_id"], s["amount_fen"]) for s in tr["sources"]),
       [(central["id"], 60_000), (social["id"], 40_000)])
    tr = cl.call("trace.recipient", {"recipient": county}, actor=None)
    eq(tr["received_fen"], 1_000_000)
    eq(sum(s["amount_fen"] for s in tr["sources"]), 1_000_000)
    books_balance()


def test_every_write_emits_its_event():
    cl = c()
    r = bftest.redis_client()
    since = bftest.stream_last_id(r)
    bud = new_budget(cl, 10_000)
    pj = new_project(cl, bud["id"], 5000)
    t = cl.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 5000,
                                 "request_key": key()})
    cl.call("tranche.approve", {"tranche_id": t["id"], "request_key": key()}, actor="cadre:4")
    d = cl.call("tranche.disburse", {"tranche_id": t["id"], "request_key": key()})
    cl.call("transfer.reverse", {"transfer_id": d["transfer_id"], "reason": "x",
                                 "request_key": key()})
    cl.call("budget.fund", {"budget_id": bud["id"], "request_key": key(), "funding": [
        {"source_id": new_source(cl, 10)["id"], "amount_fen": 10}]})
    cl.call("allocation.apply", {"budget_id": bud["id"], "rule": "fixed", "request_key": key(),
                                 "recipients": [{"recipient": "village:5", "amount_fen": 5}]})
    cl.call("disbursement.batch", {"batch_key": key(), "budget_id": bud["id"], "request_key": key(),
                                   "lines": [{"line_key": "1", "recipient": "person:1",
                                              "amount_fen": 5}]})
    want = {"bangfu.funds.source.created", "bangfu.funds.source.received",
            "bangfu.funds.budget.created", "bangfu.funds.budget.funded",
            "bangfu.funds.allocation.applied", "bangfu.funds.project.created",
            "bangfu.funds.tranche.planned", "bangfu.funds.tranche.approved",
            "bangfu.funds.tranche.disbursed", "bangfu.funds.transfer.reversed",
            "bangfu.funds.batch.disbursed"}
    seen = {}

    def got_all():
        for _, ev in bftest.stream_events(r, since):
            seen.setdefault(ev["type"], ev)
        return want <= set(seen)
    bftest.wait_for(got_all, msg="missing events: %s" % (want - set(seen)))
    ev = seen["bangfu.funds.tranche.disbursed"]
    eq(ev["source"], "bangfu/funds")
    eq(ev["subject"], "tranche/%d" % t["id"])
    eq(ev["data"]["transfer_id"], d["transfer_id"])
    eq(seen["bangfu.funds.project.created"]["data"]["target"], "建成1所小学，容纳600名学生")
    books_balance()


# ---------------------------------------------------------------- tamper evidence

def _verify_cli():
    env = dict(os.environ, BANGFU_FUNDS_RPC=S.endpoint("funds"))
    p = subprocess.run([os.path.join(bftest.BUILD, "bin", "bangfu"), "funds", "verify"],
                       env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


HASH_COLS = ("id, from_account, to_account, amount_fen, kind, year, budget_id, project_id, "
             "source_id, ref, note, request_key, reverses_id, actor, "
             "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


def entry_hash(prev, fields):
    """The documented hash: SHA-256(prev || netstrings of the tag and the fields)."""
    import hashlib
    h = hashlib.sha256(bytes(prev))
    for f in ("bangfu.funds.transfer.v1",) + tuple(fields):
        if f is None:
            h.update(b"~,")
        else:
            b = str(f).encode()
            h.update(b"%d:" % len(b) + b + b",")
    return h.digest()


def test_tampering_behind_the_service_is_caught_and_named():
    cl = c()
    bud = new_budget(cl, 90_000)
    paid = cl.call("disbursement.batch", {
        "batch_key": key(), "budget_id": bud["id"], "request_key": key(),
        "lines": [{"line_key": str(i), "recipient": "person:%d" % (700 + i), "amount_fen": 10_000}
                  for i in range(3)]})
    victim = paid["lines"][1]["transfer_id"]
    v = cl.call("ledger.verify", actor=None)
    check(v["ok"] and v["first_bad"] is None, "clean before: %r" % v)
    rc, out = _verify_cli()
    eq(rc, 0, "bangfu funds verify on a clean ledger: " + out)
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT prev_hash, hash, amount_fen FROM funds.transfer WHERE id = %s", (victim,))
    prev, orig_hash, orig_amount = cur.fetchone()
    # the documented hash is what the service stored
    cur.execute("SELECT " + HASH_COLS + " FROM funds.transfer WHERE id = %s", (victim,))
    fields = cur.fetchone()
    eq(entry_hash(prev, fields), bytes(orig_hash), "hash recomputed as docs/funds.md says")
    try:
        cur.execute("ALTER TABLE funds.transfer DISABLE TRIGGER transfer_append_only")
        cur.execute("UPDATE funds.transfer SET amount_fen = amount_fen + 100000 WHERE id = %s",
                    (victim,))
        cur.execute("ALTER TABLE funds.transfer ENABLE TRIGGER transfer_append_only")
        v = cl.call("ledger.verify", actor=None)
        eq(v["ok"], False)
        eq(v["first_bad"]["id"], victim, "the entry verify names")
        eq(v["first_bad"]["problem"], "altered")
        eq(v["books_ok"], False)  # the cached balances no longer match the ledger either
        rc, out = _verify_cli()
        eq(rc, 1, "bangfu funds verify on a tampered ledger")
        check(str(victim) in out, "the CLI names the entry: " + out)
        # a forger who also rewrites the entry's hash breaks the next entry's link
        cur.execute("SELECT " + HASH_COLS + " FROM funds.transfer WHERE id = %s", (victim,))
        forged = entry_hash(prev, cur.fetchone())
        cur.execute("ALTER TABLE funds.transfer DISABLE TRIGGER transfer_append_only")
        cur.execute("UPDATE funds.transfer SET hash = %s WHERE id = %s", (forged, victim))
        cur.execute("ALTER TABLE funds.transfer ENABLE TRIGGER transfer_append_only")
        v = cl.call("ledger.verify", actor=None)
        eq(v["first_bad"]["id"], victim + 1)
        eq(v["first_bad"]["problem"], "broken_link")
    finally:
        # put the books back exactly as they were
        cur.execute("ALTER TABLE funds.transfer DISABLE TRIGGER transfer_append_only")
        cur.execute("UPDATE funds.transfer SET amount_fen = %s, hash = %s WHERE id = %s",
                    (orig_amount, orig_hash, victim))
        cur.execute("ALTER TABLE funds.transfer ENABLE TRIGGER transfer_append_only")
        conn.close()
    v = cl.call("ledger.verify", actor=None)
    check(v["ok"], "restored: %r" % v)
    books_balance()


def test_a_deleted_entry_is_named():
    cl = c()
    new_source(cl, 5)
    conn = bftest.pg()
    cur = conn.cursor()
    cur.execute("SELECT last_id FROM funds.ledger_head")
    last = cur.fetchone()[0]
    cur.execute("SELECT * FROM funds.transfer WHERE id = %s", (last,))
    row = cur.fetchone()
    try:
        cur.execute("ALTER TABLE funds.transfer DISABLE TRIGGER transfer_append_only")
        cur.execute("DELETE FROM funds.transfer WHERE id = %s", (last,))
        v = cl.call("ledger.verify", actor=None)
        eq(v["ok"], False)
        eq(v["first_bad"]["id"], last)
        eq(v["first_bad"]["problem"], "head_mismatch")
    finally:
        cur.execute("INSERT INTO funds.transfer VALUES (%s)" % ",".join(["%s"] * len(row)), row)
        cur.execute("ALTER TABLE funds.transfer ENABLE TRIGGER transfer_append_only")
        conn.close()
    books_balance()


# ---------------------------------------------------------------- evidence beyond transfers

EV_COLS = ("id, kind, subject_id, account_kind, ref, name, floor_fen, payer_id, seq, amount_fen, "
           "recipient, requested_by, approved_by, note, actor, "
           "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


def _export_head():
    env = dict(os.environ, BANGFU_FUNDS_RPC=S.endpoint("funds"))
    p = subprocess.run([os.path.join(bftest.BUILD, "bin", "bangfu"), "funds", "verify",
                        "--export-head"], env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def _refused(cur, sql, args, column):
    """The UPDATE is refused by the trigger, naming the column."""
    import psycopg2
    try:
        cur.execute(sql, args)
    except psycopg2.Error as e:
        check(column in str(e), "the trigger names %s: %s" % (column, e))
        return
    raise bftest.TestFailure("not refused: %s %r" % (sql, args))


def _tampered(cur, sql, args):
    """Runs sql as a DBA who bypasses the triggers."""
    cur.execute("SET session_replication_role = replica")
    try:
        cur.execute(sql, args)
    finally:
        cur.execute("SET session_replication_role = DEFAULT")


def _diff(v, table, row_id, column):
    for d in v["differences"]:
        if d["table"] == table and d["id"] == row_id and d["column"] == column:
            return d
    raise bftest.TestFailure("verify does not name %s %s %s: %r" % (table, row_id, column, v))


def test_account_floor_ref_and_tranche_approval_are_refused_and_caught_by_verify():
    cl = c()
    bud = new_budget(cl, 1_000_000)
    pj = new_project(cl, bud["id"], 500_000)
    t = cl.call("tranche.plan", {"project_id": pj["id"], "seq": 1, "amount_fen": 200_000,
                                 "request_key": key()}, actor="cadre:ev-a")
    cl.call("tranche.approve", {"tranche_id": t["id"], "note": "批复", "request_key": key()},
            actor="cadre:ev-b")
    d = cl.call("tranche.disburse", {"tranche_id": t["id"], "request_key": key()})
    rcpt = cl.call("account.get", {"recipient": "unit:7", "limit": 1})["id"]
    v = cl.call("ledger.verify", actor=None)
    check(v["ok"] and v["evidence_ok"] and v["differences"] == [], "clean before: %r" % v)
    check(v["evidence_entries"] >= 4, "accounts and the approval are chained: %r" % v)
    conn = bftest.pg()
    cur = conn.cursor()
    try:
        # the documented evidence hash is what the service stored
        cur.execute("SELECT prev_hash, hash, " + EV_COLS + " FROM funds.evidence "
                    "WHERE kind = 'tranche.approved' AND subject_id = %s", (t["id"],))
        row = cur.fetchone()
        import hashlib
        h = hashlib.sha256(bytes(row[0]))
        for f in ("bangfu.funds.evidence.v1",) + tuple(row[2:]):
            b = b"~," if f is None else b"%d:" % len(str(f).encode()) + str(f).encode() + b","
            h.update(b)
        eq(h.digest(), bytes(row[1]), "evidence hash recomputed as docs/funds.md says")
        eq(row[14], "cadre:ev-b", "approved_by in the chained approval")

        # one-line UPDATEs are refused by trigger, naming the column
        _refused(cur, "UPDATE funds.account SET floor_fen = -100000000 WHERE id = %s",
                 (bud["id"],), "floor_fen")
        _refused(cur, "UPDATE funds.account SET ref = 'person:666' WHERE id = %s", (rcpt,), "ref")
        _refused(cur, "UPDATE funds.account SET kind = 'external', floor_fen = NULL "
                      "WHERE id = %s", (bud["id"],), "kind")
        _refused(cur, "UPDATE funds.tranche SET approved_by = 'cadre:ev-x' WHERE id = %s",
                 (t["id"],), "approved_by")
        _refused(cur, "UPDATE funds.tranche SET amount_fen = 1 WHERE id = %s", (t["id"],),
                 "amount_fen")
        _refused(cur, "UPDATE funds.tranche SET state = 'approved' WHERE id = %s", (t["id"],),
                 "state")
        # the balance is what legitimately changes
        cur.execute("UPDATE funds.account SET balance_fen = balance_fen WHERE id = %s",
                    (bud["id"],))
        v = cl.call("ledger.verify", actor=None)
        check(v["ok"], "refused updates changed nothing: %r" % v)

        # with the triggers bypassed, verify names the row, the column, both values
        _tampered(cur, "UPDATE funds.account SET floor_fen = -100000000 WHERE id = %s",
                  (bud["id"],))
        _tampered(cur, "UPDATE funds.account SET ref = 'person:666' WHERE id = %s", (rcpt,))
        _tampered(cur, "UPDATE funds.tranche SET approved_by = 'cadre:ev-x' WHERE id = %s",
                  (t["id"],))
        v = cl.call("ledger.verify", actor=None)
        eq(v["ok"], False)
        eq(v["evidence_ok"], False)
        eq(v["first_bad"], None, "the transfers themselves are intact")
        f = _diff(v, "account", bud["id"], "floor_fen")
        eq((f["expected"], f["found"]), ("0", "-100000000"))
        check(f["evidence_id"], "names the evidence entry: %r" % f)
        f = _diff(v, "account", rcpt, "ref")
        eq((f["expected"], f["found"]), ("unit:7", "person:666"))
        f = _diff(v, "tranche", t["id"], "approved_by")
        eq((f["expected"], f["found"]), ("cadre:ev-b", "cadre:ev-x"))
        rc, out, err = _export_head()
        eq(rc, 1, "no head is exported from a ledger that does not verify: " + out + err)
        eq(out, "", "nothing to publish")
        check("account %d: floor_fen is -100000000" % bud["id"] in err, err)
        check("tranche %d: approved_by is cadre:ev-x" % t["id"] in err, err)
    finally:
        _tampered(cur, "UPDATE funds.account SET floor_fen = 0 WHERE id = %s", (bud["id"],))
        _tampered(cur, "UPDATE funds.account SET ref = 'unit:7' WHERE id = %s", (rcpt,))
        _tampered(cur, "UPDATE funds.tranche SET approved_by = 'cadre:ev-b' WHERE id = %s",
                  (t["id"],))
    v = cl.call("ledger.verify", actor=None)
    check(v["ok"], "restored: %r" % v)

    # an account (or an approval) written behind the service has no chained record
    cur.execute("INSERT INTO funds.account (kind, ref, name, floor_fen) "
                "VALUES ('recipient', %s, 'forged', 0) RETURNING id", ("person:" + key(),))
    forged = cur.fetchone()[0]
    try:
        v = cl.call("ledger.verify", actor=None)
        eq(v["ok"], False)
        f = _diff(v, "account", forged, "evidence")
        eq((f["expected"], f["found"]), (None, "none"))
        # a later write by the service does not launder it
        new_source(cl, 1)
        v = cl.call("ledger.verify", actor=None)
        _diff(v, "account", forged, "evidence")
    finally:
        _tampered(cur, "DELETE FROM funds.account WHERE id = %s", (forged,))
        cur.execute("DELETE FROM funds.evidence_pending WHERE kind = 'account.created' "
                    "AND subject_id = %s", (forged,))
        conn.close()

    # the head to publish
    rc, out, err = _export_head()
    eq(rc, 0, "export-head on a clean ledger: " + err)
    import json
    head = json.loads(out)
    v = cl.call("ledger.verify", actor=None)
    eq(head["head_hash"], v["published_hash"])
    eq(head["ledger_id"], v["head_id"])
    eq(head["ledger_hash"], v["head_hash"])
    eq(head["evidence_id"], v["evidence_head_id"])
    check(head["ledger_id"] >= d["transfer_id"], "the head is at or after our transfer")
    check(head["time"].endswith("Z"), head["time"])
    books_balance()


# ---------------------------------------------------------------- long operations in chunks

def _alloc_row(key_):
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, state, applied, applied_fen, total_fen FROM funds.allocation "
                    "WHERE request_key = %s", (key_,))
        return cur.fetchone()
    finally:
        conn.close()


def _restart_funds(env=None, sig=signal.SIGTERM):
    S.stop("funds", sig)
    S.start("funds", env=env)


def test_long_allocation_runs_in_chunks_small_payments_pass_and_a_killed_one_resumes():
    # small chunks, so the allocation is still running when the test acts on it
    chunk = 250
    small = {"BANGFU_FUNDS_CHUNK_ROWS": str(chunk)}
    _restart_funds(small)
    try:
        cl = c()
        n = bftest.scaled(50_000, floor=20_000)
        amount = 7 * n * 1000 + 13
        bud = new_budget(cl, amount)
        side = new_source(cl)
        items = [("village:%d" % (900_000 + i), 1 + (i * 7919) % 11) for i in range(n)]
        recipients = [{"recipient": nm, "weight": w} for nm, w in items]
        k = key("chunked")
        params = {"budget_id": bud["id"], "rule": "weights", "amount_fen": amount,
                  "recipients": recipients, "request_key": k}
        lost = {}

        def first_try():
            try:
                S.client("funds", timeout_ms=20000).call("allocation.apply", params)
                lost["finished"] = True
            except Exception as e:  # the service is killed under it
                lost["error"] = e

        th = threading.Thread(target=first_try, daemon=True)
        th.start()
        bftest.wait_for(lambda: (_alloc_row(k) or (0, "", 0))[2] >= chunk, timeout=60,
                        msg="the allocation did not start")
        # a 1-fen receipt completes while the allocation runs
        rc = cl.call("source.receive", {"source_id": side["id"], "amount_fen": 1, "year": 2017,
                                        "request_key": key("tiny")})
        seen = _alloc_row(k)[2]
        # the whole is held: nobody else can spend it meanwhile
        b = cl.call("disbursement.batch", {
            "batch_key": key(), "budget_id": bud["id"], "request_key": key(),
            "lines": [{"line_key": "1", "recipient": "person:1", "amount_fen": 1}]})
        eq(b["paid"], 0, "a held budget pays nothing: %r" % b)
        bftest.wait_for(lambda: _alloc_row(k)[2] > seen, timeout=60,
                        msg="the allocation went on after the receipt")
        _, state, applied, applied_fen, total = _alloc_row(k)
        check(state == "running" and applied < n, "still running when killed: %s %d" %
              (state, applied))
        _restart_funds(small, signal.SIGKILL)
        th.join(30)
        check("finished" not in lost, "the first try was cut off")
        alloc_id, state, applied, applied_fen, total = _alloc_row(k)
        eq(state, "running")
        eq(applied % chunk, 0, "only whole chunks were committed")
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT balance_fen, held_fen FROM funds.account WHERE id = %s", (bud["id"],))
        eq(cur.fetchone(), (amount - applied_fen, total - applied_fen), "balance and hold")
        conn.close()
        # the retry with the same key continues, never doubles
        res = c().call("allocation.apply", params)
        eq(res["complete"], True)
        eq(res["transfers"], n)
        eq(res["chunks"], (n + chunk - 1) // chunk)
        eq(res["budget_balance_fen"], 0)
        check(res["first_transfer_id"] < rc["transfer_id"] < res["last_transfer_id"],
              "the receipt (%d) was ledgered between the allocation's first (%d) and last (%d) "
              "entries" % (rc["transfer_id"], res["first_transfer_id"], res["last_transfer_id"]))
        eq(c().call("allocation.apply", params), res, "a further retry replays the result")
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT count(*), count(DISTINCT to_account), sum(amount_fen) "
                    "FROM funds.transfer WHERE ref = %s", ("allocation/%d" % alloc_id,))
        eq(cur.fetchone(), (n, n, amount), "each recipient paid once")
        cur.execute("SELECT b.recipient, a.balance_fen FROM funds.budget b JOIN funds.account a "
                    "ON a.id = b.id WHERE b.parent_id = %s", (bud["id"],))
        got = dict(cur.fetchall())
        cur.execute("SELECT held_fen FROM funds.account WHERE id = %s", (bud["id"],))
        eq(cur.fetchone()[0], 0, "the hold is released")
        conn.close()
        eq(got, dict(zip([nm for nm, _ in items], _reference_split(amount, items))))
        v = cl.call("ledger.verify", actor=None)
        check(v["ok"], "verify after a resumed allocation: %r" % v)
    finally:
        _restart_funds()
    books_balance()


def _batch_run(key_):
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT state, applied, planned_fen, paid_fen, batch_id FROM funds.batch_run "
                    "WHERE request_key = %s", (key_,))
        return cur.fetchone()
    finally:
        conn.close()


def _lock_recipient(ref):
    """Holds the recipient account's row lock (a transaction left open): the
    batch chunk that pays it waits there, holding the ledger head."""
    conn = bftest.pg()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SELECT id FROM funds.account WHERE kind = 'recipient' AND ref = %s FOR UPDATE",
                (ref,))
    check(cur.fetchone() is not None, "recipient %s exists" % ref)
    return conn


def _waiting_on_head():
    conn = bftest.pg()
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%ledger_head FOR UPDATE%'")
        return cur.fetchone()[0]
    finally:
        conn.close()


def test_long_batch_runs_in_chunks_a_receipt_passes_between_and_a_killed_one_resumes():
    """disbursement.batch in chunks of funds.chunk_rows: a receipt waiting for
    the ledger head gets it between two chunks (not after the whole batch); a
    batch cut off by SIGKILL keeps its committed chunks and the rest held, and
    the retry with the same request key pays the rest, each line once; the
    chain verifies. The batch is stopped at chosen chunks, not by timing: the
    test holds the row lock of a recipient a later chunk pays."""
    chunk = 50
    small = {"BANGFU_FUNDS_CHUNK_ROWS": str(chunk)}
    _restart_funds(small)
    locks = []
    try:
        cl = c()
        n = 1000
        tag = bftest.uid()
        refs = ["person:%s%05d" % (int(tag[:6], 16) % 900 + 100, i) for i in range(n)]
        amounts = [100 + i % 7 for i in range(n)]
        # the two recipients the test will block on have accounts already
        a_i, b_i = 3 * chunk + 5, 7 * chunk + 9
        pre = new_budget(cl, 2)
        cl.call("disbursement.batch", {"batch_key": key("pre"), "budget_id": pre["id"],
                                       "request_key": key(), "lines": [
            {"line_key": "a", "recipient": refs[a_i], "amount_fen": 1},
            {"line_key": "b", "recipient": refs[b_i], "amount_fen": 1}]})
        bud = new_budget(cl, sum(amounts) + 5)
        side = new_source(cl)
        lines = [{"line_key": "L%d" % i, "recipient": refs[i], "amount_fen": amounts[i]}
                 for i in range(n)]
        lines.append({"line_key": "L0", "recipient": refs[0], "amount_fen": amounts[0]})  # repeated
        k = key("chunked-batch")
        params = {"batch_key": key("payroll"), "budget_id": bud["id"], "purpose": "分块发放",
                  "lines": lines, "request_key": k}
        locks.append(_lock_recipient(refs[a_i]))
        locks.append(_lock_recipient(refs[b_i]))
        outcome = {}

        def first_try():
            try:
                S.client("funds", timeout_ms=60000).call("disbursement.batch", params)
                outcome["finished"] = True
            except Exception as e:  # the service is killed under it
                outcome["error"] = e

        th = threading.Thread(target=first_try, daemon=True)
        th.start()
        bftest.wait_for(lambda: (_batch_run(k) or ("", 0))[1] == 3 * chunk, timeout=60,
                        msg="the batch did not commit its first 3 chunks")
        state, applied, planned_fen, paid_fen, batch_id = _batch_run(k)
        eq((state, applied), ("running", 3 * chunk), "stopped at chunk 4 (its recipient locked)")
        eq(planned_fen, sum(amounts))
        # a receipt waits for the head the blocked chunk holds
        got = {}

        def receipt():
            got["r"] = S.client("funds", timeout_ms=60000).call(
                "source.receive", {"source_id": side["id"], "amount_fen": 1, "year": 2017,
                                   "request_key": key("tiny")})

        tr = threading.Thread(target=receipt, daemon=True)
        tr.start()
        bftest.wait_for(lambda: _waiting_on_head() >= 1, timeout=30,
                        msg="the receipt does not wait for the ledger head")
        locks.pop(0).rollback()  # chunk 4 goes on; the receipt is next in line for the head
        tr.join(60)
        check("r" in got, "the receipt completed while the batch ran")
        bftest.wait_for(lambda: _batch_run(k)[1] == 7 * chunk, timeout=60,
                        msg="the batch did not reach chunk 8")
        eq(_batch_run(k)[0], "running")
        # the receipt did not wait for the whole batch
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT min(id), max(id) FROM funds.transfer WHERE ref LIKE %s",
                    ("batch/%d#%%" % batch_id,))
        lo, hi = cur.fetchone()
        check(lo < got["r"]["transfer_id"] < hi,
              "the receipt (%d) lies between the batch's entries (%d..%d)"
              % (got["r"]["transfer_id"], lo, hi))
        conn.close()
        # killed while chunk 8 waits: the 7 committed chunks stay, the rest stays held
        _restart_funds(small, signal.SIGKILL)
        th.join(30)
        check("finished" not in outcome, "the first try was cut off")
        locks.pop(0).rollback()
        state, applied, planned_fen, paid_fen, _ = _batch_run(k)
        eq((state, applied), ("running", 7 * chunk), "only whole chunks were committed")
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT balance_fen, held_fen FROM funds.account WHERE id = %s", (bud["id"],))
        eq(cur.fetchone(), (sum(amounts) + 5 - paid_fen, planned_fen - paid_fen),
           "balance and hold after the cut")
        conn.close()
        # the rest of the budget is spendable by others, the held part is not
        b = cl.call("disbursement.batch", {
            "batch_key": key(), "budget_id": bud["id"], "request_key": key(),
            "lines": [{"line_key": "x", "recipient": "person:1", "amount_fen": 6}]})
        eq((b["paid"], b["failed"]), (0, 1), "held money is not paid twice: %r" % b)
        # the retry with the same key resumes and completes
        res = c().call("disbursement.batch", params)
        eq((res["paid"], res["duplicates"], res["failed"]), (n, 0, 1))
        eq(res["paid_fen"], sum(amounts))
        eq(res["chunks"], n // chunk)
        eq(res["lines"][n]["error"]["field"], "lines[%d].line_key" % n)
        check(all(l["status"] == "ok" and not l["duplicate"] for l in res["lines"][:n]),
              "every line paid by this request")
        eq(res["payer_balance_fen"], 5)
        eq(c().call("disbursement.batch", params), res, "a further retry replays the result")
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT count(*), count(DISTINCT to_account), sum(amount_fen) "
                    "FROM funds.transfer WHERE ref LIKE %s", ("batch/%d#%%" % batch_id,))
        eq(cur.fetchone(), (n, n, sum(amounts)), "each line paid once")
        cur.execute("SELECT held_fen FROM funds.account WHERE id = %s", (bud["id"],))
        eq(cur.fetchone()[0], 0, "the hold is released")
        conn.close()
        eq(_batch_run(k)[0], "done")
        # the same batch again under a new key: all duplicates, nothing paid
        again = cl.call("disbursement.batch", dict(params, request_key=key()))
        eq((again["paid"], again["duplicates"]), (0, n))
        v = cl.call("ledger.verify", actor=None)
        check(v["ok"], "verify after a resumed batch: %r" % v)
    finally:
        for conn in locks:
            conn.rollback()
        _restart_funds()
    books_balance()


def test_a_batch_skips_lines_another_request_paid_between_its_chunks():
    """Two request keys on one batch: the second starts between two chunks of
    the first and pays lines the first had planned for a later chunk. The
    first's later chunk finds them paid and skips them (each line is paid
    once), releases their part of its hold, and reports them as duplicates
    with the second request's transfers; the second reports the line the
    first had already paid as a duplicate. The lines are looked up by key in
    batch_line at each chunk and at the end (funds_batch_taken,
    funds_batch_paid). The second request is let in between the chunks by
    holding the row lock of a recipient the first's third chunk pays, as
    above, not by timing."""
    chunk = 50
    small = {"BANGFU_FUNDS_CHUNK_ROWS": str(chunk)}
    _restart_funds(small)
    locks = []
    try:
        cl = c()
        n = 8 * chunk
        tag = bftest.uid()
        refs = ["person:%s%05d" % (int(tag[:6], 16) % 900 + 100, i) for i in range(n)]
        amounts = [100 + i % 7 for i in range(n)]
        a_i = 2 * chunk + 5  # in the third chunk
        pre = new_budget(cl, 1)
        cl.call("disbursement.batch", {"batch_key": key("pre"), "budget_id": pre["id"],
                                       "request_key": key(), "lines": [
            {"line_key": "a", "recipient": refs[a_i], "amount_fen": 1}]})
        bud = new_budget(cl, sum(amounts) + 2000)
        batch_key = key("shared")
        lines = [{"line_key": "L%d" % i, "recipient": refs[i], "amount_fen": amounts[i]}
                 for i in range(n)]
        ka, kb = key("first"), key("second")
        mid = list(range(5 * chunk, 5 * chunk + 10))  # the first's sixth chunk
        lines_b = [lines[i] for i in mid] + [lines[0]]
        locks.append(_lock_recipient(refs[a_i]))
        got = {}

        def run(name, k, ls):
            try:
                got[name] = S.client("funds", timeout_ms=60000).call(
                    "disbursement.batch", {"batch_key": batch_key, "budget_id": bud["id"],
                                           "lines": ls, "request_key": k})
            except Exception as e:
                got[name] = e

        ta = threading.Thread(target=run, args=("a", ka, lines), daemon=True)
        ta.start()
        bftest.wait_for(lambda: (_batch_run(ka) or ("", 0))[1] == 2 * chunk, timeout=60,
                        msg="the first request did not commit its first 2 chunks")
        tb = threading.Thread(target=run, args=("b", kb, lines_b), daemon=True)
        tb.start()
        bftest.wait_for(lambda: _waiting_on_head() >= 1, timeout=30,
                        msg="the second request does not wait for the ledger head")
        locks.pop().rollback()  # the third chunk commits; the second request is next
        ta.join(60)
        tb.join(60)
        a, b = got.get("a"), got.get("b")
        check(isinstance(a, dict) and isinstance(b, dict), "both requests answered: %r" % got)
        eq((b["paid"], b["duplicates"], b["failed"]), (10, 1, 0), "the second request: %r"
           % {k_: v for k_, v in b.items() if k_ != "lines"})
        check(all(l["status"] == "ok" and not l["duplicate"] for l in b["lines"][:10]),
              "the second request paid the first's later lines")
        eq(b["lines"][10]["duplicate"], True, "L0 was paid by the first request")
        eq(b["lines"][10]["transfer_id"], a["lines"][0]["transfer_id"])
        eq(b["paid_fen"], sum(amounts[i] for i in mid))
        eq((a["paid"], a["duplicates"], a["failed"]), (n - 10, 10, 0), "the first request: %r"
           % {k_: v for k_, v in a.items() if k_ != "lines"})
        eq(a["paid_fen"], sum(amounts) - b["paid_fen"])
        for j, i in enumerate(mid):
            eq((a["lines"][i]["duplicate"], a["lines"][i]["transfer_id"]),
               (True, b["lines"][j]["transfer_id"]), "line L%d: the second request's payment" % i)
        check(not any(a["lines"][i]["duplicate"] for i in range(n) if i not in mid),
              "the first request paid every other line")
        eq(a["chunks"], n // chunk)
        conn = bftest.pg()
        cur = conn.cursor()
        cur.execute("SELECT count(*), count(DISTINCT ref), count(DISTINCT to_account), "
                    "  sum(amount_fen), count(*) FILTER (WHERE request_key = %s) "
                    "FROM funds.transfer WHERE ref LIKE %s",
                    (kb, "batch/%d#%%" % a["id"]))
        eq(cur.fetchone(), (n, n, n, sum(amounts), 10), "each line paid once")
        cur.execute("SELECT balance_fen, held_fen FROM funds.account WHERE id = %s", (bud["id"],))
        eq(cur.fetchone(), (2000, 0), "the first's hold on the lines it skipped is released")
        conn.close()
        eq((_batch_run(ka)[0], _batch_run(kb)[0]), ("done", "done"))
        eq(c().call("disbursement.batch", {"batch_key": batch_key, "budget_id": bud["id"],
                                           "lines": lines, "request_key": ka}),
           a, "a retry of the first replays its result")
        v = cl.call("ledger.verify", actor=None)
        check(v["ok"], "verify after two requests on one batch: %r" % v)
    finally:
        for conn in locks:
            conn.rollback()
        _restart_funds()
    books_balance()


# ---------------------------------------------------------------- commit groups

def test_queued_payments_share_one_commit_under_one_hold_of_the_head():
    """Funds writes join commit groups (bf_rpc.h BF_WRITE_GROUP_KEYED). A
    funds service with one worker and funds.chunk_rows = 2; the test holds the
    ledger head, so a first payment waits for it in the worker while six more
    queue at the front. When the head is free they reach the worker as one
    group, which takes the head once (the group's prologue) and commits once:
    sys.stats counts one group of five requests; a request key
    sent twice in the group with the same params replays the first's result,
    with other params it fails alone (conflict); a batch of more lines than a
    chunk is set aside and paid alone after the group, in chunks of its own
    (sys.stats counts it as a group retry). The books balance."""
    cl = c()
    bud = new_budget(cl, 10_000_000, recipient="program:组-" + RUN)
    ep = "tcp://127.0.0.1:%d" % bftest.free_port()
    S.start("funds", env={"BANGFU_FUNDS_BIND": ep, "BANGFU_RPC_WORKERS": "1",
                          "BANGFU_RELAY_ENABLED": "false", "BANGFU_FUNDS_CHUNK_ROWS": "2"},
            name="funds-group")
    blocked = queued = None
    head = bftest.pg()
    try:
        stats = bftest.Client(ep, timeout_ms=30000, server="funds")
        st0 = stats.call("sys.stats", actor=None)
        blocked, queued = bftest.raw_dealer(ep, "funds"), bftest.raw_dealer(ep, "funds")

        def pay(tag, n=1, amount=1_000, rkey=None):
            return {"batch_key": key("g" + tag), "budget_id": bud["id"],
                    "request_key": rkey or key("gk" + tag),
                    "lines": [{"line_key": "l%d" % i,
                               "recipient": "person:%d" % random.randrange(10**9, 10**12),
                               "amount_fen": amount} for i in range(n)]}

        head.autocommit = False
        head.cursor().execute("SELECT 1 FROM funds.ledger_head FOR UPDATE")
        bftest.raw_send(blocked, "held", "disbursement.batch", pay("held"))
        bftest.wait_for(lambda: _waiting_on_head() >= 1, timeout=20,
                        msg="the first payment never waited for the ledger head")
        k2 = key("gk2")
        p2 = pay("2", rkey=k2)
        conflicting = dict(pay("2c", rkey=k2))
        bftest.raw_send(queued, "d1", "disbursement.batch", pay("1"))
        bftest.raw_send(queued, "d2", "disbursement.batch", p2)
        bftest.raw_send(queued, "d2again", "disbursement.batch", p2)
        bftest.raw_send(queued, "d2other", "disbursement.batch", conflicting)
        bftest.raw_send(queued, "big", "disbursement.batch", pay("big", n=5))
        bftest.raw_send(queued, "d3", "disbursement.batch", pay("3"))
        time.sleep(0.5)  # all six queued at the front behind the held worker
        head.rollback()
        eq(bftest.raw_recv(blocked, "the held payment").get("ok"), True,
           "the held payment succeeds")
        got = {}
        for _ in range(6):
            rep = bftest.raw_recv(queued, "a queued payment")
            got[rep["id"]] = rep
        eq(sorted(got), ["big", "d1", "d2", "d2again", "d2other", "d3"])
        for rid in ("d1", "d2", "d2again", "d3", "big"):
            eq(got[rid].get("ok"), True, "%s succeeds: %r" % (rid, got[rid].get("error")))
        eq(got["d2again"]["result"], got["d2"]["result"],
           "the same key and params in one group replay the first's result")
        eq(got["d2other"]["error"]["code"], "conflict", "other params under the key fail")
        eq(got["d2other"]["error"]["field"], "request_key")
        for rid in ("d1", "d2", "d3"):
            eq(got[rid]["result"]["paid"], 1, "%s paid its line" % rid)
        eq(got["big"]["result"]["paid"], 5)
        # outside a group each chunk is a transaction of its own, so the large
        # batch's transfers carry three transaction ids (lines 0-1, 2-3, 4)
        big = [l["transfer_id"] for l in got["big"]["result"]["lines"]]
        cur = head.cursor()
        cur.execute("SELECT xmin::text FROM funds.transfer WHERE id = ANY(%s) ORDER BY id", (big,))
        xid = [x for (x,) in cur.fetchall()]
        head.rollback()
        check(xid[0] == xid[1] != xid[2] == xid[3] != xid[4],
              "the large batch ran alone, in chunks of two lines: %r" % xid)
        st = stats.call("sys.stats", actor=None)
        eq(st["commit_groups"] - st0["commit_groups"], 1, "one commit group")
        eq(st["grouped_requests"] - st0["grouped_requests"], 5,
           "five requests ran in it (the conflicting one too)")
        eq(st["group_retries"] - st0["group_retries"], 1, "the large batch was set aside")
        stats.close()
    finally:
        head.rollback()
        head.close()
        for sock in (blocked, queued):
            if sock is not None:
                sock.close(0)
        S.stop("funds-group")
    books_balance()


# ---------------------------------------------------------------- lists

def test_budget_and_project_lists_page_and_filter():
    cl = c()
    src = new_source(cl, 10_000_000, year=2031)
    mk = lambda rcp, year, amt: cl.call("budget.create", {  # noqa: E731
        "recipient": rcp, "year": year, "name": key(), "request_key": key(),
        "funding": [{"source_id": src["id"], "amount_fen": amt}]})
    b1 = mk("region:130821000000", 2031, 1_000_000)
    b2 = mk("region:130821101000", 2031, 2_000_000)
    b3 = mk("region:120110000000", 2031, 3_000)
    b4 = mk("village:42", 2031, 1_000_000)
    other = new_budget(cl, 5, year=2031)
    ids = lambda res: [x["id"] for x in res["items"]]  # noqa: E731
    got = cl.call("budget.list", {"year": 2031, "source_id": src["id"]}, actor=None)
    eq(ids(got), [b1["id"], b2["id"], b3["id"], b4["id"]])
    check(other["id"] not in ids(got), "another source's budget is not listed")
    eq(got["next_cursor"], None)
    eq(got["items"][1]["recipient"], "region:130821101000")
    eq(got["items"][1]["balance_fen"], 2_000_000)
    got = cl.call("budget.list", {"source_id": src["id"], "region": "130821000000"}, actor=None)
    eq(ids(got), [b1["id"], b2["id"]])
    got = cl.call("budget.list", {"source_id": src["id"], "recipient": "village:42"}, actor=None)
    eq(ids(got), [b4["id"]])
    # paging: one at a time, following next_cursor
    seen, cursor = [], None
    while True:
        p = {"source_id": src["id"], "limit": 1}
        if cursor:
            p["cursor"] = cursor
        page = cl.call("budget.list", p, actor=None)
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    eq(seen, [b1["id"], b2["id"], b3["id"], b4["id"]])
    # projects: by region, kind, status; children by parent
    p1 = new_project(cl, b1["id"], 1_000_000, location="130821105000", kind="industry")
    p2 = new_project(cl, b2["id"], 500_000, location="130821101000")
    p3 = new_project(cl, b3["id"], 3_000, location="120110001000")
    got = cl.call("budget.list", {"source_id": src["id"], "status": "spent"}, actor=None)
    eq(ids(got), [b1["id"], b3["id"]])
    got = cl.call("budget.list", {"source_id": src["id"], "status": "open", "root": True},
                  actor=None)
    eq(ids(got), [b2["id"], b4["id"]])
    got = cl.call("project.list", {"source_id": src["id"]}, actor=None)
    eq(ids(got), [p1["id"], p2["id"], p3["id"]])
    eq(got["items"][0]["kind"], "industry")
    eq(got["items"][0]["budget_id"], b1["id"])
    eq(got["items"][0]["year"], 2031)
    got = cl.call("project.list", {"source_id": src["id"], "region": "130821000000"}, actor=None)
    eq(ids(got), [p1["id"], p2["id"]])
    got = cl.call("project.list", {"source_id": src["id"], "kind": "education", "year": 2031},
                  actor=None)
    eq(ids(got), [p2["id"], p3["id"]])
    got = cl.call("project.list", {"budget_id": b3["id"]}, actor=None)
    eq(ids(got), [p3["id"]])
    # a caller bound to a region sees the projects located under it
    got = cl.call("project.list", {"source_id": src["id"]}, actor="auditor:tj",
                  auth={"roles": ["auditor"], "region": "120110000000"})
    eq(ids(got), [p3["id"]])
    expect_error(cl, "project.list", {"region": "13082"}, "invalid_argument", "region",
                 actor=None)
    expect_error(cl, "budget.list", {"status": "closed"}, "invalid_argument", "status",
                 actor=None)
    expect_error(cl, "budget.list", {"year": 1999}, "invalid_argument", "year", actor=None)
    expect_error(cl, "project.list", {"cursor": "x"}, "invalid_argument", "cursor", actor=None)
    books_balance()
