-- tasks: plans, tasks and their evidence, recurring schedules, the seed 001
-- timeline, indicators, rectification ledgers, escalation, assessment.
-- Times are timestamptz (UTC on the wire); "by the 25th" is the end of that
-- day in tasks.timezone, computed here with day_end(). Registry entities are
-- referenced by id only (kind + id); the few facts copied from the registry
-- (a village's region code, the escalation chain of a task) are documented in
-- docs/tasks.md.

-- The manual clock (tasks.clock = manual): one row; NULL = follow real time.
CREATE TABLE clock (
  id      int PRIMARY KEY CHECK (id = 1),
  now_at  timestamptz,
  set_by  text,
  set_at  timestamptz
);
INSERT INTO clock (id) VALUES (1);

-- The last microsecond of local day d in zone tz, as an instant.
CREATE FUNCTION day_end(d date, tz text) RETURNS timestamptz
  LANGUAGE sql STABLE AS
$$ SELECT ((d + 1)::timestamp AT TIME ZONE tz) - interval '1 microsecond' $$;

-- RFC 3339 in UTC, to the second.
CREATE FUNCTION rfc3339(t timestamptz) RETURNS text
  LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

-- RFC 3339 in zone tz with its offset, to the second (2025-09-25T23:59:59+08:00).
CREATE FUNCTION rfc3339_local(t timestamptz, tz text) RETURNS text
  LANGUAGE sql STABLE AS
$$ SELECT CASE WHEN t IS NULL THEN NULL ELSE
     to_char(t AT TIME ZONE tz, 'YYYY-MM-DD"T"HH24:MI:SS') ||
     CASE WHEN s < 0 THEN '-' ELSE '+' END ||
     lpad((abs(s) / 3600)::text, 2, '0') || ':' || lpad((abs(s) % 3600 / 60)::text, 2, '0')
   END
   FROM (SELECT extract(epoch FROM (t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC'))::int AS s) o $$;

-- ---------------------------------------------------------------- plans

-- One row per revision. root_id is the first revision's id; a signed plan is
-- changed only by plan.revise, which adds revision n+1 (back to draft) and
-- points the old one at it with superseded_by. Nothing is deleted.
CREATE TABLE plan (
  id            bigserial PRIMARY KEY,
  root_id       bigint NOT NULL,
  revision      int NOT NULL CHECK (revision >= 1),
  kind          text NOT NULL CHECK (kind IN ('three_year','yearly','household')),
  subject_kind  text NOT NULL CHECK (subject_kind IN ('unit','village','household')),
  subject_id    bigint NOT NULL CHECK (subject_id > 0),
  title         text NOT NULL,
  year_from     int NOT NULL,
  year_to       int NOT NULL CHECK (year_to >= year_from),
  status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft','submitted','signed')),
  revise_reason text,
  superseded_by bigint REFERENCES plan(id),
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  submitted_by  text,
  submitted_at  timestamptz,
  signed_at     timestamptz,
  UNIQUE (root_id, revision)
);
-- one plan (chain) per kind, subject and starting year
CREATE UNIQUE INDEX plan_one_per_subject ON plan (kind, subject_kind, subject_id, year_from)
  WHERE revision = 1;
CREATE INDEX plan_subject ON plan (subject_kind, subject_id);

CREATE TABLE plan_measure (
  plan_id    bigint NOT NULL REFERENCES plan(id),
  seq        int NOT NULL,
  what       text NOT NULL,
  owner_kind text CHECK (owner_kind IN ('unit','team','cadre')),
  owner_id   bigint,
  due_on     date,
  cost_fen   bigint CHECK (cost_fen >= 0),
  PRIMARY KEY (plan_id, seq)
);

-- Each sign-off is a recorded act: who, in which role, when.
CREATE TABLE plan_signature (
  seq       bigserial,
  plan_id   bigint NOT NULL REFERENCES plan(id),
  role      text NOT NULL,
  actor     text NOT NULL,
  note      text,
  signed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (plan_id, role),
  UNIQUE (plan_id, actor)
);

-- ---------------------------------------------------------------- schedules

CREATE TABLE schedule (
  id             bigserial PRIMARY KEY,
  ref            text UNIQUE,
  title          text NOT NULL,
  description    text,
  task_kind      text NOT NULL,
  rule           text NOT NULL CHECK (rule IN ('monthly','quarterly','half_yearly','yearly')),
  day            int NOT NULL CHECK (day BETWEEN 1 AND 31),
  month          int NOT NULL CHECK (month BETWEEN 1 AND 12),  -- month within the period
  owner_kind     text CHECK (owner_kind IN ('unit','team','cadre')),
  owner_id       bigint,
  each_team_of_unit bigint,
  target_kind    text,
  target_id      bigint,
  target_code    text,
  vetoing        boolean NOT NULL DEFAULT false,
  starts_at      timestamptz NOT NULL,
  -- copies made at creation: the owner's escalation chain, the target's village/region
  esc_team_id    bigint,
  esc_leader_id  bigint,
  esc_unit_id    bigint,
  t_village_id   bigint,
  t_region_code  char(12),
  -- the next period to generate: year and index (month 1-12, quarter 1-4, half 1-2, 1)
  -- and its due time; the scheduler works on schedules whose next_due_at is within
  -- the horizon, one at a time under a row lock (FOR UPDATE SKIP LOCKED)
  next_year      int NOT NULL,
  next_index     int NOT NULL,
  next_due_at    timestamptz NOT NULL,
  active         boolean NOT NULL DEFAULT true,
  created_by     text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  CHECK ((owner_kind IS NULL) = (owner_id IS NULL)),
  CHECK ((owner_id IS NULL) <> (each_team_of_unit IS NULL))
);
CREATE INDEX schedule_next ON schedule (next_due_at) WHERE active;

-- ---------------------------------------------------------------- timelines

CREATE TABLE timeline (
  id          bigserial PRIMARY KEY,
  template    text NOT NULL,
  year        int NOT NULL,
  region_code char(12) NOT NULL,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (template, year, region_code)
);

-- ---------------------------------------------------------------- rectification

CREATE TABLE inspection (
  id          bigserial PRIMARY KEY,
  ref         text UNIQUE,
  title       text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('inspection','unannounced','supervision','self_check')),
  held_on     date NOT NULL,
  region_code char(12),
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A problem on one of the ledgers: rectification (问题清单), or the three
-- village ledgers of seed 004: difficulty (困难群众), livelihood (民生诉求),
-- stability (社会稳定). Closed (销号) when every task fixing it is verified.
CREATE TABLE problem (
  id            bigserial PRIMARY KEY,
  ref           text UNIQUE,
  inspection_id bigint REFERENCES inspection(id),
  ledger        text NOT NULL CHECK (ledger IN ('rectification','difficulty','livelihood','stability')),
  source        text NOT NULL DEFAULT 'direct' CHECK (source IN ('direct','inspection','help_request')),
  title         text NOT NULL,
  description   text,
  village_id    bigint,
  household_id  bigint,
  unit_id       bigint,
  region_code   char(12),
  channel       text,
  due_at        timestamptz NOT NULL,
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open','closed')),
  closed_at     timestamptz,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX problem_village ON problem (village_id);
CREATE INDEX problem_unit ON problem (unit_id);
CREATE INDEX problem_inspection ON problem (inspection_id);

-- 责任清单: the people responsible for a problem.
CREATE TABLE problem_responsible (
  problem_id bigint NOT NULL REFERENCES problem(id),
  cadre_id   bigint NOT NULL,
  PRIMARY KEY (problem_id, cadre_id)
);
CREATE INDEX problem_responsible_cadre ON problem_responsible (cadre_id);

-- ---------------------------------------------------------------- tasks

CREATE TABLE task (
  id            bigserial PRIMARY KEY,
  ref           text UNIQUE,
  title         text NOT NULL,
  description   text,
  kind          text NOT NULL,
  owner_kind    text NOT NULL CHECK (owner_kind IN ('unit','team','cadre')),
  owner_id      bigint NOT NULL CHECK (owner_id > 0),
  target_kind   text CHECK (target_kind IN ('village','household','project','unit','team','cadre','region')),
  target_id     bigint,
  target_code   text,
  -- copies from the registry at creation (docs/tasks.md, "What is copied")
  village_id    bigint,
  region_code   char(12),
  esc_team_id   bigint,
  esc_leader_id bigint,
  esc_unit_id   bigint,
  due_at        timestamptz NOT NULL,
  status        text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open','in_progress','submitted','rejected','closed')),
  vetoing       boolean NOT NULL DEFAULT false,
  schedule_id   bigint REFERENCES schedule(id),
  period        text,
  timeline_id   bigint REFERENCES timeline(id),
  timeline_step text,
  problem_id    bigint REFERENCES problem(id),
  plan_id       bigint REFERENCES plan(id),
  -- scheduler bookkeeping
  due_soon_at   timestamptz,
  overdue_at    timestamptz,
  esc_next_step int NOT NULL DEFAULT 0,
  esc_next_at   timestamptz,
  -- life
  started_at    timestamptz,
  submitted_at  timestamptz,
  submissions   int NOT NULL DEFAULT 0,
  reject_reason text,
  closed_at     timestamptz,
  closed_by     text,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- a recurring duty makes one task per period and owner, whoever ticks
CREATE UNIQUE INDEX task_occurrence ON task (schedule_id, period, owner_kind, owner_id)
  WHERE schedule_id IS NOT NULL;
CREATE UNIQUE INDEX task_timeline_step ON task (timeline_id, timeline_step)
  WHERE timeline_id IS NOT NULL;
CREATE INDEX task_owner ON task (owner_kind, owner_id, id);
CREATE INDEX task_target ON task (target_kind, target_id, id);
CREATE INDEX task_problem ON task (problem_id);
CREATE INDEX task_village ON task (village_id);
CREATE INDEX task_due ON task (due_at) WHERE status <> 'closed';
CREATE INDEX task_due_soon ON task (due_at) WHERE status <> 'closed' AND due_soon_at IS NULL;
CREATE INDEX task_overdue ON task (due_at) WHERE status <> 'closed' AND overdue_at IS NULL;
CREATE INDEX task_esc ON task (esc_next_at) WHERE status <> 'closed' AND esc_next_at IS NOT NULL;

-- Every status move: who, when, from, to, why.
CREATE TABLE task_history (
  id          bigserial PRIMARY KEY,
  task_id     bigint NOT NULL REFERENCES task(id),
  from_status text,
  to_status   text NOT NULL,
  actor       text NOT NULL,
  note        text,
  at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_history_task ON task_history (task_id, id);

-- One row per escalation step: the unique key makes each step (and its
-- event) happen once, however many scheduler instances run.
CREATE TABLE task_escalation (
  task_id        bigint NOT NULL REFERENCES task(id),
  step           int NOT NULL,
  level          text NOT NULL,
  recipient_kind text NOT NULL,
  recipient_id   bigint NOT NULL,
  at             timestamptz NOT NULL,
  PRIMARY KEY (task_id, step)
);

-- Evidence: text plus attachments (files in bytea; data optional).
CREATE TABLE evidence (
  id           bigserial PRIMARY KEY,
  task_id      bigint REFERENCES task(id),
  report_id    bigint,
  text         text,
  submitted_by text NOT NULL,
  submitted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX evidence_task ON evidence (task_id, id);

CREATE TABLE attachment (
  id           bigserial PRIMARY KEY,
  evidence_id  bigint NOT NULL REFERENCES evidence(id),
  name         text NOT NULL,
  content_type text NOT NULL,
  size         bigint NOT NULL CHECK (size >= 0),
  sha256       char(64) NOT NULL,
  data         bytea
);
CREATE INDEX attachment_evidence ON attachment (evidence_id);

-- ---------------------------------------------------------------- indicators

CREATE TABLE indicator (
  id          bigserial PRIMARY KEY,
  code        text NOT NULL UNIQUE,
  name        text NOT NULL,
  unit        text NOT NULL,
  target      bigint NOT NULL,
  direction   text NOT NULL CHECK (direction IN ('>=','<=','=')),
  vetoing     boolean NOT NULL DEFAULT false,
  category    text,
  description text,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- An indicator set to a village for a year. region_code is the village's
-- region (its township) copied from the registry at assign time, so roll-ups
-- by code prefix need no registry call.
CREATE TABLE indicator_assignment (
  id           bigserial PRIMARY KEY,
  indicator_id bigint NOT NULL REFERENCES indicator(id),
  village_id   bigint NOT NULL,
  region_code  char(12) NOT NULL,
  year         int NOT NULL,
  target       bigint NOT NULL,
  actual       bigint,
  met          boolean NOT NULL DEFAULT false,
  reported_at  timestamptz,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (indicator_id, village_id, year)
);
CREATE INDEX indicator_assignment_region ON indicator_assignment (year, region_code);
CREATE INDEX indicator_assignment_village ON indicator_assignment (village_id, year);

CREATE TABLE indicator_report (
  id            bigserial PRIMARY KEY,
  assignment_id bigint NOT NULL REFERENCES indicator_assignment(id),
  value         bigint NOT NULL,
  met           boolean NOT NULL,
  note          text,
  evidence_id   bigint REFERENCES evidence(id),
  reported_by   text NOT NULL,
  reported_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX indicator_report_assignment ON indicator_report (assignment_id, id);

-- ---------------------------------------------------------------- assessment

CREATE TABLE survey (
  id           bigserial PRIMARY KEY,
  subject_kind text NOT NULL CHECK (subject_kind IN ('unit','village')),
  subject_id   bigint NOT NULL,
  year         int NOT NULL,
  score        int NOT NULL CHECK (score BETWEEN 0 AND 100),
  respondents  int,
  ref          text UNIQUE,
  recorded_by  text NOT NULL,
  recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX survey_subject ON survey (year, subject_kind, subject_id);

CREATE TABLE assessment_run (
  id        bigserial PRIMARY KEY,
  year      int NOT NULL,
  w_ind     int NOT NULL,
  w_time    int NOT NULL,
  w_sat     int NOT NULL,
  pass_bp   int NOT NULL,
  run_by    text NOT NULL,
  run_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assessment_run_year ON assessment_run (year, id);

CREATE TABLE assessment_result (
  run_id          bigint NOT NULL REFERENCES assessment_run(id),
  subject_kind    text NOT NULL,
  subject_id      bigint NOT NULL,
  indicators_met  int NOT NULL,
  indicators_total int NOT NULL,
  tasks_on_time   int NOT NULL,
  tasks_total     int NOT NULL,
  surveys         int NOT NULL,
  indicators_bp   int,
  timeliness_bp   int,
  satisfaction_bp int,
  score_bp        int NOT NULL,
  vetoed          boolean NOT NULL,
  veto_reasons    text[] NOT NULL DEFAULT '{}',
  passed          boolean NOT NULL,
  rank            int NOT NULL,
  PRIMARY KEY (run_id, subject_kind, subject_id)
);
