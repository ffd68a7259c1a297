//! The storage test suite. Each check is an `async fn(&TestDb)` run once per backend by
//! `on_both_backends!`, which generates `sqlite::<name>` and `postgres::<name>` tests (the
//! PostgreSQL ones skip loudly without `PILOT_TEST_POSTGRES_URL`, and fail under `CI=true`).

use chrono::{TimeZone, Utc};
use pilot_core::{LogRecord, Plan, PlanId, RunId, Step, TriggerKind, UserId};

use crate::testing::TestDb;
use serde_json::json;

use crate::{Database, NewPlan, NewRun};

mod backup;
mod credentials;
mod isolation;
mod lifecycle;
mod migrations;
mod postgres_security;
mod roundtrip;
mod runs;

/// Generates one test per backend for each named check.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::testing::TestDb::sqlite().await;
                    super::$name(&t).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(t) = crate::testing::TestDb::postgres().await {
                        super::$name(&t).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// A step calling the webhook provider.
pub(crate) fn step(id: &str) -> Step {
    serde_json::from_value(json!({"id": id, "provider": "webhook", "action": "post", "params": {"url": "http://127.0.0.1:9/x"}}))
        .unwrap()
}

pub(crate) fn new_plan(name: &str, steps: &[&str]) -> NewPlan {
    NewPlan {
        name: name.to_owned(),
        original_prompt: Some(format!("prompt for {name}")),
        steps: steps.iter().map(|s| step(s)).collect(),
        plain_english_steps: steps.iter().map(|s| format!("do {s}")).collect(),
        required_providers: vec!["webhook".to_owned()],
        trigger: Some(pilot_core::Trigger::Cron {
            cron: "0 * * * *".to_owned(),
            timezone: Some("Europe/Paris".to_owned()),
        }),
        status: "active".to_owned(),
    }
}

pub(crate) fn new_run(plan: Option<&PlanId>, steps: &[&str]) -> NewRun {
    let plan_value = Plan {
        name: "p".to_owned(),
        steps: steps.iter().map(|s| step(s)).collect(),
    };
    NewRun {
        plan_id: plan.cloned(),
        plan_name: plan_value.name,
        steps: plan_value.steps,
        input: json!({"k": [1, 2, {"x": "é"}]}),
        trigger: TriggerKind::Api,
        schedule_id: None,
        scheduled_for: None,
    }
}

pub(crate) fn log(
    run: &RunId,
    user: &UserId,
    plan: Option<&PlanId>,
    step_number: u32,
    attempt: u32,
) -> LogRecord {
    LogRecord {
        plan_id: plan.cloned(),
        run_id: run.clone(),
        user_id: user.clone(),
        plan_name: "p".to_owned(),
        step_number,
        step_id: format!("s{step_number}"),
        provider: "webhook".to_owned(),
        action: "post".to_owned(),
        attempt,
        status: "succeeded".to_owned(),
        message: Some("ok".to_owned()),
        latency_ms: 12,
        output_preview: Some("{\"ok\":true}".to_owned()),
        error: None,
        timestamp: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(i64::from(attempt)),
    }
}

pub(crate) async fn user(db: &Database, name: &str) -> UserId {
    db.create_user(name, false).await.unwrap().id
}

/// A raw connection that bypasses the application's scoping: the superuser on PostgreSQL, a
/// plain connection on SQLite. For tampering with and inspecting stored rows.
pub(crate) fn raw(t: &TestDb) -> crate::conn::DbConn {
    let url = match t.backend() {
        crate::Backend::Postgres => t.superuser_url().unwrap(),
        crate::Backend::Sqlite => t.url().to_owned(),
    };
    crate::conn::establish(&url, t.backend(), crate::SqliteSync::Full).unwrap()
}

/// Runs statements on a raw connection.
pub(crate) fn exec(conn: &mut crate::conn::DbConn, sql: &str) -> usize {
    use diesel::RunQueryDsl;
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
