-- household.remove_member: a person who leaves a household (moved away,
-- married out, died) is moved here with who, when and why, so the ID number
-- is free to be registered in another household and the history stays.
CREATE TABLE person_removed (
  id            bigint PRIMARY KEY,         -- the person's id while a member
  household_id  bigint NOT NULL REFERENCES household(id),
  name          text NOT NULL,
  id_number     char(18) NOT NULL,
  relation      text NOT NULL,
  gender        text,
  birth_date    date,
  disability    boolean NOT NULL,
  labour        text,
  phone         text,
  created_at    timestamptz NOT NULL,
  removed_at    timestamptz NOT NULL DEFAULT now(),
  removed_by    text NOT NULL,
  reason        text NOT NULL
);
CREATE INDEX person_removed_household ON person_removed (household_id);

-- A reveal record outlives the person's membership: id_reveal.person_id
-- points at person or, after a removal, at person_removed.
ALTER TABLE id_reveal DROP CONSTRAINT IF EXISTS id_reveal_person_id_fkey;
