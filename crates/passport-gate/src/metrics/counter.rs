//! The counters the layer counts on: shared atomics, cheap to clone, exported by
//! [`super::Metrics::register`] when the `prometheus` feature is on.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A monotonic counter.
#[derive(Clone, Debug, Default)]
pub struct IntCounter(Arc<AtomicU64>);

impl IntCounter {
    /// A counter at zero, not yet exported anywhere.
    pub fn unregistered() -> IntCounter {
        IntCounter::default()
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct IntGauge(Arc<AtomicI64>);

impl IntGauge {
    /// A gauge at zero, not yet exported anywhere.
    pub fn unregistered() -> IntGauge {
        IntGauge::default()
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many buckets a [`Histogram`] has (each twice the bound of the one before), plus
/// the one for everything larger.
pub const BUCKETS: usize = 16;

/// A distribution of durations in seconds over [`BUCKETS`] exponential buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
pub(super) struct HistogramCells {
    pub(super) start: f64,
    /// Cumulative only at export; here each cell counts its own bucket.
    pub(super) buckets: [AtomicU64; BUCKETS + 1],
    pub(super) sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram whose first bucket ends at `start` seconds, not yet exported anywhere.
    pub fn starting_at(start: f64) -> Histogram {
        Histogram(Arc::new(HistogramCells {
            start,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }
    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let cells = &self.0;
        let mut bound = cells.start;
        let mut i = 0;
        while i < BUCKETS && seconds > bound {
            bound *= 2.0;
            i += 1;
        }
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = (seconds.max(0.0) * 1e9) as u64;
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
    #[cfg(any(feature = "prometheus", test))]
    pub(super) fn cells(&self) -> &HistogramCells {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_observation_in_the_first_bucket_that_holds_it() {
        let h = Histogram::starting_at(0.001);
        h.observe(0.0005);
        h.observe(0.003);
        h.observe(1e9);
        let c = h.cells();
        assert_eq!(c.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(c.buckets[2].load(Ordering::Relaxed), 1);
        assert_eq!(c.buckets[BUCKETS].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 3);
    }
}
