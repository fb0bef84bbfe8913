//! One config stream per data-plane replica.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aurora_proto::PreEncoded;
use aurora_proto::encoded::config_service_server::ConfigService;
use aurora_proto::v1::{Heartbeat, Hello, SubscribeRequest, SubscribeResponse, subscribe_request, subscribe_response};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::feed::{ChangeFeed, TooOld};
use super::snapshot::SnapshotSource;
use crate::capacity::{Capacity, LeaseFeed};
use crate::fleet::{Fleet, Registration};
use crate::store::Revision;

/// How long a replica has to send its `Hello` after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ConfigStream {
    feed: Arc<ChangeFeed>,
    snapshots: Arc<SnapshotSource>,
    fleet: Arc<Fleet>,
    heartbeat: Duration,
    /// Turns true when the control plane shuts down: every stream closes at once so replicas
    /// reconnect to another control plane instead of waiting for a drain that never ends.
    closing: watch::Receiver<bool>,
    /// Where usage reports go; without it they stay unacknowledged (the replica keeps them).
    usage: Option<Arc<super::UsageIngest>>,
    /// Where demand reports go and leases come from; without it, demand reports are dropped
    /// and no leases are sent (replicas apply the limit fallback).
    capacity: Option<Arc<Capacity>>,
}

impl ConfigStream {
    pub fn new(
        feed: Arc<ChangeFeed>,
        snapshots: Arc<SnapshotSource>,
        fleet: Arc<Fleet>,
        heartbeat: Duration,
        closing: watch::Receiver<bool>,
    ) -> Self {
        ConfigStream { feed, snapshots, fleet, heartbeat, closing, usage: None, capacity: None }
    }

    /// Accepts usage reports on the streams and commits them through `ingest`.
    pub fn with_usage(mut self, ingest: Arc<super::UsageIngest>) -> Self {
        self.usage = Some(ingest);
        self
    }

    /// Takes demand reports and sends every replica its capacity leases (issue 13).
    pub fn with_capacity(mut self, capacity: Arc<Capacity>) -> Self {
        self.capacity = Some(capacity);
        self
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigStream {
    type SubscribeStream = ReceiverStream<Result<PreEncoded, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let address = request.remote_addr();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::Hello(hello)) }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello received within 10 s")),
            Ok(_) => return Err(Status::invalid_argument("the first message on the stream must be a Hello")),
        };
        // From here on node_id and version are safe to keep, list and log as they are.
        super::limits::check_hello(&hello)?;

        // A small buffer: a slow replica back-pressures its own session, nobody else's.
        let (outbound, receiver) = mpsc::channel(16);
        tracing::info!(node_id = %hello.node_id, ?address, last_revision = hello.last_revision, version = %hello.version, "data plane connected");
        let registration = self.fleet.register(hello.node_id.clone(), address, hello.version.clone());
        let session = Session {
            stream: self.clone(),
            node_id: hello.node_id.clone(),
            registration,
            outbound,
            sent: hello.last_revision,
        };
        tokio::spawn(session.run(hello, inbound));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

struct Session {
    stream: ConfigStream,
    node_id: String,
    registration: Registration,
    outbound: mpsc::Sender<Result<PreEncoded, Status>>,
    /// The newest revision this replica has been sent (or said it had).
    sent: Revision,
}

/// Why a session ended; only logged.
#[derive(Debug)]
enum End {
    ReplicaClosed,
    ReplicaError(Status),
    ProtocolError(&'static str),
    Internal(String),
    ShuttingDown,
}

impl Session {
    async fn run(mut self, hello: Hello, mut inbound: Streaming<SubscribeRequest>) {
        let Err(end) = self.serve(hello, &mut inbound).await;
        let status = match &end {
            End::ReplicaClosed => {
                tracing::info!(node_id = %self.node_id, "data plane disconnected");
                None
            }
            End::ReplicaError(status) => {
                tracing::info!(node_id = %self.node_id, error = %status, "data plane stream failed");
                None
            }
            End::ProtocolError(message) => Some(Status::invalid_argument(*message)),
            End::Internal(message) => Some(Status::internal(message.clone())),
            End::ShuttingDown => Some(Status::unavailable("the control plane is shutting down; reconnect")),
        };
        if let Some(status) = status {
            tracing::warn!(node_id = %self.node_id, error = %status, "closing config stream");
            let _ = self.outbound.send(Err(status)).await;
        }
    }

    async fn serve(&mut self, hello: Hello, inbound: &mut Streaming<SubscribeRequest>) -> Result<Infallible, End> {
        let mut head = self.stream.feed.subscribe();
        // New, ahead of the store, or from another store's history (a restored backup, another
        // database): only a snapshot is sure to be right. A replica behind what the feed
        // retains is found out below (TooOld).
        let own_history = hello.store_id.as_slice() == self.stream.feed.store_id().as_slice();
        let mut snapshot_now =
            hello.last_revision == 0 || !own_history || hello.last_revision > self.stream.feed.head();
        // Set after a Nack: the replica ignores deltas until its next snapshot, which it gets
        // with the next change, never by re-sending the revision it rejected.
        let mut snapshot_on_next_change = false;
        let mut closing = self.stream.closing.clone();
        let mut cooldowns = self.stream.fleet.credential_health().subscribe();
        // Joined before the first snapshot is sent; the first leases follow it.
        let mut leases = self.stream.capacity.as_ref().map(|capacity| capacity.join(self.registration.id()));
        let mut heartbeat = tokio::time::interval(self.stream.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let target = *head.borrow_and_update();
            let changed = target > self.sent;
            if snapshot_now || (snapshot_on_next_change && changed) {
                self.send_snapshot().await?;
                snapshot_now = false;
                snapshot_on_next_change = false;
            } else if changed && !snapshot_on_next_change {
                match self.stream.feed.deltas_after(self.sent) {
                    Ok(deltas) => {
                        for (revision, bytes) in deltas {
                            self.send(bytes).await?;
                            self.sent = revision;
                        }
                        self.sent = self.sent.max(target);
                    }
                    Err(TooOld) => {
                        snapshot_now = true;
                        continue;
                    }
                }
            }

            tokio::select! {
                () = shutting_down(&mut closing) => return Err(End::ShuttingDown),
                changed = head.changed() => if changed.is_err() {
                    return Err(End::Internal("the change feed stopped".into()));
                },
                cooldown = cooldowns.recv() => self.forward_cooldowns(cooldown).await?,
                lease = next_leases(&mut leases) => self.send(lease).await?,
                _ = heartbeat.tick() => {
                    let beat = subscribe_response::Message::Heartbeat(Heartbeat { head_revision: self.stream.feed.head() });
                    self.send(PreEncoded::encode(&SubscribeResponse { message: Some(beat) })).await?;
                }
                message = inbound.message() => match message {
                    // A replica cannot have applied what it was never sent: clamping keeps a
                    // confused replica from satisfying --wait or freezing its own stream.
                    Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::Ack(ack)) })) => {
                        self.registration.ack(ack.revision.min(self.sent));
                    }
                    Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::Nack(nack)) })) => {
                        let revision = nack.revision.min(self.sent);
                        let error = super::limits::nack_error(&nack.error);
                        tracing::warn!(node_id = %self.node_id, revision, %error, resync = nack.resync, "data plane rejected a revision; it keeps its last good state");
                        self.registration.reject(revision, error);
                        if nack.resync {
                            // It saw a gap: nothing but a snapshot lets it continue.
                            snapshot_now = true;
                        } else {
                            snapshot_on_next_change = true;
                        }
                    }
                    Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::CredentialReport(report)) })) => {
                        self.credential_report(&report)?;
                    }
                    Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::UsageReport(report)) })) => {
                        if let Some(usage) = &self.stream.usage {
                            usage.submit(&self.node_id, report, &self.outbound);
                        }
                    }
                    Ok(Some(SubscribeRequest { message: Some(subscribe_request::Message::DemandReport(report)) })) => {
                        if let Some(capacity) = &self.stream.capacity {
                            capacity.report(self.registration.id(), &report);
                        }
                    }
                    Ok(Some(_)) => return Err(End::ProtocolError("unexpected message: only Ack, Nack and reports may follow the Hello")),
                    Ok(None) => return Err(End::ReplicaClosed),
                    Err(status) => return Err(End::ReplicaError(status)),
                },
            }
        }
    }

    fn credential_report(&self, report: &aurora_proto::v1::CredentialReport) -> Result<(), End> {
        let board = self.stream.fleet.credential_health();
        board.report(self.registration.id(), report, std::time::SystemTime::now()).map_err(|err| {
            tracing::warn!(node_id = %self.node_id, error = %err, "refused a credential report");
            End::ProtocolError("invalid credential report")
        })
    }

    /// Passes cooldowns some replica reported on to this one. A lagging receiver lost some
    /// cooldowns: those replicas then learn of a throttled credential from its own 429.
    async fn forward_cooldowns(
        &self,
        cooldown: Result<aurora_proto::v1::CredentialCooldowns, tokio::sync::broadcast::error::RecvError>,
    ) -> Result<(), End> {
        match cooldown {
            Ok(cooldowns) => {
                let message = subscribe_response::Message::CredentialCooldowns(cooldowns);
                self.send(PreEncoded::encode(&SubscribeResponse { message: Some(message) })).await
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(node_id = %self.node_id, missed, "credential cooldowns dropped for a slow stream");
                Ok(())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                Err(End::Internal("the cooldown feed stopped".into()))
            }
        }
    }

    async fn send_snapshot(&mut self) -> Result<(), End> {
        let snapshot = self.stream.snapshots.current().await.map_err(|err| End::Internal(err.to_string()))?;
        tracing::info!(node_id = %self.node_id, revision = snapshot.revision, chunks = snapshot.chunks.len(), "sending snapshot");
        for chunk in snapshot.chunks.iter() {
            self.send(chunk.clone()).await?;
        }
        self.sent = snapshot.revision;
        Ok(())
    }

    /// Queues one message; fails when the replica has gone away.
    async fn send(&self, bytes: PreEncoded) -> Result<(), End> {
        self.outbound.send(Ok(bytes)).await.map_err(|_| End::ReplicaClosed)
    }
}

/// The replica's next leases; never resolves without a capacity board.
async fn next_leases(feed: &mut Option<LeaseFeed>) -> PreEncoded {
    if let Some(feed) = feed {
        loop {
            if feed.receiver.changed().await.is_err() {
                break;
            }
            if let Some(leases) = feed.receiver.borrow_and_update().clone() {
                return leases;
            }
        }
    }
    std::future::pending().await
}

/// Resolves once the control plane starts shutting down (or the signal is gone).
async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}
