//! The flood of invalid tokens: rejection latency at a fixed rate, rejections per second at
//! saturation with each generator, and the targets they judge.

use super::saturate::Runs;
use super::{Generators, merged, quantile};
use crate::load::open_loop;
use crate::report::{Report, Table, ratio, us};

/// What the invalid-token runs measured, with the valid-key figures they are compared with.
pub(crate) struct Rejections<'a> {
    pub(crate) rate: u64,
    pub(crate) rounds: usize,
    pub(crate) nginx: &'a [open_loop::Outcome],
    pub(crate) aurora: &'a [open_loop::Outcome],
    /// Aurora with a valid key at the same fixed rate.
    pub(crate) valid: &'a [open_loop::Outcome],
    pub(crate) saturated: &'a Runs,
    /// The valid-key saturation runs, for Aurora's rate beside the rejections'.
    pub(crate) proxied: &'a Runs,
    pub(crate) reached_upstream: u64,
}

impl Rejections<'_> {
    pub(crate) fn report(&self, report: &mut Report, text: &mut String, generators: &Generators) {
        let (nb, ab, good) = (self.nginx, self.aurora, self.valid);
        let mut table = Table::new(&["figure", "nginx", "aurora", "aurora ÷ nginx", "aurora, valid key (same load)"]);
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (n, a) = (quantile(nb, q), quantile(ab, q));
            table.row(vec![
                format!("rejection latency {label}"),
                n.us(),
                a.us(),
                ratio(a.median, n.median),
                quantile(good, q).us(),
            ]);
        }
        let (nb_all, ab_all) = (merged(nb), merged(ab));
        table.row(vec![
            "refused by the gateway (all rounds)".into(),
            format!("{} of {}", nb_all.rejected, nb_all.total()),
            format!("{} of {} ({} marked x-aurora-error)", ab_all.rejected, ab_all.total(), ab_all.gateway_answered),
            "–".into(),
            "–".into(),
        ]);
        let mut ratios = Vec::new();
        for generator in generators.names() {
            let (n, a) = (self.saturated.rate(generator, "nginx"), self.saturated.rate(generator, "aurora"));
            table.row(vec![
                format!("max rejections/s, {generator}"),
                n.rate(),
                a.rate(),
                ratio(a.median, n.median),
                format!("{} valid", self.proxied.rate(generator, "aurora").rate()),
            ]);
            ratios.push((generator, a.median, n.median));
        }
        text.push_str(&format!(
            "### A flood of invalid tokens\n\n{} requests/s with an unknown `Bearer` token, {} round(s) interleaved, then each generator at saturation as above ({} round(s)). Requests that reached the upstream during these runs: **{}**.\n\n{}\n",
            self.rate,
            self.rounds,
            self.rounds,
            self.reached_upstream,
            table.render()
        ));
        super::throughput::check_ratios(report, "invalid-token rejections/s ≥ 1.0x nginx", &ratios, generators);
        let (ab99, good99) = (quantile(ab, 0.99).median, quantile(good, 0.99).median);
        let cheap = ab99 <= good99 && self.reached_upstream == 0 && ab_all.rejected == ab_all.total();
        report.check(
            "invalid-key rejection at least as fast as a successful request, never upstream",
            format!(
                "rejection p99 {} vs valid p99 {}; {} reached upstream",
                us(ab99),
                us(good99),
                self.reached_upstream
            ),
            cheap,
        );
    }
}
