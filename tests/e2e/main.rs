//! End-to-end tests: real `aurora` processes on 127.0.0.1, wiremock or hand-rolled upstreams.
//!
//! Everything waits on conditions with deadlines (see `support::wait`), never on bare sleeps,
//! so the suite is deterministic on a loaded 2-core machine.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr, unreachable_pub)]

mod support;

mod audit;
mod config_stream;
mod controlplane;
mod credential_sets;
mod hardening;
mod key_budgets;
mod key_limits;
mod key_limits_fleet;
mod key_limits_streams;
mod key_rotation;
mod live_config;
mod metrics;
mod passthrough;
mod postgres;
mod provider_network;

mod sdk;
mod secrets;
mod secrets_at_rest;
mod shutdown;
mod store_faults;
mod tls;
mod untrusted_input;
mod up;
mod upstream_network;
mod usage;
mod usage_metering;
