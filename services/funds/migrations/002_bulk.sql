-- 002_bulk: what applying a 130,000-recipient allocation in one call asks of
-- the schema (docs/funds.md, "Storage notes").
--
-- Per-row foreign-key checks on the ledger and on budgets cost more than all
-- the rest of such an append, so they go: the service checks, in the same
-- transaction, that every account of a transfer exists (it reads them all
-- before appending) and writes a child budget's id and parent itself; and
-- accounts and budgets are never deleted (triggers below), so ids always
-- resolve. Balances of many accounts change at once: leave room in each page
-- for HOT updates. Net inflows subtract reversals leaving an account: index
-- just those.

ALTER TABLE account SET (fillfactor = 50);

CREATE FUNCTION account_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'funds.%: % refused: accounts and budgets are never removed',
    TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER account_keep BEFORE DELETE ON account FOR EACH ROW EXECUTE FUNCTION account_keep();
CREATE TRIGGER account_no_truncate BEFORE TRUNCATE ON account
  FOR EACH STATEMENT EXECUTE FUNCTION account_keep();
CREATE TRIGGER budget_keep BEFORE DELETE ON budget FOR EACH ROW EXECUTE FUNCTION account_keep();
CREATE TRIGGER budget_no_truncate BEFORE TRUNCATE ON budget
  FOR EACH STATEMENT EXECUTE FUNCTION account_keep();

ALTER TABLE budget DROP CONSTRAINT budget_id_fkey,
                   DROP CONSTRAINT budget_parent_id_fkey,
                   DROP CONSTRAINT budget_root_id_fkey;
DROP INDEX budget_root;

ALTER TABLE transfer DROP CONSTRAINT transfer_from_account_fkey,
                     DROP CONSTRAINT transfer_to_account_fkey,
                     DROP CONSTRAINT transfer_reverses_id_key;
DROP INDEX transfer_budget;
-- a transfer is reversed at most once
CREATE UNIQUE INDEX transfer_reversed_once ON transfer (reverses_id) WHERE reverses_id IS NOT NULL;
CREATE INDEX transfer_reversals_from ON transfer (from_account) WHERE kind = 'reversal';
