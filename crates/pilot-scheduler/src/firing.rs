//! One firing pass: the storage transaction that claims due schedules, with the planner that
//! decides what each does (misfire, overlap, next tick), and the metrics it feeds once the
//! transaction committed (never before: a rolled-back pass changed nothing).

use chrono::{DateTime, Utc};
use pilot_storage::{Database, DueSchedule, FireDecision, FiringReport, StorageError};
use tracing::{debug, error, info};

use crate::fire_plan::{FireInput, plan_fires};
use crate::metrics::SchedulerMetrics;
use pilot_cron::CronSchedule;

/// Fires what is due at `now` (at most `limit` schedules) and records it in `metrics`.
pub(crate) async fn fire_pass(
    db: &Database,
    now: DateTime<Utc>,
    limit: usize,
    misfire_threshold: std::time::Duration,
    metrics: &SchedulerMetrics,
) -> Result<FiringReport, StorageError> {
    let threshold = chrono::Duration::from_std(misfire_threshold).unwrap_or(chrono::Duration::MAX);
    let report = db
        .fire_due_schedules(now, limit, move |due| decide(due, now, threshold))
        .await?;
    for run in &report.fired {
        let lag = (now - run.scheduled_for)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6;
        metrics.observe_fire_lag(lag);
        debug!(run_id = %run.run_id, schedule_id = %run.schedule_id, scheduled_for = %run.scheduled_for, "schedule fired");
    }
    metrics.missed("misfire", report.missed_misfire);
    metrics.missed("overlap", report.missed_overlap);
    metrics.missed("paused", report.missed_paused);
    if report.missed_misfire > 0
        || report.missed_overlap > 0
        || report.missed_paused > 0
        || report.duplicates > 0
        || report.orphaned > 0
    {
        info!(
            fired = report.fired.len(),
            missed_misfire = report.missed_misfire,
            missed_overlap = report.missed_overlap,
            missed_paused = report.missed_paused,
            duplicates = report.duplicates,
            orphaned = report.orphaned,
            "firing pass dropped ticks"
        );
    }
    Ok(report)
}

/// The planner handed to the firing transaction.
fn decide(
    due: &DueSchedule,
    now: DateTime<Utc>,
    misfire_threshold: chrono::Duration,
) -> FireDecision {
    let cron = match CronSchedule::parse(&due.cron, &due.timezone) {
        Ok(cron) => cron,
        Err(e) => {
            // Schedules are validated when stored, so this is a corrupt row: stop it firing
            // rather than retrying it on every pass.
            error!(schedule_id = %due.id, error = %e, "stored cron expression no longer parses; schedule stopped");
            return FireDecision {
                next_run_at: None,
                ..FireDecision::default()
            };
        }
    };
    let plan = plan_fires(&FireInput {
        cron: &cron,
        next_run_at: due.next_run_at,
        now,
        misfire: due.misfire,
        grace: chrono::Duration::seconds(due.grace_seconds.max(0)),
        overlap: due.overlap,
        previous_run_active: due.previous_run_active,
        misfire_threshold,
    });
    FireDecision {
        fires: plan.fires,
        next_run_at: plan.next_run_at,
        missed_misfire: plan.missed_misfire,
        missed_overlap: plan.missed_overlap,
    }
}
