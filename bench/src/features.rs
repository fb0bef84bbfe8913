//! What each request-path feature costs: the same build with the feature switched off against
//! the data plane with it on, interleaved in rounds.
//!
//! The features are data ([`FEATURES`]): a name and how it is switched off, either the
//! environment of one of two fresh data planes, a second key on the same data plane (per-key limits), or
//! a second data plane whose provider has a single credential instead of a set of three
//! (credential selection, [`credentials`]). Add one by adding an entry; the measurement and the
//! report follow. A variable a build does not know is ignored by it, so the row then measures
//! two identical data planes (a difference within the range is noise, which the range shows).
//!
//! Each round measures the fixed-rate p99 and wrk's saturation throughput of both sides (the
//! side that goes first alternates from round to round), and the CPU time each side's
//! data-plane process spent per request during the saturation run ([`crate::cpu`]), so every
//! cost is a difference with its range over rounds.

mod contention;
mod credentials;

pub(crate) use contention::Scale as ContentionScale;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::aurora::DataPlane;
use crate::cpu::{self, PerRequest};
use crate::load::{Auth, Target, open_loop, saturation};
use crate::report::{Report, Table, ratio};
use crate::rotation::rotated;
use crate::spread::Spread;
use crate::upstream::Counters;

/// A feature on the request path and how to switch it off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Feature {
    pub(crate) name: &'static str,
    pub(crate) off: Off,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Off {
    /// A data plane with this environment against one without, both started for the row, on
    /// the main control plane with the main key.
    Env(&'static [(&'static str, &'static str)]),
    /// The main data plane with the main key (no limits), against the same data plane with
    /// [`Setup::limited_token`], a key whose limits are far above the load (never refused):
    /// the same process, so the difference is the limits' cost alone.
    KeyWithoutLimits,
    /// A data plane whose provider has one credential, against one whose provider has a set of
    /// three enabled, weighted credentials (on a second control plane; see [`credentials`]).
    SingleCredential,
}

pub(crate) const FEATURES: &[Feature] = &[
    Feature { name: "usage metering", off: Off::Env(&[("AURORA_USAGE_METERING", "off")]) },
    Feature { name: "key limits", off: Off::KeyWithoutLimits },
    Feature { name: "credential selection", off: Off::SingleCredential },
];

/// How long and how hard; the fixed rate is the one whose added p99 the report shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) rounds: usize,
    pub(crate) rate: u64,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    /// The key-limits row's companion: sharing a key's counters between threads, alone.
    pub(crate) contention: contention::Scale,
}

/// The running pieces every feature row needs: the binary, the control plane both data planes
/// subscribe to, and the data plane with every feature on.
pub(crate) struct Setup<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) control_plane: &'a str,
    pub(crate) on: &'a Target,
    /// The process of `on`, whose CPU time is read.
    pub(crate) on_pid: u32,
    pub(crate) token: &'a str,
    /// A key with every limit (rpm, tpm, concurrency, budget) set far above the load.
    pub(crate) limited_token: &'a str,
    /// The upstream, for a second control plane's providers, and what reached it.
    pub(crate) upstream: SocketAddr,
    pub(crate) counters: &'a Counters,
}

/// The two sides of a row, their processes, and whatever must keep running while it is
/// measured.
struct Sides {
    on: (Target, u32),
    off: (Target, u32),
    _planes: Vec<DataPlane>,
    _credential_planes: Option<credentials::Planes>,
}

fn pid(plane: &DataPlane) -> anyhow::Result<u32> {
    plane.proc.pid().context("data plane pid")
}

async fn sides(feature: &Feature, setup: &Setup<'_>, scratch: &Path) -> anyhow::Result<Sides> {
    Ok(match feature.off {
        Off::Env(env) => {
            // Two fresh data planes, so neither side is the main one that served the whole
            // comparison before (its memory and connection state are not a fresh process's).
            let name = feature.name.replace(' ', "-");
            let on_plane = DataPlane::start(setup.bin, setup.control_plane, &format!("bench-{name}-on")).await?;
            let off_plane =
                DataPlane::start_with(setup.bin, setup.control_plane, &format!("bench-{name}-off"), env).await?;
            let (on, off) = (on_plane.target(setup.token), off_plane.target(setup.token));
            for target in [&on, &off] {
                crate::aurora::wait_until(target, true, Duration::from_secs(30)).await?;
            }
            let (on_pid, off_pid) = (pid(&on_plane)?, pid(&off_plane)?);
            Sides {
                on: (on, on_pid),
                off: (off, off_pid),
                _planes: vec![on_plane, off_plane],
                _credential_planes: None,
            }
        }
        Off::KeyWithoutLimits => {
            let on = setup.on.with_auth(Auth::Gateway(setup.limited_token.to_owned()));
            crate::aurora::wait_until(&on, true, Duration::from_secs(30)).await?;
            Sides {
                on: (on, setup.on_pid),
                off: (setup.on.clone(), setup.on_pid),
                _planes: Vec::new(),
                _credential_planes: None,
            }
        }
        Off::SingleCredential => {
            let planes =
                credentials::start(setup.bin, setup.control_plane, setup.token, setup.upstream, scratch).await?;
            let (on, off) = planes.targets(setup.token);
            let (on_pid, off_pid) = (pid(&planes.on)?, pid(&planes.off)?);
            Sides { on: (on, on_pid), off: (off, off_pid), _planes: Vec::new(), _credential_planes: Some(planes) }
        }
    })
}

/// One side's figures, one entry per round.
#[derive(Debug, Default)]
struct Side {
    rates: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
}

pub(crate) async fn run(report: &mut Report, setup: &Setup<'_>, scale: Scale, scratch: &Path) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "feature (switched off by)",
        "max throughput on",
        "off",
        "on ÷ off",
        "CPU per request on",
        "off",
        "CPU the feature adds",
        "p99 at the fixed rate on",
        "off",
        "p99 the feature adds",
    ]);
    let mut notes = Vec::new();
    let mut limited_request_cpu = None;
    for feature in FEATURES {
        let sides = sides(feature, setup, scratch).await?;
        let set_before = setup.counters.set_credentials();
        let fixed = open_loop::Plan { rate: scale.rate, duration: scale.duration, connections: scale.connections };
        let saturate = saturation::Plan { connections: scale.connections, duration: scale.duration };
        let mut measured = [Side::default(), Side::default()];
        for round in 0..scale.rounds {
            // Alternating which side goes first (see `rotation`): over an even number of
            // rounds neither always follows the other's saturation run.
            for which in rotated(&[0, 1], round) {
                let ((target, pid), side) = ([&sides.on, &sides.off][which], &mut measured[which]);
                let outcome = open_loop::run(target, fixed).await?;
                anyhow::ensure!(outcome.ok > 0, "no successful request with {} switched on or off", feature.name);
                side.p99.push(outcome.micros(0.99));
                let before = cpu::of_tree(*pid);
                let outcome = saturation::run(target, saturate, scratch).await?;
                let after = cpu::of_tree(*pid);
                side.rates.push(outcome.requests_per_sec);
                if let Some(per_request) =
                    before.zip(after).and_then(|(b, a)| PerRequest::between(b, a, outcome.requests))
                {
                    side.cpu.push(per_request.total());
                }
            }
        }
        let [on, off] = measured;
        let difference =
            |on: &[f64], off: &[f64]| Spread::of(&on.iter().zip(off).map(|(on, off)| on - off).collect::<Vec<_>>());
        let (rate_on, rate_off) = (Spread::of(&on.rates), Spread::of(&off.rates));
        let switch = match feature.off {
            Off::Env(env) => env.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(" "),
            Off::KeyWithoutLimits => "a key without limits, same data plane".to_owned(),
            Off::SingleCredential => "one credential instead of a set of three".to_owned(),
        };
        table.row(vec![
            format!("{} ({switch})", feature.name),
            rate_on.rate(),
            rate_off.rate(),
            ratio(rate_on.median, rate_off.median),
            Spread::of(&on.cpu).us_precise(),
            Spread::of(&off.cpu).us_precise(),
            difference(&on.cpu, &off.cpu).signed_us_precise(),
            Spread::of(&on.p99).us(),
            Spread::of(&off.p99).us(),
            difference(&on.p99, &off.p99).signed_us(),
        ]);
        match feature.off {
            // The target: limits configured on the key in use cost at most 3% of a
            // 2-core data plane's throughput.
            Off::KeyWithoutLimits => {
                limited_request_cpu = (!on.cpu.is_empty()).then(|| Spread::of(&on.cpu).median);
                report.check(
                    "throughput with key limits ≥ 97% of the same data plane without",
                    ratio(rate_on.median, rate_off.median),
                    rate_on.median >= 0.97 * rate_off.median,
                );
            }
            Off::SingleCredential => notes.push(format!(
                "Credential selection: the requests of the row's *on* side went out with {}.",
                credentials::shares(setup.counters, set_before)?
            )),
            Off::Env(_) => {}
        }
    }
    let contention = tokio::task::spawn_blocking(move || contention::measure(scale.contention)).await??;
    notes.push(contention.describe(scale.contention, limited_request_cpu));
    report.section(format!(
        "## Feature cost\n\nEach feature of the request path against the same build with it switched off: two data planes started for the row on the same control plane and key (for key limits: one data plane, a key whose limits are far above the load against a key without; for credential selection: a data plane whose Anthropic provider has a set of three enabled credentials of weights 1, 2 and 3, from a second control plane, against one whose provider has its single credential, both started for the row), interleaved in {} round(s), the side that goes first alternating, of {:?} at {}/s ({} connections, open loop) and then wrk at saturation; median of the rounds (range). *CPU per request* is the data-plane process's user + system time during the saturation run divided by the requests wrk completed (as in the CPU table above). Every *adds* column is on minus off, round by round.\n\n{}\n{}\n",
        scale.rounds,
        scale.duration,
        scale.rate,
        scale.connections,
        table.render(),
        notes.iter().map(|n| format!("{n}\n")).collect::<String>()
    ));
    Ok(())
}
