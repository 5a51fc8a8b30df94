-- registry: who helps whom. Regions, villages, households and their members,
-- helper units, cadres, work teams and pairings. Ids are positive bigints.
-- History is kept: a pairing is ended (with reason and approval), never
-- deleted or overwritten.

CREATE TABLE region (
  code        char(12) PRIMARY KEY CHECK (code ~ '^[0-9]{12}$'),
  name        text NOT NULL,
  level       text NOT NULL CHECK (level IN ('province','city','county','township','village','group')),
  parent_code char(12) REFERENCES region(code),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX region_parent ON region (parent_code);

CREATE TABLE village (
  id          bigserial PRIMARY KEY,
  region_code char(12) NOT NULL REFERENCES region(code),
  name        text NOT NULL,
  category    text NOT NULL CHECK (category IN ('difficult','poor','weak','other')),
  code        char(12) UNIQUE,
  reasons     text[] NOT NULL DEFAULT '{}',
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX village_region ON village (region_code, id);

CREATE TABLE household (
  id              bigserial PRIMARY KEY,
  village_id      bigint NOT NULL REFERENCES village(id),
  categories      text[] NOT NULL,
  cause_main      text NOT NULL,
  cause_secondary text[] NOT NULL DEFAULT '{}',
  route           text NOT NULL CHECK (route IN ('employment','industry','safety_net')),
  income_fen      bigint NOT NULL CHECK (income_fen >= 0),
  address         text,
  phone           text,
  status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active','exited')),
  created_by      text NOT NULL,
  updated_by      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX household_village ON household (village_id, id);

CREATE TABLE person (
  id           bigserial PRIMARY KEY,
  household_id bigint NOT NULL REFERENCES household(id),
  name         text NOT NULL,
  id_number    char(18) NOT NULL UNIQUE,
  relation     text NOT NULL CHECK (relation IN ('head','spouse','child','parent',
                                                'grandchild','sibling','other')),
  gender       text CHECK (gender IN ('male','female')),
  birth_date   date,
  disability   boolean NOT NULL DEFAULT false,
  labour       text CHECK (labour IN ('skilled','ordinary','weak','lost','none')),
  phone        text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX person_household ON person (household_id);
CREATE UNIQUE INDEX person_one_head ON person (household_id) WHERE relation = 'head';

-- Every reveal of a full ID number: who, when, which person, which request.
-- Rows are only ever inserted.
CREATE TABLE id_reveal (
  id         bigserial PRIMARY KEY,
  person_id  bigint NOT NULL REFERENCES person(id),
  actor      text NOT NULL,
  request_id text,
  method     text NOT NULL,
  at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX id_reveal_person ON id_reveal (person_id);
CREATE INDEX id_reveal_actor ON id_reveal (actor, at);

CREATE TABLE unit (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  kind        text NOT NULL CHECK (kind IN ('department','enterprise','street','party_office','social')),
  region_code char(12) REFERENCES region(code),
  contact_cadre_id bigint,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cadre (
  id            bigserial PRIMARY KEY,
  name          text NOT NULL,
  rank          text NOT NULL CHECK (rank IN ('county','division','section','general','village')),
  unit_id       bigint NOT NULL REFERENCES unit(id),
  party_member  boolean NOT NULL,
  phone         text,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cadre_unit ON cadre (unit_id);
ALTER TABLE unit ADD CONSTRAINT unit_contact_fk FOREIGN KEY (contact_cadre_id) REFERENCES cadre(id);

CREATE TABLE team (
  id         bigserial PRIMARY KEY,
  name       text NOT NULL UNIQUE,
  unit_id    bigint NOT NULL REFERENCES unit(id),
  leader_id  bigint NOT NULL REFERENCES cadre(id),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_member (
  team_id  bigint NOT NULL REFERENCES team(id),
  cadre_id bigint NOT NULL REFERENCES cadre(id),
  role     text NOT NULL CHECK (role IN ('leader','member')),
  PRIMARY KEY (team_id, cadre_id)
);
CREATE INDEX team_member_cadre ON team_member (cadre_id);

-- A pairing: helper -> target. Kinds and what the ids refer to:
--   unit_village      unit     -> village
--   team_village      team     -> village
--   cadre_household   cadre    -> household   (the household's responsible person)
--   district_county   unit (the carrier unit) -> region (a county): target_code is
--                     the county's code and target_id its numeric value
--   helper_household  a social helper (unit of kind 'social') -> household
CREATE TABLE pairing (
  id           bigserial PRIMARY KEY,
  kind         text NOT NULL CHECK (kind IN ('unit_village','team_village','cadre_household',
                                             'district_county','helper_household')),
  helper_id    bigint NOT NULL,
  target_id    bigint NOT NULL,
  target_code  char(12),
  starts_on    date NOT NULL,
  ends_on      date,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  ended_at     timestamptz,
  ended_by     text,
  end_reason   text,
  approval_ref text,
  CHECK (ends_on IS NULL OR ends_on >= starts_on),
  CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE INDEX pairing_helper ON pairing (kind, helper_id) WHERE ended_at IS NULL;
CREATE INDEX pairing_target ON pairing (kind, target_id) WHERE ended_at IS NULL;
-- one active pairing per (kind, helper, target)
CREATE UNIQUE INDEX pairing_active_unique ON pairing (kind, helper_id, target_id)
  WHERE ended_at IS NULL;
-- history queries (pairing.list with ended pairings)
CREATE INDEX pairing_helper_all ON pairing (helper_id, id);
CREATE INDEX pairing_target_all ON pairing (target_id, id);
