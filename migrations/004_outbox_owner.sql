-- Which process committed an outbox row (its publish pipeline's id). A relay in backlog mode takes
-- its own process's rows at once, but leaves another live process's rows alone for the grace
-- period: those are that process's publishes in flight, and taking them published duplicates.
ALTER TABLE outbox ADD COLUMN owner uuid;
