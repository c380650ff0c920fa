-- Subscription health and stats (issue "operator truth"): attempts by subscription over a time
-- window, and the queue depth sampled over time (the broker only knows the present).
CREATE INDEX attempts_subscription_time ON attempts(subscription, created_at);

CREATE TABLE queue_samples (
  subscription uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  at timestamptz NOT NULL,
  messages int NOT NULL,
  consumers int NOT NULL,
  dead int,
  PRIMARY KEY (subscription, at)
);
