//! `aurora.v1.ConfigService`: the stream that keeps every data-plane replica's configuration
//! equal to the store's.
//!
//! Protocol, per stream: the replica sends `Hello` with the last revision it applied; the
//! control plane answers with the deltas since then from the [`feed`], or a chunked
//! [`snapshot`] when the replica is new, ahead of the store, or behind what the feed retains.
//! Live deltas follow as commits land, with a heartbeat carrying the head revision every few
//! seconds. The replica answers each revision with `Ack` or `Nack`; a rejected revision is never
//! sent again: the stream waits for the next change and then sends a fresh snapshot.

pub mod auth;
pub mod feed;
pub mod limits;
pub mod service;
pub mod snapshot;
pub mod usage;

pub use auth::NodeAuth;
pub use feed::ChangeFeed;
pub use service::ConfigStream;
pub use snapshot::SnapshotSource;
pub use usage::{UsageIngest, UsageIngestMetrics};
