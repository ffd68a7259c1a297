//! Migrations go up, down and up again on both backends, and the schema after the second "up"
//! is exactly the schema after the first.

use diesel::RunQueryDsl;

use super::{new_plan, on_both_backends, user};
use crate::conn::{DbConn, establish};
use crate::testing::TestDb;
use crate::{Backend, SqliteSync, migrate};

on_both_backends!(up_down_up);

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
}

/// The schema as text: tables, columns, indexes, policies and functions.
fn schema(conn: &mut DbConn) -> Vec<Line> {
    let sql = match conn {
        DbConn::Sqlite(_) => {
            "SELECT type || ' ' || name || ': ' || coalesce(sql, '') AS line FROM sqlite_master \
             WHERE name NOT LIKE '__diesel%' AND name NOT LIKE 'sqlite_%' ORDER BY type, name"
        }
        DbConn::Pg(_) => {
            "SELECT line FROM ( \
               SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS line \
                 FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_diesel%' \
               UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE '\\_\\_diesel%' \
               UNION ALL SELECT 'policy ' || tablename || '.' || policyname || ' ' || cmd || ' ' || array_to_string(roles, ',') || ' ' \
                 || coalesce(qual, '') || ' ' || coalesce(with_check, '') FROM pg_policies WHERE schemaname = 'public' \
               UNION ALL SELECT 'function ' || p.proname || ' ' || p.prosecdef::text FROM pg_proc p \
                 JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' \
             ) s ORDER BY line"
        }
    };
    diesel::sql_query(sql).load(conn).unwrap()
}

/// How many migrations there are (the folders of one backend; both have the same names).
fn migration_count() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count()
}

async fn up_down_up(t: &TestDb) {
    let owner_url = t
        .owner_url()
        .map_or_else(|| t.url().to_owned(), str::to_owned);
    let mut owner = establish(&owner_url, t.backend(), SqliteSync::Full).unwrap();
    let first = schema(&mut owner);
    assert!(first.len() > 20, "the schema is there: {first:?}");

    assert_eq!(migrate::revert_all(&mut owner).unwrap(), migration_count());
    assert!(schema(&mut owner).is_empty(), "down removes everything");
    assert_eq!(migrate::run_pending(&mut owner).unwrap(), migration_count());
    assert_eq!(
        migrate::run_pending(&mut owner).unwrap(),
        0,
        "nothing left to run"
    );
    assert_eq!(schema(&mut owner), first, "up again gives the same schema");

    if t.backend() == Backend::Postgres {
        // Dropped tables took their grants with them: the owner grants again.
        t.db().grant_app_role(t.app_role().unwrap()).await.unwrap();
    }
    // The handle works on the re-created schema.
    let db = t.db();
    let u = user(db, "after").await;
    assert!(db.create_plan(&u, &new_plan("p", &["a"])).await.is_ok());
}

#[test]
fn processes_migrating_at_once_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("race.db").display());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut conn = establish(&url, Backend::Sqlite, SqliteSync::Full).unwrap();
                migrate::run_pending(&mut conn).unwrap()
            })
        })
        .collect();
    let ran: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        ran.iter().sum::<usize>(),
        migration_count(),
        "each migration ran exactly once: {ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrators_take_turns() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let owner_url = t.owner_url().unwrap().to_owned();
    let mut owner = establish(&owner_url, Backend::Postgres, SqliteSync::Full).unwrap();
    migrate::revert_all(&mut owner).unwrap();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let url = owner_url.clone();
            std::thread::spawn(move || {
                let mut conn = establish(&url, Backend::Postgres, SqliteSync::Full).unwrap();
                migrate::run_pending(&mut conn).unwrap()
            })
        })
        .collect();
    let ran: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        ran.iter().sum::<usize>(),
        migration_count(),
        "each migration ran exactly once: {ran:?}"
    );
}
