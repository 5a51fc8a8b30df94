-- 003_evidence: ledger evidence beyond transfers, and long operations in
-- chunks (docs/funds.md, "The evidence chain" and "Long operations").
--
-- 1. What must never change is refused by trigger:
--    - account: everything but the cached balance (balance_fen) and the
--      amount held for a running operation (held_fen);
--    - tranche: the request (payer, project, budget, seq, amount, recipient,
--      purpose, requested_by/at) never; the approval columns only on the
--      one step planned -> approved, the disbursement columns only on the one
--      step approved -> disbursed; state only forward along
--      planned -> approved -> disbursed -> reversed.
-- 2. What a superuser could still change with the triggers off is caught by
--    ledger.verify against the evidence chain: every account's creation and
--    every tranche approval is a hash-chained evidence entry, written in the
--    same transaction. Its head lives on the ledger_head row, next to the
--    ledger's own, and is published folded with it (`bangfu funds verify
--    --export-head`).

-- ------------------------------------------------------------ evidence chain

CREATE TABLE evidence (
  id            bigint PRIMARY KEY CHECK (id > 0),   -- position in the evidence chain
  kind          text NOT NULL CHECK (kind IN ('account.created','tranche.approved')),
  subject_id    bigint NOT NULL,                     -- the account or tranche id
  account_kind  text,
  ref           text,
  name          text,
  floor_fen     bigint,
  payer_id      bigint,
  seq           integer,
  amount_fen    bigint,
  recipient     text,
  requested_by  text,
  approved_by   text,
  note          text,
  actor         text NOT NULL,
  created_at    timestamptz NOT NULL,
  prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash          bytea NOT NULL CHECK (length(hash) = 32),
  UNIQUE (kind, subject_id)
);
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER evidence_no_truncate BEFORE TRUNCATE ON evidence
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

ALTER TABLE ledger_head
  ADD COLUMN ev_last_id bigint NOT NULL DEFAULT 0,
  ADD COLUMN ev_last_hash bytea NOT NULL
    DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000';

-- Accounts created and tranches approved by a transaction, waiting for it
-- to chain them (the service does so just before it commits:
-- funds_evidence_flush). Rows are keyed by the writing transaction, so an
-- account inserted or a tranche approved behind the service stays here
-- unchained and ledger.verify names it. xact 0: rows that existed before this
-- migration, chained by the first write after it.
CREATE TABLE evidence_pending (
  kind       text NOT NULL CHECK (kind IN ('account.created','tranche.approved')),
  subject_id bigint NOT NULL,
  xact       bigint NOT NULL DEFAULT txid_current(),
  PRIMARY KEY (kind, subject_id)
);
CREATE INDEX evidence_pending_xact ON evidence_pending (xact);
INSERT INTO evidence_pending (kind, subject_id, xact) SELECT 'account.created', id, 0 FROM account;
INSERT INTO evidence_pending (kind, subject_id, xact)
  SELECT 'tranche.approved', id, 0 FROM tranche WHERE approved_by IS NOT NULL;

CREATE FUNCTION account_pending() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO evidence_pending (kind, subject_id) SELECT 'account.created', id FROM new_accounts;
  RETURN NULL;
END
$$;
CREATE TRIGGER account_pending AFTER INSERT ON account
  REFERENCING NEW TABLE AS new_accounts
  FOR EACH STATEMENT EXECUTE FUNCTION account_pending();

CREATE FUNCTION tranche_pending() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO evidence_pending (kind, subject_id) VALUES ('tranche.approved', NEW.id);
  RETURN NULL;
END
$$;
CREATE TRIGGER tranche_pending AFTER UPDATE ON tranche FOR EACH ROW
  WHEN (OLD.state = 'planned' AND NEW.state = 'approved')
  EXECUTE FUNCTION tranche_pending();

-- ------------------------------------------------------------ immutable columns

-- an amount held by a running chunked operation (allocation.apply): not
-- spendable by anyone else, drawn down chunk by chunk
ALTER TABLE account ADD COLUMN held_fen bigint NOT NULL DEFAULT 0 CHECK (held_fen >= 0);

CREATE FUNCTION account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE col text;
BEGIN
  col := CASE WHEN NEW.id IS DISTINCT FROM OLD.id THEN 'id'
              WHEN NEW.kind IS DISTINCT FROM OLD.kind THEN 'kind'
              WHEN NEW.ref IS DISTINCT FROM OLD.ref THEN 'ref'
              WHEN NEW.name IS DISTINCT FROM OLD.name THEN 'name'
              WHEN NEW.floor_fen IS DISTINCT FROM OLD.floor_fen THEN 'floor_fen'
              ELSE 'created_at' END;
  RAISE EXCEPTION 'funds.account: UPDATE of % refused (account %): only the balance changes',
    col, OLD.id USING ERRCODE = 'insufficient_privilege';
END
$$;
-- the WHEN clause keeps the 130,000-row balance updates free of a function call
CREATE TRIGGER account_guard BEFORE UPDATE ON account FOR EACH ROW
  WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.kind IS DISTINCT FROM OLD.kind
        OR NEW.ref IS DISTINCT FROM OLD.ref OR NEW.name IS DISTINCT FROM OLD.name
        OR NEW.floor_fen IS DISTINCT FROM OLD.floor_fen
        OR NEW.created_at IS DISTINCT FROM OLD.created_at)
  EXECUTE FUNCTION account_guard();

CREATE FUNCTION tranche_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE col text;
BEGIN
  col := CASE WHEN NEW.id IS DISTINCT FROM OLD.id THEN 'id'
              WHEN NEW.payer_id IS DISTINCT FROM OLD.payer_id THEN 'payer_id'
              WHEN NEW.project_id IS DISTINCT FROM OLD.project_id THEN 'project_id'
              WHEN NEW.budget_id IS DISTINCT FROM OLD.budget_id THEN 'budget_id'
              WHEN NEW.seq IS DISTINCT FROM OLD.seq THEN 'seq'
              WHEN NEW.amount_fen IS DISTINCT FROM OLD.amount_fen THEN 'amount_fen'
              WHEN NEW.recipient IS DISTINCT FROM OLD.recipient THEN 'recipient'
              WHEN NEW.purpose IS DISTINCT FROM OLD.purpose THEN 'purpose'
              WHEN NEW.requested_by IS DISTINCT FROM OLD.requested_by THEN 'requested_by'
              WHEN NEW.requested_at IS DISTINCT FROM OLD.requested_at THEN 'requested_at'
         END;
  IF col IS NULL AND NEW.state IS DISTINCT FROM OLD.state
     AND NOT ((OLD.state, NEW.state) IN (('planned','approved'), ('approved','disbursed'),
                                         ('disbursed','reversed'))) THEN
    col := 'state';
  END IF;
  IF col IS NULL AND NOT (OLD.state = 'planned' AND NEW.state = 'approved'
                          AND NEW.approved_by IS NOT NULL AND NEW.approved_at IS NOT NULL)
     AND (NEW.approved_by IS DISTINCT FROM OLD.approved_by
          OR NEW.approved_at IS DISTINCT FROM OLD.approved_at
          OR NEW.approval_note IS DISTINCT FROM OLD.approval_note) THEN
    col := CASE WHEN NEW.approved_by IS DISTINCT FROM OLD.approved_by THEN 'approved_by'
                WHEN NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN 'approved_at'
                ELSE 'approval_note' END;
  END IF;
  IF col IS NULL AND NOT (OLD.state = 'approved' AND NEW.state = 'disbursed'
                          AND NEW.transfer_id IS NOT NULL)
     AND (NEW.disbursed_by IS DISTINCT FROM OLD.disbursed_by
          OR NEW.disbursed_at IS DISTINCT FROM OLD.disbursed_at
          OR NEW.transfer_id IS DISTINCT FROM OLD.transfer_id) THEN
    col := CASE WHEN NEW.disbursed_by IS DISTINCT FROM OLD.disbursed_by THEN 'disbursed_by'
                WHEN NEW.disbursed_at IS DISTINCT FROM OLD.disbursed_at THEN 'disbursed_at'
                ELSE 'transfer_id' END;
  END IF;
  IF col IS NOT NULL THEN
    RAISE EXCEPTION 'funds.tranche: UPDATE of % refused (tranche %, %): a tranche''s request and approval are never changed; its state only moves forward',
      col, OLD.id, OLD.state USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER tranche_guard BEFORE UPDATE ON tranche FOR EACH ROW
  EXECUTE FUNCTION tranche_guard();
CREATE TRIGGER tranche_keep BEFORE DELETE ON tranche FOR EACH ROW EXECUTE FUNCTION account_keep();
CREATE TRIGGER tranche_no_truncate BEFORE TRUNCATE ON tranche
  FOR EACH STATEMENT EXECUTE FUNCTION account_keep();

-- ------------------------------------------------------------ chunked allocation

-- An allocation is applied in chunks of funds.chunk_rows recipients, each its
-- own transaction. Its whole is held on the budget (account.held_fen) when
-- it starts; each chunk draws its part from the hold. `applied` counts the
-- recipients with a part done so far (in input order), so a retry with the
-- same request key continues after the last committed chunk.
ALTER TABLE allocation
  ADD COLUMN state text NOT NULL DEFAULT 'done' CHECK (state IN ('running','done')),
  ADD COLUMN applied integer NOT NULL DEFAULT 0,
  ADD COLUMN applied_fen bigint NOT NULL DEFAULT 0,
  ADD COLUMN transfers integer NOT NULL DEFAULT 0,
  ADD COLUMN chunks integer NOT NULL DEFAULT 0,
  ADD COLUMN completed_at timestamptz;
UPDATE allocation SET transfers = COALESCE(last_transfer_id - first_transfer_id + 1, 0),
                      applied_fen = total_fen, chunks = 1, completed_at = created_at;
CREATE UNIQUE INDEX allocation_request ON allocation (request_key);

-- lists
CREATE INDEX budget_year ON budget (year, id);
CREATE INDEX project_budget ON project (budget_id, id);
