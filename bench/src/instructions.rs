//! CPU per request as a repeatable number: the instructions Aurora's data plane and nginx each
//! execute per proxied request, and per invalid-token rejection (a 401 of the gateway's own,
//! never sent upstream), counted by valgrind's callgrind.
//!
//! `scripts/bench-instructions` does the counting (both gateways under callgrind in front of
//! the same upstream, several rounds each on the same process, each round a proxied load and
//! then a rejected one; its rejected rounds are named `GATEWAY-rejected`) and `scripts/bench` hands its
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
            "## Instructions per request\n\nNot measured in this run (`scripts/bench-instructions` needs valgrind: `apt-get install valgrind`).\n"
                .into(),
        );
        return;
    };
    let spread = |name: &str| Spread::of(counts.per_request.get(name).map(Vec::as_slice).unwrap_or_default());
    let requests = |name: &str| counts.requests.get(name).copied().unwrap_or(0);
    let (aurora, nginx) = (spread("aurora"), spread("nginx"));
    let (aurora_rejected, nginx_rejected) = (spread("aurora-rejected"), spread("nginx-rejected"));
    let mut table = Table::new(&[
        "gateway",
        "per proxied request",
        "÷ nginx",
        "per invalid-token rejection",
        "÷ nginx",
        "requests counted (proxied / rejected)",
    ]);
    for name in ["nginx", "aurora"] {
        let (proxied, rejected) = (spread(name), spread(&format!("{name}-rejected")));
        let rejected_requests = requests(&format!("{name}-rejected"));
        table.row(vec![
            name.into(),
            count(proxied),
            ratio(proxied.median, nginx.median),
            if rejected_requests > 0 { count(rejected) } else { "not counted".into() },
            if rejected_requests > 0 { ratio(rejected.median, nginx_rejected.median) } else { "–".into() },
            format!("{} / {}", requests(name), rejected_requests),
        ]);
    }
    report.check(
        "instructions per proxied request ≤ nginx's",
        format!("{:.0} vs {:.0} ({})", aurora.median, nginx.median, ratio(aurora.median, nginx.median)),
        aurora.median <= nginx.median,
    );
    let rejection = if requests("aurora-rejected") > 0 {
        format!(
            " Aurora's rejection of an unknown token takes {:.0} against nginx's {:.0} ({}).",
            aurora_rejected.median,
            nginx_rejected.median,
            ratio(aurora_rejected.median, nginx_rejected.median)
        )
    } else {
        String::new()
    };
    let limited = limited_key(&counts);
    report.section(format!(
        "## Instructions per request\n\nUser-space instructions each gateway executes per request (valgrind's callgrind; the kernel's share is not counted), for the same job: token check, header rewrite, a keep-alive upstream; and per invalid-token rejection, the same request with an unknown `Bearer` token, which each gateway answers with a 401 of its own without going upstream (the script checks both: the 401 and its `x-aurora-error` header once, and the upstream's request counter every round). Each gateway runs under callgrind in front of the same upstream and is driven by wrk with 8 connections; after a warm-up, each round zeroes the counters, runs the proxied load and divides the instructions by the requests completed, then does the same with the invalid token; median of the rounds (range). Repeatable where wall-clock figures are not: `scripts/bench-instructions` reproduces it alone.{rejection}{limited}\n\n{}\nAurora's profile of proxied requests (the last round; `file:function`, instructions and their share):\n\n```text\n{}\n```\n",
        table.render(),
        counts.frames.trim_end()
    ));
}

/// What a limited key adds, from the rounds that served a key with every limit and a key
/// without on the same connected data plane (none when the script did not count them).
fn limited_key(counts: &Counts) -> String {
    let rounds = |name: &str| counts.per_request.get(name).map(Vec::as_slice).unwrap_or_default();
    let (keyed, limited) = (rounds("aurora-keyed"), rounds("aurora-limited"));
    if keyed.is_empty() || keyed.len() != limited.len() {
        return String::new();
    }
    let added: Vec<f64> = limited.iter().zip(keyed).map(|(on, off)| on - off).collect();
    let added = Spread::of(&added);
    format!(
        " A limited key, every limit set far above the load, against a key without, served in turn each round by one data plane connected to a control plane (the control plane outside callgrind): {} against {} instructions per request; the limits add **{:+.0}** ({:+.0} to {:+.0}, round by round).",
        count(Spread::of(limited)),
        count(Spread::of(keyed)),
        added.median,
        added.min,
        added.max
    )
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
        let text = "instructions nginx 1 20000 500\ninstructions nginx-rejected 1 9000 900\ninstructions nginx 2 20100 510\ninstructions aurora 1 90000 400\ntop frames of aurora, own instructions (last round):\n1,000 (10.0%)  x.rs:f [aurora]\ncallgrind files in /tmp/x\n";
        let counts = super::parse(text);
        assert_eq!(counts.per_request["nginx"], [20000.0, 20100.0]);
        assert_eq!(counts.requests["nginx"], 1010);
        assert_eq!(counts.per_request["aurora"], [90000.0]);
        assert_eq!(counts.per_request["nginx-rejected"], [9000.0]);
        assert_eq!(counts.requests["nginx-rejected"], 900);
        assert_eq!(
            counts.frames,
            "top frames of aurora, own instructions (last round):\n1,000 (10.0%)  x.rs:f [aurora]"
        );
        assert_eq!(super::limited_key(&counts), "", "no limited-key rounds");
    }

    #[test]
    fn a_limited_keys_cost_is_the_difference_round_by_round() {
        let text = "instructions aurora-keyed 1 40000 500\ninstructions aurora-limited 1 41000 500\ninstructions aurora-keyed 2 40100 500\ninstructions aurora-limited 2 40900 500\n";
        let line = super::limited_key(&super::parse(text));
        assert!(line.contains("41000 (40900–41000) against 40100 (40000–40100)"), "{line}");
        assert!(line.contains("**+1000** (+800 to +1000"), "{line}");
    }
}
