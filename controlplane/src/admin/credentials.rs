//! The credential-set calls of `AdminService` (issue 15): validation, store calls, conversion.
//!
//! Secrets enter here and go only to the store; responses name a credential, its weight,
//! whether it is enabled, its fingerprint and its fleet-wide health, never the secret.

use std::time::SystemTime;

use aurora_core::{MAX_CREDENTIAL_WEIGHT, ProviderKind, validate_credential_name};
use aurora_proto::v1 as pb;

use super::error::AdminError;
use super::validate::{self, FieldError};
use crate::credential_health::CredentialBoard;
use crate::store::{Actor, CredentialPatch, NamedCredential, NewCredential, ProviderRecord, Store, StoreError};

fn name(raw: &str) -> Result<String, FieldError> {
    validate_credential_name(raw)
        .map(str::to_owned)
        .map_err(|err| FieldError { field: "name", message: err.to_string() })
}

fn weight(raw: u32) -> Result<u32, FieldError> {
    if raw == 0 || raw > MAX_CREDENTIAL_WEIGHT {
        return Err(FieldError { field: "weight", message: format!("must be 1 to {MAX_CREDENTIAL_WEIGHT}") });
    }
    Ok(raw)
}

fn secret(raw: &str) -> Result<crate::store::Credential, FieldError> {
    aurora_core::validate_credential(raw)
        .map(crate::store::Credential::new)
        .map_err(|err| FieldError { field: "secret", message: err.to_string() })
}

pub(crate) fn credential(
    kind: ProviderKind,
    credential: &NamedCredential,
    board: &CredentialBoard,
    now: SystemTime,
) -> pb::ProviderCredential {
    let health = board.health(kind, &credential.name, now);
    pb::ProviderCredential {
        name: credential.name.clone(),
        weight: credential.weight,
        enabled: credential.enabled,
        fingerprint: credential.secret.fingerprint(),
        created_at: Some(credential.created_at.into()),
        updated_at: Some(credential.updated_at.into()),
        health: Some(pb::ProviderCredentialHealth {
            requests: health.requests,
            throttled: health.throttled,
            auth_failures: health.auth_failures,
            cooldown_until: health.cooldown_until.map(Into::into),
            failing: health.failing,
            replicas: health.replicas,
        }),
    }
}

fn credentials(record: &ProviderRecord, board: &CredentialBoard) -> Vec<pb::ProviderCredential> {
    let now = SystemTime::now();
    record.credentials.iter().map(|c| credential(record.kind, c, board, now)).collect()
}

async fn record(store: &dyn Store, kind: ProviderKind) -> Result<ProviderRecord, AdminError> {
    let records = store.list_providers().await?;
    Ok(records.into_iter().find(|p| p.kind == kind).ok_or(StoreError::ProviderNotFound(kind))?)
}

pub(crate) async fn get_provider(
    store: &dyn Store,
    board: &CredentialBoard,
    req: pb::GetProviderRequest,
) -> Result<pb::GetProviderResponse, AdminError> {
    let kind = validate::provider("name", &req.name)?;
    let record = record(store, kind).await?;
    Ok(pb::GetProviderResponse {
        provider: Some(super::convert::provider(&record)),
        credentials: credentials(&record, board),
    })
}

pub(crate) async fn list(
    store: &dyn Store,
    board: &CredentialBoard,
    req: pb::ListProviderCredentialsRequest,
) -> Result<pb::ListProviderCredentialsResponse, AdminError> {
    let kind = validate::provider("provider", &req.provider)?;
    Ok(pb::ListProviderCredentialsResponse { credentials: credentials(&record(store, kind).await?, board) })
}

fn mutation(
    record: &ProviderRecord,
    name: &str,
    revision: u64,
    board: &CredentialBoard,
) -> pb::ProviderCredentialMutationResponse {
    pb::ProviderCredentialMutationResponse {
        credential: record.credentials.get(name).map(|c| credential(record.kind, c, board, SystemTime::now())),
        revision,
    }
}

pub(crate) async fn add(
    store: &dyn Store,
    board: &CredentialBoard,
    req: pb::AddProviderCredentialRequest,
    actor: &Actor,
) -> Result<pb::ProviderCredentialMutationResponse, AdminError> {
    // The request holds a secret: it is consumed here and never logged.
    let kind = validate::provider("provider", &req.provider)?;
    let new = NewCredential {
        name: name(&req.name)?,
        weight: weight(if req.weight == 0 { 1 } else { req.weight })?,
        enabled: req.enabled.unwrap_or(true),
        secret: secret(&req.secret)?,
    };
    let name = new.name.clone();
    let (record, revision) = store.add_credential(kind, new, actor).await?;
    tracing::info!(provider = %kind, credential = %name, revision, "provider credential added");
    Ok(mutation(&record, &name, revision, board))
}

pub(crate) async fn update(
    store: &dyn Store,
    board: &CredentialBoard,
    req: pb::UpdateProviderCredentialRequest,
    actor: &Actor,
) -> Result<pb::ProviderCredentialMutationResponse, AdminError> {
    let kind = validate::provider("provider", &req.provider)?;
    let name = name(&req.name)?;
    let patch = CredentialPatch { enabled: req.enabled, weight: req.weight.map(weight).transpose()? };
    let (record, revision) = store.update_credential(kind, &name, patch, actor).await?;
    tracing::info!(provider = %kind, credential = %name, revision, enabled = ?patch.enabled, weight = ?patch.weight, "provider credential updated");
    Ok(mutation(&record, &name, revision, board))
}

pub(crate) async fn remove(
    store: &dyn Store,
    board: &CredentialBoard,
    req: pb::RemoveProviderCredentialRequest,
    actor: &Actor,
) -> Result<pb::ProviderCredentialMutationResponse, AdminError> {
    let kind = validate::provider("provider", &req.provider)?;
    let name = name(&req.name)?;
    let (record, revision) = store.remove_credential(kind, &name, actor).await?;
    tracing::info!(provider = %kind, credential = %name, revision, "provider credential removed");
    Ok(mutation(&record, &name, revision, board))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_weights_are_bounded() {
        assert!(name("org-a").is_ok());
        assert_eq!(name("a b").unwrap_err().field, "name");
        assert_eq!(weight(0).unwrap_err().field, "weight");
        assert!(weight(MAX_CREDENTIAL_WEIGHT + 1).is_err());
        let err = secret("sk-\u{7}very-secret").unwrap_err();
        assert!(!err.to_string().contains("very-secret"), "{err}");
    }
}
