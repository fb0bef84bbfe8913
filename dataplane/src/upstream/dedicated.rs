//! Upstream clients for providers with their own TLS material (a client certificate, extra
//! CAs), which cannot share the common client's TLS configuration or its pooled connections.
//!
//! One client per provider and serving worker (each worker keeps its own pools, see
//! [`crate::server::workers`]), built on first use after its material changes and then reused
//! (with its pool) by every request of that worker until the material changes again: a slot
//! per provider and worker in an `ArcSwapOption`, so the request path takes no lock. Providers
//! without their own material never come here.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use aurora_core::ProviderKind;
use rustls::RootCertStore;

use super::UpstreamClient;
use crate::config::UpstreamConfig;
use crate::egress::ProxyRules;
use crate::snapshot::ProviderTls;

struct Entry {
    tls: Arc<ProviderTls>,
    client: UpstreamClient,
}

pub struct DedicatedClients {
    config: UpstreamConfig,
    roots: Arc<RootCertStore>,
    proxy: Option<Arc<ProxyRules>>,
    /// Per worker, a slot per provider.
    slots: Box<[[ArcSwapOption<Entry>; ProviderKind::ALL.len()]]>,
}

impl std::fmt::Debug for DedicatedClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedClients").finish_non_exhaustive()
    }
}

impl DedicatedClients {
    pub(super) fn new(
        config: UpstreamConfig,
        roots: Arc<RootCertStore>,
        proxy: Option<Arc<ProxyRules>>,
        workers: usize,
    ) -> Self {
        let slots = (0..workers.max(1)).map(|_| Default::default()).collect();
        DedicatedClients { config, roots, proxy, slots }
    }

    /// The client for `kind` with `tls`, built now if the material is new.
    pub fn client(&self, kind: ProviderKind, tls: &Arc<ProviderTls>) -> Result<UpstreamClient, rustls::Error> {
        let slot = &self.slots[crate::server::workers::current() % self.slots.len()][kind as usize];
        let current = slot.load_full();
        if let Some(entry) = current.as_ref().filter(|entry| Arc::ptr_eq(&entry.tls, tls)) {
            return Ok(entry.client.clone());
        }
        // The same material in a new snapshot (a full resync rebuilds every provider): keep the
        // client and its pooled connections.
        let client = match current.as_ref().filter(|entry| entry.tls.pem == tls.pem) {
            Some(entry) => entry.client.clone(),
            None => {
                tracing::info!(provider = %kind, "upstream client built for the provider's own TLS settings");
                super::client(&self.config, self.tls_config(tls)?, self.proxy.clone())
            }
        };
        // Two requests racing here both build one; the last stored wins, both work.
        slot.store(Some(Arc::new(Entry { tls: tls.clone(), client: client.clone() })));
        Ok(client)
    }

    fn tls_config(&self, tls: &ProviderTls) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut roots = (*self.roots).clone();
        for ca in &tls.cas {
            roots.add(ca.clone())?;
        }
        let builder = super::tls_builder()?.with_root_certificates(roots);
        match &tls.identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key()),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}
