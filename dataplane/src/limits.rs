//! Per-key policy enforced on the request path (issue 13): what a key may call, checked in
//! memory against the snapshot before anything goes upstream.
//!
//! A key with nothing to enforce carries no policy at all (`ManagedKey::policy` is `None`), so
//! keys without limits cost nothing extra in a snapshot of millions.

mod policy;

pub use policy::{EndpointNotAllowed, KeyPolicy};
