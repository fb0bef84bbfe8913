//! Metric families over small, closed label sets, resolved once at startup.
//!
//! prometheus-client's `Family` looks series up in a map behind an `RwLock`, which a request
//! would take (and could find held). Here every label combination exists from the start in a
//! flat array of cells, sharded per worker ([`super::shards`]): a request turns its labels into
//! indexes (they are enum discriminants) and adds to its own worker's cells. The label values
//! are only spelled out when a scrape encodes the family, summing the shards, and series still
//! at zero are left out of the scrape, so it lists what actually happened.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::shards::Cells;

/// One label: its name and every value it can take, in index order.
pub type Dimension = (&'static str, &'static [&'static str]);

/// What a family's series are: how many cells each takes and how a scrape reads them.
pub trait Kind: std::fmt::Debug + Send + Sync + 'static {
    fn width(&self) -> usize;
    fn metric_type(&self) -> MetricType;
    /// Whether the series whose cells start at `first` has recorded nothing yet.
    fn is_zero(&self, cells: &Cells, first: usize) -> bool;
    fn encode(&self, cells: &Cells, first: usize, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error>;
}

/// A counter: one cell per series.
#[derive(Debug, Clone, Copy)]
pub struct Counter;

impl Kind for Counter {
    fn width(&self) -> usize {
        1
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }

    fn is_zero(&self, cells: &Cells, first: usize) -> bool {
        cells.sum(first) == 0
    }

    fn encode(&self, cells: &Cells, first: usize, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&cells.sum(first), None)
    }
}

/// A family with `D` labels; series are stored row-major in label order, `kind.width()` cells
/// each, in every shard.
#[derive(Debug)]
pub struct Family<K, const D: usize> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    dimensions: [Dimension; D],
    kind: K,
    series: usize,
    cells: Cells,
}

impl<K: Kind, const D: usize> Family<K, D> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        dimensions: [Dimension; D],
        kind: K,
        shards: usize,
    ) -> Self {
        let series = dimensions.iter().map(|(_, values)| values.len()).product();
        let cells = Cells::new(shards, series * kind.width());
        Family { name, help, unit, dimensions, kind, series, cells }
    }

    /// The first cell of the series at the given label indexes. An index past its dimension
    /// (impossible with the enums the callers use) lands on the last series rather than
    /// panicking.
    fn first(&self, index: [usize; D]) -> usize {
        let mut flat = 0;
        for ((_, values), i) in self.dimensions.iter().zip(index) {
            flat = flat * values.len() + i.min(values.len() - 1);
        }
        flat.min(self.series.saturating_sub(1)) * self.kind.width()
    }

    /// The label values of the series at `flat`.
    fn labels(&self, mut flat: usize) -> [(&'static str, &'static str); D] {
        let mut labels = [("", ""); D];
        for (slot, (name, values)) in labels.iter_mut().zip(&self.dimensions).rev() {
            *slot = (name, values[flat % values.len()]);
            flat /= values.len();
        }
        labels
    }
}

impl<const D: usize> Family<Counter, D> {
    /// Adds `n` to the series at `index`, in `shard`.
    pub fn inc_by(&self, shard: usize, index: [usize; D], n: u64) {
        self.cells.add(shard, self.first(index), n);
    }

    /// The series at `index`, summed over the shards.
    #[cfg(test)]
    pub fn get(&self, index: [usize; D]) -> u64 {
        self.cells.sum(self.first(index))
    }
}

impl<const D: usize> Family<super::histogram::Histogram, D> {
    /// Records `value` in the series at `index`, in `shard`.
    pub fn observe(&self, shard: usize, index: [usize; D], value: f64) {
        self.kind.observe(&self.cells, shard, self.first(index), value);
    }
}

impl<K: Kind, const D: usize> Collector for Family<K, D> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.series == 0 {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind.metric_type())?;
        for flat in 0..self.series {
            let first = flat * self.kind.width();
            if self.kind.is_zero(&self.cells, first) {
                continue;
            }
            let labels = self.labels(flat);
            self.kind.encode(&self.cells, first, metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn things(shards: usize) -> Family<Counter, 2> {
        Family::new("test_things", "Things.", None, [("a", &["x", "y"]), ("b", &["1", "2", "3"])], Counter, shards)
    }

    #[test]
    fn indexes_row_major_and_scrapes_only_what_happened() {
        let family = things(1);
        family.inc_by(0, [1, 2], 1);
        family.inc_by(0, [0, 1], 5);
        assert_eq!(family.labels(5), [("a", "y"), ("b", "3")]);
        assert_eq!(family.first([1, 2]), 5);

        let family = std::sync::Arc::new(family);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(family.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("test_things_total{a=\"y\",b=\"3\"} 1\n"), "{text}");
        assert!(text.contains("test_things_total{a=\"x\",b=\"2\"} 5\n"), "{text}");
        assert_eq!(text.matches("test_things_total{").count(), 2, "zero series are left out: {text}");
    }

    #[test]
    fn a_series_sums_what_every_shard_added_from_many_threads() {
        let family = std::sync::Arc::new(things(3));
        let threads: Vec<_> = (0..6)
            .map(|thread| {
                let family = family.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        family.inc_by(thread % 3, [1, 0], 1);
                        family.inc_by(thread % 3, [0, 2], 2);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(family.get([1, 0]), 6000);
        assert_eq!(family.get([0, 2]), 12_000);
        assert_eq!(family.get([1, 1]), 0);

        let mut registry = Registry::default();
        registry.register_collector(Box::new(family));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("test_things_total{a=\"y\",b=\"1\"} 6000\n"), "{text}");
        assert!(text.contains("test_things_total{a=\"x\",b=\"3\"} 12000\n"), "{text}");
        assert_eq!(text.matches("test_things_total{").count(), 2, "{text}");
    }
}
