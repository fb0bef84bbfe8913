//! One subscription session: hello, then apply and acknowledge until the stream ends.

use std::sync::Arc;
use std::time::Duration;

use aurora_proto::v1::config_service_client::ConfigServiceClient;
use aurora_proto::v1::{Ack, Hello, Nack, SubscribeRequest, SubscribeResponse, subscribe_request, subscribe_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use super::{Subscriber, connect};
use crate::credentials;
use crate::limits::DemandReporter;
use crate::snapshot::{Snapshot, SnapshotAssembly};

/// Config messages can be large (a snapshot chunk holds 10 000 keys); allow generous room.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Rejected(Status),
    #[error("stream failed: {}: {}", .0.code(), .0.message())]
    Stream(Status),
    #[error("nothing received for {0:?}; the control plane is presumed gone")]
    Stalled(Duration),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

pub(super) async fn run(subscriber: &Subscriber, endpoint: &Endpoint) -> Result<(), SessionError> {
    let channel = endpoint.connect().await.map_err(SessionError::Connect)?;
    let authorization = subscriber.authorization()?;
    let mut client = ConfigServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", authorization.clone());
        Ok(request)
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let (outbound, receiver) = mpsc::channel(64);
    let (last_revision, store_id) =
        subscriber.state.load().as_ref().map_or((0, Vec::new()), |s| (s.revision, s.store_id.to_vec()));
    let hello = Hello {
        node_id: subscriber.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        last_revision,
        store_id,
    };
    let _ = outbound.send(request(subscribe_request::Message::Hello(hello))).await;
    // A control plane that accepts the connection but never answers must not hold the replica.
    let subscribed = tokio::time::timeout(subscriber.stall_timeout, client.subscribe(ReceiverStream::new(receiver)))
        .await
        .map_err(|_| SessionError::Stalled(subscriber.stall_timeout))?;
    let mut inbound = subscribed
        .map_err(|status| match status.code() {
            Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => SessionError::Rejected(status),
            _ => SessionError::Stream(status),
        })?
        .into_inner();
    tracing::info!(control_plane = %connect::shown(endpoint), last_revision, "subscribed to the control plane");
    subscriber.metrics.set_connected(true);
    subscriber.metrics.message_received();

    // Pending usage reports go out on this stream until it ends (see `usage_report`).
    let _usage = subscriber.usage.as_ref().map(|usage| AbortOnDrop(usage.attach(outbound.clone())));
    let mut applier = Applier { subscriber, outbound, assembly: None, awaiting_snapshot: false };
    let mut reporter = credentials::report::Reporter::new();
    let mut demand = DemandReporter::new(subscriber.limiters.clone());
    loop {
        // Reports go out between messages; the stall deadline still counts from the last one.
        let deadline = tokio::time::Instant::now() + subscriber.stall_timeout;
        let received = loop {
            tokio::select! {
                received = tokio::time::timeout_at(deadline, inbound.message()) => break received,
                report = reporter.next(&subscriber.state) => {
                    applier.send(subscribe_request::Message::CredentialReport(report)).await;
                }
                report = demand.next() => {
                    applier.send(subscribe_request::Message::DemandReport(report)).await;
                }
            }
        };
        let message = match received {
            Err(_) => return Err(SessionError::Stalled(subscriber.stall_timeout)),
            Ok(Err(status)) => return Err(SessionError::Stream(status)),
            Ok(Ok(None)) => return Err(SessionError::Closed),
            Ok(Ok(Some(SubscribeResponse { message }))) => message,
        };
        subscriber.metrics.message_received();
        match message {
            Some(subscribe_response::Message::Snapshot(chunk)) => applier.snapshot_chunk(chunk).await,
            Some(subscribe_response::Message::Delta(delta)) => applier.delta(delta).await?,
            Some(subscribe_response::Message::Heartbeat(beat)) => applier.heartbeat(beat.head_revision).await,
            Some(subscribe_response::Message::CredentialCooldowns(cooldowns)) => {
                credentials::report::apply_cooldowns(&subscriber.state, &cooldowns, std::time::SystemTime::now());
            }
            Some(subscribe_response::Message::UsageAck(ack)) => {
                if let Some(usage) = &subscriber.usage {
                    usage.acknowledged(&ack);
                }
            }
            // This replica's share of each limited key's capacity, replacing the previous one.
            Some(subscribe_response::Message::Leases(leases)) => subscriber.limiters.apply_leases(&leases),
            None => {}
        }
    }
}

/// Stops a session's task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn request(message: subscribe_request::Message) -> SubscribeRequest {
    SubscribeRequest { message: Some(message) }
}

/// Applies messages in stream order and answers each revision.
struct Applier<'a> {
    subscriber: &'a Subscriber,
    outbound: mpsc::Sender<SubscribeRequest>,
    assembly: Option<SnapshotAssembly>,
    /// After a rejected revision, deltas cannot apply (they build on a state this replica does
    /// not have) until the control plane sends a fresh snapshot.
    awaiting_snapshot: bool,
}

impl Applier<'_> {
    async fn snapshot_chunk(&mut self, chunk: aurora_proto::v1::SnapshotChunk) {
        let revision = chunk.revision;
        let last = chunk.last;
        let assembly = self.assembly.take();
        if !chunk.first && assembly.is_none() {
            // The rest of a snapshot already rejected: nothing to do.
            return;
        }
        // Inserting 10 000 keys takes milliseconds: done on the blocking pool, so the threads
        // serving requests never stall while a large snapshot arrives.
        let assembled = tokio::task::spawn_blocking(move || match assembly {
            Some(mut assembly) if !chunk.first => assembly.add(&chunk).map(|()| assembly),
            _ => SnapshotAssembly::start(chunk),
        })
        .await;
        let assembly = match assembled {
            Ok(Ok(assembly)) => assembly,
            Ok(Err(err)) => return self.reject(revision, &err).await,
            Err(join) => {
                tracing::error!(error = %join, "snapshot assembly failed");
                return;
            }
        };
        if !last {
            self.assembly = Some(assembly);
            return;
        }
        let snapshot = assembly.finish();
        tracing::info!(revision, keys = snapshot.keys.len(), "applied configuration snapshot");
        self.awaiting_snapshot = false;
        self.publish(snapshot, None).await;
    }

    async fn delta(&mut self, delta: aurora_proto::v1::Delta) -> Result<(), SessionError> {
        if self.assembly.is_some() {
            return Err(SessionError::Protocol("a delta arrived in the middle of a snapshot"));
        }
        if self.awaiting_snapshot {
            return Ok(());
        }
        let Some(current) = self.subscriber.state.load_full() else {
            return Err(SessionError::Protocol("a delta arrived before any snapshot"));
        };
        if delta.revision <= current.revision {
            return Ok(());
        }
        // Every revision changes something, so revisions arrive one by one. A gap means a
        // change this replica never saw: applying the next one on top would be wrong, so it
        // asks for a snapshot at once.
        if delta.revision != current.revision + 1 {
            let error = format!("revision gap: have {}, received {}", current.revision, delta.revision);
            tracing::error!(%error, "asking the control plane for a fresh snapshot");
            self.awaiting_snapshot = true;
            let nack = Nack { revision: delta.revision, error, resync: true };
            self.send(subscribe_request::Message::Nack(nack)).await;
            return Ok(());
        }
        match current.apply(&delta) {
            Ok(next) => {
                tracing::debug!(
                    revision = delta.revision,
                    changes = delta.changes.len(),
                    "applied configuration delta"
                );
                self.publish(next, Some(delta)).await;
            }
            Err(err) => self.reject(delta.revision, &err).await,
        }
        Ok(())
    }

    /// Answers a heartbeat with the durable revision, so the control plane sees this replica
    /// alive and current even when nothing changes.
    async fn heartbeat(&mut self, head_revision: u64) {
        let applied = self.subscriber.state.revision().unwrap_or(0);
        let durable = self.subscriber.durability.durable_revision().min(applied);
        tracing::trace!(head_revision, applied, durable, "heartbeat");
        self.send(subscribe_request::Message::Ack(Ack { revision: durable })).await;
    }

    /// Serves the revision at once, and acknowledges it once it is durable: an ack means
    /// "applied, and this replica restarts at this revision or later".
    async fn publish(&mut self, mut snapshot: Snapshot, delta: Option<aurora_proto::v1::Delta>) {
        if let Some(previous) = self.subscriber.state.load_full() {
            // Cooldowns and counters outlive the revision that changed something else.
            snapshot.adopt_credential_health(&previous);
        }
        let snapshot = Arc::new(snapshot);
        self.subscriber.state.publish(snapshot.clone());
        self.subscriber.applied.send_replace(Some(snapshot.clone()));
        self.subscriber.durability.persist(snapshot, delta, &self.outbound).await;
    }

    async fn reject(&mut self, revision: u64, err: &crate::snapshot::ApplyError) {
        tracing::error!(revision, error = %err, "rejected a configuration update; keeping the last good configuration");
        self.awaiting_snapshot = true;
        self.send(subscribe_request::Message::Nack(Nack { revision, error: err.to_string(), resync: false })).await;
    }

    async fn send(&self, message: subscribe_request::Message) {
        // A failed send means the stream is gone; the read loop notices and reconnects.
        let _ = self.outbound.send(request(message)).await;
    }
}
