//! The admin client shared by `aurora keys|providers|settings`: where the control plane is, the
//! master key, the output format, and one-line errors for failed calls.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use aurora_core::text::redact_user_info;
use aurora_proto::v1::admin_service_client::AdminServiceClient;
use clap::Args;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::output::OutputFormat;

/// What `-o` accepts; only `aurora usage` prints CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FormatArg {
    Table,
    Json,
    Csv,
}

/// Options every admin command takes, before or after its subcommand.
#[derive(Args, Clone)]
pub(crate) struct ClientArgs {
    /// The control plane's gRPC address.
    #[arg(
        long = "control-plane",
        env = "AURORA_CONTROL_PLANE_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    url: String,

    /// Output format (csv: `aurora usage` only).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = FormatArg::Table, global = true)]
    output: FormatArg,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    /// CA certificate (PEM) to verify an https:// control plane with [default: Mozilla roots].
    #[arg(long, env = "AURORA_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,

    /// Client certificate (PEM), when the control plane requires mutual TLS.
    #[arg(long, env = "AURORA_TLS_CLIENT_CERT", requires = "tls_client_key", global = true)]
    tls_client_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "AURORA_TLS_CLIENT_KEY", requires = "tls_client_cert", global = true)]
    tls_client_key: Option<PathBuf>,
}

/// `--wait`: return only once every connected data plane enforces the change.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct WaitArgs {
    /// After a change, wait until every connected data plane has applied it, and say how long
    /// that took; fail, naming the laggards, if they have not within --wait-timeout.
    #[arg(long, global = true)]
    wait: bool,

    /// How long --wait waits.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    wait_timeout: Duration,
}

impl WaitArgs {
    /// With `--wait`, blocks until `revision` is applied by every connected data plane.
    pub(crate) async fn settle(&self, client: &mut AdminClient, revision: u64) -> anyhow::Result<()> {
        if !self.wait {
            return Ok(());
        }
        let timeout_ms = u32::try_from(self.wait_timeout.as_millis()).unwrap_or(u32::MAX);
        let outcome = client
            .wait_for_revision(aurora_proto::v1::WaitForRevisionRequest { revision, timeout_ms })
            .await
            .or_status()?;
        let settled = settled(revision, &outcome)?;
        // On stderr, so that `-o json` output on stdout stays one JSON document.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{settled}");
        }
        Ok(())
    }
}

/// The line `--wait` prints once `revision` is applied, or the error naming who has not applied
/// it (a data plane that disconnected first is named too: it never confirmed the change).
fn settled(revision: u64, outcome: &aurora_proto::v1::WaitForRevisionResponse) -> anyhow::Result<String> {
    if !outcome.complete {
        anyhow::bail!(
            "revision {revision} was not applied by {} of {} data planes (waited {}): {}",
            outcome.pending.len(),
            outcome.replicas,
            humantime::format_duration(Duration::from_millis(outcome.elapsed_ms.into())),
            outcome.pending.join(", ")
        );
    }
    // Vacuously true, and the operator should know that nothing enforces the change yet.
    if outcome.replicas == 0 {
        return Ok(format!("revision {revision} committed; no data planes are connected"));
    }
    Ok(format!(
        "revision {revision} applied by {} data plane{} in {} ms",
        outcome.replicas,
        if outcome.replicas == 1 { "" } else { "s" },
        outcome.elapsed_ms
    ))
}

/// Hand-written so that a URL's user info never reaches a debug print.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("url", &redact_user_info(&self.url))
            .field("output", &self.output)
            .field("wait", &self.wait)
            .finish()
    }
}

pub(crate) type AdminClient = AdminServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <master key>` to every call.
#[derive(Clone)]
pub(crate) struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl ClientArgs {
    /// The output format of a command that prints tables or JSON.
    pub(crate) fn output(&self) -> anyhow::Result<OutputFormat> {
        match self.output {
            FormatArg::Table => Ok(OutputFormat::Table),
            FormatArg::Json => Ok(OutputFormat::Json),
            FormatArg::Csv => anyhow::bail!("-o csv is only for `aurora usage`; use table or json"),
        }
    }

    /// The output format as given, CSV included.
    pub(crate) fn format(&self) -> FormatArg {
        self.output
    }

    /// Connects to the control plane; fails with one clear line when it is unreachable or no
    /// token is configured.
    pub(crate) async fn connect(&self) -> anyhow::Result<AdminClient> {
        // The master key: never a flag (see `secrets`).
        let token = crate::secrets::read(aurora_core::MASTER_KEY_VAR)?
            .context("no admin token: set AURORA_MASTER_KEY (or AURORA_MASTER_KEY_FILE)")?;
        let mut bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the admin token must be printable ASCII"))?;
        bearer.set_sensitive(true);
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("invalid --control-plane URL {:?}", redact_user_info(&self.url)))?
            .connect_timeout(Duration::from_secs(5))
            // Long enough for the longest WaitForRevision (5 min) that --wait-timeout allows.
            .timeout(Duration::from_secs(330));
        if self.url.starts_with("https://") {
            let identity = self.tls_client_cert.as_deref().zip(self.tls_client_key.as_deref());
            let tls = aurora_dataplane::subscription::client_tls(self.tls_ca.as_deref(), identity, None)?;
            endpoint = endpoint.tls_config(tls).context("invalid TLS settings")?;
        }
        let channel = endpoint.connect().await.map_err(|err| {
            anyhow::anyhow!("cannot reach the control plane at {}: {}", redact_user_info(&self.url), root_cause(&err))
        })?;
        Ok(AdminServiceClient::with_interceptor(channel, BearerToken(bearer)))
    }
}

/// The innermost error message: tonic's outer "transport error" says nothing useful.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Turns a failed call into `NOT_FOUND: key … not found`.
pub(crate) trait CallExt<T> {
    fn or_status(self) -> anyhow::Result<T>;
}

impl<T> CallExt<T> for Result<tonic::Response<T>, tonic::Status> {
    fn or_status(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| anyhow::anyhow!("{}: {}", code_name(status.code()), status.message()))
    }
}

/// The canonical gRPC name of a status code, as grpcurl and the gRPC docs print it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use aurora_proto::v1::WaitForRevisionResponse;

    use super::*;

    fn outcome(complete: bool, replicas: u32, pending: &[&str]) -> WaitForRevisionResponse {
        WaitForRevisionResponse {
            complete,
            elapsed_ms: 1500,
            pending: pending.iter().map(|&p| p.to_owned()).collect(),
            replicas,
        }
    }

    #[test]
    fn wait_says_when_no_data_plane_is_connected() {
        assert_eq!(settled(12, &outcome(true, 0, &[])).unwrap(), "revision 12 committed; no data planes are connected");
        assert_eq!(settled(12, &outcome(true, 1, &[])).unwrap(), "revision 12 applied by 1 data plane in 1500 ms");
        assert_eq!(settled(12, &outcome(true, 3, &[])).unwrap(), "revision 12 applied by 3 data planes in 1500 ms");
    }

    #[test]
    fn wait_fails_naming_who_did_not_apply() {
        let err = settled(12, &outcome(false, 2, &["a", "b (disconnected)"])).unwrap_err().to_string();
        assert_eq!(err, "revision 12 was not applied by 2 of 2 data planes (waited 1s 500ms): a, b (disconnected)");
    }
}
