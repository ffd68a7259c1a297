//! Retry timing: the exponential backoff of a [`RetryPolicy`], its jitter, and the step's total
//! time budget that a server's `Retry-After` must fit in.
//!
//! The budget is what the policy could take in the worst case without a server-given delay:
//! `max_attempts` per-attempt timeouts plus every nominal (un-jittered) backoff delay. A computed
//! backoff therefore always fits; a `Retry-After` is honoured only while it leaves time in it.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use pilot_core::RetryPolicy;

/// The most attempts any policy gets, whatever it says (validation enforces the same bound).
pub(crate) const MAX_ATTEMPTS: u32 = 10;

/// The attempts a policy allows, at least 1 and at most [`MAX_ATTEMPTS`].
pub(crate) fn attempts(policy: &RetryPolicy) -> u32 {
    policy.max_attempts.clamp(1, MAX_ATTEMPTS)
}

/// The nominal delay after failed attempt `n` (1-based): `min(cap, base * factor^(n-1))`.
/// Nonsense factors (negative, NaN) count as 1.
pub(crate) fn nominal_delay(policy: &RetryPolicy, n: u32) -> Duration {
    let factor = if policy.factor.is_finite() && policy.factor >= 1.0 {
        policy.factor
    } else {
        1.0
    };
    let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
    let ms = policy.base_ms as f64 * factor.powi(exponent);
    let cap = policy.cap_ms as f64;
    // `as` saturates for floats, and the cap bounds the value anyway.
    Duration::from_millis(if ms.is_finite() { ms.min(cap) } else { cap } as u64)
}

/// The delay after failed attempt `n`, jittered when the policy asks: uniform between half and
/// all of the nominal delay. `seed` varies per run and step so concurrent runs spread out.
pub(crate) fn delay(policy: &RetryPolicy, n: u32, seed: u64) -> Duration {
    let nominal = nominal_delay(policy, n);
    if !policy.jitter {
        return nominal;
    }
    let ms = u64::try_from(nominal.as_millis()).unwrap_or(u64::MAX);
    let half = ms / 2;
    let spread = ms - half;
    let random = RandomState::new().hash_one((seed, n));
    Duration::from_millis(half + random % spread.saturating_add(1))
}

/// A step's total budget: every attempt's timeout plus every nominal delay between them.
pub(crate) fn step_budget(policy: &RetryPolicy, attempt_timeout: Duration) -> Duration {
    let n = attempts(policy);
    let delays = (1..n).fold(Duration::ZERO, |sum, k| {
        sum.saturating_add(nominal_delay(policy, k))
    });
    attempt_timeout.saturating_mul(n).saturating_add(delays)
}

/// A seed for the jitter of one step of one run.
pub(crate) fn seed(run_id: &str, step_index: usize) -> u64 {
    let mut hasher = DefaultHasher::new();
    (run_id, step_index).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        max_attempts: u32,
        base_ms: u64,
        factor: f64,
        cap_ms: u64,
        jitter: bool,
    ) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_ms,
            factor,
            cap_ms,
            jitter,
        }
    }

    #[test]
    fn nominal_delays() {
        let check = |p: RetryPolicy, n: u32, expect_ms: u64| {
            assert_eq!(
                nominal_delay(&p, n),
                Duration::from_millis(expect_ms),
                "{p:?} n={n}"
            );
        };
        check(RetryPolicy::default(), 1, 500);
        check(RetryPolicy::default(), 2, 1000);
        check(RetryPolicy::default(), 3, 2000);
        check(RetryPolicy::default(), 7, 30_000);
        check(RetryPolicy::default(), 60, 30_000);
        check(policy(3, 100, 3.0, 10_000, false), 3, 900);
        check(policy(3, 100, f64::NAN, 10_000, false), 3, 100);
        check(policy(3, 100, -2.0, 10_000, false), 3, 100);
        check(policy(3, 100, f64::INFINITY, 10_000, false), 2, 100);
        check(policy(3, u64::MAX, 2.0, 5, false), 1, 5);
        check(policy(3, 0, 2.0, 5, false), 4, 0);
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        let p = RetryPolicy::default();
        for n in 1..8 {
            let nominal = nominal_delay(&p, n);
            for s in 0..50 {
                let d = delay(&p, n, s);
                assert!(
                    d <= nominal && d >= nominal / 2,
                    "n={n}: {d:?} vs {nominal:?}"
                );
            }
        }
        let fixed = policy(3, 500, 2.0, 30_000, false);
        assert_eq!(delay(&fixed, 2, 7), Duration::from_millis(1000));
    }

    #[test]
    fn attempts_are_bounded() {
        assert_eq!(attempts(&policy(0, 1, 2.0, 1, false)), 1);
        assert_eq!(attempts(&policy(4, 1, 2.0, 1, false)), 4);
        assert_eq!(attempts(&policy(1000, 1, 2.0, 1, false)), MAX_ATTEMPTS);
    }

    #[test]
    fn budget_adds_timeouts_and_delays() {
        let budget = step_budget(&RetryPolicy::default(), Duration::from_secs(30));
        assert_eq!(budget, Duration::from_millis(90_000 + 500 + 1000));
        let single = step_budget(&policy(1, 500, 2.0, 30_000, true), Duration::from_secs(2));
        assert_eq!(single, Duration::from_secs(2));
    }
}
