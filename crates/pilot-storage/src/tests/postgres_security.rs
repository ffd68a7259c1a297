//! PostgreSQL only: what row-level security and the grants enforce on their own, with raw SQL
//! that bypasses every filter the code adds, as the application role (and as the owner when it
//! serves, which FORCE binds too). Also the catalog facts about the application role.

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};

use super::{new_plan, new_run, user};
use crate::conn::{DbConn, establish};
use crate::testing::TestDb;
use crate::{Backend, SqliteSync};

/// Every user-owned table and the column naming its owner.
const TABLES: [(&str, &str); 10] = [
    ("users", "id"),
    ("api_tokens", "user_id"),
    ("execution_plans", "user_id"),
    ("runs", "user_id"),
    ("run_steps", "user_id"),
    ("execution_logs", "user_id"),
    ("provider_credentials", "user_id"),
    ("custom_integrations", "user_id"),
    ("schedules", "user_id"),
    ("plan_hooks", "user_id"),
];

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(conn: &mut DbConn, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

fn connect(url: &str) -> DbConn {
    establish(url, Backend::Postgres, SqliteSync::Full).unwrap()
}

/// B owns a row in every table; returns (A, B).
async fn populate(t: &TestDb) -> (pilot_core::UserId, pilot_core::UserId) {
    use pilot_core::{CredentialKind, Integration, RunStore, RunWrite, Secret, StepKey, StepState};
    let db = t.db();
    let a = user(db, "alice").await;
    let b = user(db, "bob").await;
    db.create_token(&b, "t").await.unwrap();
    let plan = db.create_plan(&b, &new_plan("p", &["one"])).await.unwrap();
    let lease = crate::Lease {
        owner: "w".into(),
        ttl: std::time::Duration::from_secs(60),
    };
    let run = db
        .start_run(&b, &new_run(Some(&plan.id), &["one"]), &lease)
        .await
        .unwrap();
    db.write(RunWrite {
        run_id: run.run_id.clone(),
        user_id: b.clone(),
        epoch: run.epoch,
        logs: vec![super::log(&run.run_id, &b, Some(&plan.id), 0, 1)],
        steps: vec![(StepKey::step(0), StepState::pending("one"))],
        end: None,
    })
    .await
    .unwrap();
    db.put_credential(
        &b,
        &crate::NewCredential {
            provider: "openai".into(),
            kind: CredentialKind::ApiKey,
            secret: Secret::new("sk-b"),
            origin: None,
            integration: None,
            header_name: None,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    let integration = Integration {
        name: "i".into(),
        base_url: "https://x.example".into(),
        auth_scheme: None,
        auth_header: None,
        default_headers: vec![],
    };
    db.create_integration(&b, &integration).await.unwrap();
    let spec = crate::ScheduleSpec {
        cron: "0 * * * *".into(),
        timezone: "UTC".into(),
        misfire: crate::MisfirePolicy::Coalesce,
        grace_seconds: 3600,
        overlap: crate::OverlapPolicy::Allow,
        next_run_at: None,
        enabled: true,
    };
    db.upsert_schedule(&b, &plan.id, &spec).await.unwrap();
    db.create_hook(&b, &plan.id).await.unwrap();
    (a, b)
}

/// As `url`'s role under A's setting, B's rows in every table are invisible, unchangeable and
/// cannot be forged.
fn assert_rls_holds(url: &str, a: &str, b: &str) {
    let mut conn = connect(url);
    for (table, owner) in TABLES {
        conn.batch_execute(&format!(
            "BEGIN; SELECT set_config('pilot.user_id', '{a}', true)"
        ))
        .unwrap();
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM {table} WHERE {owner} = '{b}'")
            ),
            0,
            "{table}"
        );
        assert_eq!(
            count(&mut conn, &format!("SELECT count(*) AS n FROM {table}")),
            i64::from(table == "users"),
            "{table}: only A's own user row"
        );
        if table != "execution_logs" {
            let updated = diesel::sql_query(format!(
                "UPDATE {table} SET {owner} = {owner} WHERE {owner} = '{b}'"
            ))
            .execute(&mut conn)
            .unwrap();
            assert_eq!(updated, 0, "{table}: update of B's rows");
            let deleted = diesel::sql_query(format!("DELETE FROM {table} WHERE {owner} = '{b}'"))
                .execute(&mut conn)
                .unwrap();
            assert_eq!(deleted, 0, "{table}: delete of B's rows");
        }
        conn.batch_execute("COMMIT").unwrap();
    }
    // Inserting a row as B under A's setting is refused by the policy's WITH CHECK.
    conn.batch_execute(&format!(
        "BEGIN; SELECT set_config('pilot.user_id', '{a}', true)"
    ))
    .unwrap();
    let forged = conn.batch_execute(&format!(
        "INSERT INTO custom_integrations (id, user_id, name, base_url, default_headers_json, created_at, updated_at) \
         VALUES ('forged', '{b}', 'x', 'https://x', '[]', now(), now())"
    ));
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security"),
        "insert as B"
    );
    conn.batch_execute("ROLLBACK").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_under_a_setting_never_reaches_b() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let (a, b) = populate(&t).await;
    assert_rls_holds(t.url(), a.as_str(), b.as_str());
    // The owner serving a one-machine setup is bound by FORCE ROW LEVEL SECURITY too.
    assert_rls_holds(t.owner_url().unwrap(), a.as_str(), b.as_str());
    // And B, under B's own setting, sees its rows (the policies are not simply closed).
    let mut conn = connect(t.url());
    conn.batch_execute(&format!(
        "BEGIN; SELECT set_config('pilot.user_id', '{b}', true)"
    ))
    .unwrap();
    for (table, owner) in TABLES {
        assert!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM {table} WHERE {owner} = '{b}'")
            ) > 0,
            "{table}"
        );
    }
    conn.batch_execute("COMMIT").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_without_a_setting_sees_nothing() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let (_, b) = populate(&t).await;
    for url in [t.url(), t.owner_url().unwrap()] {
        let mut conn = connect(url);
        // A previous transaction on this connection acted as B...
        conn.batch_execute(&format!(
            "BEGIN; SELECT set_config('pilot.user_id', '{b}', true)"
        ))
        .unwrap();
        assert!(count(&mut conn, "SELECT count(*) AS n FROM execution_plans") > 0);
        conn.batch_execute("COMMIT").unwrap();
        // ...the next one, without a setting, sees nothing anywhere.
        for (table, _) in TABLES {
            assert_eq!(
                count(&mut conn, &format!("SELECT count(*) AS n FROM {table}")),
                0,
                "{table}"
            );
        }
        // The scheduler scope opens runs and schedules only.
        conn.batch_execute("BEGIN; SELECT set_config('pilot.scheduler', 'on', true)")
            .unwrap();
        for (table, _) in TABLES {
            let visible = count(&mut conn, &format!("SELECT count(*) AS n FROM {table}")) > 0;
            assert_eq!(
                visible,
                table == "runs" || table == "schedules",
                "{table} under the scheduler scope"
            );
        }
        conn.batch_execute("COMMIT").unwrap();
        // The definer flag opens nothing for the application role (its policies are the
        // owner's); the owner's own definer policies cover only the lookup tables.
        conn.batch_execute("BEGIN; SELECT set_config('pilot.definer', 'on', true)")
            .unwrap();
        for (table, _) in TABLES {
            let visible = count(&mut conn, &format!("SELECT count(*) AS n FROM {table}")) > 0;
            let expected = url != t.url() && matches!(table, "users" | "api_tokens" | "plan_hooks");
            assert_eq!(visible, expected, "{table} under the definer flag");
        }
        conn.batch_execute("COMMIT").unwrap();
    }
    // Through the pool: every pooled connection, having served B above, sees nothing when a
    // query runs on it without a setting.
    for _ in 0..8 {
        let visible = t
            .db()
            .run(|conn| {
                let mut total = 0;
                for (table, _) in TABLES {
                    total += count(conn, &format!("SELECT count(*) AS n FROM {table}"));
                }
                Ok(total)
            })
            .await
            .unwrap();
        assert_eq!(visible, 0);
    }
    // And a handle answers nothing for a forged id.
    let page = crate::PageRequest::default();
    let nobody = pilot_core::UserId::from("'; SELECT 1; --");
    assert!(
        t.db()
            .list_plans(&nobody, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[derive(diesel::QueryableByName)]
struct RoleFacts {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    rolsuper: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    rolbypassrls: bool,
}

#[derive(diesel::QueryableByName)]
struct TableFacts {
    #[diesel(sql_type = diesel::sql_types::Text)]
    relname: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    relrowsecurity: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    relforcerowsecurity: bool,
    #[diesel(sql_type = diesel::sql_types::Text)]
    owner: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_shows_a_confined_application_role() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let app = t.app_role().unwrap().to_owned();
    let mut conn = connect(t.url());
    let facts: RoleFacts = diesel::sql_query(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .get_result(&mut conn)
    .unwrap();
    assert!(!facts.rolsuper && !facts.rolbypassrls);

    let tables: Vec<TableFacts> = diesel::sql_query(
        "SELECT c.relname::text AS relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)::text AS owner \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname NOT LIKE '\\_\\_diesel%'",
    )
    .load(&mut conn)
    .unwrap();
    assert_eq!(
        tables.len(),
        TABLES.len(),
        "every table is listed in TABLES"
    );
    for table in &tables {
        assert!(
            table.relrowsecurity && table.relforcerowsecurity,
            "{}: RLS forced",
            table.relname
        );
        assert_ne!(
            table.owner, app,
            "{}: not owned by the app role",
            table.relname
        );
    }
    let privilege = |conn: &mut DbConn, table: &str, what: &str| -> bool {
        #[derive(diesel::QueryableByName)]
        struct Has {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            has: bool,
        }
        diesel::sql_query(format!(
            "SELECT has_table_privilege(current_user, '{table}', '{what}') AS has"
        ))
        .get_result::<Has>(conn)
        .unwrap()
        .has
    };
    assert!(privilege(&mut conn, "execution_logs", "SELECT"));
    assert!(privilege(&mut conn, "execution_logs", "INSERT"));
    assert!(!privilege(&mut conn, "execution_logs", "UPDATE"));
    assert!(!privilege(&mut conn, "execution_logs", "DELETE"));
    assert!(!privilege(&mut conn, "execution_logs", "TRUNCATE"));
    let denied = conn
        .batch_execute("DELETE FROM execution_logs")
        .unwrap_err()
        .to_string();
    assert!(denied.contains("permission denied"), "{denied}");
    // The app role cannot grant itself more, nor run the grant function.
    assert!(
        conn.batch_execute(&format!("SELECT pilot_grant_app('{app}')"))
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_prunes_logs() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let (_, b) = populate(&t).await;
    let db = t.db();
    let all = crate::LogFilter::default();
    let page = crate::PageRequest::default();
    assert_eq!(db.list_logs(&b, &all, &page).await.unwrap().items.len(), 1);
    // The maintenance flag does nothing for the application role (no DELETE grant).
    let mut conn = connect(t.url());
    let refused = conn.batch_execute(
        "BEGIN; SELECT set_config('pilot.maintenance', 'prune', true); DELETE FROM execution_logs",
    );
    assert!(refused.is_err());
    conn.batch_execute("ROLLBACK").unwrap();
    // The owner under the flag may.
    assert_eq!(
        db.prune_logs(chrono::Utc::now() - chrono::Duration::days(365 * 100))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.prune_logs(chrono::Utc::now() + chrono::Duration::days(365 * 100))
            .await
            .unwrap(),
        1
    );
    assert!(
        db.list_logs(&b, &all, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_serving_alone_works_under_force() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let mut config = crate::DbConfig::new(t.owner_url().unwrap());
    config.run_migrations = true; // Already migrated: a no-op, run as the owner.
    let db = crate::Database::open(&config)
        .await
        .unwrap()
        .with_keyring(t.keyring().clone());
    let u = db.create_user("solo", true).await.unwrap().id;
    let (_, token) = db.create_token(&u, "t").await.unwrap();
    assert_eq!(
        db.authenticate(token.expose()).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(db.user_count().await.unwrap(), 1);
    let plan = db.create_plan(&u, &new_plan("p", &["a"])).await.unwrap();
    assert!(db.plan(&u, &plan.id).await.unwrap().is_some());
    assert_eq!(db.prune_logs(chrono::Utc::now()).await.unwrap(), 0);
    // The application role's handle sees the same data.
    assert!(t.db().plan(&u, &plan.id).await.unwrap().is_some());
    let _ = Backend::Postgres;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_with_an_owner_url_migrates_and_grants_the_app_role() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let app = t.app_role().unwrap().to_owned();
    let mut owner = connect(t.owner_url().unwrap());
    owner
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM \"{app}\""
        ))
        .unwrap();
    assert!(
        t.db().user_count().await.is_ok(),
        "the definer function still answers"
    );
    assert!(
        t.db().create_user("x", false).await.is_err(),
        "no table grant left"
    );
    let mut config = t.config();
    config.run_migrations = true;
    let db = crate::Database::open(&config).await.unwrap();
    let u = db.create_user("y", false).await.unwrap().id;
    assert!(db.create_plan(&u, &new_plan("p", &["a"])).await.is_ok());
    // Still append-only.
    let mut conn = connect(t.url());
    assert!(conn.batch_execute("DELETE FROM execution_logs").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_notify_listening_workers() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let u = user(t.db(), "u").await;
    let mut listener = diesel::PgConnection::establish(t.url()).unwrap();
    listener
        .batch_execute(&format!("LISTEN {}", crate::RUNS_CHANNEL))
        .unwrap();
    t.db()
        .enqueue_run(&u, &new_run(None, &["a"]))
        .await
        .unwrap();
    let mut heard = 0;
    for _ in 0..50 {
        heard += listener
            .notifications_iter()
            .filter_map(Result::ok)
            .filter(|n| n.channel == crate::RUNS_CHANNEL)
            .count();
        if heard > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(heard > 0, "a worker listening on the runs channel is told");
}
