-- Pilot's schema on PostgreSQL, with row-level security.
--
-- Run this as the OWNER role (`pilot-server migrate`, or PILOT_MIGRATION_DATABASE_URL). The
-- server and workers connect as an application role that is NOSUPERUSER, NOBYPASSRLS and not
-- the owner; `SELECT pilot_grant_app('<role>')` (run as the owner) grants it what it needs.
--
-- Every user-owned table has FORCE ROW LEVEL SECURITY (so the owner is bound too, when it also
-- serves) and a tenant policy on the transaction-local setting `pilot.user_id`, which the code
-- sets with set_config(..., true) at the start of every transaction. The paths that must span
-- users are narrow:
--   * `pilot.scheduler = 'on'` (transaction-local) is accepted by the runs and schedules
--     policies only, for queue claiming and firing;
--   * SECURITY DEFINER functions (token lookup, webhook lookup, user count/lookup by name, user
--     ids for key rotation) return ids only; they raise `pilot.definer` for their own query,
--     which only policies bound to the owner role (TO CURRENT_USER) accept;
--   * log pruning: a DELETE policy on execution_logs for the owner role under
--     `pilot.maintenance = 'prune'`; the application role has no UPDATE or DELETE grant there.
-- Ids are TEXT (UUIDs), JSON is TEXT, times are TIMESTAMP in UTC.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE execution_plans (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    original_prompt TEXT,
    plan_json TEXT NOT NULL,
    plain_english_steps TEXT NOT NULL,
    required_providers TEXT NOT NULL,
    trigger_json TEXT,
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX execution_plans_user_created ON execution_plans (user_id, created_at DESC, id DESC);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT,
    plan_name TEXT NOT NULL,
    steps_json TEXT NOT NULL,
    step_count INTEGER NOT NULL,
    trigger_kind TEXT NOT NULL,
    schedule_id TEXT,
    scheduled_for TIMESTAMP,
    input_json TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    lease_owner TEXT,
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMP,
    takeover_count INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX runs_user_plan_created ON runs (user_id, plan_id, created_at DESC, id DESC);
CREATE INDEX runs_queued ON runs (created_at, id) WHERE status = 'queued';
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';
CREATE UNIQUE INDEX runs_schedule_occurrence ON runs (schedule_id, scheduled_for);
CREATE INDEX runs_schedule_status ON runs (schedule_id, status) WHERE schedule_id IS NOT NULL;

CREATE TABLE run_steps (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_index INTEGER NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    output_json TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    latency_ms BIGINT NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, step_index)
);

CREATE TABLE execution_logs (
    id TEXT PRIMARY KEY,
    plan_id TEXT,
    run_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_name TEXT NOT NULL,
    step_number INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    action TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    latency_ms BIGINT NOT NULL,
    output_preview TEXT,
    error TEXT,
    "timestamp" TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX execution_logs_user_time ON execution_logs (user_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_user_plan_time ON execution_logs (user_id, plan_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_user_run_time ON execution_logs (user_id, run_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_time ON execution_logs ("timestamp");
CREATE INDEX execution_logs_provider_time ON execution_logs (provider, "timestamp");

CREATE TABLE provider_credentials (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    "type" TEXT NOT NULL,
    binding TEXT NOT NULL,
    origin TEXT,
    integration TEXT,
    header_name TEXT,
    encrypted_value BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    expires_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, provider, binding)
);
CREATE INDEX provider_credentials_key ON provider_credentials (key_id);

CREATE TABLE custom_integrations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    base_url TEXT NOT NULL,
    auth_scheme TEXT,
    auth_header TEXT,
    default_headers_json TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX custom_integrations_user_created ON custom_integrations (user_id, created_at DESC, id DESC);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT NOT NULL REFERENCES execution_plans(id) ON DELETE CASCADE,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    misfire_policy TEXT NOT NULL,
    grace_seconds BIGINT NOT NULL,
    overlap_policy TEXT NOT NULL,
    next_run_at TIMESTAMP,
    last_run_at TIMESTAMP,
    last_run_id TEXT,
    enabled BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, plan_id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
CREATE INDEX schedules_user_created ON schedules (user_id, created_at DESC, id DESC);
CREATE INDEX schedules_plan ON schedules (plan_id);

CREATE TABLE plan_hooks (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT NOT NULL REFERENCES execution_plans(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX plan_hooks_user_plan ON plan_hooks (user_id, plan_id);

-- Row-level security ----------------------------------------------------------------------

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_tenant ON users
    USING (id = current_setting('pilot.user_id', true))
    WITH CHECK (id = current_setting('pilot.user_id', true));
CREATE POLICY users_definer ON users FOR SELECT TO CURRENT_USER
    USING (current_setting('pilot.definer', true) = 'on');

ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY api_tokens_tenant ON api_tokens
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));
CREATE POLICY api_tokens_definer ON api_tokens FOR SELECT TO CURRENT_USER
    USING (current_setting('pilot.definer', true) = 'on');

ALTER TABLE execution_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_plans FORCE ROW LEVEL SECURITY;
CREATE POLICY execution_plans_tenant ON execution_plans
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
CREATE POLICY runs_tenant ON runs
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));
CREATE POLICY runs_scheduler ON runs
    USING (current_setting('pilot.scheduler', true) = 'on')
    WITH CHECK (current_setting('pilot.scheduler', true) = 'on');

ALTER TABLE run_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY run_steps_tenant ON run_steps
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));

ALTER TABLE execution_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY execution_logs_read ON execution_logs FOR SELECT
    USING (user_id = current_setting('pilot.user_id', true));
CREATE POLICY execution_logs_append ON execution_logs FOR INSERT
    WITH CHECK (user_id = current_setting('pilot.user_id', true));
-- Pruning (owner only): a DELETE with a WHERE clause also needs the rows visible to SELECT.
CREATE POLICY execution_logs_prune ON execution_logs FOR DELETE TO CURRENT_USER
    USING (current_setting('pilot.maintenance', true) = 'prune');
CREATE POLICY execution_logs_prune_read ON execution_logs FOR SELECT TO CURRENT_USER
    USING (current_setting('pilot.maintenance', true) = 'prune');

ALTER TABLE provider_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY provider_credentials_tenant ON provider_credentials
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));

ALTER TABLE custom_integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE custom_integrations FORCE ROW LEVEL SECURITY;
CREATE POLICY custom_integrations_tenant ON custom_integrations
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
CREATE POLICY schedules_tenant ON schedules
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));
CREATE POLICY schedules_scheduler ON schedules
    USING (current_setting('pilot.scheduler', true) = 'on')
    WITH CHECK (current_setting('pilot.scheduler', true) = 'on');

ALTER TABLE plan_hooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE plan_hooks FORCE ROW LEVEL SECURITY;
CREATE POLICY plan_hooks_tenant ON plan_hooks
    USING (user_id = current_setting('pilot.user_id', true))
    WITH CHECK (user_id = current_setting('pilot.user_id', true));
CREATE POLICY plan_hooks_definer ON plan_hooks FOR SELECT TO CURRENT_USER
    USING (current_setting('pilot.definer', true) = 'on');

-- The narrow cross-user paths ------------------------------------------------------------

-- Each function raises `pilot.definer` for its own query and lowers it before returning, so the
-- flag never outlives the call (a function-level SET clause would need superuser for a custom
-- parameter).

CREATE FUNCTION pilot_authenticate(hash text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    found text;
BEGIN
    PERFORM set_config('pilot.definer', 'on', true);
    SELECT t.user_id INTO found FROM api_tokens t WHERE t.token_hash = hash AND t.revoked_at IS NULL;
    PERFORM set_config('pilot.definer', '', true);
    RETURN found;
END
$$;

CREATE FUNCTION pilot_resolve_hook(hash text) RETURNS TABLE (user_id text, plan_id text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM set_config('pilot.definer', 'on', true);
    RETURN QUERY SELECT h.user_id, h.plan_id FROM plan_hooks h WHERE h.token_hash = hash;
    PERFORM set_config('pilot.definer', '', true);
END
$$;

CREATE FUNCTION pilot_user_count() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('pilot.definer', 'on', true);
    SELECT count(*) INTO n FROM users;
    PERFORM set_config('pilot.definer', '', true);
    RETURN n;
END
$$;

CREATE FUNCTION pilot_user_id_by_name(user_name text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    found text;
BEGIN
    PERFORM set_config('pilot.definer', 'on', true);
    SELECT u.id INTO found FROM users u WHERE u.name = user_name;
    PERFORM set_config('pilot.definer', '', true);
    RETURN found;
END
$$;

CREATE FUNCTION pilot_user_ids() RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM set_config('pilot.definer', 'on', true);
    RETURN QUERY SELECT u.id FROM users u ORDER BY u.id;
    PERFORM set_config('pilot.definer', '', true);
END
$$;

REVOKE ALL ON FUNCTION pilot_authenticate(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pilot_resolve_hook(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pilot_user_count() FROM PUBLIC;
REVOKE ALL ON FUNCTION pilot_user_id_by_name(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pilot_user_ids() FROM PUBLIC;

-- Grants the application role exactly what it needs. Run as the owner after every migration:
-- SELECT pilot_grant_app('pilot_app');
CREATE FUNCTION pilot_grant_app(app_role text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON users, api_tokens, execution_plans, runs, '
        'run_steps, provider_credentials, custom_integrations, schedules, plan_hooks TO %I', app_role);
    -- Append-only: no UPDATE or DELETE on the execution log.
    EXECUTE format('GRANT SELECT, INSERT ON execution_logs TO %I', app_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION pilot_authenticate(text), pilot_resolve_hook(text), '
        'pilot_user_count(), pilot_user_id_by_name(text), pilot_user_ids() TO %I', app_role);
END
$$;
REVOKE ALL ON FUNCTION pilot_grant_app(text) FROM PUBLIC;
