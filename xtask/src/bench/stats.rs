//! Latency samples and their percentiles (nearest rank, so every reported value is one that was
//! measured).

use std::time::Duration;

use serde::Serialize;

/// A set of latency samples in microseconds, sorted once when summarised.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    /// Adds one sample.
    pub(crate) fn push(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds one sample given in milliseconds (from database timestamps).
    pub(crate) fn push_ms(&mut self, ms: f64) {
        let micros = (ms * 1000.0).round();
        // Negative differences (clock resolution) count as zero.
        self.micros
            .push(if micros > 0.0 { micros as u64 } else { 0 });
    }

    /// Moves another set's samples into this one.
    pub(crate) fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    /// The number of samples.
    pub(crate) fn len(&self) -> usize {
        self.micros.len()
    }

    /// The summary: count, mean, p50, p90, p99, max, in milliseconds.
    pub(crate) fn summary(&self) -> Summary {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let ms = |micros: u64| micros as f64 / 1000.0;
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(|&m| m as f64).sum::<f64>() / sorted.len() as f64 / 1000.0
        };
        Summary {
            count: sorted.len() as u64,
            mean_ms: mean,
            p50_ms: ms(nearest_rank(&sorted, 50.0)),
            p90_ms: ms(nearest_rank(&sorted, 90.0)),
            p99_ms: ms(nearest_rank(&sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
        }
    }
}

/// A latency distribution's summary, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p` percent
/// of the values at or below it; 0 for no values.
pub(crate) fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        let check = |values: &[u64], p: f64, expect: u64| {
            assert_eq!(nearest_rank(values, p), expect, "p{p} of {values:?}")
        };
        check(&hundred, 50.0, 50);
        check(&hundred, 99.0, 99);
        check(&hundred, 99.9, 100);
        check(&hundred, 100.0, 100);
        check(&hundred, 0.0, 1);
        check(&[7], 99.0, 7);
        check(&[1, 2], 50.0, 1);
        check(&[1, 2], 51.0, 2);
        check(&[], 50.0, 0);
    }

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut samples = Samples::default();
        for ms in [3, 1, 2, 10] {
            samples.push(Duration::from_millis(ms));
        }
        let mut more = Samples::default();
        more.push_ms(4.0);
        more.push_ms(-0.2);
        samples.merge(more);
        let s = samples.summary();
        assert_eq!(s.count, 6);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (2.0, 10.0, 10.0));
        assert!((s.mean_ms - 20.0 / 6.0).abs() < 1e-9);
        assert_eq!(Samples::default().summary(), Summary::default());
    }
}
