//! The control plane's propagation: revocation to enforcement on real replicas, fan-out to many
//! subscribers, and resuming after a restart by deltas alone.
//!
//! Revocation is measured the way a client would notice it: every replica is probed with the
//! key (one request per probe period on a keep-alive connection) from just before the
//! `RevokeKey` call until it refuses the key. The clock starts when the call is sent, so each
//! figure includes the SQLite commit, and is an upper bound by up to one probe period.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aurora_controlplane::store::{NewKey, SqliteStore, Store};
use aurora_core::{KeyHash, ProviderSet};
use aurora_dataplane::config::ControlPlaneConfig;
use aurora_dataplane::snapshot::Snapshot;
use aurora_dataplane::state::ConfigState;
use aurora_dataplane::subscription::{Endpoints, Subscriber};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::aurora::{Admin, ControlPlane, DataPlane, NODE_TOKEN, wait_until};
use crate::load::{Conn, Target, histogram};
use crate::report::{Report, Table, ms};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) replicas: usize,
    pub(crate) revocations: usize,
    pub(crate) probe_period: Duration,
    pub(crate) subscribers: usize,
    pub(crate) fanout_trials: usize,
    pub(crate) offline_commits: usize,
}

pub(crate) fn millis(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

pub(crate) fn max_millis(h: &Histogram<u64>) -> f64 {
    h.max() as f64 / 1e6
}

pub(crate) async fn run(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    upstream: std::net::SocketAddr,
    scale: Scale,
) -> anyhow::Result<()> {
    let cp_dir = dir.join("cp-propagation");
    let control_plane = ControlPlane::start(bin, &cp_dir, upstream, None).await?;
    let mut admin = control_plane.admin().await?;
    let mut replicas = Vec::with_capacity(scale.replicas);
    for index in 0..scale.replicas {
        replicas.push(DataPlane::start(bin, &control_plane.url(), &format!("bench-replica-{index:02}")).await?);
    }
    admin.wait_fleet_current(scale.replicas, Duration::from_secs(60)).await?;

    // Revocation to enforcement.
    let mut each = histogram();
    let mut all = histogram();
    let mut accept = histogram();
    for trial in 0..scale.revocations {
        let key = admin.create_key(&format!("bench-revoke-{trial}-{}", uuid::Uuid::new_v4().simple())).await?;
        let created = Instant::now();
        let targets: Vec<Target> = replicas.iter().map(|dp| dp.target(&key.secret)).collect();
        let mut waits = tokio::task::JoinSet::new();
        for target in targets.clone() {
            waits.spawn(async move { wait_until(&target, true, Duration::from_secs(30)).await });
        }
        while let Some(result) = waits.join_next().await {
            result??;
        }
        let _ = accept.record(created.elapsed().as_nanos() as u64);
        let mut conns = Vec::with_capacity(targets.len());
        for target in &targets {
            conns.push(Conn::open(target.addr).await?);
        }
        let start = Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for (target, conn) in targets.into_iter().zip(conns) {
            probes.spawn(probe_until_refused(target, conn, start, scale.probe_period));
        }
        admin.revoke_key(&key.id).await?;
        let mut slowest = Duration::ZERO;
        while let Some(result) = probes.join_next().await {
            let took = result??;
            slowest = slowest.max(took);
            let _ = each.record(took.as_nanos() as u64);
        }
        let _ = all.record(slowest.as_nanos() as u64);
    }

    let mut text = String::from("## Control plane\n\n");
    let mut table = Table::new(&["figure", "p50", "p99", "max", "samples"]);
    table.row(vec![
        format!("revocation enforced, per replica ({} replicas)", scale.replicas),
        ms(millis(&each, 0.5)),
        ms(millis(&each, 0.99)),
        ms(max_millis(&each)),
        each.len().to_string(),
    ]);
    table.row(vec![
        format!("revocation enforced on **all {}** replicas", scale.replicas),
        ms(millis(&all, 0.5)),
        format!("**{}**", ms(millis(&all, 0.99))),
        ms(max_millis(&all)),
        all.len().to_string(),
    ]);
    table.row(vec![
        "new key accepted by all replicas (CreateKey return → last replica answers 200)".into(),
        ms(millis(&accept, 0.5)),
        ms(millis(&accept, 0.99)),
        ms(max_millis(&accept)),
        accept.len().to_string(),
    ]);
    text.push_str(&format!(
        "### Revocation to enforcement\n\n{} real `aurora dataplane` processes subscribed to one `aurora controlplane` (SQLite). For each of {} keys: create it, wait until every replica accepts it, then send `RevokeKey` and probe every replica every {:?} with the key until it answers 401 from the gateway. Times run from sending `RevokeKey` (so they include the commit) to the probe that saw the refusal.\n\n",
        scale.replicas, scale.revocations, scale.probe_period
    ));
    let p99_all = millis(&all, 0.99);
    report.check(
        &format!("revocation enforced on all {} replicas, p99 < 50 ms", scale.replicas),
        ms(p99_all),
        p99_all < 50.0,
    );

    // Resume after a restart, by deltas only.
    // The resume check counts the control plane's "sending snapshot" log events: make sure
    // they are visible at all, or "0 after the restart" would prove nothing.
    let snapshots_before: usize = control_plane.proc.count("sending snapshot");
    anyhow::ensure!(
        snapshots_before >= scale.replicas,
        "the control plane logged {snapshots_before} \"sending snapshot\" events for {} replicas; the resume check cannot see snapshots",
        scale.replicas
    );
    let database_url = control_plane.database_url.clone();
    let stopped = Instant::now();
    let mut offline_secrets = Vec::new();
    let commits = scale.offline_commits;
    let control_plane = control_plane
        .restart(&cp_dir, async || {
            // While the control plane is down, commit changes straight to its database: the
            // replicas must catch up on them from the change log when they reconnect.
            // The key the control plane seals its credentials with.
            let keyring = aurora_controlplane::store::Keyring::parse(crate::aurora::ENCRYPTION_KEY)?;
            let store = SqliteStore::open(&database_url, keyring).await.context("open the store offline")?;
            // Audited like any change: who (the benchmark), through which process.
            let actor = aurora_controlplane::store::Actor {
                identity: "bench".into(),
                peer: String::new(),
                replica: aurora_controlplane::replica::this_process(),
            };
            for index in 0..commits {
                let secret = format!("aur_bench_offline_{index}_{}", uuid::Uuid::new_v4().simple());
                store
                    .create_key(
                        NewKey {
                            name: format!("bench-offline-{index}-{}", uuid::Uuid::new_v4().simple()),
                            description: String::new(),
                            hash: KeyHash::of(&secret),
                            redacted: "aur_…".into(),
                            enabled: true,
                            expires_at: None,
                            allowed_providers: ProviderSet::empty(),
                            allowed_endpoints: Vec::new(),
                            limits: None,
                        },
                        &actor,
                    )
                    .await?;
                offline_secrets.push(secret);
            }
            Ok(())
        })
        .await?;
    let restarted = stopped.elapsed();
    let mut admin = control_plane.admin().await?;
    let caught_up = admin.wait_fleet_current(scale.replicas, Duration::from_secs(60)).await?;
    let snapshots_after = control_plane.proc.count("sending snapshot");
    let mut works = 0;
    for dp in &replicas {
        for secret in &offline_secrets {
            wait_until(&dp.target(secret), true, Duration::from_secs(10)).await?;
            works += 1;
        }
    }
    let mut table2 = Table::new(&["figure", "value"]);
    table2.row(vec![
        "control plane down → listening again (incl. offline commits)".into(),
        ms(restarted.as_secs_f64() * 1e3),
    ]);
    table2.row(vec![
        format!("listening → all {} replicas reconnected and current", scale.replicas),
        ms(caught_up.as_secs_f64() * 1e3),
    ]);
    table2.row(vec![format!("revisions committed while it was down"), commits.to_string()]);
    table2.row(vec![
        "snapshots sent after the restart (deltas only ⇒ 0)".into(),
        format!("**{snapshots_after}** (before the restart: {snapshots_before}, one per replica)"),
    ]);
    table2
        .row(vec!["offline keys accepted (replica × key)".into(), format!("{works} of {}", replicas.len() * commits)]);
    let resumed = snapshots_after == 0 && works == replicas.len() * commits;
    report.check(
        "resume after a control-plane restart by deltas only",
        format!("{snapshots_after} snapshots sent"),
        resumed,
    );
    drop(replicas);

    // Fan-out to in-process subscribers.
    let fanout = fanout(&control_plane, &mut admin, scale).await?;
    table.row(vec![
        format!("commit → applied by **all {}** in-process subscribers", scale.subscribers),
        ms(millis(&fanout.all, 0.5)),
        ms(millis(&fanout.all, 0.99)),
        ms(max_millis(&fanout.all)),
        fanout.all.len().to_string(),
    ]);
    table.row(vec![
        "commit → applied, per subscriber".into(),
        ms(millis(&fanout.each, 0.5)),
        ms(millis(&fanout.each, 0.99)),
        ms(max_millis(&fanout.each)),
        fanout.each.len().to_string(),
    ]);
    text.push_str(&table.render());
    text.push_str(&format!(
        "\nFan-out: {} subscribers run the data plane's own client (`aurora_dataplane::subscription::Subscriber`, each with its own connection and `ConfigState`, no HTTP server) inside the harness process; {} revocations, timed from sending `RevokeKey` to each subscriber publishing the new revision. Their initial snapshot: {} for all to connect and apply.\n\n",
        scale.subscribers,
        scale.fanout_trials,
        ms(fanout.connected.as_secs_f64() * 1e3),
    ));
    text.push_str(&format!(
        "### Resume after a control-plane restart\n\nThe control plane is stopped (SIGTERM) with {} replicas connected, {} keys are committed straight to its SQLite database while it is down, and it is started again on the same port. Each replica reconnects with the last revision it applied; the control plane must answer with the missing deltas, never a snapshot.\n\n{}\n",
        scale.replicas,
        commits,
        table2.render()
    ));
    report.section(text);
    Ok(())
}

struct Fanout {
    each: Histogram<u64>,
    all: Histogram<u64>,
    connected: Duration,
}

async fn fanout(control_plane: &ControlPlane, admin: &mut Admin, scale: Scale) -> anyhow::Result<Fanout> {
    let config = ControlPlaneConfig {
        urls: vec![control_plane.url()],
        node_token: Some(NODE_TOKEN.into()),
        node_id: None,
        config_cache: None,
        cache_key: None,
        tls_ca: None,
        tls_client_cert: None,
        tls_client_key: None,
        tls_server_name: None,
        stall_timeout: Duration::from_secs(60),
    };
    let endpoints = Endpoints::new(&config)?;
    let mut subscribers = tokio::task::JoinSet::new();
    let mut applied = Vec::with_capacity(scale.subscribers);
    let started = Instant::now();
    for index in 0..scale.subscribers {
        let (sender, receiver) = watch::channel(None);
        let subscriber = Subscriber {
            node_id: format!("bench-subscriber-{index:04}"),
            node_token: Arc::from(NODE_TOKEN),
            stall_timeout: Duration::from_secs(60),
            state: Arc::new(ConfigState::new()),
            applied: sender,
            durability: aurora_dataplane::cache::writer::Durability::none(),
            metrics: Default::default(),
            usage: None,
            limiters: Default::default(),
        };
        subscribers.spawn(subscriber.run(endpoints.clone()));
        applied.push(receiver);
    }
    let head = admin.data_planes().await?.head_revision;
    wait_all(&applied, head, Duration::from_secs(120)).await?;
    let connected = started.elapsed();

    let mut each = histogram();
    let mut all = histogram();
    for trial in 0..scale.fanout_trials {
        let key = admin.create_key(&format!("bench-fanout-{trial}-{}", uuid::Uuid::new_v4().simple())).await?;
        wait_all(&applied, key.revision, Duration::from_secs(60)).await?;
        let mut waiters = tokio::task::JoinSet::new();
        let start = Instant::now();
        for receiver in &applied {
            let mut receiver = receiver.clone();
            let after = key.revision;
            waiters.spawn(async move {
                while revision(&receiver) <= after {
                    if receiver.changed().await.is_err() {
                        break;
                    }
                }
                start.elapsed()
            });
        }
        admin.revoke_key(&key.id).await?;
        let mut slowest = Duration::ZERO;
        while let Some(took) = waiters.join_next().await {
            let took = took?;
            slowest = slowest.max(took);
            let _ = each.record(took.as_nanos() as u64);
        }
        let _ = all.record(slowest.as_nanos() as u64);
    }
    subscribers.shutdown().await;
    Ok(Fanout { each, all, connected })
}

fn revision(receiver: &watch::Receiver<Option<Arc<Snapshot>>>) -> u64 {
    receiver.borrow().as_ref().map_or(0, |s| s.revision)
}

async fn wait_all(
    applied: &[watch::Receiver<Option<Arc<Snapshot>>>],
    at_least: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let behind = applied.iter().filter(|r| revision(r) < at_least).count();
        if behind == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{behind} subscribers did not reach revision {at_least}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends the key every `period` until the gateway refuses it; returns the time since `start`.
pub(crate) async fn probe_until_refused(
    target: Target,
    mut conn: Conn,
    start: Instant,
    period: Duration,
) -> anyhow::Result<Duration> {
    let mut next = tokio::time::Instant::now();
    loop {
        if conn.is_closed() {
            conn = Conn::open(target.addr).await?;
        }
        if let Ok((status, gateway)) = conn.send(target.request(&[])?).await
            && gateway
            && status.is_client_error()
        {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "{} never refused the revoked key", target.addr);
        next += period;
        tokio::time::sleep_until(next).await;
    }
}
