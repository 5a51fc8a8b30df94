-- funds: sources, budgets, allocations, projects, tranches, batches and the
-- ledger (docs/funds.md). Money is bigint fen. The ledger (transfer) is
-- append-only and hash-chained; balances are cached on account and re-derived
-- from the ledger by ledger.verify.

-- Every place money can be. Floors: sources, budgets, projects, recipients
-- never go below 0; an external account (where a source's money comes from)
-- has no floor and goes negative by what entered the system through it.
CREATE TABLE account (
  id          bigserial PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('external','source','budget','project','recipient')),
  ref         text,            -- recipient: its reference; external: its source id; else NULL
  name        text NOT NULL,
  floor_fen   bigint,          -- lowest allowed balance; NULL = none
  balance_fen bigint NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (kind, ref),
  CHECK ((kind = 'external') = (floor_fen IS NULL)),
  CHECK (floor_fen IS NULL OR balance_fen >= floor_fen)
);

CREATE TABLE source (
  id          bigint PRIMARY KEY REFERENCES account(id),
  external_id bigint NOT NULL UNIQUE REFERENCES account(id),
  name        text NOT NULL UNIQUE,
  kind        text NOT NULL CHECK (kind IN ('central','provincial','prefecture','county','sector',
                                            'social','unit_raised','donation','loan')),
  provider    text,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A budget: money for one recipient and year. A root budget is funded by
-- sources; a child budget is created by an allocation from its parent. The
-- root of a tree is what reports group by.
CREATE TABLE budget (
  id         bigint PRIMARY KEY REFERENCES account(id),
  parent_id  bigint REFERENCES budget(id),
  root_id    bigint NOT NULL REFERENCES budget(id),
  recipient  text NOT NULL,
  year       smallint NOT NULL CHECK (year BETWEEN 2000 AND 2100),
  name       text NOT NULL DEFAULT '',
  carrier    text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((parent_id IS NULL) = (root_id = id))
);
CREATE UNIQUE INDEX budget_root_unique ON budget (recipient, year, name) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX budget_child_unique ON budget (parent_id, recipient) WHERE parent_id IS NOT NULL;
CREATE INDEX budget_recipient ON budget (recipient);
CREATE INDEX budget_root ON budget (root_id);

CREATE TABLE allocation (
  id                bigserial PRIMARY KEY,
  budget_id         bigint NOT NULL REFERENCES budget(id),
  rule              text NOT NULL CHECK (rule IN ('fixed','weights')),
  total_fen         bigint NOT NULL CHECK (total_fen > 0),
  recipients        integer NOT NULL,
  first_transfer_id bigint,
  last_transfer_id  bigint,
  request_key       text NOT NULL,
  created_by        text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project (
  id            bigint PRIMARY KEY REFERENCES account(id),
  budget_id     bigint NOT NULL REFERENCES budget(id),
  name          text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('industry','infrastructure','education','health',
                                              'training','employment','other')),
  location      char(12) NOT NULL,
  unit_id       bigint NOT NULL CHECK (unit_id > 0),
  beneficiaries integer NOT NULL CHECK (beneficiaries >= 0),
  target        text NOT NULL CHECK (target <> ''),
  amount_fen    bigint NOT NULL CHECK (amount_fen > 0),
  description   text,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (budget_id, name)
);

-- The ledger. id is the position in the hash chain: gapless from 1.
CREATE TABLE transfer (
  id           bigint PRIMARY KEY CHECK (id > 0),
  from_account bigint NOT NULL REFERENCES account(id),
  to_account   bigint NOT NULL REFERENCES account(id),
  amount_fen   bigint NOT NULL CHECK (amount_fen > 0),
  kind         text NOT NULL CHECK (kind IN ('receipt','funding','allocation','project_funding',
                                             'disbursement','reversal')),
  year         smallint,
  budget_id    bigint,        -- the root budget the money belongs to
  project_id   bigint,
  source_id    bigint,
  ref          text,          -- what caused it: allocation/7, tranche/3, batch/2#line-key
  note         text,
  request_key  text NOT NULL,
  reverses_id  bigint UNIQUE REFERENCES transfer(id),
  actor        text NOT NULL,
  created_at   timestamptz NOT NULL,
  prev_hash    bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash         bytea NOT NULL CHECK (length(hash) = 32),
  CHECK (from_account <> to_account),
  CHECK ((kind = 'reversal') = (reverses_id IS NOT NULL))
);
CREATE INDEX transfer_from ON transfer (from_account, id);
CREATE INDEX transfer_to ON transfer (to_account, id);
CREATE INDEX transfer_budget ON transfer (budget_id) WHERE budget_id IS NOT NULL;
CREATE INDEX transfer_project ON transfer (project_id) WHERE project_id IS NOT NULL;

-- The chain head: one row, locked FOR UPDATE by every transaction that
-- appends, so appends are serialised and the chain order is total.
CREATE TABLE ledger_head (
  only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  last_id   bigint NOT NULL DEFAULT 0,
  last_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);
INSERT INTO ledger_head DEFAULT VALUES;

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'funds.%: % refused: the ledger is append-only (correct with a reversing transfer)',
    TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER transfer_append_only BEFORE UPDATE OR DELETE ON transfer
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER transfer_no_truncate BEFORE TRUNCATE ON transfer
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_head_keep BEFORE DELETE ON ledger_head
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_head_no_truncate BEFORE TRUNCATE ON ledger_head
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Tranches: a budget's or a project's money paid out in stages, in order:
-- planned -> approved (by someone other than the requester) -> disbursed;
-- a disbursed tranche whose transfer is reversed becomes reversed.
CREATE TABLE tranche (
  id            bigserial PRIMARY KEY,
  payer_id      bigint NOT NULL REFERENCES account(id),
  project_id    bigint REFERENCES project(id),
  budget_id     bigint REFERENCES budget(id),
  seq           integer NOT NULL CHECK (seq >= 1),
  amount_fen    bigint NOT NULL CHECK (amount_fen > 0),
  recipient     text NOT NULL,
  purpose       text,
  state         text NOT NULL DEFAULT 'planned'
                CHECK (state IN ('planned','approved','disbursed','reversed')),
  requested_by  text NOT NULL,
  requested_at  timestamptz NOT NULL DEFAULT now(),
  approved_by   text,
  approved_at   timestamptz,
  approval_note text,
  disbursed_by  text,
  disbursed_at  timestamptz,
  transfer_id   bigint REFERENCES transfer(id),
  UNIQUE (payer_id, seq),
  CHECK (num_nonnulls(project_id, budget_id) = 1),
  CHECK (approved_by IS NULL OR approved_by <> requested_by)
);
CREATE INDEX tranche_transfer ON tranche (transfer_id) WHERE transfer_id IS NOT NULL;

-- Batch disbursements (e.g. a month's public-welfare-job payroll). Only paid
-- lines are kept; a line key is paid at most once per batch.
CREATE TABLE batch (
  id          bigserial PRIMARY KEY,
  batch_key   text NOT NULL UNIQUE,
  payer_id    bigint NOT NULL REFERENCES account(id),
  budget_id   bigint REFERENCES budget(id),
  project_id  bigint REFERENCES project(id),
  purpose     text,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE batch_line (
  batch_id    bigint NOT NULL REFERENCES batch(id),
  line_key    text NOT NULL,
  recipient   text NOT NULL,
  amount_fen  bigint NOT NULL CHECK (amount_fen > 0),
  transfer_id bigint NOT NULL REFERENCES transfer(id),
  state       text NOT NULL DEFAULT 'paid' CHECK (state IN ('paid','reversed')),
  PRIMARY KEY (batch_id, line_key)
);
CREATE INDEX batch_line_transfer ON batch_line (transfer_id);

-- Request keys: one row per write ever accepted, with the hash of its
-- canonical params and its result, so a retry replays the first result.
CREATE TABLE request (
  key         text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),
  method      text NOT NULL,
  params_hash bytea NOT NULL,
  result      bytea,
  actor       text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Every transfer seen in the direction of the money it concerns: a reversal
-- appears as its original's movement (same from, to and kind) with a
-- negative amount, so sums over this view are net of reversals.
CREATE VIEW movement AS
SELECT t.id,
       CASE WHEN t.kind = 'reversal' THEN t.to_account ELSE t.from_account END AS from_account,
       CASE WHEN t.kind = 'reversal' THEN t.from_account ELSE t.to_account END AS to_account,
       COALESCE(o.kind, t.kind) AS kind,
       CASE WHEN t.kind = 'reversal' THEN -t.amount_fen ELSE t.amount_fen END AS amount_fen,
       t.year, t.budget_id, t.project_id, t.source_id
FROM transfer t LEFT JOIN transfer o ON t.kind = 'reversal' AND o.id = t.reverses_id;
