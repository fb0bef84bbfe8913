//! `aurora providers list|get|set|delete|credentials`: upstream providers and their write-only
//! credentials (credential sets live in `credentials.rs`).
//!
//! A credential is never a plain argument (it would land in shell history): it is read from an
//! environment variable the operator names (`--api-key-env`) or from stdin (`--api-key-stdin`).
//! Client certificates, their keys and CA bundles are read from files or stdin (`-`), never
//! taken from argv either. Default headers (`--header 'Name: value'`) are not secrets.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aurora_proto::v1 as pb;
use aurora_proto::v1::upsert_provider_request::{CaChange, ClientCertificateChange, CredentialChange};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use super::client::{CallExt, ClientArgs};
use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub(crate) struct ProvidersArgs {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: ProvidersCommand,
}

#[derive(Debug, Subcommand)]
enum ProvidersCommand {
    /// List the providers that have a record (a provider without one is disabled).
    List,
    /// Show one provider with each credential's fleet-wide requests, 429s, auth failures and
    /// cooldown state.
    Get {
        /// One of: openai, anthropic, openrouter, zai, vllm.
        name: String,
    },
    /// Manage the provider's credential set.
    #[command(subcommand)]
    Credentials(super::credentials::CredentialsCommand),
    /// Create or change a provider's record; only the options given are changed.
    Set(SetArgs),
    /// Delete a provider's record: it is disabled and its credential forgotten.
    Delete {
        /// One of: openai, anthropic, openrouter, zai, vllm.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group = ArgGroup::new("status").multiple(false))]
#[command(group = ArgGroup::new("credential").multiple(false))]
#[command(group = ArgGroup::new("ca").multiple(false))]
struct SetArgs {
    /// One of: openai, anthropic, openrouter, zai, vllm.
    name: String,
    /// Serve this provider.
    #[arg(long, group = "status")]
    enable: bool,
    /// Stop serving this provider; its record and credential are kept.
    #[arg(long, group = "status")]
    disable: bool,
    /// The upstream base URL, e.g. http://gpu:8000/v1.
    #[arg(long)]
    base_url: Option<String>,
    /// Read the credential from this environment variable.
    #[arg(long, value_name = "VAR", group = "credential")]
    api_key_env: Option<String>,
    /// Read the credential from standard input.
    #[arg(long, group = "credential")]
    api_key_stdin: bool,
    /// Remove the stored credential.
    #[arg(long, group = "credential")]
    clear_api_key: bool,
    /// A header added to every request to this provider unless the client sends it, as
    /// `'Name: value'`. Repeatable; the list given replaces the stored one.
    #[arg(long = "header", value_name = "NAME: VALUE", conflicts_with = "clear_headers")]
    headers: Vec<String>,
    /// Remove every default header.
    #[arg(long)]
    clear_headers: bool,
    /// Client certificate chain (PEM file, `-` for stdin) for mutual TLS with the upstream.
    #[arg(long, value_name = "FILE", requires = "client_key", conflicts_with = "clear_client_cert")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM file, `-` for stdin; with `--client-cert -`
    /// too, stdin holds both).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Remove the stored client certificate and key.
    #[arg(long, conflicts_with = "client_key")]
    clear_client_cert: bool,
    /// CA certificates (PEM file, `-` for stdin) trusted for this provider besides the data
    /// plane's roots.
    #[arg(long, value_name = "FILE", group = "ca")]
    ca_file: Option<PathBuf>,
    /// Remove the provider's CA bundle.
    #[arg(long, group = "ca")]
    clear_ca: bool,
}

/// The PEM blocks of `pem` whose label satisfies `wanted`, joined.
fn pem_blocks(pem: &str, wanted: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..].find("-----").map_or(block.len(), |i| i + 11);
        let label = &block[11..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else { break };
        let end = end + end_marker.len();
        if wanted(label) {
            out.push_str(&block[..end]);
            out.push('\n');
        }
        rest = &block[end..];
    }
    out
}

impl SetArgs {
    fn credential_change(&self) -> anyhow::Result<Option<CredentialChange>> {
        if let Some(var) = &self.api_key_env {
            let value = std::env::var(var).ok().filter(|v| !v.is_empty());
            let value = value.with_context(|| format!("environment variable {var} is not set"))?;
            return Ok(Some(CredentialChange::Credential(value)));
        }
        if self.api_key_stdin {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value).context("cannot read the credential from stdin")?;
            let value = value.trim_end_matches(['\r', '\n']).to_owned();
            anyhow::ensure!(!value.is_empty(), "no credential on stdin");
            return Ok(Some(CredentialChange::Credential(value)));
        }
        Ok(self.clear_api_key.then_some(CredentialChange::ClearCredential(true)))
    }

    fn default_headers(&self) -> anyhow::Result<Option<pb::HeaderList>> {
        if self.clear_headers {
            return Ok(Some(pb::HeaderList { headers: Vec::new() }));
        }
        if self.headers.is_empty() {
            return Ok(None);
        }
        let headers = self
            .headers
            .iter()
            .map(|line| {
                let (name, value) = line.split_once(':').with_context(|| {
                    format!("--header expects 'Name: value', got {}", aurora_core::text::excerpt(line))
                })?;
                Ok(pb::HeaderField { name: name.trim().to_owned(), value: value.trim().to_owned() })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(pb::HeaderList { headers }))
    }

    /// Reads the client certificate and key; stdin is read once, even when it holds both.
    fn client_certificate_change(&self, stdin: &mut Stdin) -> anyhow::Result<Option<ClientCertificateChange>> {
        if self.clear_client_cert {
            return Ok(Some(ClientCertificateChange::ClearClientCertificate(true)));
        }
        let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) else { return Ok(None) };
        let certificate_pem = pem_blocks(&stdin.or_file(cert, "client certificate")?, |label| label == "CERTIFICATE");
        let private_key_pem = pem_blocks(&stdin.or_file(key, "client key")?, |label| label.ends_with("PRIVATE KEY"));
        anyhow::ensure!(!certificate_pem.is_empty(), "no PEM certificate in {}", cert.display());
        anyhow::ensure!(!private_key_pem.is_empty(), "no PEM private key in {}", key.display());
        Ok(Some(ClientCertificateChange::ClientCertificate(pb::ClientCertificate { certificate_pem, private_key_pem })))
    }

    fn ca_change(&self, stdin: &mut Stdin) -> anyhow::Result<Option<CaChange>> {
        if self.clear_ca {
            return Ok(Some(CaChange::ClearCa(true)));
        }
        let Some(path) = &self.ca_file else { return Ok(None) };
        Ok(Some(CaChange::CaPem(stdin.or_file(path, "CA bundle")?)))
    }
}

/// Standard input, read at most once and shared by every option given `-`.
#[derive(Default)]
struct Stdin(Option<String>);

impl Stdin {
    fn or_file(&mut self, path: &Path, what: &str) -> anyhow::Result<String> {
        if path.as_os_str() != "-" {
            return std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()));
        }
        if self.0.is_none() {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).with_context(|| format!("cannot read the {what} from stdin"))?;
            self.0 = Some(text);
        }
        Ok(self.0.clone().unwrap_or_default())
    }
}

/// What `providers set` sends besides the plain options, read before connecting.
struct SetInputs {
    credential_change: Option<CredentialChange>,
    default_headers: Option<pb::HeaderList>,
    client_certificate_change: Option<ClientCertificateChange>,
    ca_change: Option<CaChange>,
}

impl SetInputs {
    fn read(set: &SetArgs) -> anyhow::Result<SetInputs> {
        let mut stdin = Stdin::default();
        anyhow::ensure!(
            !(set.api_key_stdin
                && (set.client_cert.iter().chain(&set.client_key).chain(&set.ca_file)).any(|p| p.as_os_str() == "-")),
            "--api-key-stdin cannot share standard input with a certificate"
        );
        Ok(SetInputs {
            credential_change: set.credential_change()?,
            default_headers: set.default_headers()?,
            client_certificate_change: set.client_certificate_change(&mut stdin)?,
            ca_change: set.ca_change(&mut stdin)?,
        })
    }
}

pub(crate) async fn run(args: ProvidersArgs) -> anyhow::Result<()> {
    let format = args.client.output()?;
    // Read the credential and files before connecting, so a missing one fails fast and offline.
    let inputs = match &args.command {
        ProvidersCommand::Set(set) => Some(SetInputs::read(set)?),
        _ => None,
    };
    // The secret is read before connecting, so a missing one fails fast and offline.
    let secret = match &args.command {
        ProvidersCommand::Credentials(command) => super::credentials::read_input(command)?,
        _ => None,
    };
    let mut client = args.client.connect().await?;
    match args.command {
        ProvidersCommand::List => {
            let list = client.list_providers(pb::ListProvidersRequest {}).await.or_status()?;
            match format {
                OutputFormat::Json => output::print_json(&json!({
                    "providers": list.providers.iter().map(output::provider_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => output::print(&output::provider_table(&list.providers).render()),
            }
        }
        ProvidersCommand::Set(set) => {
            let enabled = match (set.enable, set.disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let inputs = inputs.context("inputs are read for every `set`")?;
            let request = pb::UpsertProviderRequest {
                name: set.name,
                enabled,
                base_url: set.base_url,
                credential_change: inputs.credential_change,
                default_headers: inputs.default_headers,
                client_certificate_change: inputs.client_certificate_change,
                ca_change: inputs.ca_change,
            };
            let upserted = client.upsert_provider(request).await.or_status()?;
            // On stderr, so that `-o json` output on stdout stays one JSON document.
            #[allow(clippy::print_stderr)]
            for warning in &upserted.warnings {
                eprintln!("warning: {}", aurora_core::text::escape(warning));
            }
            let provider = upserted.provider.unwrap_or_default();
            match format {
                OutputFormat::Json => {
                    let mut value = output::provider_json(&provider);
                    value["revision"] = json!(upserted.revision);
                    output::print_json(&value)
                }
                OutputFormat::Table => output::print(&format!(
                    "{}revision: {}\n",
                    output::provider_table(std::slice::from_ref(&provider)).render(),
                    upserted.revision
                )),
            }?;
            args.client.wait.settle(&mut client, upserted.revision).await
        }
        ProvidersCommand::Get { name } => super::credentials::get(&mut client, name, &args.client).await,
        ProvidersCommand::Credentials(command) => {
            super::credentials::run(&mut client, command, secret, &args.client).await
        }
        ProvidersCommand::Delete { name } => {
            let deleted = client.delete_provider(pb::DeleteProviderRequest { name: name.clone() }).await.or_status()?;
            match format {
                OutputFormat::Json => output::print_json(&json!({ "name": name, "revision": deleted.revision })),
                OutputFormat::Table => {
                    output::print(&format!("deleted provider {name}\nrevision: {}\n", deleted.revision))
                }
            }?;
            args.client.wait.settle(&mut client, deleted.revision).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pem_stream_splits_into_certificates_and_key() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n\
                   -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_blocks(pem, |label| label == "CERTIFICATE"),
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            pem_blocks(pem, |label| label.ends_with("PRIVATE KEY")),
            "-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n"
        );
        assert_eq!(pem_blocks("-----BEGIN CERTIFICATE-----\nunterminated", |_| true), "");
    }
}
