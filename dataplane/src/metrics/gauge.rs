//! A gauge kept as one signed count per worker shard ([`super::shards`]), summed at scrape.
//!
//! A request's gauges (`in_flight`, `streams_open`) go up when it starts and down when it ends,
//! each on the worker serving it; one shared `AtomicI64` would bounce between cores on both.
//! Each shard holds a running delta instead (it may go negative on a thread that only ever
//! decrements, when a request ends on another thread than it started on, as only tests do);
//! the sum over the shards is the gauge's value.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;

use super::shards::Cells;

/// Cheap to clone: clones share the shards.
#[derive(Debug, Clone)]
pub struct Gauge {
    cells: Arc<Cells>,
}

impl Gauge {
    pub fn new(shards: usize) -> Self {
        Gauge { cells: Arc::new(Cells::new(shards, 1)) }
    }

    /// Adds `delta` in `shard` (see [`shards::current`]).
    pub fn add(&self, shard: usize, delta: i64) {
        // Two's complement: a wrapping add of the bits is a signed add.
        self.cells.add(shard, 0, delta as u64);
    }

    /// The gauge's value: every shard's delta, summed.
    pub fn get(&self) -> i64 {
        self.cells.sum(0) as i64
    }
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ups_and_downs_in_different_shards_sum_to_the_value() {
        let gauge = Gauge::new(3);
        // Up in one shard per thread, down in others: a shard's own count is off, the sum is not.
        let threads: Vec<_> = (0..6)
            .map(|thread| {
                let gauge = gauge.clone();
                std::thread::spawn(move || {
                    let delta = if thread < 4 { 1 } else { -1 };
                    (0..1000).for_each(|_| gauge.add(thread % 3, delta));
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(gauge.get(), 2000);
        gauge.add(2, -2001);
        assert_eq!(gauge.get(), -1);
    }
}
