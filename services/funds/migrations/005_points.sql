-- 005_points: the points supermarket (爱心超市, seed 004; docs/funds.md,
-- "Points supermarket"). Households earn points for set behaviours, approved
-- by someone other than the proposer, and spend them on goods donated by
-- helper units and the public. Points are not money: they have their own
-- accounts, their own append-only ledger and their own hash chain, and never
-- touch `account`, `transfer` or `ledger_head`.
--
-- Every movement is one row of points_entry between two points accounts of
-- the same asset: points (household <-> the village's supermarket) or one
-- goods (donated -> shelf -> handed_out). Balances are cached on the account
-- and re-derived by points.verify; the entries are hash-chained with their
-- head on points_head, which every append locks.

CREATE TABLE points_rule (
  id          bigserial PRIMARY KEY,
  region      char(12) NOT NULL,       -- the village (or township) whose rule it is
  code        text NOT NULL CHECK (length(code) BETWEEN 1 AND 32),
  name        text NOT NULL CHECK (name <> ''),
  points      bigint NOT NULL CHECK (points BETWEEN 1 AND 100000),
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (region, code)
);

CREATE TABLE goods (
  id           bigserial PRIMARY KEY,
  region       char(12) NOT NULL,      -- the supermarket (village) that holds it
  name         text NOT NULL CHECK (name <> ''),
  unit         text NOT NULL CHECK (unit <> ''),
  price_points bigint NOT NULL CHECK (price_points BETWEEN 1 AND 1000000),
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (region, name)
);

-- Where points and goods can be. floor NULL = none (the supermarket issues
-- points and goes negative by what is outstanding; `donated` goes negative by
-- what was given; `handed_out` only grows).
CREATE TABLE points_account (
  id           bigserial PRIMARY KEY,
  kind         text NOT NULL CHECK (kind IN ('household','supermarket','shelf','donated',
                                             'handed_out')),
  region       char(12) NOT NULL,
  household_id bigint CHECK (household_id > 0),
  goods_id     bigint REFERENCES goods(id),
  name         text NOT NULL,
  floor        bigint,
  balance      bigint NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'household') = (household_id IS NOT NULL)),
  CHECK ((kind IN ('shelf','donated','handed_out')) = (goods_id IS NOT NULL)),
  CHECK ((kind IN ('household','shelf')) = (floor IS NOT NULL)),
  CHECK (floor IS NULL OR balance >= floor)
);
CREATE UNIQUE INDEX points_account_household ON points_account (household_id)
  WHERE kind = 'household';
CREATE UNIQUE INDEX points_account_supermarket ON points_account (region)
  WHERE kind = 'supermarket';
CREATE UNIQUE INDEX points_account_goods ON points_account (goods_id, kind)
  WHERE goods_id IS NOT NULL;
CREATE INDEX points_account_region ON points_account (region, kind);

-- An earning: proposed by a village operator, then approved (points credited)
-- or rejected by someone else, once.
CREATE TABLE points_earning (
  id            bigserial PRIMARY KEY,
  region        char(12) NOT NULL,
  household_id  bigint NOT NULL CHECK (household_id > 0),
  rule_id       bigint NOT NULL REFERENCES points_rule(id),
  points        bigint NOT NULL CHECK (points > 0),
  note          text,
  state         text NOT NULL DEFAULT 'proposed' CHECK (state IN ('proposed','approved','rejected')),
  proposed_by   text NOT NULL,
  proposed_at   timestamptz NOT NULL DEFAULT now(),
  decided_by    text,
  decided_at    timestamptz,
  decision_note text,
  entry_id      bigint,
  CHECK (decided_by IS NULL OR decided_by <> proposed_by),
  CHECK ((state = 'proposed') = (decided_by IS NULL)),
  CHECK ((state = 'approved') = (entry_id IS NOT NULL))
);
CREATE INDEX points_earning_household ON points_earning (household_id, id);
CREATE INDEX points_earning_region ON points_earning (region, state);

CREATE TABLE points_redemption (
  id            bigserial PRIMARY KEY,
  region        char(12) NOT NULL,
  household_id  bigint NOT NULL,
  goods_id      bigint NOT NULL REFERENCES goods(id),
  quantity      bigint NOT NULL CHECK (quantity > 0),
  points        bigint NOT NULL CHECK (points > 0),
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);

-- The points ledger. id is the position in the points hash chain: gapless
-- from 1. amount is points (household, supermarket accounts) or a count of
-- the goods' unit (shelf, donated, handed_out).
CREATE TABLE points_entry (
  id            bigint PRIMARY KEY CHECK (id > 0),
  from_account  bigint NOT NULL REFERENCES points_account(id),
  to_account    bigint NOT NULL REFERENCES points_account(id),
  amount        bigint NOT NULL CHECK (amount > 0),
  kind          text NOT NULL CHECK (kind IN ('earn','redeem','stock_in','reversal')),
  region        char(12) NOT NULL,
  household_id  bigint,
  goods_id      bigint,
  earning_id    bigint REFERENCES points_earning(id),
  redemption_id bigint REFERENCES points_redemption(id),
  donor         text,
  note          text,
  request_key   text NOT NULL,
  reverses_id   bigint UNIQUE REFERENCES points_entry(id),
  actor         text NOT NULL,
  created_at    timestamptz NOT NULL,
  prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash          bytea NOT NULL CHECK (length(hash) = 32),
  CHECK (from_account <> to_account),
  CHECK ((kind = 'reversal') = (reverses_id IS NOT NULL))
);
CREATE INDEX points_entry_from ON points_entry (from_account, id);
CREATE INDEX points_entry_to ON points_entry (to_account, id);
CREATE INDEX points_entry_region ON points_entry (region, created_at);
CREATE INDEX points_entry_redemption ON points_entry (redemption_id) WHERE redemption_id IS NOT NULL;
CREATE INDEX points_entry_household ON points_entry (household_id) WHERE household_id IS NOT NULL;

CREATE TABLE points_head (
  only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  last_id   bigint NOT NULL DEFAULT 0,
  last_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);
INSERT INTO points_head DEFAULT VALUES;

-- Append-only: entries, redemptions, rules and goods are never updated or
-- deleted (a rule or a price that changes is a new rule or goods).
CREATE TRIGGER points_entry_append_only BEFORE UPDATE OR DELETE ON points_entry
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER points_entry_no_truncate BEFORE TRUNCATE ON points_entry
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER points_redemption_append_only BEFORE UPDATE OR DELETE ON points_redemption
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER points_rule_append_only BEFORE UPDATE OR DELETE ON points_rule
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER goods_append_only BEFORE UPDATE OR DELETE ON goods
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER points_head_keep BEFORE DELETE ON points_head
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER points_no_truncate BEFORE TRUNCATE ON points_redemption
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- An account changes only its cached balance; it is never deleted.
CREATE FUNCTION points_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.kind <> OLD.kind OR NEW.region <> OLD.region
     OR NEW.household_id IS DISTINCT FROM OLD.household_id
     OR NEW.goods_id IS DISTINCT FROM OLD.goods_id OR NEW.name <> OLD.name
     OR NEW.floor IS DISTINCT FROM OLD.floor OR NEW.created_at <> OLD.created_at THEN
    RAISE EXCEPTION 'funds.points_account: % refused: only the cached balance changes', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER points_account_guard BEFORE UPDATE OR DELETE ON points_account
  FOR EACH ROW EXECUTE FUNCTION points_account_guard();

-- An earning's proposal never changes; its decision is taken once.
CREATE FUNCTION points_earning_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.region <> OLD.region
     OR NEW.household_id <> OLD.household_id OR NEW.rule_id <> OLD.rule_id
     OR NEW.points <> OLD.points OR NEW.note IS DISTINCT FROM OLD.note
     OR NEW.proposed_by <> OLD.proposed_by OR NEW.proposed_at <> OLD.proposed_at
     OR OLD.state <> 'proposed' THEN
    RAISE EXCEPTION 'funds.points_earning: % refused: a proposal never changes and is decided once',
      TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER points_earning_guard BEFORE UPDATE OR DELETE ON points_earning
  FOR EACH ROW EXECUTE FUNCTION points_earning_guard();

-- Every entry seen in the direction of what it concerns: a reversal appears
-- as its original's movement (same from, to and kind) with a negative amount,
-- so sums over this view are net of reversals.
CREATE VIEW points_movement AS
SELECT e.id,
       CASE WHEN e.kind = 'reversal' THEN e.to_account ELSE e.from_account END AS from_account,
       CASE WHEN e.kind = 'reversal' THEN e.from_account ELSE e.to_account END AS to_account,
       COALESCE(o.kind, e.kind) AS kind,
       CASE WHEN e.kind = 'reversal' THEN -e.amount ELSE e.amount END AS amount,
       e.region, e.household_id, e.goods_id, e.created_at
FROM points_entry e LEFT JOIN points_entry o ON e.kind = 'reversal' AND o.id = e.reverses_id;
