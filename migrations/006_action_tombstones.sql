-- The last schema version of each deleted action. Stored events keep their action's name and
-- schema_version, so an action registered again under the same name continues after that version
-- instead of starting at 1 again (version 1 would then name two different schemas).
CREATE TABLE action_tombstones (
  name text PRIMARY KEY,
  last_version int NOT NULL,
  deleted_at timestamptz NOT NULL DEFAULT now()
);
