//! The global passthrough switches, with the product page's defaults.

use serde::{Deserialize, Serialize};

/// `ENABLE_PASSTHROUGH_ROUTES` and `ALLOW_PASSTHROUGH_V1_ALIAS`, both on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether `/p/{provider}/...` is served at all.
    pub passthrough_enabled: bool,
    /// Whether a leading `v1` endpoint segment is accepted and stripped.
    pub v1_alias_enabled: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { passthrough_enabled: true, v1_alias_enabled: true }
    }
}
