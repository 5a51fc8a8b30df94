-- 防返贫监测 (relapse-risk monitoring, docs/tasks.md "Monitoring"): a household
-- flagged by a rule opens a case; the case carries the assistance task with its
-- deadline; further reports add causes to the open case; the case is closed
-- once, with an outcome. Nothing is rewritten: reports are append-only and a
-- case changes only from open to closed.

CREATE TABLE monitor_case (
  id            bigserial PRIMARY KEY,
  household_id  bigint NOT NULL CHECK (household_id > 0),
  village_id    bigint,
  region_code   char(12),
  task_id       bigint NOT NULL REFERENCES task(id),
  state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open','closed')),
  outcome       text CHECK (outcome IN ('risk_removed','assisted','relapsed')),
  close_note    text,
  closed_by     text,
  closed_at     timestamptz,
  opened_by     text NOT NULL,
  opened_at     timestamptz NOT NULL,
  CHECK ((state = 'open') = (outcome IS NULL)),
  CHECK ((state = 'open') = (closed_at IS NULL))
);
-- one open case per household
CREATE UNIQUE INDEX monitor_case_open ON monitor_case (household_id) WHERE state = 'open';
CREATE INDEX monitor_case_region ON monitor_case (region_code, id);
CREATE INDEX monitor_case_village ON monitor_case (village_id, id);

CREATE TABLE monitor_report (
  id            bigserial PRIMARY KEY,
  case_id       bigint NOT NULL REFERENCES monitor_case(id),
  cause         text NOT NULL
                CHECK (cause IN ('income_low','medical_spending','disaster_spending','job_lost')),
  income_fen    bigint CHECK (income_fen >= 0),
  persons       int CHECK (persons >= 0),
  spending_fen  bigint CHECK (spending_fen >= 0),
  note          text NOT NULL,
  reported_by   text NOT NULL,
  reported_at   timestamptz NOT NULL
);
CREATE INDEX monitor_report_case ON monitor_report (case_id, id);

CREATE FUNCTION monitor_case_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'tasks.monitor_case keeps its history: % refused', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.state <> 'open' OR
     (NEW.household_id, NEW.village_id, NEW.region_code, NEW.task_id, NEW.opened_by,
      NEW.opened_at)
     IS DISTINCT FROM (OLD.household_id, OLD.village_id, OLD.region_code, OLD.task_id,
                       OLD.opened_by, OLD.opened_at) THEN
    RAISE EXCEPTION 'tasks.monitor_case %: only an open case may be closed, once', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER monitor_case_history BEFORE UPDATE OR DELETE ON monitor_case
  FOR EACH ROW EXECUTE FUNCTION monitor_case_guard();
CREATE TRIGGER monitor_case_no_truncate BEFORE TRUNCATE ON monitor_case
  FOR EACH STATEMENT EXECUTE FUNCTION monitor_case_guard();

CREATE FUNCTION monitor_report_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'tasks.monitor_report is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER monitor_report_append_only BEFORE UPDATE OR DELETE ON monitor_report
  FOR EACH ROW EXECUTE FUNCTION monitor_report_guard();
CREATE TRIGGER monitor_report_no_truncate BEFORE TRUNCATE ON monitor_report
  FOR EACH STATEMENT EXECUTE FUNCTION monitor_report_guard();
