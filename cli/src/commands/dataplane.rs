//! `aurora dataplane`: runs one data-plane replica until SIGTERM or Ctrl-C.

pub(crate) async fn run(config: aurora_dataplane::Config) -> anyhow::Result<()> {
    aurora_dataplane::run(config, crate::telemetry::shutdown_signal()).await?;
    Ok(())
}
