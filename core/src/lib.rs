//! Domain vocabulary shared by every Aurora component.
//!
//! The control plane, the data plane and the CLI must agree on a handful of facts: which
//! providers exist and how each one authenticates, what a gateway key looks like and how it is
//! hashed, and how a provider base URL is validated. Those facts live here, in one place, so that
//! the two planes can never drift apart. Nothing in this crate does I/O.

mod base_url;
mod credential;
mod credential_name;
mod default_headers;
mod duration;
mod endpoint_rule;
mod expiry;
mod key;
mod limits;
mod product_vars;
mod provider;
mod rotation;
mod settings;
pub mod text;
mod usage;

pub use base_url::{BaseUrl, BaseUrlError, HostScope};
pub use credential::{CredentialError, MAX_CREDENTIAL_BYTES, validate_credential};
pub use credential_name::{
    CredentialNameError, MAX_CREDENTIAL_NAME_BYTES, MAX_CREDENTIAL_WEIGHT, validate_credential_name,
};
pub use default_headers::{
    DefaultHeader, DefaultHeaderError, DefaultHeaders, MAX_DEFAULT_HEADERS, MAX_HEADER_NAME_BYTES,
    MAX_HEADER_VALUE_BYTES,
};
pub use duration::{parse_duration, parse_positive_duration};
pub use endpoint_rule::{
    EndpointRule, EndpointRuleError, MAX_ENDPOINT_RULE_BYTES, MAX_ENDPOINT_RULES, endpoint_allowed,
};
pub use expiry::{LATEST_EXPIRY, LATEST_EXPIRY_UNIX_SECS, latest_expiry};
pub use key::{KeyHash, KeySecret, SECRET_PREFIX, bearer_token, bearer_token_bytes};
pub use limits::{
    BudgetPeriod, KeyLimits, KeyLimitsError, KeyLimitsPatch, LimitFallback, LimitsUpdate, MAX_REQUEST_LIMIT,
    MAX_TOKEN_LIMIT, UnknownBudgetPeriod, UnknownLimitFallback, WINDOW_SECS, effective_limits, window_start,
};
pub use product_vars::{
    MASTER_KEY_VAR, ProductVars, ProviderBaseUrls, ProviderCredentials, SecretsError, credential_var,
};
pub use provider::{AuthStyle, ErrorShape, ProviderKind, ProviderSet, UnknownProvider};
pub use rotation::{
    GraceError, MAX_ROTATION_GRACE, MAX_ROTATION_GRACE_SECS, check_rotation_grace, parse_rotation_grace,
};
pub use settings::Settings;
pub use usage::{ANONYMOUS_USAGE_ID, MASTER_KEY_USAGE_ID, MODEL_MAX_BYTES, OTHER_MODEL, UNREADABLE_MODEL, usage_model};
