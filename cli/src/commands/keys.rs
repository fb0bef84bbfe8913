//! `aurora keys create|list|get|update|rotate|revoke|delete`: gateway keys (rotation in
//! `key_rotation.rs`).

use std::time::SystemTime;

use aurora_proto::v1 as pb;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::client::{AdminClient, CallExt, ClientArgs};
use super::limits::{self, LimitArgs};
use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown only this once).
    Create(CreateArgs),
    /// List keys (every page, unless --page-size or --page-token is given).
    List(ListArgs),
    /// Show one key.
    Get {
        /// The key's id.
        id: String,
    },
    /// Change a key's name, description, status, expiry, allowed providers, endpoints or limits.
    Update(UpdateArgs),
    /// Issue a new secret for a key (same id, limits and usage) and print it (shown only this
    /// once); the old secret keeps working for the --grace period.
    Rotate(super::key_rotation::RotateArgs),
    /// Revoke a key for good.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Delete a key's record.
    Delete {
        /// The key's id.
        id: String,
    },
}

#[derive(Debug, Args)]
#[command(group = ArgGroup::new("expiry").multiple(false))]
struct CreateArgs {
    /// A unique name, 1 to 128 characters.
    #[arg(long)]
    name: String,
    /// Free text, at most 1024 characters.
    #[arg(long, default_value = "")]
    description: String,
    #[command(flatten)]
    expiry: ExpiryArgs,
    /// Comma-separated providers the key may use [default: all].
    #[arg(long, value_delimiter = ',')]
    providers: Vec<String>,
    /// Create the key disabled.
    #[arg(long)]
    disabled: bool,
    /// Allow only this endpoint, as 'PROVIDER METHOD PATH' (e.g. 'anthropic POST /v1/messages';
    /// METHOD may be '*', a path segment '*', a final '**' any rest). Repeatable [default: every
    /// endpoint].
    #[arg(long = "allow-endpoint", value_name = "RULE")]
    allow_endpoints: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Both forms are turned into an instant while the arguments are parsed, and refused there
/// when it lies after the latest expiry the API accepts: a bad expiry stops the command before
/// anything is created.
#[derive(Debug, Args)]
struct ExpiryArgs {
    /// Expiry as an RFC 3339 timestamp, e.g. 2027-01-31T00:00:00Z (at most 9999-12-31T23:59:59Z).
    #[arg(long, value_parser = parse_time, group = "expiry")]
    expires_at: Option<SystemTime>,
    /// Expiry as a duration from now, e.g. 30d or 12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_expires_in, group = "expiry")]
    expires_in: Option<SystemTime>,
}

impl ExpiryArgs {
    fn timestamp(&self) -> Option<prost_types::Timestamp> {
        self.expires_at.or(self.expires_in).map(Into::into)
    }
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Keys per page (at most 1000); prints one page and its next-page token.
    #[arg(long)]
    page_size: Option<u32>,
    /// The token printed with the previous page.
    #[arg(long)]
    page_token: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = ArgGroup::new("status").multiple(false))]
#[command(group = ArgGroup::new("expiry").multiple(false))]
#[command(group = ArgGroup::new("allowed").multiple(false))]
#[command(group = ArgGroup::new("endpoints").multiple(false))]
struct UpdateArgs {
    /// The key's id.
    id: String,
    /// A new unique name.
    #[arg(long)]
    name: Option<String>,
    /// A new description.
    #[arg(long)]
    description: Option<String>,
    /// Enable the key (a revoked key cannot be enabled again).
    #[arg(long, group = "status")]
    enable: bool,
    /// Disable the key; it can be enabled again later.
    #[arg(long, group = "status")]
    disable: bool,
    #[command(flatten)]
    expiry: ExpiryArgs,
    /// Remove the expiry.
    #[arg(long, group = "expiry")]
    no_expiry: bool,
    /// Comma-separated providers the key may use.
    #[arg(long, value_delimiter = ',', group = "allowed")]
    providers: Option<Vec<String>>,
    /// Allow every provider.
    #[arg(long, group = "allowed")]
    all_providers: bool,
    /// Replace the endpoint allow-list with these rules ('PROVIDER METHOD PATH'); repeatable.
    #[arg(long = "allow-endpoint", value_name = "RULE", group = "endpoints")]
    allow_endpoints: Option<Vec<String>>,
    /// Allow every endpoint of the allowed providers again.
    #[arg(long, group = "endpoints")]
    all_endpoints: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// Drop the key's own limits: the default limits (`aurora settings`) apply again.
    #[arg(long, conflicts_with_all = ["rpm", "tpm", "max_concurrent", "budget_tokens", "budget_period", "no_limits"])]
    default_limits: bool,
}

fn parse_time(raw: &str) -> Result<SystemTime, String> {
    let time = humantime::parse_rfc3339_weak(raw)
        .map_err(|err| format!("{err} (expected RFC 3339, e.g. 2027-01-31T00:00:00Z)"))?;
    within_range(time)
}

/// Now plus the duration, with checked arithmetic: `18446744073709551615s` overflows the clock.
fn parse_expires_in(raw: &str) -> Result<SystemTime, String> {
    let duration = humantime::parse_duration(raw).map_err(|err| format!("{err} (expected e.g. 30d or 12h)"))?;
    let time = SystemTime::now().checked_add(duration).ok_or_else(too_late)?;
    within_range(time)
}

fn within_range(time: SystemTime) -> Result<SystemTime, String> {
    if time > aurora_core::latest_expiry() { Err(too_late()) } else { Ok(time) }
}

fn too_late() -> String {
    format!("the expiry would be after {}, the latest a key may have", aurora_core::LATEST_EXPIRY)
}

pub(crate) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let format = args.client.output()?;
    let mut client = args.client.connect().await?;
    match args.command {
        KeysCommand::Create(create) => {
            let request = pb::CreateKeyRequest {
                name: create.name,
                description: create.description,
                expires_at: create.expiry.timestamp(),
                allowed_providers: create.providers,
                disabled: create.disabled,
                allowed_endpoints: create.allow_endpoints,
                limits: create.limits.for_create(),
            };
            let created = client.create_key(request).await.or_status()?;
            let key = created.key.unwrap_or_default();
            match format {
                OutputFormat::Json => {
                    let mut value = output::key_json(&key);
                    value["secret"] = json!(created.secret);
                    value["revision"] = json!(created.revision);
                    output::print_json(&value)
                }
                OutputFormat::Table => output::print(&format!(
                    "{}\nsecret: {}\n\nStore the secret now: Aurora keeps only its hash and will not show it again.\nrevision: {}\n",
                    output::key_table(std::slice::from_ref(&key)).render(),
                    created.secret,
                    created.revision
                )),
            }?;
            args.client.wait.settle(&mut client, created.revision).await
        }
        KeysCommand::List(list) => list_keys(&mut client, list, format).await,
        KeysCommand::Get { id } => {
            let key = client.get_key(pb::GetKeyRequest { id }).await.or_status()?;
            let (usage_json, usage_line) = super::usage::key_totals(&mut client, &key.id).await?;
            match format {
                OutputFormat::Json => {
                    let mut value = output::key_json(&key);
                    value["usage"] = usage_json;
                    output::print_json(&value)
                }
                OutputFormat::Table => {
                    print_key(&key, None, format)?;
                    output::print(&usage_line)
                }
            }
        }
        KeysCommand::Update(update) => {
            let expiry = if update.no_expiry {
                Some(pb::update_key_request::Expiry::ClearExpiry(true))
            } else {
                update.expiry.timestamp().map(pb::update_key_request::Expiry::ExpiresAt)
            };
            let allowed = if update.all_providers { Some(Vec::new()) } else { update.providers };
            let endpoints = if update.all_endpoints { Some(Vec::new()) } else { update.allow_endpoints };
            let enabled = match (update.enable, update.disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let request = pb::UpdateKeyRequest {
                id: update.id,
                name: update.name,
                description: update.description,
                enabled,
                expiry,
                allowed_providers: allowed.map(|providers| pb::ProviderList { providers }),
                allowed_endpoints: endpoints.map(|rules| pb::EndpointList { rules }),
                limits: update.limits.for_update(update.default_limits),
            };
            let updated = client.update_key(request).await.or_status()?;
            print_key(&updated.key.unwrap_or_default(), Some(updated.revision), format)?;
            args.client.wait.settle(&mut client, updated.revision).await
        }
        KeysCommand::Rotate(rotate) => {
            super::key_rotation::rotate(&mut client, &args.client.wait, rotate, format).await
        }
        KeysCommand::Revoke { id } => {
            let revoked = client.revoke_key(pb::RevokeKeyRequest { id }).await.or_status()?;
            print_key(&revoked.key.unwrap_or_default(), Some(revoked.revision), format)?;
            args.client.wait.settle(&mut client, revoked.revision).await
        }
        KeysCommand::Delete { id } => {
            let deleted = client.delete_key(pb::DeleteKeyRequest { id: id.clone() }).await.or_status()?;
            match format {
                OutputFormat::Json => output::print_json(&json!({ "id": id, "revision": deleted.revision })),
                OutputFormat::Table => output::print(&format!("deleted key {id}\nrevision: {}\n", deleted.revision)),
            }?;
            args.client.wait.settle(&mut client, deleted.revision).await
        }
    }
}

async fn list_keys(client: &mut AdminClient, list: ListArgs, format: OutputFormat) -> anyhow::Result<()> {
    let one_page = list.page_size.is_some() || list.page_token.is_some();
    let mut keys = Vec::new();
    let mut token = list.page_token.unwrap_or_default();
    let next_page_token = loop {
        let request = pb::ListKeysRequest { page_size: list.page_size.unwrap_or(1000), page_token: token };
        let page = client.list_keys(request).await.or_status()?;
        keys.extend(page.keys);
        if one_page || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        token = page.next_page_token;
    };
    match format {
        OutputFormat::Json => output::print_json(&json!({
            "keys": keys.iter().map(output::key_json).collect::<Vec<Value>>(),
            "next_page_token": next_page_token,
        })),
        OutputFormat::Table => {
            let mut text = output::key_table(&keys).render();
            if !next_page_token.is_empty() {
                text.push_str(&format!("next page: --page-token {next_page_token}\n"));
            }
            output::print(&text)
        }
    }
}

fn print_key(key: &pb::Key, revision: Option<u64>, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let mut value = output::key_json(key);
            if let Some(revision) = revision {
                value["revision"] = json!(revision);
            }
            output::print_json(&value)
        }
        OutputFormat::Table => {
            let mut text = output::key_table(std::slice::from_ref(key)).render();
            if !key.description.is_empty() {
                text.push_str(&format!("description: {}\n", aurora_core::text::escape(&key.description)));
            }
            if !key.allowed_endpoints.is_empty() {
                text.push_str(&format!(
                    "endpoints: {}\n",
                    aurora_core::text::escape(&key.allowed_endpoints.join("; "))
                ));
            }
            text.push_str(&limits::status_lines(key));
            if let Some(revision) = revision {
                text.push_str(&format!("revision: {revision}\n"));
            }
            output::print(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expiries_are_checked_before_any_request() {
        let in_a_day = parse_expires_in("1d").unwrap();
        assert!(in_a_day > SystemTime::now() + Duration::from_secs(86_000));
        for raw in ["20000y", "18446744073709551615s", "8000y"] {
            let err = parse_expires_in(raw).expect_err(raw);
            assert!(err.contains("9999-12-31T23:59:59Z"), "{raw}: {err}");
        }
        assert!(parse_expires_in("soon").is_err());
        assert!(parse_time("9999-12-31T23:59:59Z").is_ok());
        assert!(parse_time("10000-01-01T00:00:00Z").is_err());
    }
}
