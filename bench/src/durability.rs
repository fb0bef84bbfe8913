//! What a durable acknowledgement costs a data plane: each delta is appended to the cache's
//! journal and fsync'd before its ack (see `aurora_dataplane::cache::writer`).
//!
//! Run in-process on the data plane's own `Durability` writer over a real cache file in the
//! scratch directory, so the figure is the writer's and this disk's: one change at a time
//! (persist → ack, the latency every change now adds before `--wait` sees it) and a burst of
//! changes sent at once (group commit: one fsync covers every change waiting).

use std::sync::Arc;
use std::time::Instant;

use aurora_core::KeyHash;
use aurora_dataplane::Snapshot;
use aurora_dataplane::cache::writer::Durability;
use aurora_dataplane::cache::{CacheKey, ConfigCache};
use aurora_proto::v1::{Change, Delta, KeyConfig, SubscribeRequest, change};
use tokio::sync::mpsc;

use crate::load::histogram;
use crate::report::{Report, Table, ms};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// Changes persisted one at a time, each waiting for its ack.
    pub(crate) single: u64,
    /// Changes sent at once.
    pub(crate) burst: u64,
}

fn delta(revision: u64) -> Delta {
    let key = KeyConfig {
        hash: KeyHash::of(format!("bench-durable-{revision}")).as_bytes().to_vec(),
        id: revision.to_le_bytes().repeat(2),
        enabled: true,
        expires_at: 0,
        allowed_providers: 0,
        allowed_endpoints: Vec::new(),
        ..Default::default()
    };
    Delta { revision, changes: vec![Change { change: Some(change::Change::KeyUpsert(key)) }] }
}

pub(crate) async fn run(report: &mut Report, dir: &std::path::Path, scale: Scale) -> anyhow::Result<()> {
    let cache = ConfigCache::new(&dir.join("durability/config.cache"), CacheKey::derive(b"bench-node-token"));
    let (durability, writer) = Durability::start(cache, None);
    let writer = tokio::spawn(writer);
    let (outbound, mut acks) = mpsc::channel::<SubscribeRequest>(usize::try_from(scale.burst).unwrap_or(1) + 16);
    let mut state = Arc::new(Snapshot::new(1, Default::default(), None));
    durability.persist(state.clone(), None, &outbound).await;
    acks.recv().await.ok_or_else(|| anyhow::anyhow!("no ack for the first snapshot"))?;

    let mut single = histogram();
    for _ in 0..scale.single {
        let next = delta(state.revision + 1);
        state = Arc::new(state.apply(&next)?);
        let started = Instant::now();
        durability.persist(state.clone(), Some(next), &outbound).await;
        acks.recv().await.ok_or_else(|| anyhow::anyhow!("no ack"))?;
        let _ = single.record(started.elapsed().as_nanos() as u64);
    }

    let started = Instant::now();
    for _ in 0..scale.burst {
        let next = delta(state.revision + 1);
        state = Arc::new(state.apply(&next)?);
        durability.persist(state.clone(), Some(next), &outbound).await;
    }
    for _ in 0..scale.burst {
        acks.recv().await.ok_or_else(|| anyhow::anyhow!("no ack in the burst"))?;
    }
    let burst = started.elapsed();
    drop(durability);
    writer.abort();

    let p = |q: f64| single.value_at_quantile(q) as f64 / 1e6;
    let mut table = Table::new(&["figure", "p50", "p99", "max", "samples"]);
    table.row(vec![
        "one change: applied → durable and acknowledged".into(),
        ms(p(0.5)),
        format!("**{}**", ms(p(0.99))),
        ms(single.max() as f64 / 1e6),
        single.len().to_string(),
    ]);
    let mut text = format!(
        "### Durable acknowledgements\n\nThe data plane's own cache writer on a real cache file (`AURORA_CONFIG_CACHE`, encrypted) in the benchmark's scratch directory (on the machine's disk): each delta is appended to the journal and fsync'd before its ack. Without a cache a revision is acknowledged as soon as it is applied, so the first row is what durability adds to every change's propagation.\n\n{}\n",
        table.render()
    );
    text.push_str(&format!(
        "A burst of {} changes sent at once: all durable and acknowledged in {} ({:.0} changes per second; revisions waiting together share one fsync, and the journal is folded into a snapshot generation every 10,000 changes).\n\n",
        scale.burst,
        ms(burst.as_secs_f64() * 1e3),
        scale.burst as f64 / burst.as_secs_f64().max(f64::EPSILON),
    ));
    report.section(text);
    report.check("durable ack adds ≤ 2 ms p99 per change", ms(p(0.99)), p(0.99) <= 2.0);
    Ok(())
}
