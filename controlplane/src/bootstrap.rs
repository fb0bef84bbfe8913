//! Applying the product page's environment variables to the store at startup.
//!
//! Precedence, predictable across restarts (documented in `docs/admin-api.md`):
//! - A variable that is **set** is applied at every startup and overrides whatever the admin API
//!   set for the same field. `ENABLED_PASSTHROUGH_PROVIDERS` sets every provider's `enabled`.
//! - A variable that is **unset** leaves the stored value alone, so API changes survive restarts.
//! - On the very first start (an empty store) every provider gets a record and the settings get
//!   written, from the variables or the product page's defaults.
//! - The master key is not managed through the API: the stored hash always mirrors the
//!   configured `AURORA_MASTER_KEY`, and is cleared when the variable is unset.
//! - Everything is applied in one transaction, which commits a revision only when something
//!   differs, so restarting with the same environment writes nothing.

use std::time::SystemTime;

use aurora_core::{KeyHash, ProductVars, ProviderKind};

use crate::store::{Actor, ProviderRecord, Revision, Settings, Store, StoreError};

/// The environment to apply, and the pure logic deciding what that means for a given state.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    vars: ProductVars,
}

/// What the store holds when bootstrap starts, read inside the bootstrap transaction.
#[derive(Debug, Clone)]
pub struct BootstrapState {
    /// Nothing was ever written (head revision 0).
    pub first_start: bool,
    pub settings: Settings,
    pub providers: Vec<ProviderRecord>,
    pub master_key_hash: Option<KeyHash>,
}

/// The writes that bring the store in line with the environment; empty when it already is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootstrapWrites {
    pub settings: Option<Settings>,
    /// Full records to upsert (only those that differ from what is stored).
    pub providers: Vec<ProviderRecord>,
    /// `Some(hash)`: store this master-key hash (`None` inside: there is no master key).
    pub master_key_hash: Option<Option<KeyHash>>,
}

impl BootstrapWrites {
    pub fn is_empty(&self) -> bool {
        self.settings.is_none() && self.providers.is_empty() && self.master_key_hash.is_none()
    }
}

impl Bootstrap {
    pub fn new(vars: ProductVars) -> Self {
        Bootstrap { vars }
    }

    /// Decides the writes for `state`. Pure, so the precedence rules are tested without a
    /// database and every store backend applies them identically.
    pub fn plan(&self, state: &BootstrapState, now: SystemTime) -> BootstrapWrites {
        let vars = &self.vars;
        let mut writes = BootstrapWrites::default();

        let mut settings = state.settings;
        if state.first_start {
            settings = vars.settings().into();
        }
        if let Some(on) = vars.enable_passthrough_routes {
            settings.passthrough_enabled = on;
        }
        if let Some(on) = vars.allow_passthrough_v1_alias {
            settings.v1_alias_enabled = on;
        }
        if state.first_start || settings != state.settings {
            writes.settings = Some(settings);
        }

        for kind in ProviderKind::ALL {
            let current = state.providers.iter().find(|p| p.kind == kind);
            if let Some(desired) = self.desired_provider(kind, current, state.first_start, now) {
                if current.is_none_or(|current| !current.same_config(&desired)) {
                    writes.providers.push(desired);
                }
            }
        }

        let configured = vars.master_key_hash();
        let stored = state.master_key_hash;
        let same = match (configured, stored) {
            (Some(a), Some(b)) => a.ct_eq(&b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            writes.master_key_hash = Some(configured);
        }
        writes
    }

    /// The record `kind` should have, or `None` when the environment says nothing about it.
    fn desired_provider(
        &self,
        kind: ProviderKind,
        current: Option<&ProviderRecord>,
        first_start: bool,
        now: SystemTime,
    ) -> Option<ProviderRecord> {
        let vars = &self.vars;
        let enabled = vars.enabled_passthrough_providers.map(|set| set.contains(kind));
        let base_url = vars.base_url(kind);
        let credential = vars.credential(kind);
        let touched = enabled.is_some() || base_url.is_some() || credential.is_some();
        if !first_start && !touched {
            return None;
        }
        // A provider without a record is disabled already; only create one to enable it or
        // to give it a base URL or credential.
        if current.is_none() && !first_start && enabled == Some(false) && base_url.is_none() && credential.is_none() {
            return None;
        }
        let mut record = match current {
            Some(current) => current.clone(),
            None => ProviderRecord::new_default(kind, now),
        };
        record.updated_at = now;
        if let Some(enabled) = enabled {
            record.enabled = enabled;
        }
        if let Some(base_url) = base_url {
            record.base_url = base_url.clone();
        }
        if let Some(credential) = credential {
            // The variable is the credential named `default`; the rest of the set stays.
            record.credentials.set_default(Some(crate::store::Credential::new(credential)), now);
        }
        Some(record)
    }

    /// The names (never the values) of the variables that are set.
    pub fn set_variables(&self) -> Vec<&'static str> {
        let vars = &self.vars;
        let mut names = Vec::new();
        if vars.master_key().is_some() {
            names.push("AURORA_MASTER_KEY");
        }
        if vars.enable_passthrough_routes.is_some() {
            names.push("ENABLE_PASSTHROUGH_ROUTES");
        }
        if vars.allow_passthrough_v1_alias.is_some() {
            names.push("ALLOW_PASSTHROUGH_V1_ALIAS");
        }
        if vars.enabled_passthrough_providers.is_some() {
            names.push("ENABLED_PASSTHROUGH_PROVIDERS");
        }
        for kind in ProviderKind::ALL {
            if vars.credential(kind).is_some() {
                names.push(kind.credential_env());
            }
            if vars.base_url(kind).is_some() {
                names.push(kind.base_url_env());
            }
        }
        names
    }
}

/// Applies `vars` to `store` and logs what happened (variable names only, never values). A
/// revision it commits is audited as `bootstrap` through `replica`.
pub async fn run(
    store: &dyn Store,
    vars: &ProductVars,
    replica: std::sync::Arc<str>,
) -> Result<Option<Revision>, StoreError> {
    let bootstrap = Bootstrap::new(vars.clone());
    let variables = bootstrap.set_variables().join(",");
    let revision = store.bootstrap(&bootstrap, &Actor::bootstrap(replica)).await?;
    match revision {
        Some(revision) => {
            tracing::info!(%variables, revision, "applied the environment to the store")
        }
        None => tracing::info!(%variables, "the store already matches the environment"),
    }
    if vars.master_key().is_none() {
        tracing::warn!("AURORA_MASTER_KEY is not set: the admin API rejects every call until it is");
    }
    for (variable, base_url, warning) in upstream_warnings(vars) {
        tracing::warn!(variable, %base_url, "{warning}");
    }
    Ok(revision)
}

/// The `<PROVIDER>_BASE_URL` variables that point somewhere unusual (see
/// [`BaseUrl::upstream_warning`](aurora_core::BaseUrl::upstream_warning)), with the warning.
pub fn upstream_warnings(vars: &ProductVars) -> Vec<(&'static str, &aurora_core::BaseUrl, &'static str)> {
    ProviderKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let url = vars.base_url(kind)?;
            Some((kind.base_url_env(), url, url.upstream_warning(kind)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aurora_core::{BaseUrl, ProviderSet};

    use super::*;
    use crate::store::Credential;

    fn vars() -> ProductVars {
        ProductVars::default()
    }

    fn empty_state() -> BootstrapState {
        BootstrapState {
            first_start: true,
            settings: Settings::default(),
            providers: Vec::new(),
            master_key_hash: None,
        }
    }

    /// The state after applying `writes` to `state`, as a store would.
    fn applied(state: &BootstrapState, writes: &BootstrapWrites) -> BootstrapState {
        let mut next = state.clone();
        next.first_start = false;
        if let Some(settings) = writes.settings {
            next.settings = settings;
        }
        for record in &writes.providers {
            next.providers.retain(|p| p.kind != record.kind);
            next.providers.push(record.clone());
        }
        if let Some(hash) = writes.master_key_hash {
            next.master_key_hash = hash;
        }
        next
    }

    #[test]
    fn first_start_writes_every_provider_with_defaults() {
        let mut vars = vars();
        vars.enabled_passthrough_providers = Some(ProviderSet::parse_list("anthropic").expect("known"));
        vars.credentials.anthropic = Some("sk-ant".into());
        let writes = Bootstrap::new(vars).plan(&empty_state(), SystemTime::UNIX_EPOCH);
        assert_eq!(writes.settings, Some(Settings::default()));
        assert_eq!(writes.providers.len(), 5);
        for record in &writes.providers {
            assert_eq!(record.enabled, record.kind == ProviderKind::Anthropic);
            assert_eq!(record.base_url, record.kind.default_base_url_parsed());
        }
        let anthropic = writes.providers.iter().find(|p| p.kind == ProviderKind::Anthropic);
        assert_eq!(anthropic.and_then(|p| p.credentials.default_credential()), Some(&Credential::new("sk-ant")));
        assert_eq!(writes.master_key_hash, None);
    }

    #[test]
    fn same_environment_twice_writes_nothing() {
        let mut vars = vars();
        vars.master_key = Some("mk".into());
        vars.enable_passthrough_routes = Some(false);
        vars.base_urls.vllm = Some(BaseUrl::parse("http://gpu:8000/v1").expect("valid"));
        let bootstrap = Bootstrap::new(vars);
        let first = bootstrap.plan(&empty_state(), SystemTime::UNIX_EPOCH);
        assert_eq!(first.master_key_hash, Some(Some(KeyHash::of("mk"))));
        let state = applied(&empty_state(), &first);
        assert!(bootstrap.plan(&state, SystemTime::UNIX_EPOCH).is_empty());
    }

    #[test]
    fn set_variables_override_api_changes_and_unset_ones_keep_them() {
        let bootstrap = Bootstrap::new(vars());
        let mut state = applied(&empty_state(), &bootstrap.plan(&empty_state(), SystemTime::UNIX_EPOCH));
        // The API disabled the v1 alias and openai, and set a credential.
        state.settings.v1_alias_enabled = false;
        for p in &mut state.providers {
            if p.kind == ProviderKind::OpenAi {
                p.enabled = false;
                p.credentials.set_default(Some(Credential::new("from-api")), SystemTime::UNIX_EPOCH);
            }
        }
        // Nothing set: the API's changes stay.
        assert!(bootstrap.plan(&state, SystemTime::UNIX_EPOCH).is_empty());

        // ALLOW_PASSTHROUGH_V1_ALIAS and OPENAI_API_KEY set: they win for those fields only.
        let mut vars = vars();
        vars.allow_passthrough_v1_alias = Some(true);
        vars.credentials.openai = Some("from-env".into());
        let writes = Bootstrap::new(vars).plan(&state, SystemTime::UNIX_EPOCH);
        assert_eq!(writes.settings.map(|s| s.v1_alias_enabled), Some(true));
        assert_eq!(writes.providers.len(), 1);
        assert!(!writes.providers[0].enabled, "enabled is not touched by the credential variable");
        assert_eq!(writes.providers[0].credentials.default_credential(), Some(&Credential::new("from-env")));
    }

    #[test]
    fn master_key_hash_mirrors_the_variable() {
        let mut state = empty_state();
        state.first_start = false;
        state.master_key_hash = Some(KeyHash::of("old"));
        let writes = Bootstrap::new(vars()).plan(&state, SystemTime::UNIX_EPOCH);
        assert_eq!(writes.master_key_hash, Some(None));
        let mut vars = vars();
        vars.master_key = Some("old".into());
        assert!(Bootstrap::new(vars).plan(&state, SystemTime::UNIX_EPOCH).is_empty());
    }

    #[test]
    fn local_base_urls_are_warned_about_except_a_local_vllm() {
        let mut vars = vars();
        vars.base_urls.openai = Some(BaseUrl::parse("http://169.254.169.254/v1").expect("valid"));
        vars.base_urls.anthropic = Some(BaseUrl::parse("http://[::1]:2375").expect("valid"));
        vars.base_urls.zai = Some(BaseUrl::parse("https://api.z.ai/api/paas/v4").expect("valid"));
        vars.base_urls.vllm = Some(BaseUrl::parse("http://127.0.0.1:8000/v1").expect("valid"));
        let warned: Vec<&str> = upstream_warnings(&vars).into_iter().map(|(variable, _, _)| variable).collect();
        assert_eq!(warned, ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"]);
    }

    #[test]
    fn set_variables_lists_names_only() {
        let mut vars = vars();
        vars.master_key = Some("mk-secret".into());
        vars.credentials.zai = Some("zai-secret".into());
        let names = Bootstrap::new(vars).set_variables();
        assert_eq!(names, ["AURORA_MASTER_KEY", "ZAI_API_KEY"]);
    }
}
