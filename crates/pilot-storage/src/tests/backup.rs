//! Online backups: a SQLite copy taken while writes go on holds every run committed before it,
//! opens as a database of its own and is private to its owner; PostgreSQL is pointed to
//! pg_dump; an existing file is never overwritten.

use std::time::Duration;

use super::{new_run, user};
use crate::testing::TestDb;
use crate::{Database, DbConfig, StorageError};

#[tokio::test]
async fn a_sqlite_backup_taken_during_writes_restores_every_run() {
    let t = TestDb::sqlite().await;
    let db = t.db().clone();
    let u = user(&db, "u").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            db.enqueue_run(&u, &new_run(None, &["a", "b"]))
                .await
                .unwrap()
                .id,
        );
    }
    // Writers keep going while the copy is taken.
    let writer = {
        let (db, u) = (db.clone(), u.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup.db");
    let bytes = db.backup_to(&target).await.unwrap();
    writer.await.unwrap();
    assert!(bytes > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Restored: the copy opens as a database, and every run committed before it is there.
    let mut config = DbConfig::new(format!("sqlite://{}", target.display()));
    config.pool_size = 2;
    let restored = Database::open(&config).await.unwrap();
    for id in &ids {
        let row = restored.run_by_id(&u, id).await.unwrap();
        assert!(row.is_some(), "run {id} missing from the backup");
    }
    let all = restored.queue_stats().await.unwrap().queued;
    assert!((20..=70).contains(&all), "{all} runs in the backup");

    // A second backup never overwrites the first.
    assert!(matches!(
        db.backup_to(&target).await,
        Err(StorageError::InvalidInput(m)) if m.contains("exists already")
    ));
}

#[tokio::test]
async fn postgres_backups_are_pointed_to_pg_dump() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = t
        .db()
        .backup_to(&dir.path().join("x.db"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pg_dump"), "{err}");
}
