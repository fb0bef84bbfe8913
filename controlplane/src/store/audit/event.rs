//! What a mutation changed, as the audit trail records it: the action, its target and the
//! fields it changed with their new, non-secret values.
//!
//! Secrets never enter an event. An upstream credential, a client-certificate key or the master
//! key is recorded only as `set`, `cleared` or `replaced`; a gateway key only by its id and name
//! (never its hash or redacted form). The constructors here are the only way to build the
//! change set, so no call site can put a secret in one by accident.

use std::time::SystemTime;

use aurora_core::{DefaultHeaders, ProviderKind, ProviderSet};
use serde_json::{Map, Value, json};

use crate::bootstrap::BootstrapWrites;
use crate::store::credentials::NamedCredential;
use crate::store::model::{KeyRecord, ProviderRecord, Settings};

/// One audited mutation: what was done, to what, and which fields it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// `key.create`, `key.update`, `key.revoke`, `key.rotate`, `key.delete`, `provider.upsert`,
    /// `provider.delete`, `provider.credential.add|update|remove`, `settings.update` or
    /// `bootstrap` (see [`ACTIONS`]).
    pub action: &'static str,
    /// The key id, the provider name (for its credentials too), `settings`, or `environment`
    /// for bootstrap.
    pub target: String,
    /// Field name → new value (JSON); secrets appear only as `set`/`cleared`/`replaced`.
    pub changes: Map<String, Value>,
}

/// Every action an audit record can have; `--action` accepts these or their group (`key`).
pub const ACTIONS: &[&str] = &[
    "key.create",
    "key.update",
    "key.revoke",
    "key.rotate",
    "key.delete",
    "provider.upsert",
    "provider.delete",
    "provider.credential.add",
    "provider.credential.update",
    "provider.credential.remove",
    "settings.update",
    "bootstrap",
];

impl AuditEvent {
    fn new(action: &'static str, target: impl Into<String>) -> Self {
        AuditEvent { action, target: target.into(), changes: Map::new() }
    }

    fn set(&mut self, field: impl Into<String>, value: Value) {
        self.changes.insert(field.into(), value);
    }

    pub(crate) fn key_created(key: &KeyRecord) -> Self {
        let mut event = AuditEvent::new("key.create", key.id.to_string());
        event.set("name", json!(key.name));
        event.set("description", json!(key.description));
        event.set("enabled", json!(key.enabled));
        event.set("expires_at", time(key.expires_at));
        event.set("allowed_providers", providers(key.allowed_providers));
        event.set("allowed_endpoints", endpoints(&key.allowed_endpoints));
        event.set("limits", limits(key.limits.as_ref()));
        event
    }

    /// The fields that differ between `before` and `after` (`updated_at` aside).
    pub(crate) fn key_updated(before: &KeyRecord, after: &KeyRecord) -> Self {
        let mut event = AuditEvent::new("key.update", after.id.to_string());
        if before.name != after.name {
            event.set("name", json!(after.name));
        }
        if before.description != after.description {
            event.set("description", json!(after.description));
        }
        if before.enabled != after.enabled {
            event.set("enabled", json!(after.enabled));
        }
        if before.expires_at != after.expires_at {
            event.set("expires_at", time(after.expires_at));
        }
        if before.allowed_providers != after.allowed_providers {
            event.set("allowed_providers", providers(after.allowed_providers));
        }
        if before.allowed_endpoints != after.allowed_endpoints {
            event.set("allowed_endpoints", endpoints(&after.allowed_endpoints));
        }
        if before.limits != after.limits {
            event.set("limits", limits(after.limits.as_ref()));
        }
        event
    }

    pub(crate) fn key_revoked(key: &KeyRecord) -> Self {
        let mut event = AuditEvent::new("key.revoke", key.id.to_string());
        event.set("name", json!(key.name));
        event.set("enabled", json!(false));
        event.set("revoked_at", time(key.revoked_at));
        event
    }

    /// A new secret for the key: recorded as `replaced` (never its hash or redacted form), with
    /// the grace period and when the previous secret stops (`null`: at once).
    pub(crate) fn key_rotated(key: &KeyRecord, grace_secs: u64) -> Self {
        let mut event = AuditEvent::new("key.rotate", key.id.to_string());
        event.set("name", json!(key.name));
        event.set("secret", json!("replaced"));
        event.set("grace_seconds", json!(grace_secs));
        event.set("previous_expires_at", time(key.previous.as_ref().map(|p| p.expires_at)));
        event
    }

    pub(crate) fn key_deleted(key: &KeyRecord) -> Self {
        let mut event = AuditEvent::new("key.delete", key.id.to_string());
        event.set("name", json!(key.name));
        event
    }

    /// `before` is `None` when the upsert created the record: then every field is new.
    pub(crate) fn provider_upserted(before: Option<&ProviderRecord>, after: &ProviderRecord) -> Self {
        let mut event = AuditEvent::new("provider.upsert", after.kind.as_str());
        if before.is_none() {
            event.set("created", json!(true));
        }
        provider_changes(&mut event, "", before, after);
        event
    }

    pub(crate) fn provider_deleted(kind: ProviderKind) -> Self {
        AuditEvent::new("provider.delete", kind.as_str())
    }

    /// A named credential added to the provider's set: its name, weight and flag, and the
    /// secret only as `set`.
    pub(crate) fn credential_added(kind: ProviderKind, credential: &NamedCredential) -> Self {
        let mut event = AuditEvent::new("provider.credential.add", kind.as_str());
        event.set("name", json!(credential.name));
        event.set("weight", json!(credential.weight));
        event.set("enabled", json!(credential.enabled));
        event.set("secret", json!(secret_change(false, true, true)));
        event
    }

    /// The credential's name and the fields that differ (its secret never changes here; if it
    /// ever did it would show as `replaced`).
    pub(crate) fn credential_updated(kind: ProviderKind, before: &NamedCredential, after: &NamedCredential) -> Self {
        let mut event = AuditEvent::new("provider.credential.update", kind.as_str());
        event.set("name", json!(after.name));
        if before.weight != after.weight {
            event.set("weight", json!(after.weight));
        }
        if before.enabled != after.enabled {
            event.set("enabled", json!(after.enabled));
        }
        if before.secret != after.secret {
            event.set("secret", json!(secret_change(true, true, true)));
        }
        event
    }

    pub(crate) fn credential_removed(kind: ProviderKind, credential: &NamedCredential) -> Self {
        let mut event = AuditEvent::new("provider.credential.remove", kind.as_str());
        event.set("name", json!(credential.name));
        event.set("secret", json!(secret_change(true, false, true)));
        event
    }

    pub(crate) fn settings_updated(before: Settings, after: Settings) -> Self {
        let mut event = AuditEvent::new("settings.update", "settings");
        settings_changes(&mut event, "", before, after);
        event
    }

    /// The environment applied at startup, in one record for its one revision: field names are
    /// prefixed with the object (`settings.`, `provider.openai.`, `master_key`).
    pub(crate) fn bootstrap(
        settings: Settings,
        providers: &[ProviderRecord],
        master_key_was_set: bool,
        writes: &BootstrapWrites,
    ) -> Self {
        let mut event = AuditEvent::new("bootstrap", "environment");
        if let Some(after) = writes.settings {
            settings_changes(&mut event, "settings.", settings, after);
        }
        for after in &writes.providers {
            let before = providers.iter().find(|p| p.kind == after.kind);
            let prefix = format!("provider.{}.", after.kind.as_str());
            if before.is_none() {
                event.set(format!("{prefix}created"), json!(true));
            }
            provider_changes(&mut event, &prefix, before, after);
        }
        if let Some(hash) = &writes.master_key_hash {
            event.set("master_key", json!(secret_change(master_key_was_set, hash.is_some(), true)));
        }
        event
    }

    /// The change set as stored and hashed: compact JSON with its keys in sorted order.
    pub(crate) fn changes_json(&self) -> String {
        Value::Object(self.changes.clone()).to_string()
    }
}

fn settings_changes(event: &mut AuditEvent, prefix: &str, before: Settings, after: Settings) {
    if before.passthrough_enabled != after.passthrough_enabled {
        event.set(format!("{prefix}passthrough_enabled"), json!(after.passthrough_enabled));
    }
    if before.v1_alias_enabled != after.v1_alias_enabled {
        event.set(format!("{prefix}v1_alias_enabled"), json!(after.v1_alias_enabled));
    }
    if before.default_key_limits != after.default_key_limits {
        event.set(format!("{prefix}default_key_limits"), limits(after.default_key_limits.as_ref()));
    }
    if before.limit_fallback != after.limit_fallback {
        event.set(format!("{prefix}limit_fallback"), json!(after.limit_fallback.as_str()));
    }
}

/// A set of limits as its fields; `null` for none (a key then follows the default limits).
fn limits(limits: Option<&aurora_core::KeyLimits>) -> Value {
    match limits {
        None => Value::Null,
        Some(l) => json!({
            "requests_per_minute": l.requests_per_minute,
            "tokens_per_minute": l.tokens_per_minute,
            "max_concurrent": l.max_concurrent,
            "budget_tokens": l.budget_tokens,
            "budget_period": l.budget_period.as_str(),
        }),
    }
}

fn provider_changes(event: &mut AuditEvent, prefix: &str, before: Option<&ProviderRecord>, after: &ProviderRecord) {
    let differs = |same: fn(&ProviderRecord, &ProviderRecord) -> bool| before.is_none_or(|b| !same(b, after));
    if differs(|a, b| a.enabled == b.enabled) {
        event.set(format!("{prefix}enabled"), json!(after.enabled));
    }
    if differs(|a, b| a.base_url == b.base_url) {
        event.set(format!("{prefix}base_url"), json!(after.base_url.as_str()));
    }
    if differs(|a, b| a.default_headers == b.default_headers) {
        event.set(format!("{prefix}default_headers"), headers(&after.default_headers));
    }
    // `credential` is the set's `default` credential: the one `UpsertProvider.credential` and
    // the environment set. The other credentials change only through their own actions.
    let secrets = [
        (
            "credential",
            before.map(|b| b.credentials.default_credential().is_some()),
            after.credentials.default_credential().is_some(),
            differs(|a, b| a.credentials.default_credential() == b.credentials.default_credential()),
        ),
        (
            "client_certificate",
            before.map(|b| b.client_identity.is_some()),
            after.client_identity.is_some(),
            differs(|a, b| a.client_identity == b.client_identity),
        ),
        ("ca", before.map(|b| b.ca_pem.is_some()), after.ca_pem.is_some(), differs(|a, b| a.ca_pem == b.ca_pem)),
    ];
    for (field, was, is, changed) in secrets {
        let was = was.unwrap_or(false);
        if changed && (was || is) {
            event.set(format!("{prefix}{field}"), json!(secret_change(was, is, changed)));
        }
    }
}

/// How a write-only value changed, without a trace of the value itself.
fn secret_change(was_set: bool, is_set: bool, changed: bool) -> &'static str {
    match (was_set, is_set) {
        (false, true) => "set",
        (true, false) => "cleared",
        (true, true) if changed => "replaced",
        _ => "unchanged",
    }
}

fn time(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |t| json!(humantime::format_rfc3339_seconds(t).to_string()))
}

fn providers(set: ProviderSet) -> Value {
    json!(set.iter().map(ProviderKind::as_str).collect::<Vec<_>>())
}

fn endpoints(rules: &[aurora_core::EndpointRule]) -> Value {
    json!(rules.iter().map(ToString::to_string).collect::<Vec<_>>())
}

fn headers(headers: &DefaultHeaders) -> Value {
    json!(headers.iter().map(|h| format!("{}: {}", h.name(), h.value())).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{ClientIdentity, Credential};

    fn provider(credential: Option<&str>) -> ProviderRecord {
        let mut record = ProviderRecord::new_default(ProviderKind::OpenAi, SystemTime::UNIX_EPOCH);
        record.credentials.set_default(credential.map(Credential::new), SystemTime::UNIX_EPOCH);
        record
    }

    #[test]
    fn credential_set_changes_name_the_credential_and_never_its_secret() {
        let before = NamedCredential {
            name: "backup".into(),
            weight: 2,
            enabled: true,
            secret: Credential::new("sk-backup-secret"),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        let added = AuditEvent::credential_added(ProviderKind::OpenAi, &before);
        assert_eq!(added.action, "provider.credential.add");
        assert_eq!(added.target, "openai");
        assert_eq!(added.changes_json(), r#"{"enabled":true,"name":"backup","secret":"set","weight":2}"#);
        let after = NamedCredential { enabled: false, ..before.clone() };
        let updated = AuditEvent::credential_updated(ProviderKind::OpenAi, &before, &after);
        assert_eq!(updated.changes_json(), r#"{"enabled":false,"name":"backup"}"#);
        let replaced = NamedCredential { secret: Credential::new("sk-other"), ..before.clone() };
        let updated = AuditEvent::credential_updated(ProviderKind::OpenAi, &before, &replaced);
        assert_eq!(updated.changes.get("secret"), Some(&json!("replaced")));
        let removed = AuditEvent::credential_removed(ProviderKind::OpenAi, &before);
        assert_eq!(removed.changes_json(), r#"{"name":"backup","secret":"cleared"}"#);
        for event in [added, updated, removed] {
            assert!(ACTIONS.contains(&event.action));
            let json = event.changes_json();
            assert!(!json.contains("sk-") && !json.contains(&before.secret.fingerprint()), "{json}");
        }
    }

    #[test]
    fn credentials_are_recorded_as_set_replaced_or_cleared_only() {
        let none = provider(None);
        let one = provider(Some("sk-first-secret"));
        let two = provider(Some("sk-second-secret"));
        let cases = [(Some(&none), &one, "set"), (Some(&one), &two, "replaced"), (Some(&two), &none, "cleared")];
        for (before, after, expected) in cases {
            let event = AuditEvent::provider_upserted(before, after);
            assert_eq!(event.changes.get("credential"), Some(&json!(expected)), "{event:?}");
            let json = event.changes_json();
            assert!(!json.contains("secret") && !json.contains(&Credential::new("sk-first-secret").fingerprint()));
        }
        let unchanged = AuditEvent::provider_upserted(Some(&one), &one);
        assert!(unchanged.changes.is_empty(), "{unchanged:?}");
    }

    #[test]
    fn a_created_provider_lists_every_field_and_never_a_key() {
        let mut after = provider(Some("sk-secret"));
        after.client_identity = Some(ClientIdentity::new("CERT", "-----BEGIN PRIVATE KEY----- hidden"));
        let event = AuditEvent::provider_upserted(None, &after);
        assert_eq!(event.target, "openai");
        assert_eq!(event.changes.get("created"), Some(&json!(true)));
        assert_eq!(event.changes.get("client_certificate"), Some(&json!("set")));
        assert_eq!(event.changes.get("base_url"), Some(&json!(after.base_url.as_str())));
        assert!(!event.changes_json().contains("hidden"));
        assert!(!event.changes.contains_key("ca"), "no CA was set: {event:?}");
    }

    #[test]
    fn a_key_update_names_only_the_fields_that_changed() {
        let before = KeyRecord {
            id: uuid::Uuid::now_v7(),
            name: "ci".into(),
            description: String::new(),
            hash: aurora_core::KeyHash::of("aur_x"),
            redacted: "aur_…x".into(),
            enabled: true,
            expires_at: None,
            allowed_providers: ProviderSet::empty(),
            allowed_endpoints: Vec::new(),
            limits: None,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            revoked_at: None,
            previous: None,
        };
        let after = KeyRecord { enabled: false, name: "ci-2".into(), ..before.clone() };
        let event = AuditEvent::key_updated(&before, &after);
        assert_eq!(event.changes_json(), r#"{"enabled":false,"name":"ci-2"}"#);
        let created = AuditEvent::key_created(&before).changes_json();
        assert!(!created.contains("aur_"), "{created}");

        let rotated = KeyRecord {
            hash: aurora_core::KeyHash::of("aur_y"),
            redacted: "aur_…y".into(),
            previous: Some(crate::store::model::PreviousSecret {
                hash: before.hash,
                redacted: before.redacted.clone(),
                expires_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60),
            }),
            ..before.clone()
        };
        let event = AuditEvent::key_rotated(&rotated, 60);
        assert_eq!(event.action, "key.rotate");
        assert_eq!(
            event.changes_json(),
            r#"{"grace_seconds":60,"name":"ci","previous_expires_at":"1970-01-01T00:01:00Z","secret":"replaced"}"#
        );
        let hexes =
            [before.hash.to_hex(), rotated.hash.to_hex(), before.hash.fingerprint(), rotated.hash.fingerprint()];
        assert!(hexes.iter().all(|hex| !event.changes_json().contains(hex.as_str())));
    }
}
