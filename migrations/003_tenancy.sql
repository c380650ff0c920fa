-- Tenancy (issue "safe to expose"): who may subscribe to an action, which RPC methods an
-- application may call through the gateway.
-- NULL: every application may subscribe (as before); else only these (and the owner).
ALTER TABLE actions ADD COLUMN subscribers text[];
-- Patterns `domain.type.method`, `*` per segment; none by default.
ALTER TABLE applications ADD COLUMN rpc_grants text[] NOT NULL DEFAULT '{}';
