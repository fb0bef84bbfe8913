//! The data plane's current configuration, shared between its sources and the request path.
//!
//! Writers (the config-file loader, the control-plane stream) build a complete new
//! [`Snapshot`] off the request path and publish it with one atomic pointer swap. Readers load
//! the pointer without taking any lock a writer could hold, so a request sees either the old or
//! the new revision, never a mix, and never waits on an update.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::snapshot::Snapshot;

#[derive(Debug, Default)]
pub struct ConfigState {
    current: ArcSwapOption<Snapshot>,
}

impl ConfigState {
    pub fn new() -> Self {
        ConfigState::default()
    }

    /// The current snapshot; `None` until the first one is applied. The guard is cheap to take
    /// but must not be held across an `.await`.
    pub fn load(&self) -> arc_swap::Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        self.current.store(Some(snapshot));
    }

    /// Ready means a configuration has been applied: until then every request gets 503.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn revision(&self) -> Option<u64> {
        self.current.load().as_ref().map(|s| s.revision)
    }
}
