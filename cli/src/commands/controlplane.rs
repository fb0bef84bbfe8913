//! `aurora controlplane`: runs the control plane until SIGTERM or Ctrl-C.

pub(crate) async fn run(config: aurora_controlplane::Config) -> anyhow::Result<()> {
    aurora_controlplane::run(config, crate::telemetry::shutdown_signal()).await?;
    Ok(())
}
