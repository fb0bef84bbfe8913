//! What each request-path feature costs: the same build with the feature switched off against
//! the data plane with everything on, interleaved in rounds.
//!
//! The features are data ([`FEATURES`]): a name and how it is switched off, either the
//! environment of a second data plane or (for per-key limits) a second key on the same data
//! plane. Add one by adding an entry; the measurement and the report follow. A variable a build
//! does not know is ignored by it, so the row then measures two identical data planes (a
//! difference within the range is noise, which the range shows).

use std::path::Path;
use std::time::Duration;

use crate::aurora::DataPlane;
use crate::load::{Auth, Target, open_loop, saturation};
use crate::report::{Report, Table, ratio};
use crate::spread::Spread;

/// A feature on the request path and how to switch it off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Feature {
    pub(crate) name: &'static str,
    pub(crate) off: Off,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Off {
    /// A second data plane with this environment, against the main one with the main key.
    Env(&'static [(&'static str, &'static str)]),
    /// The main data plane with the main key (no limits), against the same data plane with
    /// [`Setup::limited_token`], a key whose limits are far above the load (never refused):
    /// the same process, so the difference is the limits' cost alone.
    KeyWithoutLimits,
}

pub(crate) const FEATURES: &[Feature] = &[
    Feature { name: "usage metering", off: Off::Env(&[("AURORA_USAGE_METERING", "off")]) },
    Feature { name: "key limits", off: Off::KeyWithoutLimits },
];

/// How long and how hard; the fixed rate is the one whose added p99 the report shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) rounds: usize,
    pub(crate) rate: u64,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
}

/// The running pieces every feature row needs: the binary, the control plane both data planes
/// subscribe to, and the data plane with every feature on.
pub(crate) struct Setup<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) control_plane: &'a str,
    pub(crate) on: &'a Target,
    pub(crate) token: &'a str,
    /// A key with every limit (rpm, tpm, concurrency, budget) set far above the load.
    pub(crate) limited_token: &'a str,
}

pub(crate) async fn run(report: &mut Report, setup: &Setup<'_>, scale: Scale, scratch: &Path) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "feature (switched off by)",
        "max throughput on",
        "off",
        "on ÷ off",
        "p99 at the fixed rate on",
        "off",
        "p99 the feature adds",
    ]);
    for feature in FEATURES {
        let (on, off, off_plane) = match feature.off {
            Off::Env(env) => {
                let node_id = format!("bench-{}-off", feature.name.replace(' ', "-"));
                let off_plane = DataPlane::start_with(setup.bin, setup.control_plane, &node_id, env).await?;
                let off = off_plane.target(setup.token);
                crate::aurora::wait_until(&off, true, Duration::from_secs(30)).await?;
                (setup.on.clone(), off, Some(off_plane))
            }
            Off::KeyWithoutLimits => {
                let on = setup.on.with_auth(Auth::Gateway(setup.limited_token.to_owned()));
                crate::aurora::wait_until(&on, true, Duration::from_secs(30)).await?;
                (on, setup.on.clone(), None)
            }
        };
        let fixed = open_loop::Plan { rate: scale.rate, duration: scale.duration, connections: scale.connections };
        let saturate = saturation::Plan { connections: scale.connections, duration: scale.duration };
        let (mut rates_on, mut rates_off, mut p99_on, mut p99_off) = (vec![], vec![], vec![], vec![]);
        for _ in 0..scale.rounds {
            for (target, rates, p99s) in [(&on, &mut rates_on, &mut p99_on), (&off, &mut rates_off, &mut p99_off)] {
                let outcome = open_loop::run(target, fixed).await?;
                anyhow::ensure!(outcome.ok > 0, "no successful request with {} switched on or off", feature.name);
                p99s.push(outcome.micros(0.99));
                rates.push(saturation::run(target, saturate, scratch).await?.requests_per_sec);
            }
        }
        let cost: Vec<f64> = p99_on.iter().zip(&p99_off).map(|(on, off)| on - off).collect();
        let (rate_on, rate_off) = (Spread::of(&rates_on), Spread::of(&rates_off));
        let switch = match feature.off {
            Off::Env(env) => env.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(" "),
            Off::KeyWithoutLimits => "a key without limits, same data plane".to_owned(),
        };
        table.row(vec![
            format!("{} ({switch})", feature.name),
            rate_on.rate(),
            rate_off.rate(),
            ratio(rate_on.median, rate_off.median),
            Spread::of(&p99_on).us(),
            Spread::of(&p99_off).us(),
            Spread::of(&cost).signed_us(),
        ]);
        if let Off::KeyWithoutLimits = feature.off {
            // The target: limits configured on the key in use cost at most 3% of a
            // 2-core data plane's throughput.
            report.check(
                "throughput with key limits ≥ 97% of the same data plane without",
                ratio(rate_on.median, rate_off.median),
                rate_on.median >= 0.97 * rate_off.median,
            );
        }
        drop(off_plane);
    }
    report.section(format!(
        "## Feature cost\n\nEach feature of the request path against the same build with it switched off: two data planes on the same control plane and key (for key limits: one data plane, a key whose limits are far above the load against a key without), interleaved in {} round(s) of {:?} at {}/s ({} connections, open loop) and then wrk at saturation; median of the rounds (range). *p99 the feature adds* is on minus off, round by round.\n\n{}\n",
        scale.rounds,
        scale.duration,
        scale.rate,
        scale.connections,
        table.render()
    ));
    Ok(())
}
