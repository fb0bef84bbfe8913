//! Command output: aligned tables for people, `-o json` for scripts. Everything goes to stdout;
//! logs and errors go to stderr.

use std::io::Write;
use std::time::SystemTime;

use aurora_proto::v1 as pb;
use clap::ValueEnum;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Table { rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout as is.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// RFC 3339 in UTC with second precision, or `None` for an unset timestamp.
pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let time = SystemTime::try_from(*ts?).ok()?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

pub(crate) fn key_json(key: &pb::Key) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "redacted": key.redacted,
        "enabled": key.enabled,
        "expires_at": timestamp(key.expires_at.as_ref()),
        "allowed_providers": key.allowed_providers,
        "created_at": timestamp(key.created_at.as_ref()),
        "updated_at": timestamp(key.updated_at.as_ref()),
        "revoked_at": timestamp(key.revoked_at.as_ref()),
    })
}

pub(crate) fn key_table(keys: &[pb::Key]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "KEY", "STATUS", "EXPIRES", "PROVIDERS", "CREATED"]);
    for key in keys {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else if key.enabled {
            "enabled"
        } else {
            "disabled"
        };
        let providers =
            if key.allowed_providers.is_empty() { "all".to_owned() } else { key.allowed_providers.join(",") };
        table.row(vec![
            key.id.clone(),
            key.name.clone(),
            key.redacted.clone(),
            status.to_owned(),
            timestamp(key.expires_at.as_ref()).unwrap_or_else(|| "never".to_owned()),
            providers,
            or_dash(timestamp(key.created_at.as_ref())),
        ]);
    }
    table
}

pub(crate) fn provider_json(provider: &pb::Provider) -> Value {
    json!({
        "name": provider.name,
        "enabled": provider.enabled,
        "base_url": provider.base_url,
        "credential_set": provider.credential_set,
        "credential_fingerprint": provider.credential_fingerprint,
        "updated_at": timestamp(provider.updated_at.as_ref()),
    })
}

pub(crate) fn provider_table(providers: &[pb::Provider]) -> Table {
    let mut table = Table::new(&["NAME", "ENABLED", "BASE URL", "CREDENTIAL", "UPDATED"]);
    for p in providers {
        let credential = if p.credential_set { format!("set ({})", p.credential_fingerprint) } else { "-".to_owned() };
        table.row(vec![
            p.name.clone(),
            p.enabled.to_string(),
            p.base_url.clone(),
            credential,
            or_dash(timestamp(p.updated_at.as_ref())),
        ]);
    }
    table
}

pub(crate) fn settings_json(settings: &pb::Settings) -> Value {
    json!({
        "passthrough_enabled": settings.passthrough_enabled,
        "v1_alias_enabled": settings.v1_alias_enabled,
        "enabled_providers": settings.enabled_providers,
        "revision": settings.revision,
    })
}

pub(crate) fn settings_table(settings: &pb::Settings) -> Table {
    let mut table = Table::new(&["SETTING", "VALUE"]);
    table.row(vec!["passthrough".into(), settings.passthrough_enabled.to_string()]);
    table.row(vec!["v1-alias".into(), settings.v1_alias_enabled.to_string()]);
    table.row(vec!["enabled providers".into(), settings.enabled_providers.join(",")]);
    table.row(vec!["revision".into(), settings.revision.to_string()]);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(table.render(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 };
        assert_eq!(timestamp(Some(&ts)).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(timestamp(None), None);
    }
}
