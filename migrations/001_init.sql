-- Amebo schema v1: registry, event log (outbox), deliveries and attempts.
CREATE TABLE settings (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applications (
  name text PRIMARY KEY,
  address text,
  secret_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE actions (
  name text PRIMARY KEY,
  application text NOT NULL REFERENCES applications(name) ON DELETE CASCADE,
  description text,
  version int NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actions_application ON actions(application);

CREATE TABLE action_versions (
  action text NOT NULL REFERENCES actions(name) ON DELETE CASCADE,
  version int NOT NULL,
  schemata jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (action, version)
);

-- The outbox and the replay source. payload is json (not jsonb): kept byte for byte, cheaper to insert.
CREATE TABLE events (
  id uuid PRIMARY KEY,
  action text NOT NULL,
  application text NOT NULL,
  schema_version int NOT NULL,
  payload json NOT NULL,
  deduper text,
  conversation_id text,
  deliver_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE UNIQUE INDEX events_dedup ON events(application, deduper) WHERE deduper IS NOT NULL;
CREATE INDEX events_unpublished ON events(created_at) WHERE published_at IS NULL;
CREATE INDEX events_action ON events(action, id);
CREATE INDEX events_application ON events(application, id);

CREATE TABLE subscriptions (
  id uuid PRIMARY KEY,
  application text NOT NULL REFERENCES applications(name) ON DELETE CASCADE,
  name text NOT NULL,
  action text NOT NULL,
  transport text NOT NULL DEFAULT 'http',
  handler text,
  max_attempts int NOT NULL,
  max_age int NOT NULL,
  retry_schedule int[] NOT NULL,
  timeout_ms int NOT NULL,
  format text NOT NULL DEFAULT 'amebo',
  encryption_key text,
  ordered boolean NOT NULL DEFAULT false,
  rate_limit int,
  description text,
  signing_secrets jsonb NOT NULL DEFAULT '[]',
  paused boolean NOT NULL DEFAULT false,
  disabled_reason text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (application, name)
);
CREATE INDEX subscriptions_action ON subscriptions(action);

CREATE TABLE deliveries (
  event uuid NOT NULL,
  subscription uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  state text NOT NULL,
  attempts int NOT NULL DEFAULT 0,
  last_status int,
  last_error text,
  next_attempt_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (event, subscription)
);
CREATE INDEX deliveries_subscription ON deliveries(subscription, state, updated_at);

CREATE TABLE attempts (
  id bigserial PRIMARY KEY,
  event uuid NOT NULL,
  subscription uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  attempt int NOT NULL,
  status int,
  latency_ms int,
  error_class text,
  error text,
  response_excerpt text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_delivery ON attempts(event, subscription, id);
