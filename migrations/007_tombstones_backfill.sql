-- Tombstones for actions deleted before 006: their rows are gone, but their events keep the name
-- and schema_version. Without a tombstone the name registered again would start at version 1,
-- which some stored events already carry with another schema. The last version seen in the events
-- stands in for the deleted action's last version (a later version with no events left no trace).
-- One pass over the events table, once.
INSERT INTO action_tombstones (name, last_version)
  SELECT e.action, max(e.schema_version)
    FROM events e
   WHERE NOT EXISTS (SELECT 1 FROM actions a WHERE a.name = e.action)
   GROUP BY e.action
ON CONFLICT (name) DO UPDATE SET last_version = greatest(action_tombstones.last_version, excluded.last_version);
