//! A histogram whose `observe` is an atomic add to a bucket and one to the sum, never a lock.
//!
//! prometheus-client's own `Histogram` keeps its buckets behind a mutex that every observer
//! and every scrape takes. On the request path that is a lock another request (or a scrape) can
//! hold, so the data plane keeps its histograms in sharded cells ([`super::shards`]) instead and
//! hands the numbers to prometheus-client's encoder at scrape time. The sum stays an `f64` (in
//! seconds, as exposed), added with a compare-and-swap loop that only the shard's own worker
//! runs, so it does not retry. A scrape may see a count that is one observation ahead of a
//! bucket or of the sum; Prometheus tolerates that, and it never blocks a request.

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::family::Kind;
use super::shards::Cells;

/// The layout of one histogram series in its family's cells: one count per bucket (not
/// cumulative; the `+Inf` bucket is the last), then the sum of observations as `f64` bits.
#[derive(Debug, Clone, Copy)]
pub struct Histogram {
    /// Upper bounds, ascending; the `+Inf` bucket is implicit.
    bounds: &'static [f64],
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram { bounds }
    }

    /// The sum's cell, after the buckets' (`bounds` and `+Inf`).
    fn sum_cell(&self) -> usize {
        self.bounds.len() + 1
    }

    /// Records `value` in `shard` of the series whose cells start at `first`.
    pub fn observe(&self, cells: &Cells, shard: usize, first: usize, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        cells.add(shard, first + bucket, 1);
        cells.add_f64(shard, first + self.sum_cell(), value);
    }

    fn buckets(&self, cells: &Cells, first: usize) -> impl Iterator<Item = (f64, u64)> {
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        bounds.enumerate().map(move |(bucket, bound)| (bound, cells.sum(first + bucket)))
    }

    pub fn count(&self, cells: &Cells, first: usize) -> u64 {
        self.buckets(cells, first).map(|(_, count)| count).sum()
    }

    pub fn sum(&self, cells: &Cells, first: usize) -> f64 {
        cells.sum_f64(first + self.sum_cell())
    }
}

impl Kind for Histogram {
    fn width(&self) -> usize {
        self.sum_cell() + 1
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_zero(&self, cells: &Cells, first: usize) -> bool {
        self.count(cells, first) == 0
    }

    fn encode(&self, cells: &Cells, first: usize, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self.buckets(cells, first).collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(cells, first), count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    #[test]
    fn counts_each_value_in_the_first_bucket_that_holds_it() {
        let histogram = Histogram::new(&BOUNDS);
        let cells = Cells::new(1, histogram.width());
        for value in [0.05, 0.1, 0.5, 20.0] {
            histogram.observe(&cells, 0, 0, value);
        }
        let counts: Vec<u64> = histogram.buckets(&cells, 0).map(|(_, count)| count).collect();
        assert_eq!(counts, [2, 1, 0, 1]);
        assert_eq!(histogram.count(&cells, 0), 4);
        assert!((histogram.sum(&cells, 0) - 20.65).abs() < 1e-9);
    }

    #[test]
    fn shards_observed_from_many_threads_sum_to_every_observation() {
        let histogram = Histogram::new(&BOUNDS);
        // Two series side by side, four shards, eight threads (two per shard).
        let cells = std::sync::Arc::new(Cells::new(4, 2 * histogram.width()));
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        histogram.observe(&cells, thread % 4, histogram.width(), 0.5);
                        histogram.observe(&cells, thread % 4, histogram.width(), 0.125);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(histogram.count(&cells, 0), 0, "the first series saw nothing");
        let second = histogram.width();
        let counts: Vec<u64> = histogram.buckets(&cells, second).map(|(_, count)| count).collect();
        assert_eq!(counts, [0, 16_000, 0, 0]);
        assert_eq!(histogram.sum(&cells, second), 8.0 * 1000.0 * 0.625);
    }
}
