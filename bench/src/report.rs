//! The markdown report: tables, number formatting, and the list of targets met and missed.

use std::fmt::Write;

/// One target from the issue, with the figure it was judged on.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) target: String,
    pub(crate) figure: String,
    pub(crate) met: bool,
}

/// A markdown document built section by section.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) sections: Vec<String>,
    pub(crate) checks: Vec<Check>,
    /// Extra rows for the machine-and-conditions table (tool versions).
    pub(crate) conditions: Vec<(String, String)>,
}

impl Report {
    pub(crate) fn section(&mut self, text: String) {
        self.sections.push(text);
    }

    pub(crate) fn condition(&mut self, name: &str, value: String) {
        self.conditions.push((name.to_owned(), value));
    }

    pub(crate) fn check(&mut self, target: &str, figure: String, met: bool) {
        self.checks.push(Check { target: target.to_owned(), figure, met });
    }

    /// The targets table.
    pub(crate) fn checks_table(&self) -> String {
        let mut table = Table::new(&["target", "measured", "met?"]);
        for check in &self.checks {
            table.row(vec![check.target.clone(), check.figure.clone(), yes_no(check.met).into()]);
        }
        table.render()
    }
}

pub(crate) fn yes_no(met: bool) -> &'static str {
    if met { "**yes**" } else { "**NO**" }
}

/// A markdown table.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.header.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// Microseconds with a sensible precision.
pub(crate) fn us(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0} µs") } else { format!("{value:.1} µs") }
}

/// A difference in microseconds, always signed (`+12.3 µs`, `-4.5 µs`).
pub(crate) fn signed_us(value: f64) -> String {
    let text = us(value.abs());
    if value < 0.0 { format!("-{text}") } else { format!("+{text}") }
}

/// Milliseconds with two decimals.
pub(crate) fn ms(value: f64) -> String {
    format!("{value:.2} ms")
}

pub(crate) fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator.abs() < 1e-9 { "–".into() } else { format!("{:.2}x", numerator / denominator) }
}

pub(crate) fn rate(value: f64) -> String {
    format!("{value:.0}/s")
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
