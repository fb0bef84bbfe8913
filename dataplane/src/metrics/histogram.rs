//! A histogram whose `observe` is a few atomic adds, never a lock.
//!
//! prometheus-client's own `Histogram` keeps its buckets behind a mutex that every observer
//! and every scrape takes. On the request path that is a lock another request (or a scrape) can
//! hold, so the data plane uses this one instead and hands the numbers to prometheus-client's
//! encoder at scrape time. A scrape may see a count that is one observation ahead of a bucket;
//! Prometheus tolerates that, and it never blocks a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending; the `+Inf` bucket is implicit (the last count).
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts, one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits, updated with a compare-and-swap loop.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { inner: Arc::new(Inner { bounds, counts, sum: AtomicU64::new(0f64.to_bits()) }) }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.inner.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.inner.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .inner
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.inner.sum.load(Ordering::Relaxed))
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.counts.iter().map(|count| count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_value_in_the_first_bucket_that_holds_it() {
        static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];
        let histogram = Histogram::new(&BOUNDS);
        for value in [0.05, 0.1, 0.5, 20.0] {
            histogram.observe(value);
        }
        let counts: Vec<u64> = histogram.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [2, 1, 0, 1]);
        assert_eq!(histogram.count(), 4);
        assert!((histogram.sum() - 20.65).abs() < 1e-9);
    }
}
