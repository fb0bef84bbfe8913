//! Streaming: time to first event and each event's delivery delay.
//!
//! The upstream stamps every event with the moment it wrote it (nanoseconds since the shared
//! [`crate::upstream::epoch`]); the client reads the stamp when the event is complete. The
//! difference is the event's delivery delay through the path: loopback and hyper for the
//! direct baseline, plus the gateway for the others. Time to first event is measured from
//! the moment the request was sent.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::BodyExt;

use super::{Conn, Target, histogram};
use crate::upstream::epoch;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) streams: usize,
    pub(crate) events: u64,
    pub(crate) gap: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) first_event: Histogram<u64>,
    pub(crate) delivery: Histogram<u64>,
    /// Streams that ended early or carried fewer events than asked.
    pub(crate) broken: u64,
}

impl Outcome {
    pub(crate) fn empty() -> Outcome {
        Outcome { first_event: histogram(), delivery: histogram(), broken: 0 }
    }
}

/// Opens `plan.streams` streams one after another on one keep-alive connection.
pub(crate) async fn run(target: &Target, plan: Plan) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::empty();
    let mut conn = Conn::open(target.addr).await?;
    for _ in 0..plan.streams {
        if conn.is_closed() {
            conn = Conn::open(target.addr).await?;
        }
        let request = target.request(&[
            ("x-bench-events", plan.events.to_string()),
            ("x-bench-gap-us", plan.gap.as_micros().to_string()),
        ])?;
        let sent = Instant::now();
        conn.sender().ready().await?;
        let response = conn.sender().send_request(request).await?;
        if !response.status().is_success() {
            outcome.broken += 1;
            continue;
        }
        let mut body = response.into_body();
        let mut buffer = String::new();
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            let now_ns = epoch().elapsed().as_nanos() as u64;
            let now = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(sent_ns) = stamp(&event) else { continue };
                if seen == 0 {
                    let _ = outcome.first_event.record((now - sent).as_nanos() as u64);
                }
                let _ = outcome.delivery.record(now_ns.saturating_sub(sent_ns).max(1_000));
                seen += 1;
            }
        }
        if seen < plan.events {
            outcome.broken += 1;
        }
    }
    Ok(outcome)
}

fn stamp(event: &str) -> Option<u64> {
    let rest = &event[event.find("\"sent_ns\":")? + "\"sent_ns\":".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_upstream_stamp() {
        let event = "event: content_block_delta\ndata: {\"type\":\"x\",\"sent_ns\":12345}\n\n";
        assert_eq!(super::stamp(event), Some(12345));
        assert_eq!(super::stamp("event: message_stop\n\n"), None);
    }
}
