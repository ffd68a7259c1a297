//! Data lifecycle on SQLite: pruning old execution-log rows gives the space back, so the file
//! shrinks by about what was deleted (incremental auto-vacuum and a truncated WAL).

use super::{raw, user};
use crate::testing::TestDb;

fn file_bytes(t: &TestDb) -> u64 {
    let path = crate::config::sqlite_path(t.url()).to_owned();
    let wal = format!("{path}-wal");
    [path, wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn pruning_most_log_rows_shrinks_the_sqlite_file() {
    use diesel::RunQueryDsl as _;
    let t = TestDb::sqlite().await;
    let db = t.db().clone();
    let u = user(&db, "u").await;
    // 20,000 rows of about 600 bytes: 18,000 old ones and 2,000 recent ones.
    let mut conn = raw(&t);
    let crate::conn::DbConn::Sqlite(c) = &mut conn else {
        unreachable!("a SQLite test database")
    };
    diesel::sql_query(format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO execution_logs (id, plan_id, run_id, user_id, plan_name, step_number, \
           step_id, provider, action, attempt, status, message, latency_ms, output_preview, \
           error, \"timestamp\", created_at) \
         SELECT 'log-' || i, NULL, 'run-' || (i / 3), '{u}', 'p', 0, 's', 'webhook', 'post', 1, \
           'succeeded', printf('%.500c', 'm'), 3, '{{\"ok\":true}}', NULL, \
           CASE WHEN i <= 18000 THEN '2020-01-01 00:00:00.000000' ELSE '2099-01-01 00:00:00.000000' END, \
           '2020-01-01 00:00:00.000000' FROM n",
        u = u.as_str()
    ))
    .execute(c)
    .unwrap();
    drop(conn);
    let before = file_bytes(&t);
    assert!(before > 10_000_000, "{before} bytes before");

    let cutoff = chrono::Utc::now();
    assert_eq!(db.prune_logs(cutoff).await.unwrap(), 18_000);
    let after = file_bytes(&t);
    eprintln!("SQLite file: {before} bytes before pruning 90% of the log, {after} after");
    assert!(
        after * 100 < before * 25,
        "the file kept {after} of {before} bytes after pruning 90% of its rows"
    );
}
