//! A figure measured once per round, reported as its median and its range over the rounds.
//!
//! On a shared machine one round can be hit by a burst of someone else's compiler: the median
//! is the figure the targets are judged on, and the range shows whether a surprising number
//! was one round's accident (a wide range) or the gateway's behaviour (a narrow one).

use crate::report::{rate, signed_us, us};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values`; all zeros when there are none. With an even count the median is
    /// the upper middle value, so it is always a measured figure.
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        match (sorted.first(), sorted.last()) {
            (Some(&min), Some(&max)) => Spread { median: sorted[sorted.len() / 2], min, max },
            _ => Spread { median: 0.0, min: 0.0, max: 0.0 },
        }
    }

    fn with_range(&self, format: impl Fn(f64) -> String, bare: impl Fn(f64) -> String) -> String {
        if (self.max - self.min).abs() < f64::EPSILON {
            return format(self.median);
        }
        format!("{} ({}–{})", format(self.median), bare(self.min), bare(self.max))
    }

    /// `123 µs (110–140)`.
    pub(crate) fn us(&self) -> String {
        self.with_range(us, |v| format!("{v:.0}"))
    }

    /// `+123 µs (+110–+140)`.
    pub(crate) fn signed_us(&self) -> String {
        self.with_range(signed_us, |v| format!("{v:+.0}"))
    }

    /// `12.3 µs (11.8–13.1)`: the range as precise as the median, for small figures.
    pub(crate) fn us_precise(&self) -> String {
        self.with_range(us, precise)
    }

    /// `+2.3 µs (+1.8–+3.1)`.
    pub(crate) fn signed_us_precise(&self) -> String {
        self.with_range(signed_us, |v| if v.abs() < 100.0 { format!("{v:+.1}") } else { format!("{v:+.0}") })
    }

    /// `12345/s (12000–12600)`.
    pub(crate) fn rate(&self) -> String {
        self.with_range(rate, |v| format!("{v:.0}"))
    }
}

/// One decimal below 100, none above, as [`us`] writes the median.
fn precise(value: f64) -> String {
    if value.abs() < 100.0 { format!("{value:.1}") } else { format!("{value:.0}") }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn median_and_range_of_rounds() {
        let spread = Spread::of(&[30.0, 10.0, 20.0]);
        assert_eq!(spread, Spread { median: 20.0, min: 10.0, max: 30.0 });
        assert_eq!(spread.us(), "20.0 µs (10–30)");
        assert_eq!(Spread::of(&[-5.0, 7.0]).signed_us(), "+7.0 µs (-5–+7)");
        assert_eq!(Spread::of(&[1000.0]).rate(), "1000/s");
        assert_eq!(Spread::of(&[4.84, 5.12, 4.6]).us_precise(), "4.8 µs (4.6–5.1)");
        assert_eq!(Spread::of(&[-0.5, 2.24]).signed_us_precise(), "+2.2 µs (-0.5–+2.2)");
        assert_eq!(Spread::of(&[]), Spread { median: 0.0, min: 0.0, max: 0.0 });
    }
}
