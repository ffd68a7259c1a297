//! What one due schedule does at one firing pass: which ticks become runs, how many are dropped
//! and why, and when it is due next. Pure, so every policy is tested without a database; the
//! firing transaction in storage calls it with the schedule it has locked.
//!
//! The rules (docs/OPERATIONS.md, "Misfires and overlap"):
//! - A tick is *on time* when it is at most the misfire threshold old at the pass (a few seconds
//!   of scheduler latency are normal); every on-time tick becomes a run.
//! - Older ticks *misfired* (the scheduler was down, or the clock jumped forward). With `skip`
//!   they are dropped. With `coalesce` (the default) they collapse into one catch-up run for the
//!   latest of them, provided that one is inside the grace window and no on-time tick already
//!   runs after the downtime.
//! - With the overlap policy `skip`, a tick whose schedule still has a queued or running run is
//!   dropped; of several ticks fired in one pass only the first runs (the others would overlap it).
//! - The next due time is the first tick strictly after the pass, so it only ever moves forward:
//!   a clock that jumps back finds nothing due and never fires a tick twice.

use chrono::{DateTime, Utc};
use pilot_storage::{MisfirePolicy, OverlapPolicy};

use pilot_cron::CronSchedule;

/// Most ticks enumerated one by one before a long downtime is skipped over in one jump.
const MAX_ENUMERATED: u64 = 10_000;

/// The facts about one due schedule that decide what it does.
#[derive(Debug, Clone)]
pub(crate) struct FireInput<'a> {
    pub(crate) cron: &'a CronSchedule,
    /// The first tick not yet handled (the stored `next_run_at`).
    pub(crate) next_run_at: DateTime<Utc>,
    pub(crate) now: DateTime<Utc>,
    pub(crate) misfire: MisfirePolicy,
    pub(crate) grace: chrono::Duration,
    pub(crate) overlap: OverlapPolicy,
    /// Whether a run of this schedule is queued or running.
    pub(crate) previous_run_active: bool,
    pub(crate) misfire_threshold: chrono::Duration,
}

/// What the pass does with the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirePlan {
    /// The ticks to create runs for (each run's `scheduled_for`), oldest first.
    pub(crate) fires: Vec<DateTime<Utc>>,
    /// The first tick after the pass; `None` when the expression never fires again.
    pub(crate) next_run_at: Option<DateTime<Utc>>,
    /// Ticks dropped by the misfire policy (a lower bound after a very long downtime).
    pub(crate) missed_misfire: u64,
    /// Ticks dropped by the overlap policy.
    pub(crate) missed_overlap: u64,
}

/// Decides what the pass does; see the module documentation for the rules.
pub(crate) fn plan_fires(input: &FireInput<'_>) -> FirePlan {
    let now = input.now;
    if input.next_run_at > now {
        // Not due (the clock moved back since the schedule was read): nothing changes.
        return FirePlan {
            fires: Vec::new(),
            next_run_at: Some(input.next_run_at),
            missed_misfire: 0,
            missed_overlap: 0,
        };
    }
    // Ticks older than this misfired.
    let late_edge = now - input.misfire_threshold;
    let mut on_time = Vec::new();
    let mut misfired = 0u64;
    let mut latest_misfired = None;
    let mut enumerated = 0u64;
    let mut cursor = Some(input.next_run_at);
    while let Some(tick) = cursor.filter(|t| *t <= now) {
        if now - tick > input.misfire_threshold {
            misfired += 1;
            latest_misfired = Some(tick);
        } else {
            on_time.push(tick);
        }
        enumerated += 1;
        cursor = if enumerated.is_multiple_of(MAX_ENUMERATED) && tick < late_edge {
            // A very long downtime: halve the distance to the last misfired tick (the only old
            // one that matters) and go on from there. The ticks jumped over are missed too, but
            // not counted one by one.
            input.cron.next_after(tick + (late_edge - tick) / 2)
        } else {
            input.cron.next_after(tick)
        };
    }
    let next_run_at = cursor;

    let catch_up = latest_misfired.filter(|t| {
        input.misfire == MisfirePolicy::Coalesce && on_time.is_empty() && now - *t <= input.grace
    });
    let mut fires = match catch_up {
        Some(tick) => {
            misfired -= 1;
            vec![tick]
        }
        None => on_time,
    };

    let mut missed_overlap = 0u64;
    if input.overlap == OverlapPolicy::Skip && !fires.is_empty() {
        let keep = usize::from(!input.previous_run_active);
        missed_overlap = (fires.len() - keep) as u64;
        fires.truncate(keep);
    }
    FirePlan {
        fires,
        next_run_at,
        missed_misfire: misfired,
        missed_overlap,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 10, h, m, s).unwrap()
    }

    struct Case {
        cron: &'static str,
        next_run_at: DateTime<Utc>,
        now: DateTime<Utc>,
        misfire: MisfirePolicy,
        grace_s: i64,
        overlap: OverlapPolicy,
        active: bool,
    }

    impl Case {
        fn new(cron: &'static str, next_run_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
            Self {
                cron,
                next_run_at,
                now,
                misfire: MisfirePolicy::Coalesce,
                grace_s: 3600,
                overlap: OverlapPolicy::Allow,
                active: false,
            }
        }
    }

    fn check(case: Case, fires: &[DateTime<Utc>], next: Option<DateTime<Utc>>, missed: (u64, u64)) {
        let cron = CronSchedule::parse(case.cron, "UTC").unwrap();
        let plan = plan_fires(&FireInput {
            cron: &cron,
            next_run_at: case.next_run_at,
            now: case.now,
            misfire: case.misfire,
            grace: chrono::Duration::seconds(case.grace_s),
            overlap: case.overlap,
            previous_run_active: case.active,
            misfire_threshold: chrono::Duration::seconds(15),
        });
        assert_eq!(plan.fires, fires, "fires of {}", case.cron);
        assert_eq!(plan.next_run_at, next, "next_run_at of {}", case.cron);
        assert_eq!(
            (plan.missed_misfire, plan.missed_overlap),
            missed,
            "missed of {}",
            case.cron
        );
    }

    #[test]
    fn an_on_time_tick_fires_once_and_advances() {
        check(
            Case::new("0 * * * *", at(10, 0, 0), at(10, 0, 0)),
            &[at(10, 0, 0)],
            Some(at(11, 0, 0)),
            (0, 0),
        );
        // A few seconds of latency is not a misfire.
        check(
            Case::new("0 * * * *", at(10, 0, 0), at(10, 0, 14)),
            &[at(10, 0, 0)],
            Some(at(11, 0, 0)),
            (0, 0),
        );
    }

    #[test]
    fn nothing_is_due_before_next_run_at() {
        check(
            Case::new("0 * * * *", at(10, 0, 0), at(9, 59, 59)),
            &[],
            Some(at(10, 0, 0)),
            (0, 0),
        );
    }

    #[test]
    fn a_short_stall_fires_every_tick_of_a_frequent_schedule() {
        // An every-second schedule whose scheduler stalled 3 s: 4 on-time ticks, no gap.
        let ticks = [at(10, 0, 0), at(10, 0, 1), at(10, 0, 2), at(10, 0, 3)];
        check(
            Case::new("* * * * * *", at(10, 0, 0), at(10, 0, 3)),
            &ticks,
            Some(at(10, 0, 4)),
            (0, 0),
        );
    }

    #[test]
    fn coalesce_runs_one_catch_up_for_the_latest_missed_tick() {
        // Down from 09:30 to 12:30: the 10:00, 11:00 and 12:00 ticks were missed.
        check(
            Case::new("0 * * * *", at(10, 0, 0), at(12, 30, 0)),
            &[at(12, 0, 0)],
            Some(at(13, 0, 0)),
            (2, 0),
        );
    }

    #[test]
    fn coalesce_outside_the_grace_window_runs_nothing() {
        let mut case = Case::new("0 * * * *", at(10, 0, 0), at(12, 30, 0));
        case.grace_s = 600;
        check(case, &[], Some(at(13, 0, 0)), (3, 0));
    }

    #[test]
    fn coalesce_adds_no_catch_up_when_a_tick_is_on_time() {
        // Back up at 12:00:05: 12:00 runs on time and stands for the missed 10:00 and 11:00.
        check(
            Case::new("0 * * * *", at(10, 0, 0), at(12, 0, 5)),
            &[at(12, 0, 0)],
            Some(at(13, 0, 0)),
            (2, 0),
        );
    }

    #[test]
    fn skip_drops_every_missed_tick() {
        let mut case = Case::new("0 * * * *", at(10, 0, 0), at(12, 30, 0));
        case.misfire = MisfirePolicy::Skip;
        check(case, &[], Some(at(13, 0, 0)), (3, 0));
        let mut case = Case::new("0 * * * *", at(10, 0, 0), at(12, 0, 5));
        case.misfire = MisfirePolicy::Skip;
        check(case, &[at(12, 0, 0)], Some(at(13, 0, 0)), (2, 0));
    }

    #[test]
    fn overlap_skip_drops_ticks_while_a_run_is_active() {
        let mut case = Case::new("0 * * * *", at(10, 0, 0), at(10, 0, 1));
        case.overlap = OverlapPolicy::Skip;
        case.active = true;
        check(case, &[], Some(at(11, 0, 0)), (0, 1));
        // Several on-time ticks in one pass: only the first runs, the rest would overlap it.
        let mut case = Case::new("* * * * * *", at(10, 0, 0), at(10, 0, 2));
        case.overlap = OverlapPolicy::Skip;
        check(case, &[at(10, 0, 0)], Some(at(10, 0, 3)), (0, 2));
    }

    #[test]
    fn overlap_allow_ignores_an_active_run() {
        let mut case = Case::new("0 * * * *", at(10, 0, 0), at(10, 0, 1));
        case.active = true;
        check(case, &[at(10, 0, 0)], Some(at(11, 0, 0)), (0, 0));
    }

    #[test]
    fn a_very_long_downtime_jumps_to_the_ticks_that_matter() {
        // An every-second schedule down for two days: the catch-up is the latest missed tick,
        // and the pass stays cheap.
        let start = Utc.with_ymd_and_hms(2025, 3, 8, 10, 0, 0).unwrap();
        let now = at(10, 0, 30);
        let cron = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let plan = plan_fires(&FireInput {
            cron: &cron,
            next_run_at: start,
            now,
            misfire: MisfirePolicy::Coalesce,
            grace: chrono::Duration::seconds(3600),
            overlap: OverlapPolicy::Allow,
            previous_run_active: false,
            misfire_threshold: chrono::Duration::seconds(15),
        });
        // The last 16 ticks (10:00:15 to 10:00:30) are on time.
        assert_eq!(plan.fires.len(), 16);
        assert_eq!(plan.fires.first(), Some(&at(10, 0, 15)));
        assert_eq!(plan.next_run_at, Some(at(10, 0, 31)));
        assert!(
            plan.missed_misfire >= 10_000,
            "missed {}",
            plan.missed_misfire
        );
    }
}
