//! Metric cells sharded per worker thread, summed when a scrape reads them.
//!
//! Every proxied request adds to a dozen counters, histogram buckets and gauges. Were those
//! cells shared by all workers, each add would be a `lock xadd` on a cache line another core
//! wrote a moment ago: the line bounces between cores on every request, which costs each
//! add a hundred cycles or more once two workers are busy. Here each worker has its own copy
//! of a metric's cells (its shard) and adds only to it, so the adds stay uncontended in its
//! core's cache; a scrape, rare by comparison, sums the shards. A shard's cells are contiguous
//! and start on a 64-byte line of their own, so no two shards ever share a line; the cells
//! within one shard are packed (a series costs 8 bytes per shard, not a line).
//!
//! Threads that are not workers (the background runtime, tests) use shard `index % shards`
//! like any worker whose index is past the shard count; every update is an atomic
//! read-modify-write, so two threads sharing a shard still count right, only less cheaply.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cells in one 64-byte cache line.
const CELLS_PER_LINE: usize = 8;

/// One cache line of cells; the alignment keeps a shard's first line from sharing its cache
/// line with the previous shard's last one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line([AtomicU64; CELLS_PER_LINE]);

/// `width` cells per shard, stored shard-major.
#[derive(Debug)]
pub struct Cells {
    lines: Box<[Line]>,
    lines_per_shard: usize,
    shards: usize,
}

impl Cells {
    /// `width` zeroed cells in each of `shards` shards (at least one).
    pub fn new(shards: usize, width: usize) -> Self {
        let shards = shards.max(1);
        let lines_per_shard = width.div_ceil(CELLS_PER_LINE).max(1);
        let lines = (0..shards * lines_per_shard).map(|_| Line::default()).collect();
        Cells { lines, lines_per_shard, shards }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Cell `index` of `shard`. Out-of-range indexes (a bug in a caller) land on a valid cell
    /// rather than panicking on the request path.
    fn cell(&self, shard: usize, index: usize) -> &AtomicU64 {
        let line = shard * self.lines_per_shard + index / CELLS_PER_LINE;
        let line = &self.lines[line.min(self.lines.len() - 1)];
        &line.0[index % CELLS_PER_LINE]
    }

    /// Adds `n` (wrapping) to cell `index` of `shard`: a signed gauge adds a negative delta
    /// as its two's complement.
    pub fn add(&self, shard: usize, index: usize, n: u64) {
        self.cell(shard, index).fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `value` to a cell holding the bits of an `f64` (all-zero bits are `0.0`). A
    /// compare-and-swap loop, uncontended when only the shard's own worker writes it.
    pub fn add_f64(&self, shard: usize, index: usize, value: f64) {
        let _ = self
            .cell(shard, index)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    /// Cell `index` summed over every shard (wrapping: gauges read it as `i64`).
    pub fn sum(&self, index: usize) -> u64 {
        (0..self.shards).fold(0u64, |sum, shard| sum.wrapping_add(self.cell(shard, index).load(Ordering::Relaxed)))
    }

    /// An `f64` cell summed over every shard.
    pub fn sum_f64(&self, index: usize) -> f64 {
        (0..self.shards).map(|shard| f64::from_bits(self.cell(shard, index).load(Ordering::Relaxed))).sum()
    }
}

/// The shard the calling thread writes, out of `shards`: its worker index (0 on a thread that
/// is not a worker), wrapped.
pub fn current(shards: usize) -> usize {
    let worker = crate::server::workers::current();
    // The division only when it is needed: with one shard per worker it never is.
    if worker < shards { worker } else { worker % shards.max(1) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn shards_start_on_lines_of_their_own() {
        let cells = Cells::new(3, 10);
        assert_eq!(cells.lines.len(), 6, "10 cells take two lines per shard");
        for shard in 0..3 {
            let first = std::ptr::from_ref(cells.cell(shard, 0)) as usize;
            assert_eq!(first % 64, 0, "shard {shard} starts a cache line");
            let last = std::ptr::from_ref(cells.cell(shard, 9)) as usize;
            assert_eq!(last - first, 9 * 8, "a shard's cells are packed");
        }
        let next = std::ptr::from_ref(cells.cell(1, 0)) as usize;
        assert_eq!(next - std::ptr::from_ref(cells.cell(0, 0)) as usize, 128);
    }

    #[test]
    fn sums_every_shards_adds_across_threads() {
        let cells = Arc::new(Cells::new(4, 3));
        // Six threads over four shards: two pairs of threads share a shard.
        let threads: Vec<_> = (0..6)
            .map(|thread| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        cells.add(thread % 4, 0, 1);
                        cells.add(thread % 4, 1, 3);
                        cells.add(thread % 4, 2, (-1i64) as u64);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(cells.sum(0), 60_000);
        assert_eq!(cells.sum(1), 180_000);
        assert_eq!(cells.sum(2) as i64, -60_000, "a signed delta sums as two's complement");
    }

    #[test]
    fn f64_cells_add_per_shard_and_sum() {
        let cells = Arc::new(Cells::new(2, 1));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let cells = cells.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        cells.add_f64(thread % 2, 0, 0.25);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(cells.sum_f64(0), 1000.0, "no update is lost between threads sharing a shard");
    }

    #[test]
    fn every_thread_maps_to_a_shard() {
        use crate::server::workers::as_worker;
        assert_eq!(current(1), 0, "a thread that is not a worker: shard 0");
        assert_eq!(current(4), 0);
        assert_eq!(as_worker(3, || current(4)), 3, "one shard per worker");
        assert_eq!(as_worker(5, || current(4)), 1, "workers past the shards wrap");
        assert_eq!(as_worker(5, || current(1)), 0);
    }
}
