//! `aurora controlplane`: runs the control plane until SIGTERM or Ctrl-C, or, with
//! `re-encrypt`, re-wraps every credential in its store under the current encryption key.

use clap::{Args, Subcommand};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = false)]
pub(crate) struct ControlplaneArgs {
    #[command(flatten)]
    pub(crate) config: aurora_controlplane::Config,

    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Re-encrypt every credential in the store under the first key of AURORA_ENCRYPTION_KEY,
    /// then exit. Reads the same variables as the control plane (database, keys); safe while
    /// control planes run on the same database. Run it after making the new key the first one
    /// on every replica, before removing the old key.
    ReEncrypt,
}

pub(crate) async fn run(args: ControlplaneArgs) -> anyhow::Result<()> {
    match args.action {
        Some(Action::ReEncrypt) => {
            let report = aurora_controlplane::reencrypt(&args.config).await?;
            crate::commands::output::print(&format!(
                "re-encrypted {} secret(s) under encryption key {}; {} already were\n",
                report.rewrapped, report.key_id, report.unchanged
            ))
        }
        None => {
            // Every data plane holds a connection: a soft limit of 1024 would cap the fleet
            // below AURORA_GRPC_MAX_CONNECTIONS. The data plane does the same for its clients.
            aurora_dataplane::fdlimit::raise();
            aurora_controlplane::run(args.config, crate::telemetry::shutdown_signal()).await?;
            Ok(())
        }
    }
}
