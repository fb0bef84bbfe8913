//! The config stream's protocol, spoken directly to a real control plane: what a replica is sent
//! after it rejects a revision, whether following deltas ends where a snapshot starts, and what
//! `--wait` reports when a replica leaves without acknowledging.

use std::time::Duration;

use aurora_dataplane::Snapshot;
use aurora_dataplane::snapshot::SnapshotAssembly;
use aurora_proto::v1::{Ack, Hello, Nack, SubscribeRequest, SubscribeResponse, subscribe_request, subscribe_response};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::wait::{self, DEADLINE};

/// A hand-driven replica: it applies what it is sent exactly as a data plane does.
struct Replica {
    outbound: mpsc::Sender<SubscribeRequest>,
    inbound: Streaming<SubscribeResponse>,
}

impl Replica {
    async fn connect(cp: &TestControlplane, node_id: &str, last_revision: u64, store_id: &[u8]) -> Self {
        let hello =
            Hello { node_id: node_id.into(), version: "test".into(), last_revision, store_id: store_id.to_vec() };
        let (outbound, inbound) = crate::support::config_stream::subscribe(cp, hello).await.unwrap();
        Replica { outbound, inbound }
    }

    /// The next snapshot or delta, skipping heartbeats and capacity leases (issue 13: the
    /// control plane sends every replica its leases, an empty set included, at connect).
    async fn next(&mut self) -> subscribe_response::Message {
        loop {
            let response = tokio::time::timeout(DEADLINE, self.inbound.message()).await.unwrap().unwrap().unwrap();
            match response.message.unwrap() {
                subscribe_response::Message::Heartbeat(_) | subscribe_response::Message::Leases(_) => continue,
                other => return other,
            }
        }
    }

    /// Reads a whole snapshot (all its chunks).
    async fn snapshot(&mut self) -> Snapshot {
        let subscribe_response::Message::Snapshot(first) = self.next().await else { panic!("expected a snapshot") };
        let mut last = first.last;
        let mut assembly = SnapshotAssembly::start(first).unwrap();
        while !last {
            let subscribe_response::Message::Snapshot(chunk) = self.next().await else { panic!("expected a chunk") };
            last = chunk.last;
            assembly.add(&chunk).unwrap();
        }
        assembly.finish()
    }

    async fn send(&self, message_: subscribe_request::Message) {
        self.outbound.send(message(message_)).await.unwrap();
    }

    /// Nothing but heartbeats (and leases) arrives for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(response) = tokio::time::timeout_at(deadline, self.inbound.message()).await {
            let message = response.unwrap().unwrap().message.unwrap();
            let quiet =
                matches!(message, subscribe_response::Message::Heartbeat(_) | subscribe_response::Message::Leases(_));
            assert!(quiet, "unexpected {message:?}");
        }
    }
}

fn message(message: subscribe_request::Message) -> SubscribeRequest {
    SubscribeRequest { message: Some(message) }
}

/// Sorted keys, providers, settings and master key: a snapshot's content, order-independent.
fn content(snapshot: &Snapshot) -> String {
    let mut chunk = snapshot.to_chunk();
    chunk.keys.sort_by(|a, b| a.hash.cmp(&b.hash));
    chunk.revision = 0;
    format!("{:?}|{:?}|{:?}|{:?}", chunk.settings, chunk.providers, chunk.master_key_hash, chunk.keys)
}

#[tokio::test]
async fn wait_fails_naming_a_replica_that_left_without_acknowledging() {
    let cp = TestControlplane::start(&[]).await;
    // No data plane at all: vacuously applied, and the CLI says so.
    let alone = cp.cli(&["keys", "create", "--name", "alone", "--wait"]).await;
    alone.ok();
    assert!(alone.stderr.contains("committed; no data planes are connected"), "{alone:?}");

    let mut replica = Replica::connect(&cp, "leaver", 0, &[]).await;
    let snapshot = replica.snapshot().await;
    replica.send(subscribe_request::Message::Ack(Ack { revision: snapshot.revision })).await;
    let wait = cp.cli(&["keys", "create", "--name", "unconfirmed", "--wait", "--wait-timeout", "3s"]);
    let logs = &cp.process;
    let leave = async move {
        // Receives the change, then goes away without acknowledging it once the wait has begun
        // (a wait that begins after it left cannot know it was ever there).
        let subscribe_response::Message::Delta(delta) = replica.next().await else { panic!("expected a delta") };
        wait::until("the wait to begin", || {
            logs.events().into_iter().find(|e| {
                e["message"] == "waiting for the data planes to apply a revision"
                    && e["revision"].as_u64() == Some(delta.revision)
            })
        })
        .await;
        drop(replica);
    };
    let (waited, ()) = tokio::join!(wait, leave);
    assert_ne!(waited.code, Some(0), "{waited:?}");
    assert!(waited.error_line().contains("by 1 of 1 data planes"), "{waited:?}");
    assert!(waited.error_line().ends_with(": leaver (disconnected)"), "{waited:?}");
}

#[tokio::test]
async fn a_rejected_revision_is_never_sent_again() {
    // Fast heartbeats, so "not re-sent" below spans several of them.
    let cp = TestControlplane::start(&[("AURORA_HEARTBEAT_INTERVAL", "100ms")]).await;
    let mut replica = Replica::connect(&cp, "stubborn", 0, &[]).await;
    let snapshot = replica.snapshot().await;
    replica.send(subscribe_request::Message::Ack(Ack { revision: snapshot.revision })).await;

    let created = cp.cli(&["keys", "create", "--name", "first", "-o", "json"]).await.json();
    let rejected = created["revision"].as_u64().unwrap();
    let subscribe_response::Message::Delta(delta) = replica.next().await else { panic!("expected a delta") };
    assert_eq!(delta.revision, rejected);
    let nack = Nack { revision: rejected, error: "cannot apply".into(), resync: false };
    replica.send(subscribe_request::Message::Nack(nack)).await;

    // Not re-sent while several heartbeats go by (which also proves the stream stays up).
    replica.assert_quiet(Duration::from_millis(700)).await;
    let fleet = cp.cli(&["dataplanes", "-o", "json"]).await.json();
    assert_eq!(fleet["data_planes"][0]["rejected_revision"], rejected);
    assert_eq!(fleet["data_planes"][0]["rejected_reason"], "cannot apply");

    // The next change brings a whole fresh snapshot, not deltas on a state the replica lacks.
    cp.cli(&["keys", "create", "--name", "second"]).await.ok();
    let fresh = replica.snapshot().await;
    assert_eq!(fresh.revision, rejected + 1);
    assert_eq!(fresh.keys.len(), 2);
}

#[tokio::test]
async fn following_deltas_ends_exactly_where_a_fresh_snapshot_starts() {
    let cp = TestControlplane::start(&[]).await;
    let mut follower = Replica::connect(&cp, "follower", 0, &[]).await;
    let mut state = follower.snapshot().await;

    // Every kind of change: keys created, updated, revoked and deleted, providers changed and
    // deleted, settings changed.
    let mut ids = Vec::new();
    for i in 0..6 {
        let created = cp.cli(&["keys", "create", "--name", &format!("k{i}"), "-o", "json"]).await.json();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    cp.cli(&["keys", "update", &ids[0], "--disable", "--providers", "anthropic,vllm"]).await.ok();
    cp.cli(&["keys", "update", &ids[1], "--expires-in", "30d"]).await.ok();
    cp.cli(&["keys", "revoke", &ids[2]]).await.ok();
    cp.cli(&["keys", "delete", &ids[3]]).await.ok();
    let env = [("AURORA_MASTER_KEY", ADMIN_KEY), ("CRED", "sk-follow")];
    cp.cli_with(&["providers", "set", "openai", "--api-key-env", "CRED", "--base-url", "http://gpu:1/v1"], &env, None)
        .await
        .ok();
    cp.cli(&["providers", "delete", "zai"]).await.ok();
    cp.cli(&["providers", "set", "vllm", "--disable"]).await.ok();
    let head =
        cp.cli(&["settings", "set", "--v1-alias", "false", "-o", "json"]).await.json()["revision"].as_u64().unwrap();

    while state.revision < head {
        match follower.next().await {
            subscribe_response::Message::Delta(delta) => state = state.apply(&delta).unwrap(),
            other => panic!("expected only deltas, got {other:?}"),
        }
    }

    let mut newcomer = Replica::connect(&cp, "newcomer", 0, &[]).await;
    let fresh = newcomer.snapshot().await;
    assert_eq!(fresh.revision, head);
    assert_eq!(state.revision, head);
    assert_eq!(content(&state), content(&fresh), "the delta path must equal a full snapshot");
    assert_eq!(fresh.keys.len(), 5);
}

#[tokio::test]
async fn a_replica_from_another_store_history_gets_a_snapshot_not_deltas() {
    let cp = TestControlplane::start(&[]).await;
    let mut first = Replica::connect(&cp, "first", 0, &[]).await;
    let snapshot = first.snapshot().await;
    assert_ne!(snapshot.store_id, [0; 16], "snapshots name their store history");

    // Same history, current revision: resumed with nothing to send.
    let mut same = Replica::connect(&cp, "same", snapshot.revision, &snapshot.store_id).await;
    same.assert_quiet(Duration::from_millis(300)).await;

    // Same revision number from another history (a restored backup, another database): the
    // numbers mean nothing here, so only a snapshot is right.
    let mut other = Replica::connect(&cp, "other", snapshot.revision, &[7; 16]).await;
    let fresh = other.snapshot().await;
    assert_eq!(fresh.store_id, snapshot.store_id);
}

#[tokio::test]
async fn a_replica_that_saw_a_gap_gets_a_snapshot_at_once() {
    let cp = TestControlplane::start(&[]).await;
    let mut replica = Replica::connect(&cp, "gappy", 0, &[]).await;
    let snapshot = replica.snapshot().await;
    cp.cli(&["keys", "create", "--name", "one"]).await.ok();
    let subscribe_response::Message::Delta(delta) = replica.next().await else { panic!("expected a delta") };

    let nack = Nack { revision: delta.revision, error: "revision gap".into(), resync: true };
    replica.send(subscribe_request::Message::Nack(nack)).await;
    // No further change is needed: the snapshot comes now.
    let fresh = replica.snapshot().await;
    assert_eq!(fresh.revision, delta.revision);
    assert_eq!(fresh.keys.len(), snapshot.keys.len() + 1);
}
