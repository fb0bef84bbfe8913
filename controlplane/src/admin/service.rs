//! The `AdminService` handlers: validate, call the store, convert, log (never a secret).

use std::sync::Arc;
use std::time::SystemTime;

use aurora_core::KeySecret;
use aurora_proto::v1 as pb;
use aurora_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::error::AdminError;
use super::{audit, convert, credentials, endpoints, limits, validate};
use crate::fleet::Fleet;
use crate::store::{Actor, KeyPatch, NewKey, ProviderPatch, SettingsPatch, Store};

/// The admin API over a [`Store`].
#[derive(Debug, Clone)]
pub struct AdminApi {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    /// This control-plane process, named in every audit record it commits.
    replica: Arc<str>,
    /// The live limit counts `GetKey` shows; without it, only the limits in force.
    capacity: Option<Arc<crate::capacity::Capacity>>,
}

impl AdminApi {
    pub fn new(store: Arc<dyn Store>, fleet: Arc<Fleet>, replica: Arc<str>) -> Self {
        AdminApi { store, fleet, replica, capacity: None }
    }

    /// Shows what is left of each key's limits in `GetKey`, from `capacity`'s counts.
    pub fn with_capacity(mut self, capacity: Arc<crate::capacity::Capacity>) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Who is behind `request`, for the audit record of the mutation it asks for.
    fn actor<T>(&self, request: &Request<T>) -> Actor {
        audit::actor(request, &self.replica)
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Runs a handler body, mapping its error through the single `AdminError -> Status` mapping.
fn reply<T>(result: Result<T, AdminError>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_key(&self, request: Request<pb::CreateKeyRequest>) -> Reply<pb::CreateKeyResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let now = SystemTime::now();
                let secret = KeySecret::generate();
                let new = NewKey {
                    name: validate::name(&req.name)?,
                    description: validate::description(&req.description)?,
                    hash: secret.hash(),
                    redacted: secret.redacted(),
                    enabled: !req.disabled,
                    expires_at: req.expires_at.as_ref().map(|t| validate::expires_at(t, now)).transpose()?,
                    allowed_providers: validate::providers("allowed_providers", &req.allowed_providers)?,
                    allowed_endpoints: endpoints::endpoint_rules("allowed_endpoints", &req.allowed_endpoints)?,
                    limits: req.limits.as_ref().map(|raw| limits::limits("limits", raw)).transpose()?,
                };
                let (record, revision) = self.store.create_key(new, &actor).await?;
                tracing::info!(key_id = %record.id, revision, "key created");
                Ok(pb::CreateKeyResponse { key: Some(convert::key(&record)), secret: secret.into_exposed(), revision })
            }
            .await,
        )
    }

    async fn get_key(&self, request: Request<pb::GetKeyRequest>) -> Reply<pb::Key> {
        let req = request.into_inner();
        reply(
            async {
                let id = validate::key_id(&req.id)?;
                let record = self.store.get_key(id).await?;
                let settings = self.store.get_settings().await?.settings;
                let mut key = convert::key(&record);
                key.limit_status = Some(limits::status(&record, &settings, self.capacity.as_deref()));
                Ok(key)
            }
            .await,
        )
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        let req = request.into_inner();
        reply(
            async {
                let page_size = validate::page_size(req.page_size)?;
                let after = validate::page_token(&req.page_token)?;
                // One extra row tells whether another page follows, without a COUNT.
                let mut records = self.store.list_keys(after, page_size + 1).await?;
                let more = records.len() > page_size as usize;
                records.truncate(page_size as usize);
                let next_page_token = match records.last() {
                    Some(last) if more => validate::next_page_token(last.id),
                    _ => String::new(),
                };
                Ok(pb::ListKeysResponse { keys: records.iter().map(convert::key).collect(), next_page_token })
            }
            .await,
        )
    }

    async fn update_key(&self, request: Request<pb::UpdateKeyRequest>) -> Reply<pb::KeyMutationResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let id = validate::key_id(&req.id)?;
                let patch = KeyPatch {
                    name: req.name.as_deref().map(validate::name).transpose()?,
                    description: req.description.as_deref().map(validate::description).transpose()?,
                    enabled: req.enabled,
                    expires_at: match &req.expiry {
                        Some(pb::update_key_request::Expiry::ExpiresAt(t)) => {
                            Some(Some(validate::expires_at(t, SystemTime::now())?))
                        }
                        Some(pb::update_key_request::Expiry::ClearExpiry(true)) => Some(None),
                        Some(pb::update_key_request::Expiry::ClearExpiry(false)) | None => None,
                    },
                    allowed_providers: req
                        .allowed_providers
                        .as_ref()
                        .map(|list| validate::providers("allowed_providers", &list.providers))
                        .transpose()?,
                    allowed_endpoints: req
                        .allowed_endpoints
                        .as_ref()
                        .map(|list| endpoints::endpoint_rules("allowed_endpoints", &list.rules))
                        .transpose()?,
                    limits: req.limits.as_ref().map(|raw| limits::update("limits", raw)).transpose()?,
                };
                let (record, revision) = self.store.update_key(id, patch, &actor).await?;
                tracing::info!(key_id = %id, revision, "key updated");
                Ok(pb::KeyMutationResponse { key: Some(convert::key(&record)), revision })
            }
            .await,
        )
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Reply<pb::KeyMutationResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let id = validate::key_id(&req.id)?;
                let (record, revision) = self.store.revoke_key(id, &actor).await?;
                tracing::info!(key_id = %id, revision, "key revoked");
                Ok(pb::KeyMutationResponse { key: Some(convert::key(&record)), revision })
            }
            .await,
        )
    }

    async fn delete_key(&self, request: Request<pb::DeleteKeyRequest>) -> Reply<pb::DeleteResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let id = validate::key_id(&req.id)?;
                let revision = self.store.delete_key(id, &actor).await?;
                tracing::info!(key_id = %id, revision, "key deleted");
                Ok(pb::DeleteResponse { revision })
            }
            .await,
        )
    }

    async fn get_provider(&self, request: Request<pb::GetProviderRequest>) -> Reply<pb::GetProviderResponse> {
        reply(credentials::get_provider(&*self.store, self.fleet.credential_health(), request.into_inner()).await)
    }

    async fn add_provider_credential(
        &self,
        request: Request<pb::AddProviderCredentialRequest>,
    ) -> Reply<pb::ProviderCredentialMutationResponse> {
        let actor = self.actor(&request);
        reply(credentials::add(&*self.store, self.fleet.credential_health(), request.into_inner(), &actor).await)
    }

    async fn update_provider_credential(
        &self,
        request: Request<pb::UpdateProviderCredentialRequest>,
    ) -> Reply<pb::ProviderCredentialMutationResponse> {
        let actor = self.actor(&request);
        reply(credentials::update(&*self.store, self.fleet.credential_health(), request.into_inner(), &actor).await)
    }

    async fn remove_provider_credential(
        &self,
        request: Request<pb::RemoveProviderCredentialRequest>,
    ) -> Reply<pb::ProviderCredentialMutationResponse> {
        let actor = self.actor(&request);
        reply(credentials::remove(&*self.store, self.fleet.credential_health(), request.into_inner(), &actor).await)
    }

    async fn list_provider_credentials(
        &self,
        request: Request<pb::ListProviderCredentialsRequest>,
    ) -> Reply<pb::ListProviderCredentialsResponse> {
        reply(credentials::list(&*self.store, self.fleet.credential_health(), request.into_inner()).await)
    }

    async fn list_providers(&self, _request: Request<pb::ListProvidersRequest>) -> Reply<pb::ListProvidersResponse> {
        reply(
            async {
                let records = self.store.list_providers().await?;
                Ok(pb::ListProvidersResponse { providers: records.iter().map(convert::provider).collect() })
            }
            .await,
        )
    }

    async fn upsert_provider(
        &self,
        request: Request<pb::UpsertProviderRequest>,
    ) -> Reply<pb::ProviderMutationResponse> {
        // The request holds a credential: it is consumed here and never logged.
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let kind = validate::provider("name", &req.name)?;
                let patch = ProviderPatch {
                    enabled: req.enabled,
                    base_url: req.base_url.as_deref().map(validate::base_url).transpose()?,
                    credential: match &req.credential_change {
                        Some(pb::upsert_provider_request::CredentialChange::Credential(c)) => {
                            Some(Some(validate::credential(c)?))
                        }
                        Some(pb::upsert_provider_request::CredentialChange::ClearCredential(true)) => Some(None),
                        Some(pb::upsert_provider_request::CredentialChange::ClearCredential(false)) | None => None,
                    },
                    default_headers: req.default_headers.as_ref().map(validate::default_headers).transpose()?,
                    client_identity: match &req.client_certificate_change {
                        Some(pb::upsert_provider_request::ClientCertificateChange::ClientCertificate(c)) => {
                            Some(Some(validate::client_certificate(c)?))
                        }
                        Some(pb::upsert_provider_request::ClientCertificateChange::ClearClientCertificate(true)) => {
                            Some(None)
                        }
                        Some(pb::upsert_provider_request::ClientCertificateChange::ClearClientCertificate(false))
                        | None => None,
                    },
                    ca_pem: match &req.ca_change {
                        Some(pb::upsert_provider_request::CaChange::CaPem(pem)) => Some(Some(validate::ca_pem(pem)?)),
                        Some(pb::upsert_provider_request::CaChange::ClearCa(true)) => Some(None),
                        Some(pb::upsert_provider_request::CaChange::ClearCa(false)) | None => None,
                    },
                };
                let warnings: Vec<String> = patch
                    .base_url
                    .as_ref()
                    .and_then(|url| url.upstream_warning(kind))
                    .map(str::to_owned)
                    .into_iter()
                    .collect();
                let (record, revision) = self.store.upsert_provider(kind, patch, &actor).await?;
                tracing::info!(provider = %kind, revision, "provider upserted");
                for warning in &warnings {
                    tracing::warn!(provider = %kind, base_url = %record.base_url, "{warning}");
                }
                Ok(pb::ProviderMutationResponse { provider: Some(convert::provider(&record)), revision, warnings })
            }
            .await,
        )
    }

    async fn delete_provider(&self, request: Request<pb::DeleteProviderRequest>) -> Reply<pb::DeleteResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let kind = validate::provider("name", &req.name)?;
                let revision = self.store.delete_provider(kind, &actor).await?;
                tracing::info!(provider = %kind, revision, "provider deleted");
                Ok(pb::DeleteResponse { revision })
            }
            .await,
        )
    }

    async fn get_settings(&self, _request: Request<pb::GetSettingsRequest>) -> Reply<pb::Settings> {
        reply(async { Ok(convert::settings(&self.store.get_settings().await?)) }.await)
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Reply<pb::SettingsMutationResponse> {
        let actor = self.actor(&request);
        let req = request.into_inner();
        reply(
            async {
                let patch = SettingsPatch {
                    passthrough_enabled: req.passthrough_enabled,
                    v1_alias_enabled: req.v1_alias_enabled,
                    default_key_limits: req
                        .default_key_limits
                        .as_ref()
                        .map(|raw| limits::update("default_key_limits", raw))
                        .transpose()?,
                    limit_fallback: req.limit_fallback.as_deref().map(limits::fallback).transpose()?,
                };
                let (view, revision) = self.store.update_settings(patch, &actor).await?;
                tracing::info!(revision, "settings updated");
                Ok(pb::SettingsMutationResponse { settings: Some(convert::settings(&view)), revision })
            }
            .await,
        )
    }

    // These two read the fleet: the config stream registers each connected data plane there and
    // records every revision it acknowledges or rejects.
    async fn list_data_planes(&self, request: Request<pb::ListDataPlanesRequest>) -> Reply<pb::ListDataPlanesResponse> {
        let req = request.into_inner();
        reply(
            async {
                let page_size = validate::page_size(req.page_size)? as usize;
                let after = validate::data_plane_page_token(&req.page_token)?;
                let head_revision = self.store.head_revision().await?;
                // One extra replica tells whether another page follows.
                let mut replicas =
                    self.fleet.list_after(after.as_ref().map(|(node_id, id)| (node_id.as_str(), *id)), page_size + 1);
                let more = replicas.len() > page_size;
                replicas.truncate(page_size);
                let next_page_token = match replicas.last() {
                    Some(last) if more => validate::next_data_plane_page_token(&last.node_id, last.id),
                    _ => String::new(),
                };
                let data_planes = replicas.iter().map(convert::data_plane).collect();
                Ok(pb::ListDataPlanesResponse { data_planes, head_revision, next_page_token })
            }
            .await,
        )
    }

    async fn wait_for_revision(
        &self,
        request: Request<pb::WaitForRevisionRequest>,
    ) -> Reply<pb::WaitForRevisionResponse> {
        let req = request.into_inner();
        reply(
            async {
                let head = self.store.head_revision().await?;
                let timeout = validate::wait(req.revision, head, req.timeout_ms)?;
                let outcome = self.fleet.wait_for(req.revision, timeout).await;
                Ok(pb::WaitForRevisionResponse {
                    complete: outcome.complete,
                    elapsed_ms: u32::try_from(outcome.elapsed.as_millis()).unwrap_or(u32::MAX),
                    pending: outcome.pending,
                    replicas: u32::try_from(outcome.replicas).unwrap_or(u32::MAX),
                })
            }
            .await,
        )
    }

    async fn query_usage(&self, request: Request<pb::QueryUsageRequest>) -> Reply<pb::QueryUsageResponse> {
        reply(super::usage::query(self.store.as_ref(), request.into_inner()).await)
    }

    async fn list_audit(&self, request: Request<pb::ListAuditRequest>) -> Reply<pb::ListAuditResponse> {
        reply(audit::list(self.store.as_ref(), request.into_inner()).await)
    }

    async fn verify_audit(&self, _request: Request<pb::VerifyAuditRequest>) -> Reply<pb::VerifyAuditResponse> {
        reply(audit::verify(self.store.as_ref()).await)
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "service_limits_tests.rs"]
mod limits_tests;

#[cfg(test)]
#[path = "service_key_limits_tests.rs"]
mod key_limits_tests;
