//! Store records to admin API messages.

use std::time::SystemTime;

use aurora_core::ProviderKind;
use aurora_proto::v1 as pb;
use pb::secret_state::State;

use crate::fleet::Replica;
use crate::store::{KeyRecord, ProviderRecord, SettingsView};

pub(crate) fn key(record: &KeyRecord) -> pb::Key {
    key_at(record, SystemTime::now())
}

/// The key as it stands at `now`: which of its secrets are accepted depends on the clock.
pub(crate) fn key_at(record: &KeyRecord, now: SystemTime) -> pb::Key {
    let key_expired = record.expires_at.is_some_and(|at| at <= now);
    let current_secret = pb::SecretState {
        redacted: record.redacted.clone(),
        state: if key_expired { State::Expired } else { State::Active }.into(),
        expires_at: record.expires_at.map(Into::into),
    };
    // A previous secret stops at the end of its grace or at the key's expiry, whichever is first.
    let previous_secret = record.previous.as_ref().map(|previous| pb::SecretState {
        redacted: previous.redacted.clone(),
        state: if key_expired || previous.expires_at <= now { State::Expired } else { State::Grace }.into(),
        expires_at: Some(previous.expires_at.into()),
    });
    pb::Key {
        id: record.id.to_string(),
        name: record.name.clone(),
        description: record.description.clone(),
        redacted: record.redacted.clone(),
        enabled: record.enabled,
        expires_at: record.expires_at.map(Into::into),
        allowed_providers: record.allowed_providers.iter().map(|k| k.as_str().to_owned()).collect(),
        created_at: Some(record.created_at.into()),
        updated_at: Some(record.updated_at.into()),
        revoked_at: record.revoked_at.map(Into::into),
        allowed_endpoints: record.allowed_endpoints.iter().map(ToString::to_string).collect(),
        current_secret: Some(current_secret),
        previous_secret,
        limits: record.limits.as_ref().map(super::limits::to_pb),
        // Filled in by GetKey alone: it needs the fleet's live counts.
        limit_status: None,
    }
}

/// The credential and the client certificate are write-only: only whether one is set (and the
/// credential's fingerprint) leave the store.
pub(crate) fn provider(record: &ProviderRecord) -> pb::Provider {
    pb::Provider {
        name: record.kind.as_str().to_owned(),
        enabled: record.enabled,
        base_url: record.base_url.as_str().to_owned(),
        credential_set: !record.credentials.is_empty(),
        // The `default` credential's, else the first's: the one a single-credential client set.
        credential_fingerprint: record
            .credentials
            .default_credential()
            .or_else(|| record.credentials.iter().next().map(|c| &c.secret))
            .map(|c| c.fingerprint())
            .unwrap_or_default(),
        default_headers: record
            .default_headers
            .iter()
            .map(|h| pb::HeaderField { name: h.name().to_owned(), value: h.value().to_owned() })
            .collect(),
        client_certificate_set: record.client_identity.is_some(),
        ca_set: record.ca_pem.is_some(),
        updated_at: Some(record.updated_at.into()),
    }
}

pub(crate) fn settings(view: &SettingsView) -> pb::Settings {
    pb::Settings {
        passthrough_enabled: view.settings.passthrough_enabled,
        v1_alias_enabled: view.settings.v1_alias_enabled,
        enabled_providers: view.enabled_providers.iter().map(|k| ProviderKind::as_str(k).to_owned()).collect(),
        revision: view.revision,
        default_key_limits: view.settings.default_key_limits.as_ref().map(super::limits::to_pb),
        limit_fallback: view.settings.limit_fallback.as_str().to_owned(),
    }
}

pub(crate) fn data_plane(replica: &Replica) -> pb::DataPlane {
    let (rejected_revision, rejected_reason) = replica.rejected.clone().unwrap_or_default();
    pb::DataPlane {
        node_id: replica.node_id.clone(),
        address: replica.address.map(|a| a.to_string()).unwrap_or_default(),
        version: replica.version.clone(),
        acked_revision: replica.acked_revision,
        connected_at: Some(replica.connected_at.into()),
        last_seen_at: Some(replica.last_seen_at.into()),
        rejected_revision,
        rejected_reason,
    }
}
