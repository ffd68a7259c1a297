//! Runs under leases: durable step-by-step progress, fencing by epoch, takeover, the takeover
//! cap, cancellation, racing claimers, and the group-commit writer under concurrency.

use std::collections::HashSet;
use std::time::Duration;

use pilot_core::{
    RunEnd, RunFinish, RunStatus, RunStore, RunWrite, StepKey, StepState, StepStatus, StoreError,
    UserId, WriteAck,
};
use serde_json::json;

use super::{log, new_plan, new_run, on_both_backends, user};
use crate::testing::TestDb;
use crate::{CancelOutcome, ClaimRequest, Database, Lease, LogFilter, PageRequest, StorageError};

on_both_backends!(
    halfway_run_resumes_without_finished_steps,
    stale_epoch_changes_nothing,
    takeover_cap_fails_the_run,
    cancel_queued_running_and_finished,
    release_requeues_without_a_takeover,
    racing_claimers_never_share_a_run,
    group_commit_loses_nothing,
    a_bad_write_does_not_fail_its_batch,
    a_lease_past_the_calendar_is_refused,
    claims_take_turns_between_users,
    a_parked_run_waits_for_its_time,
    a_write_parks_the_run_with_its_step_states,
    retention_by_count_keeps_each_plans_newest_finished_runs,
    the_per_user_cap_holds_across_claims,
    an_export_pages_through_every_users_runs_with_steps_and_logs,
);

fn lease(ttl: Duration) -> Lease {
    Lease {
        owner: "api-1".into(),
        ttl,
    }
}

fn claim(owner: &str, limit: usize, ttl: Duration) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        limit,
        ttl,
        max_takeovers: 3,
        max_running_per_user: 0,
    }
}

fn done(step_id: &str, output: serde_json::Value) -> StepState {
    StepState {
        step_id: step_id.into(),
        status: StepStatus::Succeeded,
        output: Some(output),
        error: None,
        attempts: 1,
        latency_ms: 5,
        started_at: Some(chrono::Utc::now()),
        finished_at: Some(chrono::Utc::now()),
    }
}

fn write(run: &pilot_core::RunSnapshot, epoch: i64) -> RunWrite {
    RunWrite {
        run_id: run.run_id.clone(),
        user_id: run.user_id.clone(),
        epoch,
        logs: vec![],
        steps: Vec::new(),
        end: None,
    }
}

async fn log_count(db: &Database, u: &UserId) -> usize {
    db.list_logs(u, &LogFilter::default(), &PageRequest::first(500))
        .await
        .unwrap()
        .items
        .len()
}

async fn expire_leases() {
    // Leases of zero length expire as soon as the clock moves on.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn halfway_run_resumes_without_finished_steps(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let plan = db
        .create_plan(&u, &new_plan("p", &["a", "b", "c"]))
        .await
        .unwrap();
    let run = db
        .start_run(
            &u,
            &new_run(Some(&plan.id), &["a", "b", "c"]),
            &lease(Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(
        run.states.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![StepStatus::Pending; 3]
    );
    for (i, id) in ["a", "b"].iter().enumerate() {
        let mut w = write(&run, run.epoch);
        w.steps = vec![(StepKey::step(i), done(id, json!({"step": id, "n": i})))];
        w.logs = vec![log(
            &run.run_id,
            &u,
            Some(&plan.id),
            u32::try_from(i).unwrap(),
            1,
        )];
        assert_eq!(
            db.write(w).await.unwrap(),
            WriteAck {
                cancel_requested: false
            }
        );
    }
    // The executor dies; its lease runs out; another worker takes the run over.
    expire_leases().await;
    let claimed = db
        .claim_runs(&claim("worker-2", 10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    let resumed = &claimed.claimed[0];
    assert!(resumed.taken_over);
    assert_eq!(resumed.takeover_count, 1);
    let snap = &resumed.snapshot;
    assert_eq!(snap.epoch, run.epoch + 1);
    assert_eq!(
        (
            snap.run_id.clone(),
            snap.user_id.clone(),
            snap.input.clone()
        ),
        (run.run_id.clone(), u.clone(), run.input.clone())
    );
    assert_eq!(snap.steps, run.steps);
    assert_eq!(snap.states[0].output, Some(json!({"step": "a", "n": 0})));
    assert_eq!(snap.states[1].output, Some(json!({"step": "b", "n": 1})));
    assert_eq!(
        snap.states.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Pending
        ],
        "only the unfinished step is left to run"
    );
    let first_unfinished = snap.states.iter().position(|s| !s.status.is_finished());
    assert_eq!(first_unfinished, Some(2));
    // The new owner finishes it.
    let mut w = write(snap, snap.epoch);
    w.steps = vec![(StepKey::step(2), done("c", json!(3)))];
    w.end = Some(RunEnd::Finish(RunFinish {
        status: RunStatus::Succeeded,
        error: None,
    }));
    db.write(w).await.unwrap();
    let row = db.run_by_id(&u, &run.run_id).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Succeeded);
    assert_eq!(row.takeover_count, 1);
    assert!(row.finished_at.is_some() && row.lease_owner.is_none());
    assert_eq!(row.states[2].output, Some(json!(3)));
    // Nothing left to claim.
    assert!(
        db.claim_runs(&claim("worker-3", 10, Duration::from_secs(60)))
            .await
            .unwrap()
            .claimed
            .is_empty()
    );
}

async fn stale_epoch_changes_nothing(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let run = db
        .start_run(&u, &new_run(None, &["a", "b"]), &lease(Duration::ZERO))
        .await
        .unwrap();
    expire_leases().await;
    let taken = db
        .claim_runs(&claim("w2", 1, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    assert_eq!(taken.snapshot.epoch, 2);
    let before = db.run_by_id(&u, &run.run_id).await.unwrap().unwrap();
    let logs_before = log_count(db, &u).await;

    // The old owner (epoch 1) tries every kind of write.
    let mut stale = write(&run, 1);
    stale.logs = vec![log(&run.run_id, &u, None, 0, 1)];
    stale.steps = vec![(StepKey::step(0), done("a", json!("stale")))];
    stale.end = Some(RunEnd::Finish(RunFinish {
        status: RunStatus::Failed,
        error: Some("stale".into()),
    }));
    assert!(matches!(db.write(stale).await, Err(StoreError::StaleEpoch)));
    assert!(matches!(
        db.heartbeat(&u, &run.run_id, 1, Duration::from_secs(60))
            .await,
        Err(StorageError::StaleEpoch)
    ));
    assert!(matches!(
        db.release_run(&u, &run.run_id, 1).await,
        Err(StorageError::StaleEpoch)
    ));
    // A future epoch is just as stale.
    assert!(matches!(
        db.write(write(&run, 3)).await,
        Err(StoreError::StaleEpoch)
    ));

    let after = db.run_by_id(&u, &run.run_id).await.unwrap().unwrap();
    assert_eq!(after, before, "nothing changed");
    assert_eq!(log_count(db, &u).await, logs_before);

    // The current owner can write; a write after the run finished is stale too.
    let mut fine = write(&taken.snapshot, 2);
    fine.end = Some(RunEnd::Finish(RunFinish {
        status: RunStatus::Succeeded,
        error: None,
    }));
    db.write(fine.clone()).await.unwrap();
    assert!(matches!(db.write(fine).await, Err(StoreError::StaleEpoch)));
    // An unknown run is not found.
    let mut missing = write(&run, 1);
    missing.run_id = pilot_core::RunId::new();
    assert!(matches!(db.write(missing).await, Err(StoreError::NotFound)));
}

async fn takeover_cap_fails_the_run(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let queued = db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
    let request = ClaimRequest {
        owner: "w".into(),
        limit: 5,
        ttl: Duration::ZERO,
        max_takeovers: 2,
        max_running_per_user: 0,
    };
    let mut epochs = Vec::new();
    for expected_takeovers in 0..=2u32 {
        let got = db.claim_runs(&request).await.unwrap();
        assert_eq!(got.claimed.len(), 1);
        assert_eq!(got.claimed[0].takeover_count, expected_takeovers);
        assert_eq!(got.claimed[0].taken_over, expected_takeovers > 0);
        epochs.push(got.claimed[0].snapshot.epoch);
        expire_leases().await;
    }
    assert_eq!(epochs, vec![1, 2, 3]);
    let got = db.claim_runs(&request).await.unwrap();
    assert!(got.claimed.is_empty());
    assert_eq!(got.abandoned.len(), 1);
    assert_eq!(
        (
            got.abandoned[0].run_id.clone(),
            got.abandoned[0].takeover_count
        ),
        (queued.id.clone(), 2)
    );
    let row = db.run_by_id(&u, &queued.id).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Failed);
    assert_eq!(row.error.as_deref(), Some(crate::TAKEOVER_CAP_MESSAGE));
    assert_eq!(row.lease_epoch, 4, "the lost worker's epoch is fenced off");
    let stale = RunWrite {
        run_id: queued.id.clone(),
        user_id: u.clone(),
        epoch: 3,
        logs: vec![],
        steps: Vec::new(),
        end: None,
    };
    assert!(matches!(db.write(stale).await, Err(StoreError::StaleEpoch)));
}

async fn cancel_queued_running_and_finished(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let queued = db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
    assert_eq!(
        db.cancel_run(&u, &queued.id).await.unwrap(),
        Some(CancelOutcome::Cancelled)
    );
    let row = db.run_by_id(&u, &queued.id).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Cancelled);
    assert!(
        db.claim_runs(&claim("w", 10, Duration::from_secs(60)))
            .await
            .unwrap()
            .claimed
            .is_empty(),
        "never claimed"
    );
    assert_eq!(
        db.cancel_run(&u, &queued.id).await.unwrap(),
        Some(CancelOutcome::AlreadyFinished(RunStatus::Cancelled))
    );

    let running = db
        .start_run(
            &u,
            &new_run(None, &["a", "b"]),
            &lease(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(
        !db.write(write(&running, running.epoch))
            .await
            .unwrap()
            .cancel_requested
    );
    assert_eq!(
        db.cancel_run(&u, &running.run_id).await.unwrap(),
        Some(CancelOutcome::Requested)
    );
    assert!(
        db.write(write(&running, running.epoch))
            .await
            .unwrap()
            .cancel_requested
    );
    assert!(
        db.heartbeat(&u, &running.run_id, running.epoch, Duration::from_secs(60))
            .await
            .unwrap()
            .cancel_requested
    );
    let mut end = write(&running, running.epoch);
    end.end = Some(RunEnd::Finish(RunFinish {
        status: RunStatus::Cancelled,
        error: None,
    }));
    db.write(end).await.unwrap();
    assert_eq!(
        db.run_by_id(&u, &running.run_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Cancelled
    );
    assert_eq!(
        db.cancel_run(&u, &pilot_core::RunId::new()).await.unwrap(),
        None
    );
}

async fn release_requeues_without_a_takeover(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
    let first = db
        .claim_runs(&claim("w1", 10, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let stats = db.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 1));
    assert!(stats.next_lease_expiry.is_some());
    db.release_run(&u, &first.snapshot.run_id, first.snapshot.epoch)
        .await
        .unwrap();
    assert_eq!(db.queue_stats().await.unwrap().queued, 1);
    let second = db
        .claim_runs(&claim("w2", 10, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    assert!(!second.taken_over);
    assert_eq!(second.takeover_count, 0);
    assert_eq!(second.snapshot.epoch, first.snapshot.epoch + 1);
    // The heartbeat moves the lease forward under the current epoch.
    let before = db
        .run_by_id(&u, &second.snapshot.run_id)
        .await
        .unwrap()
        .unwrap()
        .lease_expires_at
        .unwrap();
    db.heartbeat(
        &u,
        &second.snapshot.run_id,
        second.snapshot.epoch,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let after = db
        .run_by_id(&u, &second.snapshot.run_id)
        .await
        .unwrap()
        .unwrap()
        .lease_expires_at
        .unwrap();
    assert!(after > before + chrono::Duration::seconds(500));
}

async fn racing_claimers_never_share_a_run(t: &TestDb) {
    let db = t.db();
    let users = [user(db, "a").await, user(db, "b").await];
    let mut expected = HashSet::new();
    for i in 0..60 {
        expected.insert(
            db.enqueue_run(&users[i % 2], &new_run(None, &["a"]))
                .await
                .unwrap()
                .id,
        );
    }
    // Four claimers, each on its own handle (its own pool), claiming small batches at once.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let other = Database::open(&t.config()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = other
                    .claim_runs(&claim(&format!("w{w}"), 3, Duration::from_secs(60)))
                    .await
                    .unwrap();
                if got.claimed.is_empty() {
                    return mine;
                }
                mine.extend(got.claimed.into_iter().map(|c| c.snapshot.run_id));
            }
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, expected, "every run was claimed");
}

async fn group_commit_loses_nothing(t: &TestDb) {
    const TASKS: usize = 50;
    const WRITES: usize = 20;
    let db = t.db();
    let users = [
        user(db, "a").await,
        user(db, "b").await,
        user(db, "c").await,
    ];
    let steps: Vec<String> = (0..WRITES).map(|i| format!("s{i}")).collect();
    let step_refs: Vec<&str> = steps.iter().map(String::as_str).collect();
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let u = users[n % users.len()].clone();
        let run = db
            .start_run(
                &u,
                &new_run(None, &step_refs),
                &lease(Duration::from_secs(600)),
            )
            .await
            .unwrap();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut stale_rejected = 0;
            for i in 0..WRITES {
                let mut w = write(&run, run.epoch);
                w.steps = vec![(
                    StepKey::step(i),
                    done(&format!("s{i}"), json!({"task": n, "i": i})),
                )];
                w.logs = vec![log(&run.run_id, &u, None, u32::try_from(i).unwrap(), 1)];
                if i + 1 == WRITES {
                    w.end = Some(RunEnd::Finish(RunFinish {
                        status: RunStatus::Succeeded,
                        error: None,
                    }));
                }
                db.write(w).await.unwrap();
                // Interleave a stale write from a "lost" worker: rejected, alone.
                if n % 5 == 0 && i + 1 < WRITES {
                    let mut stale = write(&run, run.epoch + 7);
                    stale.logs = vec![log(&run.run_id, &u, None, 99, 99)];
                    assert!(matches!(db.write(stale).await, Err(StoreError::StaleEpoch)));
                    stale_rejected += 1;
                }
            }
            (run, stale_rejected)
        }));
    }
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.unwrap());
    }
    let mut total_logs = 0;
    for u in &users {
        let mut page = PageRequest::first(500);
        loop {
            let got = db.list_logs(u, &LogFilter::default(), &page).await.unwrap();
            assert!(
                got.items.iter().all(|l| l.attempt == 1),
                "no stale row was stored"
            );
            total_logs += got.items.len();
            match got.next_cursor {
                Some(c) => page = PageRequest::after(500, c),
                None => break,
            }
        }
    }
    assert_eq!(total_logs, TASKS * WRITES);
    for (run, _) in &finished {
        let row = db
            .run_by_id(&run.user_id, &run.run_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, RunStatus::Succeeded);
        assert!(row.states.iter().all(|s| s.status == StepStatus::Succeeded));
        assert_eq!(
            row.states[WRITES - 1].output.as_ref().unwrap()["i"],
            json!(WRITES - 1)
        );
    }
    assert_eq!(
        finished.iter().map(|f| f.1).sum::<usize>(),
        10 * (WRITES - 1)
    );
}

async fn a_bad_write_does_not_fail_its_batch(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(
            db.start_run(&u, &new_run(None, &["a"]), &lease(Duration::from_secs(600)))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let db = db.clone();
        let mut w = write(run, run.epoch);
        w.logs = vec![log(&run.run_id, &u, None, 0, 1)];
        // Every fourth write names a step the run does not have.
        w.steps = vec![(
            StepKey::step(if n % 4 == 0 { 5 } else { 0 }),
            done("a", json!(n)),
        )];
        tasks.push(tokio::spawn(async move { db.write(w).await }));
    }
    let mut bad = 0;
    for (n, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => assert_ne!(n % 4, 0),
            Err(StoreError::Conflict(m)) if m.contains("out of range") => bad += 1,
            Err(e) => panic!("write {n}: {e}"),
        }
    }
    assert_eq!(bad, 5);
    assert_eq!(
        log_count(db, &u).await,
        15,
        "the bad writes left no trace, the good ones all landed"
    );
}

async fn a_lease_past_the_calendar_is_refused(t: &TestDb) {
    // Representable as a chrono duration, but past year 262143 when added to now: chrono's `+`
    // would panic inside the blocking task.
    let forever = Duration::from_secs(1 << 50);
    let db = t.db();
    let u = user(db, "u").await;
    let started = db
        .start_run(&u, &new_run(None, &["a"]), &lease(forever))
        .await;
    assert!(
        matches!(started, Err(StorageError::InvalidInput(_))),
        "{started:?}"
    );
    db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
    let claimed = db.claim_runs(&claim("w", 10, forever)).await;
    assert!(
        matches!(claimed, Err(StorageError::InvalidInput(_))),
        "{claimed:?}"
    );
    // Nothing was claimed: a sane claim still finds the queued run.
    let claimed = db
        .claim_runs(&claim("w", 10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    let run = &claimed.claimed[0].snapshot;
    let beat = db.heartbeat(&u, &run.run_id, run.epoch, forever).await;
    assert!(
        matches!(beat, Err(StorageError::InvalidInput(_))),
        "{beat:?}"
    );
}

async fn claims_take_turns_between_users(t: &TestDb) {
    let db = t.db();
    let flood = user(db, "flood").await;
    let other = user(db, "other").await;
    for _ in 0..30 {
        db.enqueue_run(&flood, &new_run(None, &["a"]))
            .await
            .unwrap();
    }
    let late = db
        .enqueue_run(&other, &new_run(None, &["a"]))
        .await
        .unwrap();
    // One claim of two: the flood's oldest run and the other user's, whatever their ages.
    let claimed = db
        .claim_runs(&claim("w1", 2, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed;
    let owners: HashSet<UserId> = claimed.iter().map(|c| c.snapshot.user_id.clone()).collect();
    assert_eq!(owners, HashSet::from([flood.clone(), other.clone()]));
    assert!(claimed.iter().any(|c| c.snapshot.run_id == late.id));
    // Within a user, oldest first; the rest of the flood follows.
    let rest = db
        .claim_runs(&claim("w1", 100, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed;
    assert_eq!(rest.len(), 29);
}

async fn a_parked_run_waits_for_its_time(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    db.enqueue_run(&u, &new_run(None, &["a"])).await.unwrap();
    let first = db
        .claim_runs(&claim("w1", 10, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let id = first.snapshot.run_id.clone();
    // A stale epoch cannot park it.
    assert!(matches!(
        db.park_run(&u, &id, first.snapshot.epoch + 1, Duration::from_secs(1))
            .await,
        Err(StorageError::StaleEpoch)
    ));
    db.park_run(&u, &id, first.snapshot.epoch, Duration::from_millis(300))
        .await
        .unwrap();
    let row = db.run_by_id(&u, &id).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Queued);
    assert_eq!(row.lease_owner, None);
    let info = db.wake_info().await.unwrap();
    assert_eq!(info.queued, 0, "a parked run is not claimable yet");
    let due = info.next_available.unwrap();
    // Database time: SQLite reads it to the millisecond.
    assert!(due > info.db_now && due <= info.db_now + chrono::Duration::milliseconds(301));
    assert!(
        db.claim_runs(&claim("w2", 10, Duration::from_secs(60)))
            .await
            .unwrap()
            .claimed
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(db.wake_info().await.unwrap().queued, 1);
    let again = db
        .claim_runs(&claim("w2", 10, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed;
    assert_eq!(again.len(), 1);
    assert!(!again[0].taken_over, "parking is not a takeover");
    assert_eq!(again[0].snapshot.epoch, first.snapshot.epoch + 1);
}

async fn a_write_parks_the_run_with_its_step_states(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    db.enqueue_run(&u, &new_run(None, &["a", "b"]))
        .await
        .unwrap();
    let first = db
        .claim_runs(&claim("w1", 10, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let run = &first.snapshot;
    // A per-item state has nowhere to go yet: refused, and the run is unchanged.
    let mut per_item = write(run, run.epoch);
    per_item.steps = vec![(
        StepKey {
            index: 0,
            item: Some(0),
        },
        done("a", json!(1)),
    )];
    let refused = db.write(per_item).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Conflict(ref m) if m.contains("per-item")),
        "{refused:?}"
    );
    // Both step states and the parking land in one write.
    let mut park = write(run, run.epoch);
    park.steps = vec![
        (StepKey::step(0), done("a", json!(1))),
        (StepKey::step(1), done("b", json!(2))),
    ];
    park.end = Some(RunEnd::Park {
        resume_after: Duration::from_secs(60),
    });
    db.write(park).await.unwrap();
    let row = db.run_by_id(&u, &run.run_id).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Queued);
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.finished_at, None);
    let outputs: Vec<_> = row.states.iter().map(|s| s.output.clone()).collect();
    assert_eq!(outputs, vec![Some(json!(1)), Some(json!(2))]);
    let info = db.wake_info().await.unwrap();
    assert_eq!(
        info.queued, 0,
        "a parked run is not claimable before its time"
    );
    let due = info.next_available.unwrap();
    assert!(
        due > info.db_now + chrono::Duration::seconds(59),
        "{due} vs {}",
        info.db_now
    );
    // The lease is given up: the old epoch can write nothing more.
    let late = write(run, run.epoch);
    assert!(matches!(db.write(late).await, Err(StoreError::StaleEpoch)));
}

async fn retention_by_count_keeps_each_plans_newest_finished_runs(t: &TestDb) {
    let db = t.db();
    let u = user(db, "u").await;
    let other = user(db, "other").await;
    let a = db.create_plan(&u, &new_plan("a", &["s"])).await.unwrap().id;
    let b = db
        .create_plan(&other, &new_plan("b", &["s"]))
        .await
        .unwrap()
        .id;
    // Runs finished in creation order; each plan's ids, oldest first.
    let finished = |owner: UserId, plan: Option<pilot_core::PlanId>| {
        let db = db.clone();
        async move {
            let run = db
                .start_run(
                    &owner,
                    &new_run(plan.as_ref(), &["s"]),
                    &lease(Duration::from_secs(60)),
                )
                .await
                .unwrap();
            let mut end = write(&run, run.epoch);
            end.end = Some(RunEnd::Finish(RunFinish {
                status: RunStatus::Succeeded,
                error: None,
            }));
            db.write(end).await.unwrap();
            run.run_id
        }
    };
    let mut of_a = Vec::new();
    for _ in 0..5 {
        of_a.push(finished(u.clone(), Some(a.clone())).await);
    }
    let of_b = [
        finished(other.clone(), Some(b.clone())).await,
        finished(other.clone(), Some(b.clone())).await,
    ];
    let adhoc = [
        finished(u.clone(), None).await,
        finished(u.clone(), None).await,
    ];
    // An unfinished run of plan a neither counts nor goes.
    let queued = db
        .enqueue_run(&u, &new_run(Some(&a), &["s"]))
        .await
        .unwrap()
        .id;

    // Two at a time, as the worker's batches would.
    assert_eq!(db.prune_runs_beyond_count(2, 2).await.unwrap(), 2);
    assert_eq!(db.prune_runs_beyond_count(2, 2).await.unwrap(), 1);
    assert_eq!(db.prune_runs_beyond_count(2, 2).await.unwrap(), 0);
    let exists = |owner: &UserId, id: &pilot_core::RunId| {
        let (db, owner, id) = (db.clone(), owner.clone(), id.clone());
        async move { db.run_by_id(&owner, &id).await.unwrap().is_some() }
    };
    for (i, id) in of_a.iter().enumerate() {
        assert_eq!(exists(&u, id).await, i >= 3, "run {i} of plan a");
    }
    for id in of_b.iter() {
        assert!(exists(&other, id).await, "plan b has only 2");
    }
    for id in adhoc.iter() {
        assert!(exists(&u, id).await, "runs without a plan are not counted");
    }
    assert!(exists(&u, &queued).await);
}

async fn the_per_user_cap_holds_across_claims(t: &TestDb) {
    let db = t.db();
    let busy = user(db, "busy").await;
    let calm = user(db, "calm").await;
    for _ in 0..5 {
        db.enqueue_run(&busy, &new_run(None, &["a"])).await.unwrap();
    }
    db.enqueue_run(&calm, &new_run(None, &["a"])).await.unwrap();
    let capped = |owner: &str| ClaimRequest {
        max_running_per_user: 2,
        ..claim(owner, 10, Duration::from_secs(60))
    };
    let first = db.claim_runs(&capped("w1")).await.unwrap().claimed;
    let of = |claimed: &[crate::ClaimedRun], u: &UserId| {
        claimed.iter().filter(|c| &c.snapshot.user_id == u).count()
    };
    assert_eq!((of(&first, &busy), of(&first, &calm)), (2, 1));
    // Another worker sees the two running ones: nothing more of busy's until one ends.
    let second = db.claim_runs(&capped("w2")).await.unwrap().claimed;
    assert!(second.is_empty(), "{} claimed over the cap", second.len());
    let done = first.iter().find(|c| c.snapshot.user_id == busy).unwrap();
    let mut end = write(&done.snapshot, done.snapshot.epoch);
    end.end = Some(RunEnd::Finish(RunFinish {
        status: RunStatus::Succeeded,
        error: None,
    }));
    db.write(end).await.unwrap();
    let third = db.claim_runs(&capped("w2")).await.unwrap().claimed;
    assert_eq!(of(&third, &busy), 1, "one slot freed, one more run");
}

async fn an_export_pages_through_every_users_runs_with_steps_and_logs(t: &TestDb) {
    let db = t.db();
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let a = user(db, "a").await;
    let b = user(db, "b").await;
    for u in [&a, &b, &a] {
        db.enqueue_run(u, &new_run(None, &["x"])).await.unwrap();
    }
    // One of them runs: its step state and log row are in the archive.
    let claimed = db
        .claim_runs(&claim("w", 1, Duration::from_secs(60)))
        .await
        .unwrap()
        .claimed
        .remove(0);
    let mut step_write = write(&claimed.snapshot, claimed.snapshot.epoch);
    step_write.logs = vec![log(
        &claimed.snapshot.run_id,
        &claimed.snapshot.user_id,
        None,
        0,
        1,
    )];
    step_write.steps = vec![(StepKey::step(0), done("x", json!({"ok": 1})))];
    db.write(step_write).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db.export_runs(since, after.clone(), 2).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some((last.created_at, last.id.0.clone()));
        seen.extend(page);
    }
    assert_eq!(seen.len(), 3, "every user's runs, each once");
    let owners: HashSet<UserId> = seen.iter().map(|(r, _)| r.user_id.clone()).collect();
    assert_eq!(owners, HashSet::from([a.clone(), b.clone()]));
    let (ran, logs) = seen
        .iter()
        .find(|(r, _)| r.id == claimed.snapshot.run_id)
        .unwrap();
    assert_eq!(ran.states[0].output, Some(json!({"ok": 1})));
    assert_eq!(logs.len(), 1);
    assert!(
        db.export_runs(chrono::Utc::now() + chrono::Duration::days(1), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
