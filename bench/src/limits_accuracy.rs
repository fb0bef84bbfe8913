//! Fleet-wide accuracy of a per-key rate limit (issue 13): three data planes and a control
//! plane, one key per case limited to N requests per minute, demand above N, and the requests
//! admitted fleet-wide in one minute window as a multiple of N (target 0.9 to 1.1 x):
//! (a) spread evenly over the replicas, (b) all on one replica, (c) moving from one replica to
//! another halfway through the window. Next to it, the naive per-replica baseline: the same
//! fleet with capacity leases switched off (`AURORA_CAPACITY_LEASES=false`), so each replica
//! counts alone with the whole limit, as peers' gateways do.
//!
//! Windows are minute-aligned wall-clock windows, so the cases run side by side (a key each)
//! inside one window. The full run measures a whole window; the smoke run measures a few
//! seconds of one (the limit is far below what those seconds ask for, so the admitted count
//! is already the window's whole allowance: a check that the machinery runs, not a figure).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::aurora::{ControlPlane, DataPlane};
use crate::load::{Conn, Target};
use crate::report::{Report, Table};

/// The target the issue set for this figure.
const TARGET: (f64, f64) = (0.9, 1.1);
const REPLICAS: usize = 3;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// The key's limit (requests per minute).
    pub(crate) rpm: u32,
    /// Requests per second each case sends, all replicas together.
    pub(crate) rate: u32,
    /// How much of the window is measured (a whole one in the full run).
    pub(crate) measure: Duration,
}

impl Scale {
    pub(crate) fn for_run(smoke: bool) -> Scale {
        if smoke {
            Scale { rpm: 30, rate: 25, measure: Duration::from_secs(3) }
        } else {
            // Twice the limit over the minute.
            Scale { rpm: 600, rate: 20, measure: Duration::from_millis(59_000) }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Spread,
    One,
    Moving,
}

impl Case {
    const ALL: [Case; 3] = [Case::Spread, Case::One, Case::Moving];

    fn name(self) -> &'static str {
        match self {
            Case::Spread => "spread evenly over 3 replicas",
            Case::One => "all on one replica",
            Case::Moving => "moving from one replica to another mid-window",
        }
    }

    /// The replica the `index`-th request goes to, `elapsed` into the measurement.
    fn pick(self, index: u64, elapsed: Duration, measure: Duration) -> usize {
        match self {
            Case::Spread => usize::try_from(index % REPLICAS as u64).unwrap_or(0),
            Case::One => 0,
            Case::Moving => usize::from(elapsed >= measure / 2),
        }
    }
}

/// A control plane and three data planes; `leases` off for the naive baseline.
struct Fleet {
    control_plane: ControlPlane,
    dataplanes: Vec<DataPlane>,
    admin_addrs: Vec<SocketAddr>,
}

impl Fleet {
    async fn start(bin: &Path, dir: &Path, upstream: SocketAddr, leases: bool) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(dir)?;
        let url = format!("sqlite://{}", dir.join("aurora.db").display());
        let extra: &[(&str, &str)] = if leases { &[] } else { &[("AURORA_CAPACITY_LEASES", "false")] };
        let control_plane = ControlPlane::start_on_with(bin, &url, upstream, None, extra).await?;
        let mut dataplanes = Vec::new();
        let mut admin_addrs = Vec::new();
        for index in 0..REPLICAS {
            let name = format!("bench-limits-{}-{index}", if leases { "leased" } else { "naive" });
            let mut dp = DataPlane::start(bin, &control_plane.url(), &name).await?;
            admin_addrs.push(dp.proc.listening_addr("admin").await?);
            dataplanes.push(dp);
        }
        Ok(Fleet { control_plane, dataplanes, admin_addrs })
    }

    /// One key per case, on every replica (and, with leases, holding one on each).
    async fn keys(&self, scale: Scale, leases: bool) -> anyhow::Result<Vec<String>> {
        let mut admin = self.control_plane.admin().await?;
        let mut secrets = Vec::new();
        for case in Case::ALL {
            let name = format!("bench-limits-{case:?}-{}", uuid::Uuid::new_v4().simple());
            secrets.push(admin.create_limited_key(&name, scale.rpm).await?.secret);
        }
        admin.wait_fleet_current(REPLICAS, Duration::from_secs(60)).await?;
        if leases {
            for addr in &self.admin_addrs {
                wait_for_leases(*addr, Case::ALL.len()).await?;
            }
        }
        Ok(secrets)
    }
}

/// Waits (on a condition, with a deadline) until the data plane whose admin listener is
/// `addr` holds `keys` leases.
async fn wait_for_leases(addr: SocketAddr, keys: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = metrics(addr).await.ok().and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("aurora_dataplane_limit_leases{state=\"held\"} ")?.parse::<f64>().ok()
            })
        });
        if held.is_some_and(|held| held >= keys as f64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the data plane at {addr} holds no lease for the benchmark's keys after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The data plane's `/metrics` text (HTTP/1.0, read to the end).
async fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits until a window starts (full run: the measurement covers it whole) or until at least
/// `room` is left of the current one (smoke run); returns the window's start (Unix ms).
async fn window(room: Duration, whole: bool) -> i64 {
    let room = i64::try_from(room.as_millis()).unwrap_or(60_000);
    loop {
        let now = unix_ms();
        let into = now.rem_euclid(60_000);
        if whole && (100..300).contains(&into) {
            return now - into;
        }
        if !whole && 60_000 - into >= room {
            return now - into;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends one case's load and counts what was admitted in `window_start`'s window.
async fn run_case(
    case: Case,
    dataplanes: Vec<SocketAddr>,
    secret: String,
    scale: Scale,
    window_start: i64,
) -> anyhow::Result<(u64, u64)> {
    let targets: Vec<Target> = dataplanes
        .iter()
        .map(|addr| Target {
            name: "aurora",
            addr: *addr,
            path: "/p/anthropic/v1/messages".into(),
            auth: crate::load::Auth::Gateway(secret.clone()),
        })
        .collect();
    let mut conns = Vec::new();
    for target in &targets {
        conns.push(Conn::open(target.addr).await?);
    }
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_secs(1) / scale.rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut admitted, mut sent) = (0u64, 0u64);
    while started.elapsed() < scale.measure {
        pace.tick().await;
        if unix_ms() >= window_start + 60_000 {
            break;
        }
        let replica = case.pick(sent, started.elapsed(), scale.measure);
        if conns[replica].is_closed() {
            conns[replica] = Conn::open(targets[replica].addr).await?;
        }
        let (status, gateway) = conns[replica].send(targets[replica].request(&[])?).await?;
        sent += 1;
        if status.is_success() {
            admitted += 1;
        } else if !(gateway && status.as_u16() == 429) {
            bail!("{}: unexpected answer {status} from {}", case.name(), targets[replica].addr);
        }
    }
    Ok((admitted, sent))
}

/// Every case on one fleet, side by side in one window: `(admitted, sent)` per case.
async fn measure(fleet: &Fleet, secrets: &[String], scale: Scale, smoke: bool) -> anyhow::Result<Vec<(u64, u64)>> {
    let addrs: Vec<SocketAddr> = fleet.dataplanes.iter().map(|dp| dp.addr).collect();
    let start = window(scale.measure + Duration::from_secs(1), !smoke).await;
    let runs: Vec<_> = Case::ALL
        .iter()
        .zip(secrets)
        .map(|(case, secret)| tokio::spawn(run_case(*case, addrs.clone(), secret.clone(), scale, start)))
        .collect();
    let mut counts = Vec::with_capacity(runs.len());
    for run in runs {
        counts.push(run.await??);
    }
    Ok(counts)
}

pub(crate) async fn run(
    report: &mut Report,
    bin: &Path,
    scratch: &Path,
    upstream: SocketAddr,
    scale: Scale,
    smoke: bool,
) -> anyhow::Result<()> {
    let leased = Fleet::start(bin, &scratch.join("limits-leased"), upstream, true).await?;
    let naive = Fleet::start(bin, &scratch.join("limits-naive"), upstream, false).await?;
    let leased_keys = leased.keys(scale, true).await?;
    let naive_keys = naive.keys(scale, false).await?;
    // Both fleets in the same window: the machine's load is the same for both.
    let (with_leases, alone) =
        tokio::try_join!(measure(&leased, &leased_keys, scale, smoke), measure(&naive, &naive_keys, scale, smoke))
            .context("the limit-accuracy load")?;

    let limit = f64::from(scale.rpm);
    let mut table = Table::new(&["traffic", "sent", "admitted with leases", "per-replica counting (naive)"]);
    let mut met = true;
    let mut figures = Vec::new();
    for ((case, (admitted, sent)), (naive_admitted, _)) in Case::ALL.iter().zip(&with_leases).zip(&alone) {
        let multiple = *admitted as f64 / limit;
        met &= (TARGET.0..=TARGET.1).contains(&multiple);
        figures.push(format!("{multiple:.2}x"));
        table.row(vec![
            case.name().into(),
            sent.to_string(),
            format!("{admitted} ({multiple:.2}x)"),
            format!("{naive_admitted} ({:.2}x)", *naive_admitted as f64 / limit),
        ]);
    }
    let measured = if smoke {
        format!(
            "Smoke run: {:.0} s of one window measured; the figures only show the machinery runs.",
            scale.measure.as_secs_f64()
        )
    } else {
        "One whole minute window per case, the cases side by side (one key each).".to_owned()
    };
    report.section(format!(
        "## Per-key rate limits across replicas\n\n3 data planes and a control plane; one key per case limited to {} requests per minute, \
         {} requests per second sent (above the limit). Admitted fleet-wide in one minute window, as a multiple of the limit \
         (target {:.1}-{:.1}x), next to the naive per-replica baseline (capacity leases off: each replica counts alone with the \
         whole limit, as peers' gateways do). {measured}\n\n{}",
        scale.rpm,
        scale.rate,
        TARGET.0,
        TARGET.1,
        table.render()
    ));
    report.check(
        "per-key limits: fleet-wide admitted per minute 0.9-1.1x the limit (spread, one replica, moving)",
        figures.join(", "),
        met,
    );
    Ok(())
}
