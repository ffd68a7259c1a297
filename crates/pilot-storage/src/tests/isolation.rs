//! Tenant isolation through the API of this crate, on both backends: user A cannot read, list,
//! change or delete anything of user B's, and B's objects are unchanged afterwards. (On
//! PostgreSQL, postgres_security.rs proves the same with raw SQL, where only RLS stands guard.)

use std::time::Duration;

use pilot_core::{
    CredentialKind, CredentialStore, Integration, RunStore, RunWrite, Secret, StepKey, StepState,
    StoreError,
};

use super::{log, new_plan, new_run, on_both_backends, user};
use crate::testing::TestDb;
use crate::{
    Lease, LogFilter, MisfirePolicy, NewCredential, OverlapPolicy, PageRequest, ScheduleSpec,
    StorageError,
};

on_both_backends!(user_a_cannot_touch_user_b);

async fn user_a_cannot_touch_user_b(t: &TestDb) {
    let db = t.db();
    let a = user(db, "alice").await;
    let b = user(db, "bob").await;

    // Everything B owns.
    let (b_token, _) = db.create_token(&b, "b").await.unwrap();
    let b_plan = db
        .create_plan(&b, &new_plan("b-plan", &["one", "two"]))
        .await
        .unwrap();
    let b_queued = db
        .enqueue_run(&b, &new_run(Some(&b_plan.id), &["one", "two"]))
        .await
        .unwrap();
    let lease = Lease {
        owner: "w".into(),
        ttl: Duration::from_secs(60),
    };
    let b_running = db
        .start_run(&b, &new_run(Some(&b_plan.id), &["one", "two"]), &lease)
        .await
        .unwrap();
    db.write(RunWrite {
        run_id: b_running.run_id.clone(),
        user_id: b.clone(),
        epoch: b_running.epoch,
        logs: vec![log(&b_running.run_id, &b, Some(&b_plan.id), 0, 1)],
        steps: vec![(StepKey::step(0), StepState::pending("one"))],
        end: None,
    })
    .await
    .unwrap();
    let b_cred = db
        .put_credential(
            &b,
            &NewCredential {
                provider: "openai".into(),
                kind: CredentialKind::ApiKey,
                secret: Secret::new("sk-bob"),
                origin: None,
                integration: None,
                header_name: None,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let integration = Integration {
        name: "crm".into(),
        base_url: "https://crm.example.com".into(),
        auth_scheme: None,
        auth_header: None,
        default_headers: vec![],
    };
    let b_integration = db.create_integration(&b, &integration).await.unwrap();
    let spec = ScheduleSpec {
        cron: "0 * * * *".into(),
        timezone: "UTC".into(),
        misfire: MisfirePolicy::Coalesce,
        grace_seconds: 3600,
        overlap: OverlapPolicy::Allow,
        next_run_at: None,
        enabled: true,
    };
    let b_schedule = db
        .upsert_schedule(&b, &b_plan.id, &spec)
        .await
        .unwrap()
        .unwrap();
    let (b_hook, b_hook_token) = db.create_hook(&b, &b_plan.id).await.unwrap().unwrap();

    let before = snapshot_of_b(t, &b, &b_plan.id).await;
    let page = PageRequest::default();

    // Plans.
    assert_eq!(db.plan(&a, &b_plan.id).await.unwrap(), None);
    assert!(db.list_plans(&a, &page).await.unwrap().items.is_empty());
    assert_eq!(
        db.update_plan(&a, &b_plan.id, &new_plan("stolen", &["x"]))
            .await
            .unwrap(),
        None
    );
    assert!(!db.delete_plan(&a, &b_plan.id).await.unwrap());

    // Runs.
    assert_eq!(db.run_by_id(&a, &b_queued.id).await.unwrap(), None);
    assert_eq!(db.run_by_id(&a, &b_running.run_id).await.unwrap(), None);
    assert!(
        db.list_runs_for_plan(&a, &b_plan.id, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(db.cancel_run(&a, &b_queued.id).await.unwrap(), None);
    assert_eq!(db.cancel_run(&a, &b_running.run_id).await.unwrap(), None);
    assert!(matches!(
        db.heartbeat(
            &a,
            &b_running.run_id,
            b_running.epoch,
            Duration::from_secs(60)
        )
        .await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        db.release_run(&a, &b_running.run_id, b_running.epoch).await,
        Err(StorageError::NotFound)
    ));
    let forged = RunWrite {
        run_id: b_running.run_id.clone(),
        user_id: a.clone(),
        epoch: b_running.epoch,
        logs: vec![log(&b_running.run_id, &a, None, 0, 9)],
        steps: vec![(StepKey::step(1), StepState::pending("two"))],
        end: Some(pilot_core::RunEnd::Finish(pilot_core::RunFinish {
            status: pilot_core::RunStatus::Failed,
            error: Some("x".into()),
        })),
    };
    assert!(matches!(db.write(forged).await, Err(StoreError::NotFound)));

    // Logs.
    assert!(
        db.list_logs(&a, &LogFilter::default(), &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let by_run = LogFilter {
        run_id: Some(b_running.run_id.clone()),
        plan_id: Some(b_plan.id.clone()),
    };
    assert!(
        db.list_logs(&a, &by_run, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Credentials.
    assert!(db.credential_info(&a, "openai").await.unwrap().is_empty());
    assert!(db.credentials(&a, "openai").await.unwrap().is_empty());
    assert_eq!(db.delete_credentials(&a, "openai").await.unwrap(), 0);
    assert!(!db.delete_credential(&a, &b_cred.id).await.unwrap());

    // Integrations (A may use the same name: uniqueness is per user).
    assert_eq!(
        db.integration_by_id(&a, &b_integration.id).await.unwrap(),
        None
    );
    assert_eq!(db.integration_by_name(&a, "crm").await.unwrap(), None);
    assert_eq!(db.integration(&a, "crm").await.unwrap(), None);
    assert!(
        db.list_integrations(&a, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        db.update_integration(&a, &b_integration.id, &integration)
            .await
            .unwrap(),
        None
    );
    assert!(!db.delete_integration(&a, &b_integration.id).await.unwrap());

    // Schedules and hooks.
    assert_eq!(db.schedule_for_plan(&a, &b_plan.id).await.unwrap(), None);
    assert_eq!(
        db.upsert_schedule(&a, &b_plan.id, &spec).await.unwrap(),
        None
    );
    assert!(!db.delete_schedule(&a, &b_plan.id).await.unwrap());
    assert!(db.list_schedules(&a, &page).await.unwrap().items.is_empty());
    assert!(db.create_hook(&a, &b_plan.id).await.unwrap().is_none());
    assert!(db.list_hooks(&a, &b_plan.id).await.unwrap().is_empty());
    assert!(!db.delete_hook(&a, &b_hook.id).await.unwrap());

    // Tokens.
    assert!(!db.revoke_token(&a, &b_token.id).await.unwrap());
    assert!(db.list_tokens(&a).await.unwrap().is_empty());

    // Nothing of B's changed.
    assert_eq!(snapshot_of_b(t, &b, &b_plan.id).await, before);
    assert_eq!(
        db.schedule_for_plan(&b, &b_plan.id).await.unwrap(),
        Some(b_schedule)
    );
    assert_eq!(
        db.resolve_hook(b_hook_token.expose()).await.unwrap(),
        Some((b.clone(), b_plan.id.clone()))
    );
    assert_eq!(
        db.credentials(&b, "openai").await.unwrap()[0]
            .secret
            .expose(),
        "sk-bob"
    );

    // A's own objects with B's names work.
    db.create_integration(&a, &integration).await.unwrap();
}

/// Everything B can see, as a comparable string.
async fn snapshot_of_b(t: &TestDb, b: &pilot_core::UserId, plan: &pilot_core::PlanId) -> String {
    let db = t.db();
    let page = PageRequest::default();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        db.list_plans(b, &page).await.unwrap(),
        db.list_runs_for_plan(b, plan, &page).await.unwrap(),
        db.list_logs(b, &LogFilter::default(), &page).await.unwrap(),
        db.credential_info(b, "openai").await.unwrap(),
        db.list_integrations(b, &page).await.unwrap(),
        db.list_schedules(b, &page).await.unwrap(),
        db.list_hooks(b, plan).await.unwrap(),
        db.list_tokens(b).await.unwrap(),
    )
}
