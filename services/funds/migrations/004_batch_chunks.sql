-- disbursement.batch in chunks (docs/funds.md): one row per request key that
-- started paying a batch. The start records which lines the request pays
-- (indexes into its lines, 0-based, in order: the lines that were neither bad,
-- nor paid before, and that the payer could cover) and holds their total on
-- the payer; each chunk of funds.chunk_rows lines is its own transaction that
-- takes the ledger head, releases its part of the hold, pays and records
-- its progress (applied), so a retry with the same key resumes after the last
-- committed chunk.
CREATE TABLE batch_run (
  request_key       text PRIMARY KEY,
  batch_id          bigint NOT NULL REFERENCES batch(id),
  payer_id          bigint NOT NULL,
  planned           integer[] NOT NULL,
  planned_fen       bigint NOT NULL CHECK (planned_fen >= 0),
  applied           integer NOT NULL DEFAULT 0,
  paid_fen          bigint NOT NULL DEFAULT 0,
  chunks            integer NOT NULL DEFAULT 0,
  first_transfer_id bigint,
  last_transfer_id  bigint,
  state             text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
  created_at        timestamptz NOT NULL DEFAULT now(),
  completed_at      timestamptz
);
CREATE INDEX batch_run_batch ON batch_run (batch_id);
