//! `aurora providers get` and `aurora providers credentials add|remove|list|enable|disable`:
//! a provider's credential set and its fleet-wide health.
//!
//! A secret is never an argument (argv shows in `ps` and shell history): `add` reads it from
//! standard input or from the file `--secret-file` names. Nothing here ever prints a secret;
//! the server never returns one.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use aurora_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{AdminClient, CallExt, ClientArgs};
use super::output::{self, OutputFormat, Table};

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Add a named credential; the secret is read from standard input or --secret-file.
    Add(AddArgs),
    /// Remove a credential from the set.
    Remove(NameArgs),
    /// List the provider's credentials with their fleet-wide health.
    List {
        /// One of: openai, anthropic, openrouter, zai, vllm.
        provider: String,
    },
    /// Put a credential back in rotation (optionally with a new weight).
    Enable(NameArgs),
    /// Take a credential out of rotation without forgetting it.
    Disable(NameArgs),
    /// Change a credential's weight.
    SetWeight { provider: String, name: String, weight: u32 },
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// One of: openai, anthropic, openrouter, zai, vllm.
    provider: String,
    /// The credential's name: letters, digits, '-', '_', '.'; shown by the API and in metrics.
    name: String,
    /// Its share of the traffic relative to the others (1 to 10000).
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Read the secret from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Add it disabled.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    provider: String,
    name: String,
    /// A new weight as well (enable and disable only).
    #[arg(long)]
    weight: Option<u32>,
}

/// The secret, from the file or standard input, without its trailing line break.
fn read_secret(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let mut secret = String::new();
    match file {
        Some(path) => {
            secret = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret file {}", path.display()))?;
        }
        None => {
            std::io::stdin().read_to_string(&mut secret).context("cannot read the secret from standard input")?;
        }
    }
    let secret = secret.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!secret.is_empty(), "the secret is empty");
    Ok(secret)
}

/// What `command` reads before connecting: the secret of an `add`.
pub(crate) fn read_input(command: &CredentialsCommand) -> anyhow::Result<Option<String>> {
    match command {
        CredentialsCommand::Add(add) => Ok(Some(read_secret(add.secret_file.as_ref())?)),
        _ => Ok(None),
    }
}

pub(crate) async fn run(
    client: &mut AdminClient,
    command: CredentialsCommand,
    secret: Option<String>,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    // Checked before anything changes: `-o csv` is refused here.
    let format = args.output()?;
    let update = |provider: String, name: String, enabled: Option<bool>, weight: Option<u32>| {
        pb::UpdateProviderCredentialRequest { provider, name, enabled, weight }
    };
    let response = match command {
        CredentialsCommand::List { provider } => {
            let list =
                client.list_provider_credentials(pb::ListProviderCredentialsRequest { provider }).await.or_status()?;
            return match format {
                OutputFormat::Json => output::print_json(&json!({
                    "credentials": list.credentials.iter().map(credential_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => output::print(&credential_table(&list.credentials).render()),
            };
        }
        CredentialsCommand::Add(add) => {
            let request = pb::AddProviderCredentialRequest {
                provider: add.provider,
                name: add.name,
                secret: secret.context("read above for every add")?,
                weight: add.weight,
                enabled: Some(!add.disabled),
            };
            client.add_provider_credential(request).await.or_status()?
        }
        CredentialsCommand::Remove(target) => client
            .remove_provider_credential(pb::RemoveProviderCredentialRequest {
                provider: target.provider,
                name: target.name,
            })
            .await
            .or_status()?,
        CredentialsCommand::Enable(target) => client
            .update_provider_credential(update(target.provider, target.name, Some(true), target.weight))
            .await
            .or_status()?,
        CredentialsCommand::Disable(target) => client
            .update_provider_credential(update(target.provider, target.name, Some(false), target.weight))
            .await
            .or_status()?,
        CredentialsCommand::SetWeight { provider, name, weight } => {
            client.update_provider_credential(update(provider, name, None, Some(weight))).await.or_status()?
        }
    };
    print_mutation(&response, format)?;
    args.wait.settle(client, response.revision).await
}

/// `aurora providers get PROVIDER`.
pub(crate) async fn get(client: &mut AdminClient, name: String, args: &ClientArgs) -> anyhow::Result<()> {
    let format = args.output()?;
    let got = client.get_provider(pb::GetProviderRequest { name }).await.or_status()?;
    let provider = got.provider.unwrap_or_default();
    match format {
        OutputFormat::Json => {
            let mut value = output::provider_json(&provider);
            value["credentials"] = Value::Array(got.credentials.iter().map(credential_json).collect());
            output::print_json(&value)
        }
        OutputFormat::Table => output::print(&format!(
            "{}\ncredentials:\n{}",
            output::provider_table(std::slice::from_ref(&provider)).render(),
            credential_table(&got.credentials).render()
        )),
    }
}

fn print_mutation(response: &pb::ProviderCredentialMutationResponse, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => output::print_json(&json!({
            "credential": response.credential.as_ref().map(credential_json),
            "revision": response.revision,
        })),
        OutputFormat::Table => {
            let table = response.credential.as_ref().map(|c| credential_table(std::slice::from_ref(c)).render());
            output::print(&format!("{}revision: {}\n", table.unwrap_or_default(), response.revision))
        }
    }
}

fn cooldown(health: &pb::ProviderCredentialHealth) -> Option<String> {
    output::timestamp(health.cooldown_until.as_ref())
}

pub(crate) fn credential_json(credential: &pb::ProviderCredential) -> Value {
    let health = credential.health.unwrap_or_default();
    json!({
        "name": credential.name,
        "weight": credential.weight,
        "enabled": credential.enabled,
        "fingerprint": credential.fingerprint,
        "created_at": output::timestamp(credential.created_at.as_ref()),
        "updated_at": output::timestamp(credential.updated_at.as_ref()),
        "requests": health.requests,
        "throttled": health.throttled,
        "auth_failures": health.auth_failures,
        "cooldown_until": cooldown(&health),
        "failing": health.failing,
        "replicas": health.replicas,
    })
}

pub(crate) fn credential_table(credentials: &[pb::ProviderCredential]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "WEIGHT",
        "ENABLED",
        "FINGERPRINT",
        "REQUESTS",
        "429S",
        "AUTH FAILURES",
        "STATE",
        "COOLDOWN UNTIL",
    ]);
    for credential in credentials {
        let health = credential.health.unwrap_or_default();
        let state = match (credential.enabled, health.cooldown_until.is_some(), health.failing) {
            (false, _, _) => "disabled",
            (true, _, true) => "failing",
            (true, true, false) => "cooling down",
            (true, false, false) => "ok",
        };
        table.row(vec![
            credential.name.clone(),
            credential.weight.to_string(),
            credential.enabled.to_string(),
            credential.fingerprint.clone(),
            health.requests.to_string(),
            health.throttled.to_string(),
            health.auth_failures.to_string(),
            state.to_owned(),
            cooldown(&health).unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}
