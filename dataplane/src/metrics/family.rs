//! Metric families over small, closed label sets, resolved once at startup.
//!
//! prometheus-client's `Family` looks series up in a map behind an `RwLock`, which a request
//! would take (and could find held). Here every label combination exists from the start in a
//! flat array: a request turns its labels into indexes (they are enum discriminants) and touches
//! one atomic. The label values are only spelled out when a scrape encodes the family, and
//! series still at zero are left out of the scrape, so it lists what actually happened.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Unit;

use super::histogram::Histogram;

/// One label: its name and every value it can take, in index order.
pub type Dimension = (&'static str, &'static [&'static str]);

/// A metric that knows whether it has recorded anything yet.
pub trait Sample: EncodeMetric + std::fmt::Debug + Send + Sync + 'static {
    fn is_zero(&self) -> bool;
}

impl Sample for Counter {
    fn is_zero(&self) -> bool {
        self.get() == 0
    }
}

impl Sample for Histogram {
    fn is_zero(&self) -> bool {
        self.count() == 0
    }
}

/// A family with `D` labels; series are stored row-major in label order.
#[derive(Debug)]
pub struct Family<M, const D: usize> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    dimensions: [Dimension; D],
    series: Box<[M]>,
}

impl<M: Sample, const D: usize> Family<M, D> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        dimensions: [Dimension; D],
        mut make: impl FnMut() -> M,
    ) -> Self {
        let len = dimensions.iter().map(|(_, values)| values.len()).product();
        let series = (0..len).map(|_| make()).collect();
        Family { name, help, unit, dimensions, series }
    }

    /// The series at the given label indexes. An index past its dimension (impossible with
    /// the enums the callers use) lands on the last series rather than panicking.
    pub fn get(&self, index: [usize; D]) -> &M {
        let mut flat = 0;
        for ((_, values), i) in self.dimensions.iter().zip(index) {
            flat = flat * values.len() + i.min(values.len() - 1);
        }
        &self.series[flat.min(self.series.len() - 1)]
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

impl<M: Sample, const D: usize> Collector for Family<M, D> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(first) = self.series.first() else { return Ok(()) };
        let mut metric = encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), first.metric_type())?;
        for (flat, series) in self.series.iter().enumerate() {
            if series.is_zero() {
                continue;
            }
            let labels = self.labels(flat);
            series.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn indexes_row_major_and_scrapes_only_what_happened() {
        let family: Family<Counter, 2> = Family::new(
            "test_things",
            "Things.",
            None,
            [("a", &["x", "y"]), ("b", &["1", "2", "3"])],
            Counter::default,
        );
        family.get([1, 2]).inc();
        family.get([0, 1]).inc_by(5);
        assert_eq!(family.labels(5), [("a", "y"), ("b", "3")]);

        let family = std::sync::Arc::new(family);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(family.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("test_things_total{a=\"y\",b=\"3\"} 1\n"), "{text}");
        assert!(text.contains("test_things_total{a=\"x\",b=\"2\"} 5\n"), "{text}");
        assert_eq!(text.matches("test_things_total{").count(), 2, "zero series are left out: {text}");
    }
}
