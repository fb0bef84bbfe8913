//! Capacity leases (issue 13): how every limited key's limits are divided among the data-plane
//! replicas, so the fleet as a whole honours each limit while no request waits on the network.
//!
//! Replicas report per-key demand on their config stream (`DemandReport`); the [`Capacity`]
//! board keeps each replica's latest counts, and about every 250 ms while a key is active (at
//! once after a refusal, and at least every third of a lease's validity otherwise) sends each
//! replica its `Leases`: per limited key, the most requests and tokens it may admit in the
//! current minute window, its concurrency slots, and the budget the fleet has left.
//!
//! Invariants (see `split.rs` and docs/ARCHITECTURE.md, "Capacity leases"):
//! - for each key and window, the caps granted at one instant sum to at most the limit, and no
//!   cap is below what its replica already admitted;
//! - every limited key a replica may see is in each `Leases` it gets, idle ones included, so a
//!   replica falls back only when the control plane is gone (leases expire);
//! - nothing here is ever on a data plane's request path.
//!
//! - `split.rs`: the arithmetic of one limit's shares; `grant.rs`: every replica's leases at
//!   one instant (pure, clock injected); `demand.rs`: one replica's demand per key;
//!   `budget.rs`: tokens used in a budget period without double counting;
//!   `board.rs`: the live state, the lease task and `keys get`'s counts; `peers.rs`: sharing
//!   demand with the other control planes on PostgreSQL.

mod board;
mod budget;
mod demand;
mod grant;
mod peers;
mod split;

use std::time::Duration;

pub use board::{Capacity, KeyCounts, LeaseFeed};
pub(crate) use peers::share;

/// A key id as the config stream carries it: 16 raw bytes.
pub type KeyId = [u8; 16];

/// How leases are granted; parsed once with the control plane's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CapacityConfig {
    /// How long a lease holds without a newer one; a replica that hears nothing for this long
    /// applies the limit fallback (`aurora settings set --limit-fallback`).
    #[arg(long, env = "AURORA_LEASE_TTL", default_value = "3s", value_parser = aurora_core::parse_positive_duration)]
    pub lease_ttl: Duration,
    /// How often leases are recomputed and sent while a limited key sees traffic.
    #[arg(long, env = "AURORA_LEASE_INTERVAL", default_value = "250ms", value_parser = aurora_core::parse_positive_duration)]
    pub lease_interval: Duration,
    /// How long a control plane that just started only listens before it grants leases, so
    /// the replicas that kept counting through its absence (on their fallback share) have
    /// reconnected and reported what they admitted in the current window. Granting earlier
    /// would hand the first replica back what the others already used. Default: the lease
    /// TTL plus the data planes' longest reconnect delay (3 s).
    #[arg(long, env = "AURORA_LEASE_LEARNING", default_value = "6s", value_parser = aurora_core::parse_duration)]
    pub lease_learning: Duration,
    /// Benchmarks only (the naive per-replica baseline): `false` sends no leases at all, so
    /// every data plane counts alone with its fallback share.
    #[arg(long, env = "AURORA_CAPACITY_LEASES", default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    pub leases: bool,
    /// Debug builds only, for tests: seconds added to the clock budget periods are computed
    /// with, so a test sees a period roll over without waiting for it. Windows and lease
    /// validity always use the real clock.
    #[cfg(debug_assertions)]
    #[arg(
        long,
        env = "AURORA_DEBUG_BUDGET_CLOCK_OFFSET",
        default_value_t = 0,
        allow_negative_numbers = true,
        hide = true
    )]
    pub budget_clock_offset_secs: i64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        CapacityConfig {
            lease_ttl: Duration::from_secs(3),
            lease_interval: Duration::from_millis(250),
            lease_learning: Duration::from_secs(6),
            leases: true,
            #[cfg(debug_assertions)]
            budget_clock_offset_secs: 0,
        }
    }
}

impl CapacityConfig {
    /// The budget clock's offset from the real one (always 0 in release builds).
    pub fn budget_offset_secs(&self) -> i64 {
        #[cfg(debug_assertions)]
        {
            self.budget_clock_offset_secs
        }
        #[cfg(not(debug_assertions))]
        {
            0
        }
    }
}

/// The clock leases are granted by, in Unix milliseconds; tests inject their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::time::to_millis(crate::time::now())
    }
}
