//! `aurora providers list|set|delete`: upstream providers and their write-only credentials.
//!
//! A credential is never a plain argument (it would land in shell history): it is read from an
//! environment variable the operator names (`--api-key-env`) or from stdin (`--api-key-stdin`).

use std::io::Read;

use anyhow::Context;
use aurora_proto::v1 as pb;
use aurora_proto::v1::upsert_provider_request::CredentialChange;
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
}

pub(crate) async fn run(args: ProvidersArgs) -> anyhow::Result<()> {
    let format = args.client.output;
    // Read the credential before connecting, so a missing variable fails fast and offline.
    let credential_change = match &args.command {
        ProvidersCommand::Set(set) => set.credential_change()?,
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
            let request =
                pb::UpsertProviderRequest { name: set.name, enabled, base_url: set.base_url, credential_change };
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
