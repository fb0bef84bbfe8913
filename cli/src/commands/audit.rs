//! `aurora audit [--since 24h] [--until T] [--key ID | --target T] [--action A]` lists the audit
//! trail, oldest first; `aurora audit verify` walks its hash chain and fails (non-zero exit),
//! naming the first broken record, when a stored record was edited, deleted or reordered.

use std::time::SystemTime;

use aurora_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{AdminClient, CallExt, ClientArgs};
use super::output::{self, OutputFormat, Table};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    client: ClientArgs,

    #[command(subcommand)]
    command: Option<AuditCommand>,

    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; fail naming the first broken record.
    Verify,
}

#[derive(Debug, Args)]
struct Filters {
    /// Records committed at or after this: a duration ago (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "AGO|TIME", value_parser = parse_when)]
    since: Option<SystemTime>,
    /// Records committed before this: a duration ago or an RFC 3339 time.
    #[arg(long, value_name = "AGO|TIME", value_parser = parse_when)]
    until: Option<SystemTime>,
    /// Only records about this key (its id).
    #[arg(long, value_name = "ID", conflicts_with = "target")]
    key: Option<String>,
    /// Only records about this target: a key id, a provider name, `settings` or `environment`.
    #[arg(long)]
    target: Option<String>,
    /// Only this action (`key.revoke`) or group of actions (`key`, `provider`, `settings`,
    /// `bootstrap`).
    #[arg(long)]
    action: Option<String>,
    /// Records fetched per request (at most 1000); every page is fetched and listed.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

/// `24h` (that long ago) or `2026-12-01T10:00:00Z`.
fn parse_when(raw: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(raw) {
        return Ok(SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(raw)
        .map_err(|_| format!("{raw:?} is neither a duration (24h, 7d) nor an RFC 3339 time (2026-12-01T10:00:00Z)"))
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let format = args.client.output()?;
    let mut client = args.client.connect().await?;
    match args.command {
        Some(AuditCommand::Verify) => verify(&mut client, format).await,
        None => list(&mut client, args.filters, format).await,
    }
}

async fn list(client: &mut AdminClient, filters: Filters, format: OutputFormat) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListAuditRequest {
            since: filters.since.map(Into::into),
            until: filters.until.map(Into::into),
            target: filters.key.clone().or_else(|| filters.target.clone()).unwrap_or_default(),
            action: filters.action.clone().unwrap_or_default(),
            page_size: filters.page_size,
            page_token,
        };
        let page = client.list_audit(request).await.or_status()?;
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    match format {
        OutputFormat::Json => {
            output::print_json(&json!({ "records": records.iter().map(record_json).collect::<Vec<_>>() }))
        }
        OutputFormat::Table => {
            let mut text = table(&records).render();
            text.push_str(&format!("{} record(s)\n", records.len()));
            output::print(&text)
        }
    }
}

async fn verify(client: &mut AdminClient, format: OutputFormat) -> anyhow::Result<()> {
    let verified = client.verify_audit(pb::VerifyAuditRequest {}).await.or_status()?;
    match format {
        OutputFormat::Json => output::print_json(&json!({
            "ok": verified.ok,
            "checked": verified.checked,
            "first_seq": verified.first_seq,
            "last_seq": verified.last_seq,
            "anchor_hash": verified.anchor_hash,
            "last_hash": verified.last_hash,
            "broken_seq": (!verified.ok).then_some(verified.broken_seq),
            "problem": (!verified.ok).then_some(&verified.problem),
        }))?,
        OutputFormat::Table if verified.ok => output::print(&format!(
            "audit trail verified: {} record(s), {}..{}, last hash {}\n",
            verified.checked, verified.first_seq, verified.last_seq, verified.last_hash
        ))?,
        OutputFormat::Table => {}
    }
    if verified.ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "audit trail broken at record {}: {} ({} record(s) before it verified)",
            verified.broken_seq,
            verified.problem,
            verified.checked
        ))
    }
}

fn record_json(record: &pb::AuditRecord) -> Value {
    // The change set is a JSON object on the wire; scripts get it as one, not as a string.
    let changes: Value =
        serde_json::from_str(&record.changes_json).unwrap_or_else(|_| Value::String(record.changes_json.clone()));
    json!({
        "seq": record.seq,
        "committed_at": output::timestamp(record.committed_at.as_ref()),
        "revision": record.revision,
        "action": record.action,
        "target": record.target,
        "changes": changes,
        "actor": record.actor,
        "peer": record.peer,
        "replica": record.replica,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    })
}

fn table(records: &[pb::AuditRecord]) -> Table {
    let mut table = Table::new(&["SEQ", "TIME", "REVISION", "ACTION", "TARGET", "ACTOR", "PEER", "REPLICA", "CHANGES"]);
    for record in records {
        table.row(vec![
            record.seq.to_string(),
            output::timestamp(record.committed_at.as_ref()).unwrap_or_default(),
            record.revision.to_string(),
            record.action.clone(),
            record.target.clone(),
            record.actor.clone(),
            record.peer.clone(),
            record.replica.clone(),
            record.changes_json.clone(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn when_is_a_duration_ago_or_a_time() {
        let before = SystemTime::now();
        let ago = parse_when("24h").unwrap();
        let expected = before - Duration::from_secs(86_400);
        assert!(ago >= expected && ago <= expected + Duration::from_secs(5));
        let at = parse_when("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(at).to_string(), "2026-12-01T10:00:00Z");
        assert!(parse_when("yesterday").unwrap_err().contains("neither a duration"));
    }
}
