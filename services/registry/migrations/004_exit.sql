-- The exit procedure (退出, docs/registry.md "Exit"): a household or a village
-- leaves poverty by the national procedure. One exit_case per attempt:
--   reviewed  the village's democratic review (民主评议) was recorded;
--   notice    the township verified it (乡镇核实) and the public notice (公示)
--             runs from notice_start to notice_until, objections recorded;
--   exited    the county approved it (县级审批) and the subject was struck
--             off the register (销号);
--   rejected  an objection was upheld, or the case was turned down.
-- Each step is recorded once: the columns of a step cannot change after it,
-- a closed case cannot change at all, and nothing is ever deleted.

ALTER TABLE village ADD COLUMN status text NOT NULL DEFAULT 'active'
  CHECK (status IN ('active', 'exited'));

CREATE TABLE exit_case (
  id             bigserial PRIMARY KEY,
  kind           text NOT NULL CHECK (kind IN ('household', 'village')),
  subject_id     bigint NOT NULL,   -- the household's or the village's id
  household_id   bigint REFERENCES household(id),
  village_id     bigint NOT NULL REFERENCES village(id),
  region_code    char(12) NOT NULL, -- the village's region: scoping
  year           int NOT NULL CHECK (year BETWEEN 2000 AND 2100),
  state          text NOT NULL CHECK (state IN ('reviewed', 'notice', 'exited', 'rejected')),
  -- 民主评议
  review_date    date NOT NULL,
  votes_for      int NOT NULL CHECK (votes_for >= 0),
  votes_against  int NOT NULL CHECK (votes_against >= 0),
  review_note    text NOT NULL,
  review_evidence text[] NOT NULL DEFAULT '{}',
  reviewed_by    text NOT NULL,
  reviewed_at    timestamptz NOT NULL DEFAULT now(),
  -- the figures the review rested on
  persons        int,      -- household: members at review
  income_fen     bigint,   -- household: yearly income at review
  population     int,      -- village: registered population (户籍人口)
  poor_persons   int,      -- village: persons in its active poor households
  -- 乡镇核实 and 公示
  verified_by    text,
  verified_at    timestamptz,
  verify_note    text,
  verify_evidence text[],
  notice_start   date,
  notice_until   date,
  -- 县级审批 / 销号, or the rejection
  decided_by     text,
  decided_at     timestamptz,
  decision_note  text,
  approval_ref   text,
  CHECK ((kind = 'household') = (household_id IS NOT NULL)),
  CHECK (kind = 'village' OR subject_id = household_id),
  CHECK (kind = 'household' OR subject_id = village_id)
);
-- one open case per subject, and one exit
CREATE UNIQUE INDEX exit_case_open ON exit_case (kind, subject_id)
  WHERE state IN ('reviewed', 'notice');
CREATE UNIQUE INDEX exit_case_exited ON exit_case (kind, subject_id) WHERE state = 'exited';
CREATE INDEX exit_case_region ON exit_case (region_code, id);

CREATE TABLE exit_objection (
  id           bigserial PRIMARY KEY,
  case_id      bigint NOT NULL REFERENCES exit_case(id),
  objection    text NOT NULL,
  raised_by    text,             -- who objected, as they gave it (may be anonymous)
  recorded_by  text NOT NULL,
  recorded_at  timestamptz NOT NULL DEFAULT now(),
  outcome      text CHECK (outcome IN ('upheld', 'dismissed')),
  outcome_note text,
  resolved_by  text,
  resolved_at  timestamptz,
  CHECK ((outcome IS NULL) = (resolved_at IS NULL))
);
CREATE INDEX exit_objection_case ON exit_objection (case_id, id);

CREATE FUNCTION exit_case_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'registry.exit_case keeps its history: % refused', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.state IN ('exited', 'rejected') THEN
    RAISE EXCEPTION 'exit case % is closed (%)', OLD.id, OLD.state
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.kind, NEW.subject_id, NEW.household_id, NEW.village_id, NEW.region_code, NEW.year,
      NEW.review_date, NEW.votes_for, NEW.votes_against, NEW.review_note, NEW.review_evidence,
      NEW.reviewed_by, NEW.reviewed_at, NEW.persons, NEW.income_fen, NEW.population,
      NEW.poor_persons)
     IS DISTINCT FROM
     (OLD.kind, OLD.subject_id, OLD.household_id, OLD.village_id, OLD.region_code, OLD.year,
      OLD.review_date, OLD.votes_for, OLD.votes_against, OLD.review_note, OLD.review_evidence,
      OLD.reviewed_by, OLD.reviewed_at, OLD.persons, OLD.income_fen, OLD.population,
      OLD.poor_persons) THEN
    RAISE EXCEPTION 'exit case %: the review is recorded and cannot change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.verified_at IS NOT NULL AND
     (NEW.verified_by, NEW.verified_at, NEW.verify_note, NEW.verify_evidence,
      NEW.notice_start, NEW.notice_until)
     IS DISTINCT FROM
     (OLD.verified_by, OLD.verified_at, OLD.verify_note, OLD.verify_evidence,
      OLD.notice_start, OLD.notice_until) THEN
    RAISE EXCEPTION 'exit case %: the verification is recorded and cannot change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER exit_case_history BEFORE UPDATE OR DELETE ON exit_case
  FOR EACH ROW EXECUTE FUNCTION exit_case_guard();
CREATE TRIGGER exit_case_no_truncate BEFORE TRUNCATE ON exit_case
  FOR EACH STATEMENT EXECUTE FUNCTION exit_case_guard();

CREATE FUNCTION exit_objection_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'registry.exit_objection keeps its history: % refused', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.outcome IS NOT NULL OR
     (NEW.case_id, NEW.objection, NEW.raised_by, NEW.recorded_by, NEW.recorded_at)
     IS DISTINCT FROM (OLD.case_id, OLD.objection, OLD.raised_by, OLD.recorded_by,
                       OLD.recorded_at) THEN
    RAISE EXCEPTION 'registry.exit_objection keeps its history: % refused', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER exit_objection_history BEFORE UPDATE OR DELETE ON exit_objection
  FOR EACH ROW EXECUTE FUNCTION exit_objection_guard();
CREATE TRIGGER exit_objection_no_truncate BEFORE TRUNCATE ON exit_objection
  FOR EACH STATEMENT EXECUTE FUNCTION exit_objection_guard();
