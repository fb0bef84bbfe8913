//! CPU per request as a repeatable number: the instructions Aurora's data plane and nginx each
//! execute per proxied request, counted by valgrind's callgrind.
//!
//! `scripts/bench-instructions` does the counting (both gateways under callgrind in front of
//! the same upstream, several rounds each on the same process) and `scripts/bench` hands its
//! output to this harness with `--instructions FILE`; this module turns it into the report's
//! section and the target's check. Wall-clock figures on a shared two-core machine move with
//! everyone else's compilers; instruction counts do not, so the next regression shows up here
//! as a number.

use std::collections::BTreeMap;

use crate::report::{Report, Table, ratio};
use crate::spread::Spread;

/// What the script measured: per-request counts by gateway and round, and Aurora's top frames.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) per_request: BTreeMap<String, Vec<f64>>,
    pub(crate) requests: BTreeMap<String, u64>,
    pub(crate) frames: String,
}

/// Reads the script's output: `instructions NAME ROUND PER-REQUEST REQUESTS` lines, then the
/// top-frame listings, verbatim.
pub(crate) fn parse(text: &str) -> Counts {
    let mut counts = Counts::default();
    let mut frames = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["instructions", name, _round, per_request, requests] = fields.as_slice()
            && let (Ok(per_request), Ok(requests)) = (per_request.parse::<f64>(), requests.parse::<u64>())
        {
            counts.per_request.entry((*name).to_owned()).or_default().push(per_request);
            *counts.requests.entry((*name).to_owned()).or_default() += requests;
        } else if !line.starts_with("callgrind files in") {
            frames.push(line);
        }
    }
    counts.frames = frames.join("\n");
    counts
}

/// The report's section from the script's output, or a note saying why there is none.
pub(crate) fn section(report: &mut Report, output: Option<&str>) {
    let Some(counts) = output.map(parse).filter(|c| c.per_request.contains_key("aurora")) else {
        report.section(
            "## Instructions per proxied request\n\nNot measured in this run (`scripts/bench-instructions` needs valgrind: `apt-get install valgrind`).\n"
                .into(),
        );
        return;
    };
    let spread = |name: &str| Spread::of(counts.per_request.get(name).map(Vec::as_slice).unwrap_or_default());
    let (aurora, nginx) = (spread("aurora"), spread("nginx"));
    let mut table = Table::new(&["gateway", "instructions per request", "requests counted", "÷ nginx"]);
    for (name, figure) in [("nginx", nginx), ("aurora", aurora)] {
        table.row(vec![
            name.into(),
            count(figure),
            counts.requests.get(name).copied().unwrap_or(0).to_string(),
            ratio(figure.median, nginx.median),
        ]);
    }
    report.check(
        "instructions per proxied request ≤ nginx's",
        format!("{:.0} vs {:.0} ({})", aurora.median, nginx.median, ratio(aurora.median, nginx.median)),
        aurora.median <= nginx.median,
    );
    report.section(format!(
        "## Instructions per proxied request\n\nUser-space instructions each gateway executes per proxied request (valgrind's callgrind; the kernel's share is not counted), for the same job: token check, header rewrite, a keep-alive upstream. Each gateway runs under callgrind in front of the same upstream and is driven by wrk with 8 connections; after a warm-up, each round zeroes the counters, runs the load and divides the instructions by the requests completed; median of the rounds (range). Repeatable where wall-clock figures are not: `scripts/bench-instructions` reproduces it alone.\n\n{}\nAurora's profile (the last round; `file:function`, instructions and their share):\n\n```text\n{}\n```\n",
        table.render(),
        counts.frames.trim_end()
    ));
}

fn count(figure: Spread) -> String {
    if (figure.max - figure.min).abs() < f64::EPSILON {
        return format!("{:.0}", figure.median);
    }
    format!("{:.0} ({:.0}–{:.0})", figure.median, figure.min, figure.max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_scripts_output() {
        let text = "instructions nginx 1 20000 500\ninstructions nginx 2 20100 510\ninstructions aurora 1 90000 400\ntop frames of aurora, own instructions (last round):\n1,000 (10.0%)  x.rs:f [aurora]\ncallgrind files in /tmp/x\n";
        let counts = super::parse(text);
        assert_eq!(counts.per_request["nginx"], [20000.0, 20100.0]);
        assert_eq!(counts.requests["nginx"], 1010);
        assert_eq!(counts.per_request["aurora"], [90000.0]);
        assert_eq!(
            counts.frames,
            "top frames of aurora, own instructions (last round):\n1,000 (10.0%)  x.rs:f [aurora]"
        );
    }
}
