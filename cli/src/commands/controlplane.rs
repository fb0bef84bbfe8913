//! `aurora controlplane`: runs the control plane until SIGTERM or Ctrl-C.

pub(crate) async fn run(config: aurora_controlplane::Config) -> anyhow::Result<()> {
    // Every data plane holds a connection: a soft limit of 1024 would cap the fleet below
    // AURORA_GRPC_MAX_CONNECTIONS. The data plane does the same for its clients.
    aurora_dataplane::fdlimit::raise();
    aurora_controlplane::run(config, crate::telemetry::shutdown_signal()).await?;
    Ok(())
}
