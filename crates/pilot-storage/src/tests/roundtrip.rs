//! Every table round-trips on both backends: what is written reads back equal.

use chrono::{SubsecRound, TimeZone, Utc};
use pilot_core::{CredentialKind, CredentialStore, Integration, RunStatus, Secret};

use super::{new_plan, new_run, on_both_backends, user};
use crate::testing::TestDb;
use crate::{
    LogFilter, MisfirePolicy, NewCredential, OverlapPolicy, PageRequest, ScheduleSpec, StorageError,
};

on_both_backends!(
    users_and_tokens,
    plans,
    runs_and_logs,
    credentials_and_integrations,
    schedules_and_hooks,
    pagination,
    rows_of_the_first_release_read_back
);

async fn users_and_tokens(t: &TestDb) {
    let db = t.db();
    assert_eq!(db.user_count().await.unwrap(), 0);
    let admin = db.create_user("admin", true).await.unwrap();
    assert!(admin.is_admin);
    assert_eq!(db.user_count().await.unwrap(), 1);
    assert!(matches!(
        db.create_user("admin", false).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(db.user_by_name("admin").await.unwrap(), Some(admin.clone()));
    assert_eq!(db.user(&admin.id).await.unwrap(), Some(admin.clone()));
    assert_eq!(db.user_by_name("nobody").await.unwrap(), None);

    let (row, token) = db.create_token(&admin.id, "cli").await.unwrap();
    assert!(token.expose().starts_with("pilot_"));
    assert!(
        token.expose().len() >= 6 + 43,
        "at least 256 bits of base64url"
    );
    assert_eq!(row.label, "cli");
    assert_eq!(
        db.authenticate(token.expose()).await.unwrap(),
        Some(admin.id.clone())
    );
    assert_eq!(db.authenticate("pilot_wrong").await.unwrap(), None);
    assert_eq!(db.authenticate("").await.unwrap(), None);
    assert_eq!(db.list_tokens(&admin.id).await.unwrap(), vec![row.clone()]);
    assert!(db.revoke_token(&admin.id, &row.id).await.unwrap());
    assert!(
        !db.revoke_token(&admin.id, &row.id).await.unwrap(),
        "already revoked"
    );
    assert_eq!(db.authenticate(token.expose()).await.unwrap(), None);
    assert!(
        db.list_tokens(&admin.id).await.unwrap()[0]
            .revoked_at
            .is_some()
    );
}

async fn plans(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let plan = new_plan("nightly", &["a", "b"]);
    let row = db.create_plan(&u, &plan).await.unwrap();
    assert_eq!(row.plan, plan);
    let read = db.plan(&u, &row.id).await.unwrap().unwrap();
    assert_eq!(read, row);
    let mut changed = new_plan("renamed", &["c"]);
    changed.trigger = None;
    changed.original_prompt = None;
    let updated = db
        .update_plan(&u, &row.id, &changed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.plan, changed);
    assert_eq!(updated.created_at, row.created_at);
    assert_eq!(db.plan(&u, &row.id).await.unwrap().unwrap(), updated);
    assert!(db.delete_plan(&u, &row.id).await.unwrap());
    assert_eq!(db.plan(&u, &row.id).await.unwrap(), None);
    assert!(!db.delete_plan(&u, &row.id).await.unwrap());
}

async fn runs_and_logs(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let plan = db
        .create_plan(&u, &new_plan("p", &["a", "b"]))
        .await
        .unwrap();
    let mut run = new_run(Some(&plan.id), &["a", "b"]);
    run.scheduled_for = Some(Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap());
    let queued = db.enqueue_run(&u, &run).await.unwrap();
    assert_eq!(queued.status, RunStatus::Queued);
    assert_eq!(queued.states.len(), 2);
    let read = db.run_by_id(&u, &queued.id).await.unwrap().unwrap();
    assert_eq!(read, queued);
    assert_eq!(read.input, run.input);
    assert_eq!(read.scheduled_for, run.scheduled_for);
    let listed = db
        .list_runs_for_plan(&u, &plan.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![queued.clone()]);

    let snapshot = db
        .start_run(
            &u,
            &run,
            &crate::Lease {
                owner: "api".into(),
                ttl: std::time::Duration::from_secs(60),
            },
        )
        .await
        .unwrap();
    assert_eq!(snapshot.epoch, 1);
    let write = pilot_core::RunWrite {
        run_id: snapshot.run_id.clone(),
        user_id: u.clone(),
        epoch: 1,
        logs: vec![super::log(&snapshot.run_id, &u, Some(&plan.id), 0, 1)],
        steps: Vec::new(),
        end: None,
    };
    pilot_core::RunStore::write(db, write.clone())
        .await
        .unwrap();
    // A step's full state round-trips (times at microsecond precision).
    let state = pilot_core::StepState {
        step_id: "b".into(),
        status: pilot_core::StepStatus::Failed,
        output: Some(serde_json::json!({"partial": [1, null, "x"]})),
        error: Some("HTTP 503 from upstream".into()),
        attempts: 3,
        latency_ms: 1234,
        started_at: Some(
            Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 9).unwrap()
                + chrono::Duration::microseconds(123_456),
        ),
        finished_at: Some(Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 10).unwrap()),
    };
    let step_write = pilot_core::RunWrite {
        steps: vec![(pilot_core::StepKey::step(1), state.clone())],
        logs: vec![],
        ..write.clone()
    };
    pilot_core::RunStore::write(db, step_write).await.unwrap();
    let stored = db.run_by_id(&u, &snapshot.run_id).await.unwrap().unwrap();
    assert_eq!(stored.states[1], state);
    assert_eq!(stored.states[0], pilot_core::StepState::pending("a"));
    assert_eq!(
        (stored.lease_epoch, stored.lease_owner.as_deref()),
        (1, Some("api"))
    );
    let logs = db
        .list_logs(&u, &crate::LogFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(logs.items.len(), 1);
    let l = &logs.items[0];
    let want = &write.logs[0];
    assert_eq!(
        (
            &l.plan_id,
            &l.run_id,
            &l.user_id,
            &l.plan_name,
            l.step_number,
            &l.step_id,
            &l.provider,
            &l.action
        ),
        (
            &want.plan_id,
            &want.run_id,
            &want.user_id,
            &want.plan_name,
            want.step_number,
            &want.step_id,
            &want.provider,
            &want.action
        )
    );
    assert_eq!(
        (
            l.attempt,
            &l.status,
            &l.message,
            l.latency_ms,
            &l.output_preview,
            &l.error,
            l.timestamp
        ),
        (
            want.attempt,
            &want.status,
            &want.message,
            want.latency_ms,
            &want.output_preview,
            &want.error,
            want.timestamp
        )
    );
    let filtered = db
        .list_logs(
            &u,
            &LogFilter {
                run_id: Some(queued.id.clone()),
                plan_id: None,
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(filtered.items.is_empty());
}

async fn credentials_and_integrations(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let expires = Utc::now().trunc_subsecs(6) + chrono::Duration::days(3);
    let info = db
        .put_credential(
            &u,
            &NewCredential {
                provider: "custom_api".into(),
                kind: CredentialKind::Header,
                secret: Secret::new("s3cr3t-value"),
                origin: Some("https://api.example.com:443".into()),
                integration: None,
                header_name: Some("X-Key".into()),
                expires_at: Some(expires),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.kind, CredentialKind::Header);
    assert_eq!(info.expires_at, Some(expires));
    assert_eq!(
        db.credential_info(&u, "custom_api").await.unwrap(),
        vec![info.clone()]
    );
    let creds = db.credentials(&u, "custom_api").await.unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].secret.expose(), "s3cr3t-value");
    assert_eq!(
        creds[0].origin.as_deref(),
        Some("https://api.example.com:443")
    );
    assert_eq!(creds[0].header_name.as_deref(), Some("X-Key"));

    // Storing again for the same binding replaces it.
    let again = NewCredential {
        provider: "custom_api".into(),
        kind: CredentialKind::Bearer,
        secret: Secret::new("second"),
        origin: Some("https://api.example.com:443".into()),
        integration: None,
        header_name: None,
        expires_at: None,
    };
    let replaced = db.put_credential(&u, &again).await.unwrap();
    assert_eq!(replaced.id, info.id);
    assert_eq!(replaced.created_at, info.created_at);
    let creds = db.credentials(&u, "custom_api").await.unwrap();
    assert_eq!(
        (creds.len(), creds[0].secret.expose(), creds[0].kind),
        (1, "second", CredentialKind::Bearer)
    );
    assert_eq!(db.delete_credentials(&u, "custom_api").await.unwrap(), 1);
    assert!(db.credentials(&u, "custom_api").await.unwrap().is_empty());

    let integration = Integration {
        name: "crm".into(),
        base_url: "https://crm.example.com/v1".into(),
        auth_scheme: Some(CredentialKind::ApiKey),
        auth_header: Some("X-API-Key".into()),
        default_headers: vec![("Accept".into(), "application/json".into())],
    };
    let row = db.create_integration(&u, &integration).await.unwrap();
    assert_eq!(row.integration, integration);
    assert!(matches!(
        db.create_integration(&u, &integration).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        db.integration_by_id(&u, &row.id).await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(
        db.integration_by_name(&u, "crm").await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(
        db.integration(&u, "crm").await.unwrap(),
        Some(integration.clone())
    );
    let changed = Integration {
        name: "crm2".into(),
        auth_scheme: None,
        auth_header: None,
        default_headers: vec![],
        ..integration
    };
    let updated = db
        .update_integration(&u, &row.id, &changed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.integration, changed);
    assert_eq!(
        db.list_integrations(&u, &PageRequest::default())
            .await
            .unwrap()
            .items,
        vec![updated.clone()]
    );
    assert!(db.delete_integration(&u, &row.id).await.unwrap());
    assert_eq!(db.integration_by_id(&u, &row.id).await.unwrap(), None);
}

async fn schedules_and_hooks(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let plan = db.create_plan(&u, &new_plan("p", &["a"])).await.unwrap();
    let spec = ScheduleSpec {
        cron: "*/5 * * * *".into(),
        timezone: "America/New_York".into(),
        misfire: MisfirePolicy::Skip,
        grace_seconds: 120,
        overlap: OverlapPolicy::Skip,
        next_run_at: Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 5, 0).unwrap()),
        enabled: true,
    };
    let row = db
        .upsert_schedule(&u, &plan.id, &spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.spec, spec);
    assert_eq!(
        db.schedule_for_plan(&u, &plan.id).await.unwrap(),
        Some(row.clone())
    );
    let spec2 = ScheduleSpec {
        misfire: MisfirePolicy::Coalesce,
        overlap: OverlapPolicy::Allow,
        enabled: false,
        next_run_at: None,
        ..spec
    };
    let row2 = db
        .upsert_schedule(&u, &plan.id, &spec2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row2.id.clone(), row2.spec.clone()),
        (row.id.clone(), spec2)
    );
    let listed = db
        .list_schedules(&u, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].schedule, row2);
    assert_eq!(listed.items[0].plan_name, "p");
    assert_eq!(listed.items[0].last_run_status, None);
    assert!(db.delete_schedule(&u, &plan.id).await.unwrap());
    assert_eq!(db.schedule_for_plan(&u, &plan.id).await.unwrap(), None);

    let (hook, token) = db.create_hook(&u, &plan.id).await.unwrap().unwrap();
    assert!(token.expose().starts_with(crate::HOOK_TOKEN_PREFIX));
    assert_eq!(
        db.resolve_hook(token.expose()).await.unwrap(),
        Some((u.clone(), plan.id.clone()))
    );
    assert_eq!(
        db.list_hooks(&u, &plan.id).await.unwrap(),
        vec![hook.clone()]
    );
    assert_eq!(db.resolve_hook("hook_nope").await.unwrap(), None);
    // Deleting the plan removes its hooks.
    assert!(db.delete_plan(&u, &plan.id).await.unwrap());
    assert_eq!(db.resolve_hook(token.expose()).await.unwrap(), None);
}

async fn pagination(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            db.create_plan(&u, &new_plan(&format!("p{i}"), &["a"]))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = db.list_plans(&u, &page).await.unwrap();
        assert!(got.items.len() <= 3);
        seen.extend(got.items.into_iter().map(|p| p.id));
        match got.next_cursor {
            Some(c) => page = PageRequest::after(3, c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    // Integrations, and schedules (a join with plans and runs), page the same way: three at a
    // time, they list what one page of everything lists.
    for i in 0..7 {
        let integration = Integration {
            name: format!("api{i}"),
            base_url: "https://api.example.com/".into(),
            auth_scheme: None,
            auth_header: None,
            default_headers: vec![],
        };
        db.create_integration(&u, &integration).await.unwrap();
    }
    for plan in &ids {
        let spec = ScheduleSpec {
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            misfire: MisfirePolicy::Skip,
            grace_seconds: 60,
            overlap: OverlapPolicy::Allow,
            next_run_at: None,
            enabled: true,
        };
        db.upsert_schedule(&u, plan, &spec).await.unwrap().unwrap();
    }
    let everything = PageRequest::first(500);
    let user = &u;
    let integrations = db.list_integrations(&u, &everything).await.unwrap();
    assert_eq!(integrations.items.len(), 7);
    let paged = all_pages(|page| async move { db.list_integrations(user, &page).await }).await;
    assert_eq!(paged, integrations.items);
    let schedules = db.list_schedules(&u, &everything).await.unwrap();
    assert_eq!(schedules.items.len(), 7);
    let paged = all_pages(|page| async move { db.list_schedules(user, &page).await }).await;
    assert_eq!(paged, schedules.items);
    for bad in [
        "",
        "!!!",
        "bm90LWEtY3Vyc29y",
        "MTIzfA",
        "OTk5OTk5OTk5OTk5OTk5OTk5OTk5fGE",
    ] {
        assert!(
            matches!(
                db.list_plans(&u, &PageRequest::after(3, bad)).await,
                Err(StorageError::InvalidCursor)
            ),
            "cursor {bad:?}"
        );
    }
}

/// Every item of a list, fetched three at a time by following `next_cursor`.
async fn all_pages<T, Fut>(list: impl Fn(PageRequest) -> Fut) -> Vec<T>
where
    Fut: std::future::Future<Output = Result<crate::Page<T>, StorageError>>,
{
    let mut out = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = list(page).await.unwrap();
        assert!(got.items.len() <= 3);
        out.extend(got.items);
        match got.next_cursor {
            Some(c) => page = PageRequest::after(3, c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_with_the_real_reason() {
    let mut config = crate::DbConfig::new("postgres://pilot@127.0.0.1:1/pilot");
    config.connect_timeout = std::time::Duration::from_millis(200);
    match crate::Database::open(&config).await {
        Err(e @ StorageError::Unavailable(_)) => {
            assert!(e.is_unavailable());
            assert!(e.to_string().to_lowercase().contains("connect"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let bad = crate::DbConfig::new("mysql://127.0.0.1/x");
    assert!(matches!(
        crate::Database::open(&bad).await,
        Err(StorageError::Config(_))
    ));
}

/// Plans and runs whose steps were stored by the first release (a bare JSON array, before the
/// stored form had a version) read back as they were written; rows written now carry `v`.
async fn rows_of_the_first_release_read_back(t: &TestDb) {
    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }
    let db = t.db();
    let u = user(db, "u").await;
    let plan = db
        .create_plan(&u, &new_plan("p", &["a", "b"]))
        .await
        .unwrap();
    let run = db
        .enqueue_run(&u, &new_run(Some(&plan.id), &["a", "b"]))
        .await
        .unwrap();
    let mut conn = super::raw(t);
    let read = |conn: &mut crate::conn::DbConn, sql: &str| -> String {
        let rows: Vec<Text> = diesel::RunQueryDsl::load(diesel::sql_query(sql), conn).unwrap();
        rows.into_iter().next().unwrap().text
    };
    let plan_sql = format!(
        "SELECT plan_json AS text FROM execution_plans WHERE id = '{}'",
        plan.id
    );
    let run_sql = format!(
        "SELECT steps_json AS text FROM runs WHERE id = '{}'",
        run.id
    );
    assert!(read(&mut conn, &plan_sql).starts_with(r#"{"v":1,"steps":["#));
    assert!(read(&mut conn, &run_sql).starts_with(r#"{"v":1,"steps":["#));

    // What the first release wrote: `serde_json::to_string(&steps)` of pilot-core's steps.
    let old = serde_json::to_string(&plan.plan.steps)
        .unwrap()
        .replace('\'', "''");
    assert!(old.starts_with('['));
    super::exec(
        &mut conn,
        &format!(
            "UPDATE execution_plans SET plan_json = '{old}' WHERE id = '{}'",
            plan.id
        ),
    );
    super::exec(
        &mut conn,
        &format!(
            "UPDATE runs SET steps_json = '{old}' WHERE id = '{}'",
            run.id
        ),
    );
    let again = db.plan(&u, &plan.id).await.unwrap().unwrap();
    assert_eq!(again.plan.steps, plan.plan.steps);
    let row = db.run_by_id(&u, &run.id).await.unwrap().unwrap();
    assert_eq!(row.steps, plan.plan.steps);
    let claimed = db
        .claim_runs(&crate::ClaimRequest {
            owner: "w".to_owned(),
            limit: 1,
            ttl: std::time::Duration::from_secs(30),
            max_takeovers: 1,
            max_running_per_user: 0,
        })
        .await
        .unwrap()
        .claimed;
    assert_eq!(claimed[0].snapshot.steps, plan.plan.steps);
}
