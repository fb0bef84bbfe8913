//! Control-plane usage ingest: 20 simulated data planes send usage reports on their config
//! streams as fast as acknowledgements come back (a window of reports in flight each), and the
//! control plane commits and acknowledges them. Measured: reports and rows committed per second,
//! and the CPU the control-plane process spent doing it (from `/proc/PID/stat`).
//!
//! The simulated data planes speak the real protocol (Hello, then `UsageReport`s, counting
//! `UsageAck`s), so what is measured is the production ingest path: validation, the batching
//! queue, one transaction per batch with the dedup insert, and the acks.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use aurora_proto::v1::config_service_client::ConfigServiceClient;
use aurora_proto::v1::{Hello, SubscribeRequest, UsageReport, UsageRow, subscribe_request, subscribe_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::aurora::{ControlPlane, NODE_TOKEN};
use crate::report::{Report, Table, rate};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) dataplanes: usize,
    pub(crate) reports_per_dataplane: u64,
    pub(crate) rows_per_report: usize,
    /// Reports each data plane keeps in flight.
    pub(crate) window: usize,
}

impl Scale {
    /// 20 data planes in the full run; a handful of reports for `--smoke`.
    pub(crate) fn for_run(smoke: bool) -> Scale {
        if smoke {
            Scale { dataplanes: 3, reports_per_dataplane: 5, rows_per_report: 10, window: 4 }
        } else {
            Scale { dataplanes: 20, reports_per_dataplane: 200, rows_per_report: 100, window: 8 }
        }
    }
}

/// The process's user + system CPU time, from `/proc/PID/stat` (clock ticks of 1/100 s, the
/// fixed USER_HZ of that file).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn report_for(node: usize, sequence: u64, rows: usize, hour: i64) -> UsageReport {
    UsageReport {
        node_id: format!("bench-usage-{node:02}"),
        incarnation: vec![u8::try_from(node % 256).unwrap_or(0); 16],
        sequence,
        rows: (0..rows)
            .map(|row| UsageRow {
                // Keys overlap across data planes, as they do in a fleet behind one balancer.
                key_id: uuid::Uuid::from_u128(row as u128 + 1).to_string(),
                provider: if row % 2 == 0 { "anthropic" } else { "openai" }.into(),
                model: format!("model-{}", row % 3),
                bucket_start: hour,
                requests: 1,
                input_tokens: 100,
                output_tokens: 10,
                ..UsageRow::default()
            })
            .collect(),
    }
}

/// One simulated data plane: sends `scale.reports_per_dataplane` reports, at most
/// `scale.window` unacknowledged at a time, and returns when all are acknowledged.
async fn simulate(url: String, node: usize, scale: Scale, hour: i64) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url)?.connect().await?;
    let token: tonic::metadata::AsciiMetadataValue = format!("Bearer {NODE_TOKEN}").parse()?;
    let mut client = ConfigServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", token.clone());
        Ok(request)
    });
    let (outbound, receiver) = mpsc::channel(scale.window + 4);
    let hello = Hello { node_id: format!("bench-usage-{node:02}"), version: "bench".into(), ..Hello::default() };
    outbound.send(SubscribeRequest { message: Some(subscribe_request::Message::Hello(hello)) }).await?;
    let mut inbound = client.subscribe(ReceiverStream::new(receiver)).await?.into_inner();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < scale.reports_per_dataplane {
        while sent < scale.reports_per_dataplane && sent - acked < scale.window as u64 {
            sent += 1;
            let report = report_for(node, sent, scale.rows_per_report, hour);
            let message = subscribe_request::Message::UsageReport(report);
            outbound.send(SubscribeRequest { message: Some(message) }).await?;
        }
        match inbound.message().await?.context("the control plane closed the stream")?.message {
            Some(subscribe_response::Message::UsageAck(_)) => acked += 1,
            _ => continue,
        }
    }
    Ok(())
}

pub(crate) async fn run(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    scale: Scale,
) -> anyhow::Result<()> {
    let control_plane = ControlPlane::start(bin, &dir.join("cp-usage"), upstream, None).await?;
    let pid = control_plane.proc.pid().context("control plane pid")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let hour = i64::try_from(now - now % 3600)?;
    let cpu_before = cpu_seconds(pid).context("cannot read the control plane's CPU time")?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for node in 0..scale.dataplanes {
        tasks.spawn(simulate(control_plane.url(), node, scale, hour));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().max(Duration::from_millis(1)).as_secs_f64();
    let cpu = cpu_seconds(pid).context("cannot read the control plane's CPU time")? - cpu_before;
    let reports = scale.dataplanes as f64 * scale.reports_per_dataplane as f64;
    let rows = reports * scale.rows_per_report as f64;

    let mut table = Table::new(&[
        "data planes",
        "reports",
        "rows per report",
        "reports/s",
        "rows/s",
        "control-plane CPU",
        "cores busy",
    ]);
    table.row(vec![
        scale.dataplanes.to_string(),
        format!("{reports:.0}"),
        scale.rows_per_report.to_string(),
        rate(reports / elapsed),
        rate(rows / elapsed),
        format!("{cpu:.2} s"),
        format!("{:.2}", cpu / elapsed),
    ]);
    report.section(format!(
        "## Usage ingest\n\n{} simulated data planes each send {} usage reports of {} rows on their config \
         streams, {} in flight at a time; the control plane (SQLite) commits them in batches, each \
         report's identity in the same transaction, and acknowledges each after its commit. Reports and \
         rows per second are committed-and-acknowledged throughput; CPU is the control-plane process's \
         user + system time over the run.\n\n{}",
        scale.dataplanes,
        scale.reports_per_dataplane,
        scale.rows_per_report,
        scale.window,
        table.render()
    ));
    Ok(())
}
