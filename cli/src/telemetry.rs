//! Logging setup and process signals, shared by every long-running role.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug, Clone)]
pub(crate) struct LogArgs {
    /// Log filter in env-filter syntax, e.g. `info` or `aurora_dataplane=debug,info`.
    #[arg(long = "log", env = "AURORA_LOG", default_value = "info", global = true)]
    filter: String,

    /// Log format.
    #[arg(long = "log-format", env = "AURORA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber. Logs go to stderr so that command output on stdout stays
/// machine-readable.
///
/// Lines are handed to a background thread: a slow or blocked stderr reader (a full pipe, a
/// stalled log shipper) must never stall the threads that serve requests. Under such pressure
/// lines are dropped rather than requests delayed. Keep the returned guard alive until exit: it
/// flushes what is buffered.
pub(crate) fn init(args: &LogArgs) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let filter = EnvFilter::try_new(&args.filter)
        .map_err(|err| anyhow::anyhow!("invalid AURORA_LOG filter {:?}: {err}", args.filter))?;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match args.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))?;
    Ok(guard)
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
///
/// The SIGTERM handler is installed when this is called, not when the future is first polled:
/// a process polls it only once it is serving, and a SIGTERM that arrived in between (right
/// after the listeners were bound, say) would otherwise kill it with the default action
/// instead of draining it. Must be called inside the runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
            () = terminate => tracing::info!("received SIGTERM, shutting down"),
        }
    }
}
