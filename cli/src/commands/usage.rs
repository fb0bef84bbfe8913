//! `aurora usage`: token totals per key, provider, model and time bucket (`QueryUsage`).
//!
//! Rows are grouped as `--by` says (default: key, provider and model) over hour buckets from
//! `--since` (default: 24 hours ago, rounded down to its hour) to `--until` (default: now).
//! Output is a table, `-o json` (`{"since", "until", "rows": [...]}`, each row with `key_id`,
//! `provider`, `model`, `bucket_start`, `requests`, the token counts and the incomplete and
//! unknown request counts; a dimension not grouped by is `null`) or `-o csv` (the same columns).

use std::time::{Duration, SystemTime};

use aurora_proto::v1 as pb;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::client::{AdminClient, CallExt, ClientArgs, FormatArg};
use super::output::{self, Table};

#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    #[command(flatten)]
    client: ClientArgs,

    /// Only this key (its id, or `master` for the master key, `anonymous` for traffic with
    /// gateway auth off).
    #[arg(long = "key", value_name = "ID")]
    key: Option<String>,
    /// Only this provider.
    #[arg(long)]
    provider: Option<String>,
    /// Only this model (as the provider's responses named it).
    #[arg(long)]
    model: Option<String>,
    /// Start of the range: a duration ago (24h, 7d) or an RFC 3339 time; rounded down to its hour.
    #[arg(long, default_value = "24h", value_parser = parse_instant)]
    since: SystemTime,
    /// End of the range (buckets starting before it): a duration ago or an RFC 3339 time [default: now].
    #[arg(long, value_parser = parse_instant)]
    until: Option<SystemTime>,
    /// What each row is per, comma-separated or repeated [default: key,provider,model].
    #[arg(long, value_enum, value_delimiter = ',')]
    by: Vec<Dimension>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dimension {
    Key,
    Provider,
    Model,
    Hour,
    Day,
}

impl Dimension {
    fn proto(self) -> pb::UsageDimension {
        match self {
            Dimension::Key => pb::UsageDimension::Key,
            Dimension::Provider => pb::UsageDimension::Provider,
            Dimension::Model => pb::UsageDimension::Model,
            Dimension::Hour => pb::UsageDimension::Hour,
            Dimension::Day => pb::UsageDimension::Day,
        }
    }
}

/// `24h` (that long ago) or an RFC 3339 time.
fn parse_instant(raw: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(raw) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(raw)
        .map_err(|_| format!("{raw:?} is neither a duration (24h, 7d) nor an RFC 3339 time"))?;
    SystemTime::now().checked_sub(ago).ok_or_else(|| format!("{raw} ago is before the clock's range"))
}

/// Which dimensions the rows carry.
#[derive(Debug, Clone, Copy)]
struct Grouping {
    key: bool,
    provider: bool,
    model: bool,
    time: bool,
}

impl Grouping {
    fn of(by: &[Dimension]) -> Self {
        let has = |d| by.contains(&d);
        let time = has(Dimension::Hour) || has(Dimension::Day);
        let any = has(Dimension::Key) || has(Dimension::Provider) || has(Dimension::Model);
        if !any && !time {
            return Grouping { key: true, provider: true, model: true, time: false };
        }
        Grouping { key: has(Dimension::Key), provider: has(Dimension::Provider), model: has(Dimension::Model), time }
    }
}

pub(crate) async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let mut client = args.client.connect().await?;
    let until = args.until.unwrap_or_else(SystemTime::now);
    let request = pb::QueryUsageRequest {
        since: Some(args.since.into()),
        until: Some(until.into()),
        key_id: args.key.unwrap_or_default(),
        provider: args.provider.unwrap_or_default(),
        model: args.model.unwrap_or_default(),
        group_by: args.by.iter().map(|d| d.proto() as i32).collect(),
    };
    let since = request.since;
    let response = client.query_usage(request).await.or_status()?;
    let grouping = Grouping::of(&args.by);
    let since = output::timestamp(since.as_ref());
    let until = output::timestamp(Some(&until.into()));
    match args.client.format() {
        FormatArg::Json => output::print_json(&json!({
            "since": since,
            "until": until,
            "rows": response.rows.iter().map(|row| row_json(row, grouping)).collect::<Vec<_>>(),
        })),
        FormatArg::Csv => output::print(&csv(&response.rows, grouping)),
        FormatArg::Table => {
            let mut text = table(&response.rows, grouping).render();
            let total = sum(&response.rows);
            text.push_str(&format!(
                "{} row(s) from {} to {}; total {}\n",
                response.rows.len(),
                since.unwrap_or_default(),
                until.unwrap_or_default(),
                summary(&total)
            ));
            output::print(&text)
        }
    }
}

const COUNT_HEADERS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "incomplete_requests",
    "unknown_requests",
];

fn counts(row: &pb::UsageTotal) -> [u64; 8] {
    [
        row.requests,
        row.input_tokens,
        row.output_tokens,
        row.cache_read_input_tokens,
        row.cache_creation_input_tokens,
        row.reasoning_tokens,
        row.incomplete_requests,
        row.unknown_requests,
    ]
}

fn row_json(row: &pb::UsageTotal, grouping: Grouping) -> Value {
    let dimension = |grouped: bool, value: &str| if grouped { json!(value) } else { Value::Null };
    let mut value = json!({
        "key_id": dimension(grouping.key, &row.key_id),
        "provider": dimension(grouping.provider, &row.provider),
        "model": dimension(grouping.model, &row.model),
        "bucket_start": output::timestamp(row.bucket_start.as_ref()),
    });
    for (name, count) in COUNT_HEADERS.iter().zip(counts(row)) {
        value[*name] = json!(count);
    }
    value
}

fn table(rows: &[pb::UsageTotal], grouping: Grouping) -> Table {
    let mut headers = Vec::new();
    for (grouped, name) in [(grouping.key, "KEY"), (grouping.provider, "PROVIDER"), (grouping.model, "MODEL")] {
        if grouped {
            headers.push(name);
        }
    }
    if grouping.time {
        headers.push("BUCKET");
    }
    headers.extend(["REQUESTS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "INCOMPLETE", "UNKNOWN"]);
    let mut table = Table::new(&headers);
    for row in rows {
        let mut cells = Vec::new();
        for (grouped, value) in
            [(grouping.key, &row.key_id), (grouping.provider, &row.provider), (grouping.model, &row.model)]
        {
            if grouped {
                cells.push(if value.is_empty() { "-".to_owned() } else { value.clone() });
            }
        }
        if grouping.time {
            cells.push(output::timestamp(row.bucket_start.as_ref()).unwrap_or_default());
        }
        let [requests, input, output, cache_read, cache_creation, _reasoning, incomplete, unknown] = counts(row);
        cells.extend([requests, input, output, cache_read, cache_creation, incomplete, unknown].map(|n| n.to_string()));
        table.row(cells);
    }
    table
}

fn csv(rows: &[pb::UsageTotal], grouping: Grouping) -> String {
    let mut out = String::from("key_id,provider,model,bucket_start,");
    out.push_str(&COUNT_HEADERS.join(","));
    out.push('\n');
    for row in rows {
        let dimension = |grouped: bool, value: &str| if grouped { csv_cell(value) } else { String::new() };
        let mut cells = vec![
            dimension(grouping.key, &row.key_id),
            dimension(grouping.provider, &row.provider),
            dimension(grouping.model, &row.model),
            output::timestamp(row.bucket_start.as_ref()).unwrap_or_default(),
        ];
        cells.extend(counts(row).map(|n| n.to_string()));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting, and a leading `'` for text a spreadsheet would run as a formula (a model
/// name comes from an upstream's response).
fn csv_cell(value: &str) -> String {
    let value =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value.to_owned() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

fn sum(rows: &[pb::UsageTotal]) -> [u64; 8] {
    rows.iter().fold([0; 8], |mut total, row| {
        for (t, n) in total.iter_mut().zip(counts(row)) {
            *t = t.saturating_add(n);
        }
        total
    })
}

fn summary(total: &[u64; 8]) -> String {
    format!(
        "{} requests, {} input, {} output, {} cache read, {} cache write tokens ({} incomplete, {} unknown)",
        total[0], total[1], total[2], total[3], total[4], total[6], total[7]
    )
}

/// A key's totals over all time, for `aurora keys get`.
pub(crate) async fn key_totals(client: &mut AdminClient, key_id: &str) -> anyhow::Result<(Value, String)> {
    let request = pb::QueryUsageRequest {
        since: Some(SystemTime::UNIX_EPOCH.into()),
        until: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
        key_id: key_id.to_owned(),
        group_by: vec![pb::UsageDimension::Key as i32],
        ..Default::default()
    };
    let rows = client.query_usage(request).await.or_status()?.rows;
    let total = sum(&rows);
    let mut value = json!({});
    for (name, count) in COUNT_HEADERS.iter().zip(total) {
        value[*name] = json!(count);
    }
    Ok((value, format!("usage (all time): {}\n", summary(&total))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> pb::UsageTotal {
        pb::UsageTotal {
            key_id: "master".into(),
            provider: "openai".into(),
            model: "=HYPERLINK(\"x\",\"y\")".into(),
            bucket_start: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            requests: 2,
            input_tokens: 30,
            output_tokens: 4,
            ..Default::default()
        }
    }

    #[test]
    fn json_rows_name_every_count_and_null_the_ungrouped_dimensions() {
        let grouping = Grouping::of(&[Dimension::Provider, Dimension::Day]);
        let value = row_json(&row(), grouping);
        assert_eq!(value["provider"], "openai");
        assert!(value["key_id"].is_null() && value["model"].is_null());
        assert_eq!(value["bucket_start"], "2026-01-01T00:00:00Z");
        assert_eq!(value["input_tokens"], 30);
        assert_eq!(value["cache_creation_input_tokens"], 0);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let text = csv(&[row()], Grouping::of(&[]));
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.starts_with("master,openai,\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\",2026-01-01T00:00:00Z,2,30,4,"),
            "{line}"
        );
        assert_eq!(text.lines().next().unwrap().split(',').count(), 12);
    }

    #[test]
    fn the_default_grouping_is_key_provider_and_model() {
        let g = Grouping::of(&[]);
        assert!(g.key && g.provider && g.model && !g.time);
        let g = Grouping::of(&[Dimension::Hour]);
        assert!(!g.key && g.time);
    }

    #[test]
    fn instants_are_durations_ago_or_times() {
        let day_ago = parse_instant("24h").unwrap();
        let elapsed = SystemTime::now().duration_since(day_ago).unwrap();
        assert!(elapsed >= Duration::from_secs(86_400) && elapsed < Duration::from_secs(86_500));
        assert!(parse_instant("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_instant("yesterday").unwrap_err().contains("neither"));
    }
}
