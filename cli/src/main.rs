//! The `aurora` binary: one executable for every role.
//!
//! `aurora dataplane` and `aurora controlplane` run the two planes; the other subcommands are
//! the operator's client for a running control plane. This is the binary edge: configuration is
//! parsed here (clap, with environment variables) and errors become `anyhow` only here.

mod commands;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aurora", version, about = "Aurora: a self-hosted gateway for provider-native LLM traffic")]
struct Cli {
    #[command(flatten)]
    log: telemetry::LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a data-plane replica: the passthrough proxy on /p/{provider}/{endpoint}.
    Dataplane(Box<aurora_dataplane::Config>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return commands::report_error(&anyhow::Error::new(err)),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dataplane(config) => {
                telemetry::init(&cli.log)?;
                commands::dataplane::run(*config).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => commands::report_error(&err),
    }
}
