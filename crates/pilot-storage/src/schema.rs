//! The one hand-written diesel schema, in column types both backends share: ids are Text, JSON
//! is Text (serde in Rust), times are naive UTC `Timestamp`s truncated to microseconds. It must
//! match migrations/postgres and migrations/sqlite; the round-trip tests prove it does.

diesel::table! {
    users (id) {
        id -> Text,
        name -> Text,
        is_admin -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_id -> Text,
        label -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    execution_plans (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        original_prompt -> Nullable<Text>,
        plan_json -> Text,
        plain_english_steps -> Text,
        required_providers -> Text,
        trigger_json -> Nullable<Text>,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    runs (id) {
        id -> Text,
        user_id -> Text,
        plan_id -> Nullable<Text>,
        plan_name -> Text,
        steps_json -> Text,
        step_count -> Integer,
        trigger_kind -> Text,
        schedule_id -> Nullable<Text>,
        scheduled_for -> Nullable<Timestamp>,
        input_json -> Text,
        status -> Text,
        error -> Nullable<Text>,
        cancel_requested -> Bool,
        lease_owner -> Nullable<Text>,
        lease_epoch -> BigInt,
        lease_expires_at -> Nullable<Timestamp>,
        takeover_count -> Integer,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
        available_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    run_steps (run_id, step_index) {
        run_id -> Text,
        step_index -> Integer,
        user_id -> Text,
        step_id -> Text,
        status -> Text,
        output_json -> Nullable<Text>,
        error -> Nullable<Text>,
        attempts -> Integer,
        latency_ms -> BigInt,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    execution_logs (id) {
        id -> Text,
        plan_id -> Nullable<Text>,
        run_id -> Text,
        user_id -> Text,
        plan_name -> Text,
        step_number -> Integer,
        step_id -> Text,
        provider -> Text,
        action -> Text,
        attempt -> Integer,
        status -> Text,
        message -> Nullable<Text>,
        latency_ms -> BigInt,
        output_preview -> Nullable<Text>,
        error -> Nullable<Text>,
        timestamp -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    provider_credentials (id) {
        id -> Text,
        user_id -> Text,
        provider -> Text,
        #[sql_name = "type"]
        kind -> Text,
        binding -> Text,
        origin -> Nullable<Text>,
        integration -> Nullable<Text>,
        header_name -> Nullable<Text>,
        encrypted_value -> Binary,
        key_id -> Text,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    custom_integrations (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        base_url -> Text,
        auth_scheme -> Nullable<Text>,
        auth_header -> Nullable<Text>,
        default_headers_json -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    schedules (id) {
        id -> Text,
        user_id -> Text,
        plan_id -> Text,
        cron -> Text,
        timezone -> Text,
        misfire_policy -> Text,
        grace_seconds -> BigInt,
        overlap_policy -> Text,
        next_run_at -> Nullable<Timestamp>,
        last_run_at -> Nullable<Timestamp>,
        last_run_id -> Nullable<Text>,
        enabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        missed_paused -> BigInt,
    }
}

diesel::table! {
    plan_hooks (id) {
        id -> Text,
        user_id -> Text,
        plan_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    api_tokens,
    execution_plans,
    runs,
    run_steps,
    execution_logs,
    provider_credentials,
    custom_integrations,
    schedules,
    plan_hooks,
);
