//! The audit trail in the admin API: who a caller is for the record ([`actor`]), and the two
//! reads, `ListAudit` (filters and paging) and `VerifyAudit` (the hash chain, walked).

use std::sync::Arc;
use std::time::SystemTime;

use aurora_core::text::{excerpt, first_unsafe_char};
use aurora_proto::v1 as pb;
use tonic::Request;

use super::error::AdminError;
use super::validate::{self, FieldError};
use crate::store::audit::{ACTIONS, AuditQuery, AuditRecord};
use crate::store::{Actor, Store};

/// The longest target a filter may name (a key id is 36 characters).
const TARGET_MAX_CHARS: usize = 128;

/// The actor behind an admin request: every call has passed the master key (`AdminAuth`), and
/// the peer is the connection's remote address.
pub(super) fn actor<T>(request: &Request<T>, replica: &Arc<str>) -> Actor {
    Actor::master_key(request.remote_addr(), Arc::clone(replica))
}

pub(super) async fn list(store: &dyn Store, req: pb::ListAuditRequest) -> Result<pb::ListAuditResponse, AdminError> {
    let page_size = validate::page_size(req.page_size)?;
    let query = AuditQuery {
        after_seq: page_token(&req.page_token)?,
        since: req.since.as_ref().map(|t| timestamp("since", t)).transpose()?,
        until: req.until.as_ref().map(|t| timestamp("until", t)).transpose()?,
        target: Some(target(&req.target)?).filter(|t| !t.is_empty()),
        action: Some(action(&req.action)?).filter(|a| !a.is_empty()),
        // One extra row tells whether another page follows.
        limit: page_size + 1,
    };
    let mut records = store.list_audit(&query).await?;
    let more = records.len() > page_size as usize;
    records.truncate(page_size as usize);
    let next_page_token = match records.last() {
        Some(last) if more => format!("{:016x}", last.seq),
        _ => String::new(),
    };
    Ok(pb::ListAuditResponse { records: records.iter().map(record).collect(), next_page_token })
}

pub(super) async fn verify(store: &dyn Store) -> Result<pb::VerifyAuditResponse, AdminError> {
    let verification = store.verify_audit().await?;
    let ends = verification.ends;
    let response = pb::VerifyAuditResponse {
        ok: verification.broken.is_none(),
        checked: verification.checked,
        first_seq: ends.first_seq,
        last_seq: ends.last_seq,
        anchor_hash: hex::encode(ends.anchor),
        last_hash: hex::encode(ends.last_hash),
        broken_seq: verification.broken.as_ref().map_or(0, |b| b.seq()),
        problem: verification.broken.as_ref().map(ToString::to_string).unwrap_or_default(),
    };
    match &verification.broken {
        Some(broken) => {
            tracing::error!(target: "aurora::audit", seq = broken.seq(), problem = %broken, "audit verify failed")
        }
        None => tracing::info!(target: "aurora::audit", checked = verification.checked, "audit verified"),
    }
    Ok(response)
}

fn record(record: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: record.seq,
        committed_at: Some(record.committed_at().into()),
        revision: record.revision,
        action: record.action.clone(),
        target: record.target.clone(),
        changes_json: record.changes.clone(),
        actor: record.actor.clone(),
        peer: record.peer.clone(),
        replica: record.replica.clone(),
        prev_hash: hex::encode(record.prev_hash),
        hash: hex::encode(record.hash),
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// Audit page tokens are the last record's sequence number as 16 hex digits.
fn page_token(raw: &str) -> Result<u64, FieldError> {
    if raw.is_empty() {
        return Ok(0);
    }
    let mut bytes = [0u8; 8];
    hex::decode_to_slice(raw, &mut bytes).map_err(|_| invalid("page_token", "not a token from a previous response"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn timestamp(field: &'static str, t: &prost_types::Timestamp) -> Result<SystemTime, FieldError> {
    SystemTime::try_from(*t).map_err(|_| invalid(field, "not a valid timestamp"))
}

fn target(raw: &str) -> Result<String, FieldError> {
    let target = raw.trim();
    if target.chars().count() > TARGET_MAX_CHARS || first_unsafe_char(target).is_some() {
        return Err(invalid("target", format!("{} is not a key id, provider name or `settings`", excerpt(raw))));
    }
    Ok(target.to_owned())
}

/// An action or a group of them (`key` for every `key.*`).
fn action(raw: &str) -> Result<String, FieldError> {
    let action = raw.trim();
    let known = action.is_empty()
        || ACTIONS.iter().any(|a| *a == action || a.split_once('.').is_some_and(|(group, _)| group == action));
    if !known {
        return Err(invalid(
            "action",
            format!("{} is not one of {} (or their group: key, provider, settings)", excerpt(raw), ACTIONS.join(", ")),
        ));
    }
    Ok(action.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_and_name_their_field() {
        assert_eq!(action("key").as_deref(), Ok("key"));
        assert_eq!(action(" key.revoke ").as_deref(), Ok("key.revoke"));
        assert_eq!(action("bootstrap").as_deref(), Ok("bootstrap"));
        assert_eq!(action("key.explode").map_err(|e| e.field), Err("action"));
        assert_eq!(action("ke").map_err(|e| e.field), Err("action"));
        assert_eq!(target(&"x".repeat(129)).map_err(|e| e.field), Err("target"));
        assert_eq!(target("a\u{202e}b").map_err(|e| e.field), Err("target"));
        assert_eq!(page_token(&format!("{:016x}", 42u64)), Ok(42));
        assert_eq!(page_token("").ok(), Some(0));
        assert_eq!(page_token("zz").map_err(|e| e.field), Err("page_token"));
    }
}
