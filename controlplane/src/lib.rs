//! The Aurora control plane: the durable store, the admin gRPC API and their server.
//!
//! An operator manages keys, providers and settings through [`admin`]; every mutation commits
//! one new global revision in the [`store`] together with a change-log entry, which is what the
//! config stream to data planes is built from. [`bootstrap`] applies the product page's
//! environment variables at startup, and [`server`] wires everything to one gRPC listener.
//! [`metrics`] serves Prometheus metrics and a plain health check on a separate HTTP listener.

pub mod admin;
pub mod bootstrap;
pub mod capacity;
pub mod config;
pub mod config_stream;
pub mod credential_health;
pub mod credential_share;
pub mod encryption;
pub mod fleet;
pub mod fleet_share;
pub mod grpc_limits;
mod health;
pub mod metrics;
pub mod replica;
pub mod server;
pub mod store;
mod time;

pub use config::Config;
pub use server::{ControlPlane, ServerError, reencrypt, run, start};
