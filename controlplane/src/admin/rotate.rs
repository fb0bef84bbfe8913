//! `RotateKey`: a new secret for an existing key, the replaced one kept for a grace period.

use aurora_core::{KeySecret, check_rotation_grace};
use aurora_proto::v1 as pb;

use super::convert;
use super::error::AdminError;
use super::validate::{self, FieldError};
use crate::store::{Actor, NewSecret, Store};

/// Validates the request, generates the secret (the same generator as `CreateKey`) and hands
/// the store only its hash and redacted form. The plaintext leaves in the response, once.
pub(crate) async fn rotate_key(
    store: &dyn Store,
    req: pb::RotateKeyRequest,
    actor: &Actor,
) -> Result<pb::RotateKeyResponse, AdminError> {
    let id = validate::key_id(&req.id)?;
    let grace_secs = check_rotation_grace(req.grace_seconds)
        .map_err(|err| FieldError { field: "grace_seconds", message: err.to_string() })?;
    let secret = KeySecret::generate();
    let new = NewSecret { hash: secret.hash(), redacted: secret.redacted() };
    let (record, revision) = store.rotate_key(id, new, grace_secs, actor).await?;
    tracing::info!(key_id = %id, revision, grace_secs, "key rotated");
    Ok(pb::RotateKeyResponse { key: Some(convert::key(&record)), secret: secret.into_exposed(), revision })
}
