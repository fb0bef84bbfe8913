//! `aurora dataplanes`: the data-plane replicas subscribed to the control plane.

use aurora_proto::v1 as pb;
use clap::Args;
use serde_json::json;

use super::client::{AdminClient, CallExt, ClientArgs};
use super::output::{self, OutputFormat, Table};

#[derive(Debug, Args)]
pub(crate) struct DataplanesArgs {
    #[command(flatten)]
    client: ClientArgs,

    /// Replicas fetched per request (at most 1000); every page is fetched and listed.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

/// Every replica, page after page, and the newest head revision any page reported.
async fn fetch_all(client: &mut AdminClient, page_size: u32) -> anyhow::Result<pb::ListDataPlanesResponse> {
    let mut all = pb::ListDataPlanesResponse::default();
    let mut page_token = String::new();
    loop {
        let page = client.list_data_planes(pb::ListDataPlanesRequest { page_size, page_token }).await.or_status()?;
        all.data_planes.extend(page.data_planes);
        all.head_revision = all.head_revision.max(page.head_revision);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

pub(crate) async fn run(args: DataplanesArgs) -> anyhow::Result<()> {
    let mut client = args.client.connect().await?;
    let fleet = fetch_all(&mut client, args.page_size).await?;
    let head = fleet.head_revision;
    match args.client.output()? {
        OutputFormat::Json => output::print_json(&json!({
            "head_revision": head,
            "data_planes": fleet.data_planes.iter().map(|dp| json!({
                "node_id": dp.node_id,
                "address": dp.address,
                "version": dp.version,
                "acked_revision": dp.acked_revision,
                "lag": head.saturating_sub(dp.acked_revision),
                "connected_at": output::timestamp(dp.connected_at.as_ref()),
                "last_seen_at": output::timestamp(dp.last_seen_at.as_ref()),
                "rejected_revision": (dp.rejected_revision != 0).then_some(dp.rejected_revision),
                "rejected_reason": (!dp.rejected_reason.is_empty()).then_some(&dp.rejected_reason),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut text = table(&fleet.data_planes, head).render();
            text.push_str(&format!("head revision: {head}, {} data plane(s)\n", fleet.data_planes.len()));
            output::print(&text)
        }
    }
}

fn table(data_planes: &[pb::DataPlane], head: u64) -> Table {
    let mut table = Table::new(&["NODE ID", "ADDRESS", "VERSION", "REVISION", "STATUS", "CONNECTED", "LAST SEEN"]);
    for dp in data_planes {
        let lag = head.saturating_sub(dp.acked_revision);
        let status = match (dp.rejected_revision, lag) {
            (rejected, _) if rejected > dp.acked_revision => format!("REJECTED {rejected}: {}", dp.rejected_reason),
            (_, 0) => "current".to_owned(),
            (_, lag) => format!("LAGGING ({lag} behind)"),
        };
        table.row(vec![
            dp.node_id.clone(),
            dp.address.clone(),
            dp.version.clone(),
            dp.acked_revision.to_string(),
            status,
            output::timestamp(dp.connected_at.as_ref()).unwrap_or_default(),
            output::timestamp(dp.last_seen_at.as_ref()).unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_and_rejecting_replicas_are_marked() {
        let dp = |node_id: &str, acked_revision, rejected_revision| pb::DataPlane {
            node_id: node_id.into(),
            acked_revision,
            rejected_revision,
            rejected_reason: "bad credential".into(),
            ..Default::default()
        };
        let text = table(&[dp("a", 7, 0), dp("b", 5, 0), dp("c", 5, 6)], 7).render();
        assert!(text.lines().any(|l| l.starts_with("a ") && l.contains("current")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("b ") && l.contains("LAGGING (2 behind)")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("c ") && l.contains("REJECTED 6: bad credential")), "{text}");
    }
}
