-- household.reveal (docs/registry.md, docs/security.md): each reveal of full
-- ID numbers records who the authenticated principal was, the actor it acted
-- for, the reason given and the peer's address. id_reveal is append-only:
-- a trigger refuses UPDATE and DELETE (and TRUNCATE), so the record of who
-- saw which number cannot be edited away by the service's own connection.
ALTER TABLE id_reveal ADD COLUMN principal text;
ALTER TABLE id_reveal ADD COLUMN reason text;
ALTER TABLE id_reveal ADD COLUMN peer text;

CREATE FUNCTION id_reveal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'registry.id_reveal is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER id_reveal_no_update BEFORE UPDATE OR DELETE ON id_reveal
  FOR EACH ROW EXECUTE FUNCTION id_reveal_append_only();
CREATE TRIGGER id_reveal_no_truncate BEFORE TRUNCATE ON id_reveal
  FOR EACH STATEMENT EXECUTE FUNCTION id_reveal_append_only();

-- Region scoping and cadre reads filter households by their active
-- responsible cadre.
CREATE INDEX IF NOT EXISTS pairing_cadre_target ON pairing (helper_id, target_id)
  WHERE kind = 'cadre_household' AND ended_at IS NULL;
