//! The credential-selection row's two data planes: one whose provider has a credential set of
//! three enabled, weighted credentials, and one whose provider has a single credential,
//! otherwise identical.
//!
//! A control plane serves one configuration to every data plane, so the set of three lives on
//! a second control plane (its own SQLite database, the same bootstrap environment as the main
//! one), with [`SET_CREDENTIALS`] added through the admin API (`AddProviderCredential`, what
//! `aurora providers credentials add` calls); a data plane given a non-empty set uses it and
//! ignores the provider's single credential. The other side is a data plane on the main control
//! plane, whose Anthropic provider has its one credential from `ANTHROPIC_API_KEY` (a set of
//! one on the request path). Both data planes start here, at the same time, so neither has
//! served more requests than the other before the rounds. Both go to the same upstream, which
//! counts the requests that arrive with each of the three credentials: the row checks that
//! every one was used, and reports their shares against the weights.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::aurora::{ControlPlane, DataPlane, wait_until};
use crate::load::Target;
use crate::upstream::{Counters, SET_CREDENTIALS};

/// The running pieces of the row; dropping it stops them.
pub(crate) struct Planes {
    pub(crate) on: DataPlane,
    pub(crate) off: DataPlane,
    pub(crate) on_token: String,
    _control_plane: ControlPlane,
}

/// Starts the second control plane with the set of three, and a data plane on each control
/// plane; returns once both serve their key.
pub(crate) async fn start(
    bin: &Path,
    main_control_plane: &str,
    main_token: &str,
    upstream: SocketAddr,
    scratch: &Path,
) -> anyhow::Result<Planes> {
    let control_plane = ControlPlane::start(bin, &scratch.join("cp-credential-set"), upstream, None).await?;
    let mut admin = control_plane.admin().await?;
    for (name, secret, weight) in SET_CREDENTIALS {
        admin.add_provider_credential("anthropic", name, secret, weight).await?;
    }
    let key = admin.create_key("bench-credential-set").await?;
    let on = DataPlane::start(bin, &control_plane.url(), "bench-credential-set").await?;
    let off = DataPlane::start(bin, main_control_plane, "bench-single-credential").await?;
    wait_until(&on.target(&key.secret), true, Duration::from_secs(30))
        .await
        .context("the credential-set data plane never accepted its key")?;
    wait_until(&off.target(main_token), true, Duration::from_secs(30)).await?;
    Ok(Planes { on, off, on_token: key.secret, _control_plane: control_plane })
}

impl Planes {
    pub(crate) fn targets(&self, main_token: &str) -> (Target, Target) {
        (self.on.target(&self.on_token), self.off.target(main_token))
    }
}

/// The requests each credential of the set carried since `before`, as shares of their sum,
/// beside the weights; an error when one was never used (the set was not in force).
pub(crate) fn shares(counters: &Counters, before: [u64; 3]) -> anyhow::Result<String> {
    let after = counters.set_credentials();
    let used: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: u64 = used.iter().sum();
    anyhow::ensure!(
        used.iter().all(|&n| n > 0),
        "the credential set was not in force: requests per credential {used:?}"
    );
    let weights: u32 = SET_CREDENTIALS.iter().map(|(_, _, w)| w).sum();
    let parts: Vec<String> = SET_CREDENTIALS
        .iter()
        .zip(&used)
        .map(|((name, _, weight), &n)| {
            format!(
                "`{name}` (weight {weight}) {:.1}% (expected {:.1}%)",
                100.0 * n as f64 / total as f64,
                100.0 * f64::from(*weight) / f64::from(weights)
            )
        })
        .collect();
    Ok(format!("{} of {total} requests", parts.join(", ")))
}
