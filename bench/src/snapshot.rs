//! The 1,000,000-key snapshot: bytes per key, build time, apply time, and a real data plane's
//! memory and request latency while it applies one.
//!
//! Creating a million keys through the admin API (one SQLite transaction each) would take far
//! longer than the benchmark, so the snapshot is built in-process as the control plane's own
//! `store::Snapshot` and encoded with its own `config_stream::snapshot::encode` (the build
//! figure therefore excludes reading the rows from SQLite). Apply is measured twice: in-process
//! (decode every chunk and assemble the data plane's `Snapshot`, as its subscriber does), and
//! end to end on a real `aurora dataplane` process fed by a minimal ConfigService in this
//! harness that streams the same pre-encoded chunks, while requests flow through it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use aurora_controlplane::config_stream::snapshot::{EncodedSnapshot, encode};
use aurora_controlplane::store;
use aurora_core::KeyHash;
use aurora_dataplane::snapshot::SnapshotAssembly;
use aurora_proto::PreEncoded;
use aurora_proto::encoded::config_service_server::{ConfigService, ConfigServiceServer};
use aurora_proto::v1::{
    ConfigSettings, KeyConfig, ProviderConfig, SubscribeRequest, SubscribeResponse, subscribe_request,
    subscribe_response,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::aurora::DataPlane;
use crate::load::{Target, open_loop};
use crate::procs::memory_of;
use crate::report::{Report, Table, mib, ms, us};
use crate::upstream;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) keys: usize,
    pub(crate) rate: u64,
    pub(crate) window: Duration,
}

/// The bench token present in every snapshot, so requests keep flowing during the apply.
const TOKEN: &str = "aur_bench_snapshot_token";

fn key(secret: &str) -> KeyConfig {
    KeyConfig {
        hash: KeyHash::of(secret).as_bytes().to_vec(),
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        enabled: true,
        expires_at: 0,
        allowed_providers: 0,
        allowed_endpoints: Vec::new(),
        ..Default::default()
    }
}

fn snapshot(revision: u64, upstream: SocketAddr, extra_keys: usize) -> store::Snapshot {
    let mut keys = Vec::with_capacity(extra_keys + 1);
    keys.push(key(TOKEN));
    keys.extend((0..extra_keys).map(|index| key(&format!("aur_bench_{index:07}"))));
    store::Snapshot {
        revision,
        settings: ConfigSettings { passthrough_enabled: true, v1_alias_enabled: true, ..Default::default() },
        providers: vec![ProviderConfig {
            name: "anthropic".into(),
            enabled: true,
            base_url: format!("http://{upstream}/v1"),
            credential: upstream::CREDENTIAL.into(),
            ..Default::default()
        }],
        master_key_hash: None,
        keys,
    }
}

/// Decodes every chunk and assembles the data plane's snapshot, as its subscriber does.
fn apply(encoded: &EncodedSnapshot) -> anyhow::Result<aurora_dataplane::Snapshot> {
    let mut assembly: Option<SnapshotAssembly> = None;
    for chunk in encoded.chunks.iter() {
        let Some(subscribe_response::Message::Snapshot(chunk)) = SubscribeResponse::decode(chunk.0.clone())?.message
        else {
            anyhow::bail!("not a snapshot chunk");
        };
        match assembly.as_mut() {
            None => assembly = Some(SnapshotAssembly::start(chunk)?),
            Some(assembly) => assembly.add(&chunk)?,
        }
    }
    Ok(assembly.context("no chunks")?.finish())
}

pub(crate) async fn run(report: &mut Report, bin: &Path, upstream: SocketAddr, scale: Scale) -> anyhow::Result<()> {
    let keys = scale.keys;
    let big = tokio::task::spawn_blocking(move || snapshot(2, upstream, keys)).await?;
    let started = Instant::now();
    let encoded = tokio::task::spawn_blocking(move || encode(big)).await?;
    let build = started.elapsed();
    let bytes: usize = encoded.chunks.iter().map(|c| c.0.len()).sum();
    let per_key = bytes as f64 / (scale.keys + 1) as f64;

    let for_apply = encoded.clone();
    let started = Instant::now();
    let applied = tokio::task::spawn_blocking(move || apply(&for_apply)).await??;
    let apply_in_process = started.elapsed();
    anyhow::ensure!(applied.keys.len() == scale.keys + 1, "applied {} keys", applied.keys.len());
    drop(applied);

    // A real data plane, fed by a minimal ConfigService.
    let small = encode(snapshot(1, upstream, 0));
    let (trigger, triggered) = watch::channel(false);
    let (acks, mut acked) = mpsc::unbounded_channel();
    let service = FakeConfig { first: small, second: encoded.clone(), trigger: triggered, acks };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ConfigServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let dp = DataPlane::start(bin, &format!("http://{addr}"), "bench-snapshot").await?;
    let target: Target = dp.target(TOKEN);
    crate::aurora::wait_until(&target, true, Duration::from_secs(30)).await?;
    let pid = dp.proc.pid().context("data plane pid")?;
    let plan = open_loop::Plan { rate: scale.rate, duration: scale.window, connections: 16 };
    // Warm up, then a window without an apply as the baseline.
    open_loop::run(&target, open_loop::Plan { duration: Duration::from_millis(500), ..plan }).await?;
    let baseline = open_loop::run(&target, plan).await?;
    let before = memory_of(pid).unwrap_or_default();

    let load_target = target.clone();
    let load = tokio::spawn(async move { open_loop::run(&load_target, plan).await });
    tokio::time::sleep(scale.window / 5).await;
    let sent = Instant::now();
    trigger.send_replace(true);
    let apply_real = loop {
        let (revision, at): (u64, Instant) = tokio::time::timeout(Duration::from_secs(60), acked.recv())
            .await
            .context("the data plane never acknowledged the big snapshot")?
            .context("ack channel closed")?;
        if revision >= 2 {
            break at - sent;
        }
    };
    let during = load.await??;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = memory_of(pid).unwrap_or_default();
    server.abort();
    drop(dp);

    let mut table = Table::new(&["figure", "value"]);
    table.row(vec!["keys".into(), format!("{}", scale.keys + 1)]);
    table.row(vec![
        "bytes per key on the wire".into(),
        format!("**{per_key:.1} B** ({} in {} chunks)", mib(bytes as u64), encoded.chunks.len()),
    ]);
    table.row(vec!["build (encode) on the control plane".into(), ms(build.as_secs_f64() * 1e3)]);
    table.row(vec!["apply in-process (decode + assemble)".into(), ms(apply_in_process.as_secs_f64() * 1e3)]);
    table.row(vec![
        "apply on a real data plane (first chunk sent → Ack)".into(),
        format!("**{}**", ms(apply_real.as_secs_f64() * 1e3)),
    ]);
    table.row(vec!["data-plane RSS before (1 key)".into(), mib(before.rss)]);
    table.row(vec![format!("data-plane RSS after ({} keys)", scale.keys + 1), format!("**{}**", mib(after.rss))]);
    table.row(vec!["data-plane peak RSS (VmHWM)".into(), mib(after.peak)]);
    table.row(vec![
        "resident growth per key".into(),
        format!("{:.0} B", after.rss.saturating_sub(before.rss) as f64 / (scale.keys + 1) as f64),
    ]);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        table.row(vec![
            format!("request {label}: baseline → while applying"),
            format!("{} → {}", us(baseline.micros(q)), us(during.micros(q))),
        ]);
    }
    table.row(vec![
        "requests during the apply window: ok / non-2xx / errors".into(),
        format!("{} / {} / {}", during.ok, during.rejected, during.errors),
    ]);
    report.section(format!(
        "## A {}-key snapshot\n\nBuilt in-process as the control plane's `store::Snapshot` and encoded by its own `config_stream::snapshot::encode`; applied in-process with the data plane's `SnapshotAssembly`, and end to end by a real `aurora dataplane` process fed over gRPC by a minimal ConfigService in the harness that streams the same pre-encoded chunks. Requests run at {}/s through that data plane over a {:?} window in which the snapshot is sent, compared with an identical window before it.\n\n{}\n",
        scale.keys + 1,
        scale.rate,
        scale.window,
        table.render()
    ));
    let keys = scale.keys + 1;
    report.check(&format!("{keys}-key snapshot ≤ 64 bytes per key"), format!("{per_key:.1} B"), per_key <= 64.0);
    report.check(
        &format!("{keys}-key snapshot applied in < 2 s"),
        ms(apply_real.as_secs_f64() * 1e3),
        apply_real < Duration::from_secs(2),
    );
    report.check(
        &format!("data-plane memory with {keys} keys < 200 MB"),
        format!("{} (peak {})", mib(after.rss), mib(after.peak)),
        after.peak < 200_000_000,
    );
    Ok(())
}

/// A ConfigService that sends one small snapshot, then, when triggered, the big one.
#[derive(Debug, Clone)]
struct FakeConfig {
    first: EncodedSnapshot,
    second: EncodedSnapshot,
    trigger: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<(u64, Instant)>,
}

#[tonic::async_trait]
impl ConfigService for FakeConfig {
    type SubscribeStream = ReceiverStream<Result<PreEncoded, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let _hello = inbound.message().await?;
        let (sender, receiver) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            for chunk in this.first.chunks.iter() {
                let _ = sender.send(Ok(chunk.clone())).await;
            }
            let mut trigger = this.trigger.clone();
            let _ = trigger.wait_for(|go| *go).await;
            for chunk in this.second.chunks.iter() {
                if sender.send(Ok(chunk.clone())).await.is_err() {
                    return;
                }
            }
            // Keep the stream open until the data plane goes away.
            sender.closed().await;
        });
        let acks = self.acks.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(subscribe_request::Message::Ack(ack)) = message.message {
                    let _ = acks.send((ack.revision, Instant::now()));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
