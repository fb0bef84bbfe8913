//! Fixed-rate (open-loop) load with coordinated omission accounted for.
//!
//! Request i is scheduled at `start + i / rate`. A pool of workers, each with its own
//! keep-alive connection, claims the next index in order. A worker that claims a request whose
//! scheduled time has already passed (every worker was busy: the system under test fell
//! behind) measures it from the *scheduled* time, so a stall is charged to every request it
//! delayed, as wrk2 does. A worker that is early sleeps until the scheduled time and measures
//! from the moment it actually sent: tokio's timer has millisecond granularity, and that
//! wake-up lateness is the generator's, not the gateway's (it is reported separately).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{Conn, Target, histogram};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) connections: usize,
}

/// What one fixed-rate run measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) latency: Histogram<u64>,
    /// Responses by class.
    pub(crate) ok: u64,
    pub(crate) rejected: u64,
    pub(crate) errors: u64,
    /// Requests answered by the gateway itself (`x-aurora-error`).
    pub(crate) gateway_answered: u64,
    /// Requests sent later than scheduled because every worker was busy.
    pub(crate) late: u64,
    pub(crate) elapsed: Duration,
}

impl Outcome {
    pub(crate) fn empty() -> Outcome {
        Outcome {
            latency: histogram(),
            ok: 0,
            rejected: 0,
            errors: 0,
            gateway_answered: 0,
            late: 0,
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn merge(&mut self, other: &Outcome) {
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.errors += other.errors;
        self.gateway_answered += other.gateway_answered;
        self.late += other.late;
        self.elapsed += other.elapsed;
    }

    pub(crate) fn total(&self) -> u64 {
        self.ok + self.rejected + self.errors
    }

    /// The latency at `quantile`, in microseconds.
    pub(crate) fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    pub(crate) fn achieved_rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `plan` against `target` and returns every request's latency.
pub(crate) async fn run(target: &Target, plan: Plan) -> anyhow::Result<Outcome> {
    let total = plan.rate * plan.duration.as_millis() as u64 / 1_000;
    let interval = Duration::from_nanos(1_000_000_000 / plan.rate.max(1));
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(Conn::open(target.addr).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(5);
    let mut workers = tokio::task::JoinSet::new();
    for conn in conns {
        let target = target.clone();
        let next = next.clone();
        workers.spawn(worker(target, conn, next, total, start, interval));
    }
    let mut outcome = Outcome::empty();
    while let Some(result) = workers.join_next().await {
        outcome.merge(&result??);
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

async fn worker(
    target: Target,
    mut conn: Conn,
    next: Arc<AtomicU64>,
    total: u64,
    start: Instant,
    interval: Duration,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::empty();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= total {
            break;
        }
        let scheduled = start + interval * u32::try_from(index).unwrap_or(u32::MAX);
        let now = Instant::now();
        let origin = if now > scheduled {
            outcome.late += 1;
            scheduled
        } else {
            tokio::time::sleep_until(scheduled.into()).await;
            Instant::now()
        };
        if conn.is_closed() {
            conn = Conn::open(target.addr).await?;
        }
        let request = target.request(&[])?;
        match conn.send(request).await {
            Ok((status, gateway)) => {
                if status.is_success() {
                    outcome.ok += 1;
                } else {
                    outcome.rejected += 1;
                }
                if gateway {
                    outcome.gateway_answered += 1;
                }
            }
            Err(_) => {
                outcome.errors += 1;
                conn = Conn::open(target.addr).await?;
            }
        }
        let _ = outcome.latency.record(origin.elapsed().as_nanos() as u64);
    }
    Ok(outcome)
}
