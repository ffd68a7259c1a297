-- Pilot's schema on SQLite. Ids are TEXT (UUIDs), JSON is TEXT, times are UTC text as diesel
-- writes them (`YYYY-MM-DD HH:MM:SS.ffffff`). SQLite has no row-level security: every query
-- the code makes filters by user_id, and the tenant-isolation tests prove it.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE execution_plans (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    original_prompt TEXT,
    plan_json TEXT NOT NULL,
    plain_english_steps TEXT NOT NULL,
    required_providers TEXT NOT NULL,
    trigger_json TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX execution_plans_user_created ON execution_plans (user_id, created_at DESC, id DESC);

CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT,
    plan_name TEXT NOT NULL,
    steps_json TEXT NOT NULL,
    step_count INTEGER NOT NULL,
    trigger_kind TEXT NOT NULL,
    schedule_id TEXT,
    scheduled_for TEXT,
    input_json TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    lease_expires_at TEXT,
    takeover_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
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
    latency_ms INTEGER NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, step_index)
);

CREATE TABLE execution_logs (
    id TEXT PRIMARY KEY NOT NULL,
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
    latency_ms INTEGER NOT NULL,
    output_preview TEXT,
    error TEXT,
    "timestamp" TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX execution_logs_user_time ON execution_logs (user_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_user_plan_time ON execution_logs (user_id, plan_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_user_run_time ON execution_logs (user_id, run_id, "timestamp" DESC, id DESC);
CREATE INDEX execution_logs_time ON execution_logs ("timestamp");
CREATE INDEX execution_logs_provider_time ON execution_logs (provider, "timestamp");

CREATE TABLE provider_credentials (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    "type" TEXT NOT NULL,
    binding TEXT NOT NULL,
    origin TEXT,
    integration TEXT,
    header_name TEXT,
    encrypted_value BLOB NOT NULL,
    key_id TEXT NOT NULL,
    expires_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, provider, binding)
);
CREATE INDEX provider_credentials_key ON provider_credentials (key_id);

CREATE TABLE custom_integrations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    base_url TEXT NOT NULL,
    auth_scheme TEXT,
    auth_header TEXT,
    default_headers_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX custom_integrations_user_created ON custom_integrations (user_id, created_at DESC, id DESC);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT NOT NULL REFERENCES execution_plans(id) ON DELETE CASCADE,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    misfire_policy TEXT NOT NULL,
    grace_seconds INTEGER NOT NULL,
    overlap_policy TEXT NOT NULL,
    next_run_at TEXT,
    last_run_at TEXT,
    last_run_id TEXT,
    enabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, plan_id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled = 1;
CREATE INDEX schedules_user_created ON schedules (user_id, created_at DESC, id DESC);
CREATE INDEX schedules_plan ON schedules (plan_id);

CREATE TABLE plan_hooks (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id TEXT NOT NULL REFERENCES execution_plans(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE INDEX plan_hooks_user_plan ON plan_hooks (user_id, plan_id);
