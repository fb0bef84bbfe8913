//! `aurora settings get|set`: passthrough routes, the /v1 alias, default key limits and the
//! limit fallback.

use aurora_proto::v1 as pb;
use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{CallExt, ClientArgs};
use super::limits::DefaultLimitArgs;
use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: SettingsCommand,
}

#[derive(Debug, Subcommand)]
enum SettingsCommand {
    /// Show the settings and the store's head revision.
    Get,
    /// Change settings; only the options given are changed.
    Set(SetArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
struct SetArgs {
    /// Serve /p/{provider}/... at all (ENABLE_PASSTHROUGH_ROUTES).
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), group = "change")]
    passthrough: Option<bool>,
    /// Accept and strip a leading /v1 segment (ALLOW_PASSTHROUGH_V1_ALIAS).
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), group = "change")]
    v1_alias: Option<bool>,
    #[command(flatten)]
    limits: DefaultLimitArgs,
}

pub(crate) async fn run(args: SettingsArgs) -> anyhow::Result<()> {
    let format = args.client.output()?;
    let mut client = args.client.connect().await?;
    let (settings, revision) = match args.command {
        SettingsCommand::Get => (client.get_settings(pb::GetSettingsRequest {}).await.or_status()?, None),
        SettingsCommand::Set(set) => {
            let request = pb::UpdateSettingsRequest {
                passthrough_enabled: set.passthrough,
                v1_alias_enabled: set.v1_alias,
                default_key_limits: set.limits.update(),
                limit_fallback: set.limits.limit_fallback.clone(),
            };
            let updated = client.update_settings(request).await.or_status()?;
            (updated.settings.unwrap_or_default(), Some(updated.revision))
        }
    };
    match format {
        OutputFormat::Json => {
            let mut value = output::settings_json(&settings);
            if let Some(revision) = revision {
                value["revision"] = json!(revision);
            }
            output::print_json(&value)
        }
        OutputFormat::Table => output::print(&output::settings_table(&settings).render()),
    }?;
    match revision {
        Some(revision) => args.client.wait.settle(&mut client, revision).await,
        None => Ok(()),
    }
}
