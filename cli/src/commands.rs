//! One module per subcommand.

pub(crate) mod audit;
pub(crate) mod client;
pub(crate) mod controlplane;
pub(crate) mod credentials;
pub(crate) mod dataplane;
pub(crate) mod dataplanes;
pub(crate) mod key_rotation;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod providers;
pub(crate) mod settings;
pub(crate) mod up;
pub(crate) mod usage;

use std::process::ExitCode;

/// Prints an error as one line (with its causes) and returns a failing exit code. The line is
/// escaped: a status message can repeat what a server or a data plane sent.
#[allow(clippy::print_stderr)]
pub(crate) fn report_error(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", aurora_core::text::escape(&format!("{err:#}")));
    ExitCode::FAILURE
}
