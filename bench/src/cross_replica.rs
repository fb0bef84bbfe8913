//! Cross-replica propagation: two control planes on one PostgreSQL database, a data plane
//! subscribed to the second; a key revoked through the first must be refused by it. The figure
//! covers the commit on A, PostgreSQL's `NOTIFY` to B, B's change-feed read and the delta to the
//! data plane, measured as in the single-control-plane figure (probing until refused).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::aurora::{Admin, ControlPlane, DataPlane, wait_until};
use crate::control_plane::{Scale, max_millis, millis, probe_until_refused};
use crate::load::{Conn, histogram};
use crate::report::{Report, Table, ms};

/// The target the issue set for this figure.
const TARGET_P99_MS: f64 = 20.0;

/// A database created for the run and dropped afterwards.
struct Database {
    server: String,
    name: String,
}

impl Database {
    async fn create(server: &str) -> anyhow::Result<Self> {
        let name = format!("aurora_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(server).await.context("connect to the PostgreSQL server")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
        admin.close().await?;
        Ok(Database { server: server.to_owned(), name })
    }

    fn url(&self) -> String {
        let base = self.server.rsplit_once('/').map_or(self.server.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    async fn drop_it(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.server).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
        admin.close().await?;
        Ok(())
    }
}

pub(crate) async fn run(
    report: &mut Report,
    bin: &Path,
    upstream: SocketAddr,
    postgres: &str,
    scale: Scale,
) -> anyhow::Result<()> {
    let db = Database::create(postgres).await?;
    let result = measure(report, bin, upstream, &db.url(), scale).await;
    db.drop_it().await?;
    result
}

async fn measure(
    report: &mut Report,
    bin: &Path,
    upstream: SocketAddr,
    database_url: &str,
    scale: Scale,
) -> anyhow::Result<()> {
    let a = ControlPlane::start_on(bin, database_url, upstream, None).await?;
    let b = ControlPlane::start_on(bin, database_url, upstream, None).await?;
    let dataplane = DataPlane::start(bin, &b.url(), "bench-cross-replica").await?;
    let mut admin_a = a.admin().await?;
    let mut admin_b = b.admin().await?;
    admin_b.wait_fleet_current(1, Duration::from_secs(60)).await?;

    // The first revocation after the control planes start is timed apart: it is the first use
    // of the revocation path in A and of the change feed in B (connections opened, code paged
    // in; late in a full run the machine may have paged out what idled), which is start-up
    // cost, not propagation.
    let first = revoke_once(&mut admin_a, &dataplane, "first", scale.probe_period).await?;
    let mut revoked = histogram();
    let mut took_each = Vec::with_capacity(scale.revocations);
    for trial in 0..scale.revocations {
        let took = revoke_once(&mut admin_a, &dataplane, &trial.to_string(), scale.probe_period).await?;
        let _ = revoked.record(took.as_nanos() as u64);
        took_each.push(took);
    }
    // Counted from 1, the first measured revocation (the one timed apart is not counted).
    let slowest = took_each.iter().enumerate().max_by_key(|(_, took)| **took).map_or(0, |(index, _)| index + 1);
    let in_order: Vec<String> = took_each.iter().map(|took| format!("{:.1}", took.as_secs_f64() * 1e3)).collect();
    crate::progress(&format!("cross-replica revocations (ms, in order): {}", in_order.join(" ")));

    let mut table = Table::new(&["figure", "p50", "p99", "max", "slowest", "samples"]);
    table.row(vec![
        "revocation through replica A enforced by a data plane on replica B".into(),
        ms(millis(&revoked, 0.5)),
        format!("**{}**", ms(millis(&revoked, 0.99))),
        ms(max_millis(&revoked)),
        format!("#{slowest} of {}", scale.revocations),
        revoked.len().to_string(),
    ]);
    table.row(vec![
        "the first revocation after both control planes started (not in the figure above)".into(),
        ms(first.as_secs_f64() * 1e3),
        "".into(),
        "".into(),
        "".into(),
        "1".into(),
    ]);
    report.section(format!(
        "## Across control-plane replicas (PostgreSQL)\n\nTwo `aurora controlplane` processes on one PostgreSQL database, one `aurora dataplane` subscribed to the second (B). For each of {} keys: create it through A, wait until the data plane accepts it, then send `RevokeKey` to A and probe the data plane every {:?} until it answers 401. The time includes A's commit, PostgreSQL's `NOTIFY` to B, B's read of the change log and the delta to the data plane. The first revocation after the control planes start is shown on its own row: it also pays for their first use of that path (database connections opened, code paged in). \"slowest\" says which measured revocation, counted in order, took longest.\n\n{}\n",
        scale.revocations,
        scale.probe_period,
        table.render()
    ));
    let p99 = millis(&revoked, 0.99);
    report.check(
        &format!("cross-replica revocation (A → data plane on B), p99 ≤ {TARGET_P99_MS} ms"),
        ms(p99),
        p99 <= TARGET_P99_MS,
    );
    drop(dataplane);
    drop(a);
    drop(b);
    Ok(())
}

/// Creates a key through A, waits until the data plane accepts it, revokes it through A and
/// returns how long the data plane took to refuse it.
async fn revoke_once(
    admin_a: &mut Admin,
    dataplane: &DataPlane,
    name: &str,
    probe_period: Duration,
) -> anyhow::Result<Duration> {
    let key = admin_a.create_key(&format!("bench-cross-{name}-{}", uuid::Uuid::new_v4().simple())).await?;
    let target = dataplane.target(&key.secret);
    wait_until(&target, true, Duration::from_secs(30)).await?;
    let conn = Conn::open(target.addr).await?;
    let start = Instant::now();
    let probe = tokio::spawn(probe_until_refused(target, conn, start, probe_period));
    admin_a.revoke_key(&key.id).await?;
    probe.await?
}
