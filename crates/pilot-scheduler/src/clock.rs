//! The clock that decides when a schedule is due. Production uses the system clock; tests use a
//! [`ManualClock`] they move by hand, so "three hours of downtime" or "the clock jumped back"
//! costs no real time and behaves the same on every run.
//!
//! Only firing reads this clock. Leases never do: their expiry is computed from the database's
//! clock by storage, so workers on machines with skewed clocks still agree on who owns a run.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A future a clock returns from [`Clock::sleep_until`].
pub type ClockSleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the scheduler reads the time and waits for it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once [`Clock::now`] has reached `deadline` (it may resolve earlier, e.g. when the
    /// time was set by hand; callers re-check [`Clock::now`]).
    fn sleep_until(&self, deadline: DateTime<Utc>) -> ClockSleep<'_>;
}

/// The system's wall clock. A sleep is a monotonic timer for the distance to the deadline, so a
/// wall-clock jump while asleep is noticed at the next wake-up (the worker never sleeps longer
/// than its idle poll interval).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> ClockSleep<'_> {
        let wait = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to; sleepers wake when it reaches their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: Mutex<DateTime<Utc>>,
    changed: watch::Sender<()>,
}

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    pub fn new(start: DateTime<Utc>) -> Self {
        let (changed, _) = watch::channel(());
        Self {
            inner: Arc::new(ManualInner {
                now: Mutex::new(start),
                changed,
            }),
        }
    }

    /// Sets the time (forwards or backwards: a clock jump).
    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .inner
            .now
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = to;
        self.inner.changed.send_replace(());
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let now = self.now();
        self.set(now.checked_add_signed(by).unwrap_or(now));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .inner
            .now
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> ClockSleep<'_> {
        let mut changed = self.inner.changed.subscribe();
        Box::pin(async move {
            while self.now() < deadline {
                if changed.changed().await.is_err() {
                    // The clock is gone; nothing will ever move it again.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[tokio::test]
    async fn manual_sleeper_wakes_only_when_the_clock_reaches_its_deadline() {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let deadline = start + chrono::Duration::seconds(60);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woke 30 s early");
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now(), deadline);
    }

    #[test]
    fn manual_clock_jumps_backwards() {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        clock.set(start - chrono::Duration::hours(1));
        assert_eq!(clock.now(), start - chrono::Duration::hours(1));
    }
}
