//! Command output: aligned tables for people, `-o json` for scripts. Everything goes to stdout;
//! logs and errors go to stderr.
//!
//! Output is total: no value a server can send makes it panic (a timestamp in year 10000 is
//! printed as `+10000-01-01T00:00:00Z`), and every untrusted string a table shows is escaped
//! (`aurora_core::text::escape`), so a name, description, node id or rejection reason cannot
//! move the cursor, recolour the terminal, forge a line or reverse text. JSON needs no such
//! care: its encoder escapes control characters itself.

use std::io::Write;

use aurora_core::text;

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

    /// Adds a row; every cell is escaped, since cells show what the server sent.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|cell| text::escape(cell).into_owned()).collect());
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

/// RFC 3339 in UTC with second precision, or `None` for an unset timestamp. Total: a year
/// outside 0000–9999 is written in ISO 8601's expanded form (`+10000-01-01T00:00:00Z`) and
/// out-of-range nanoseconds are ignored, where humantime's formatter would panic.
pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    Some(format_utc(ts?.seconds))
}

/// `seconds` since the Unix epoch as a UTC date and time, for every `i64`.
pub(crate) fn format_utc(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    let year = if (0..=9999).contains(&year) { format!("{year:04}") } else { format!("{year:+05}") };
    format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// The proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`); no step overflows for any day an `i64` of seconds holds.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        "allowed_endpoints": key.allowed_endpoints,
        "limits": super::limits::limits_json(key.limits.as_ref()),
        "limit_status": super::limits::status_json(key.limit_status.as_ref()),
        "created_at": timestamp(key.created_at.as_ref()),
        "updated_at": timestamp(key.updated_at.as_ref()),
        "revoked_at": timestamp(key.revoked_at.as_ref()),
        "current_secret": super::key_rotation::secret_json(key.current_secret.as_ref()),
        "previous_secret": super::key_rotation::secret_json(key.previous_secret.as_ref()),
    })
}

pub(crate) fn key_table(keys: &[pb::Key]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "KEY", "PREVIOUS KEY", "STATUS", "EXPIRES", "PROVIDERS", "CREATED"]);
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
            super::key_rotation::previous_cell(key),
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
        "default_headers": provider
            .default_headers
            .iter()
            .map(|h| (h.name.clone(), Value::String(h.value.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "client_certificate_set": provider.client_certificate_set,
        "ca_set": provider.ca_set,
        "updated_at": timestamp(provider.updated_at.as_ref()),
    })
}

pub(crate) fn provider_table(providers: &[pb::Provider]) -> Table {
    let mut table = Table::new(&["NAME", "ENABLED", "BASE URL", "CREDENTIAL", "HEADERS", "TLS", "UPDATED"]);
    for p in providers {
        let credential = if p.credential_set { format!("set ({})", p.credential_fingerprint) } else { "-".to_owned() };
        let headers: Vec<&str> = p.default_headers.iter().map(|h| h.name.as_str()).collect();
        let tls: Vec<&str> = [(p.client_certificate_set, "client cert"), (p.ca_set, "ca")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s)
            .collect();
        table.row(vec![
            p.name.clone(),
            p.enabled.to_string(),
            p.base_url.clone(),
            credential,
            if headers.is_empty() { "-".to_owned() } else { headers.join(",") },
            if tls.is_empty() { "-".to_owned() } else { tls.join(",") },
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
        "default_key_limits": super::limits::limits_json(settings.default_key_limits.as_ref()),
        "limit_fallback": settings.limit_fallback,
        "revision": settings.revision,
    })
}

pub(crate) fn settings_table(settings: &pb::Settings) -> Table {
    let mut table = Table::new(&["SETTING", "VALUE"]);
    table.row(vec!["passthrough".into(), settings.passthrough_enabled.to_string()]);
    table.row(vec!["v1-alias".into(), settings.v1_alias_enabled.to_string()]);
    table.row(vec!["enabled providers".into(), settings.enabled_providers.join(",")]);
    let defaults = settings.default_key_limits.as_ref().map_or_else(|| "none".to_owned(), super::limits::limits_line);
    table.row(vec!["default key limits".into(), defaults]);
    table.row(vec!["limit fallback".into(), settings.limit_fallback.clone()]);
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

    /// Within humantime's range the output is identical to it, every day for 30 years and at
    /// the edges.
    #[test]
    fn timestamps_match_humantime_where_it_can_format() {
        let mut seconds: Vec<i64> = (0..30 * 366).map(|day| day * 86_400 + 86_399 - day % 86_400).collect();
        seconds.extend([0, 951_782_400, 4_107_542_399, 253_402_300_799]);
        for s in seconds {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.unsigned_abs());
            assert_eq!(format_utc(s), humantime::format_rfc3339_seconds(time).to_string(), "{s}");
        }
    }

    /// A key expiring in year 10000 made `keys list` panic (exit 101) for everyone.
    #[test]
    fn timestamps_humantime_cannot_format_do_not_panic() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(timestamp(Some(&ts(253_402_300_800, 0))).as_deref(), Some("+10000-01-01T00:00:00Z"));
        assert_eq!(timestamp(Some(&ts(-1, 0))).as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(timestamp(Some(&ts(-62_167_219_201, 0))).as_deref(), Some("-0001-12-31T23:59:59Z"));
        assert_eq!(timestamp(Some(&ts(1_700_000_000, -7))).as_deref(), Some("2023-11-14T22:13:20Z"));
        for seconds in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            let text = timestamp(Some(&ts(seconds, i32::MAX))).unwrap();
            assert!(text.ends_with('Z'), "{text}");
        }
        let far =
            pb::Key { expires_at: Some(ts(i64::MAX, 0)), created_at: Some(ts(i64::MIN, 0)), ..Default::default() };
        assert!(key_table(std::slice::from_ref(&far)).render().contains("+292277026596-12-04T15:30:07Z"));
        assert!(key_json(&far)["expires_at"].is_string());
    }

    /// Whatever the server sends, a table shows it escaped: no ESC, newline or bidi override
    /// reaches the terminal raw.
    #[test]
    fn table_cells_are_escaped() {
        let key = pb::Key {
            id: "id\n".into(),
            name: "invoice\u{202e}fdp.exe".into(),
            redacted: "aur_…\u{1b}[2J".into(),
            ..Default::default()
        };
        let rendered = key_table(&[key]).render();
        assert_eq!(
            text::first_unsafe_char(rendered.trim_end_matches('\n').replace('\n', "").as_str()),
            None,
            "{rendered}"
        );
        assert!(rendered.contains("invoice\\u{202e}fdp.exe") && rendered.contains("\\u{1b}[2J"), "{rendered}");
        assert_eq!(rendered.lines().count(), 2, "{rendered}");
    }
}
