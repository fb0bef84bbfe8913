//! The `aurora` binary: one executable for every role.
//!
//! `aurora dataplane` and `aurora controlplane` run the two planes; the other subcommands are
//! the operator's client for a running control plane. This is the binary edge: configuration is
//! parsed here (clap, with environment variables) and errors become `anyhow` only here.

mod commands;
mod secrets;
mod telemetry;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc. The request path allocates and frees per request, among
/// them hyper's header arrays (64 KiB each at the default header limit), and glibc returned that
/// memory to the kernel and faulted it back in about every other request (`madvise`): measured
/// against glibc on the same build, mimalloc cut user and kernel time per proxied request alike
/// (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the control plane: the durable store and the admin gRPC API.
    Controlplane(Box<commands::controlplane::ControlplaneArgs>),
    /// Manage gateway keys through the control plane.
    Keys(commands::keys::KeysArgs),
    /// Manage upstream providers through the control plane.
    Providers(commands::providers::ProvidersArgs),
    /// Show or change global settings through the control plane.
    Settings(commands::settings::SettingsArgs),
    /// List the data-plane replicas subscribed to the control plane (lagging ones marked).
    Dataplanes(commands::dataplanes::DataplanesArgs),
    /// Token usage per key, provider and model, as data planes reported it.
    Usage(commands::usage::UsageArgs),
    /// List the audit trail of admin changes, or verify its hash chain (`aurora audit verify`).
    Audit(commands::audit::AuditArgs),
    /// Start a complete gateway on this machine: a control plane and a data plane in one process.
    Up(Box<commands::up::UpArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match &cli.command {
        // The data plane serves requests on its own worker threads (`server::workers`); this
        // runtime only runs its background work (config stream, admin listener, usage reports).
        Command::Dataplane(config) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.serving.background_threads())
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => return commands::report_error(&anyhow::Error::new(err)),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dataplane(mut config) => {
                let _logs = telemetry::init(&cli.log)?;
                secrets::read_product(&mut config.static_config)?;
                config.control_plane.node_token = secrets::read("AURORA_NODE_TOKEN")?;
                config.control_plane.cache_key = secrets::read("AURORA_CACHE_KEY")?;
                commands::dataplane::run(*config).await
            }
            Command::Controlplane(mut args) => {
                let _logs = telemetry::init(&cli.log)?;
                let config = &mut args.config;
                secrets::read_product(&mut config.product)?;
                config.stream.node_token = secrets::read("AURORA_NODE_TOKEN")?;
                config.encryption_key = secrets::read("AURORA_ENCRYPTION_KEY")?;
                commands::controlplane::run(*args).await
            }
            Command::Keys(args) => commands::keys::run(args).await,
            Command::Providers(args) => commands::providers::run(args).await,
            Command::Settings(args) => commands::settings::run(args).await,
            Command::Dataplanes(args) => commands::dataplanes::run(args).await,
            Command::Usage(args) => commands::usage::run(args).await,
            Command::Audit(args) => commands::audit::run(args).await,
            Command::Up(mut args) => {
                let _logs = telemetry::init(&cli.log)?;
                secrets::read_product(&mut args.product)?;
                args.encryption_key = secrets::read("AURORA_ENCRYPTION_KEY")?;
                commands::up::run(*args).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => commands::report_error(&err),
    }
}
