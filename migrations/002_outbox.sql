-- The outbox as its own small table. Marking an event published used to UPDATE its events row: a
-- new copy of the whole row (payload included) and an entry in each of its indexes, since the
-- partial index on published_at made the update non-HOT. Now publishing deletes a 40-byte outbox
-- row instead; an event is published when it has no outbox row.
CREATE TABLE outbox (
  id uuid PRIMARY KEY,
  -- created_at for an immediate event (the relay takes it after a grace period), deliver_at for a deferred one
  due_at timestamptz NOT NULL,
  deferred boolean NOT NULL DEFAULT false
);
CREATE INDEX outbox_due ON outbox(due_at);

INSERT INTO outbox (id, due_at, deferred)
  SELECT id, coalesce(deliver_at, created_at), deliver_at IS NOT NULL FROM events WHERE published_at IS NULL;

DROP INDEX events_unpublished;
ALTER TABLE events DROP COLUMN published_at;
