//! The operator-facing `aurora.v1.AdminService`.
//!
//! Requests pass [`AdminAuth`] (the master key, compared in constant time), are validated into
//! store patches ([`validate`]), applied to the [`Store`](crate::store::Store), and converted
//! back to API messages ([`convert`]). Every failure becomes a gRPC status in exactly one place,
//! [`error`].

mod audit;
mod auth;
mod convert;
mod credentials;
mod endpoints;
mod error;
mod limits;
mod rotate;
mod service;
mod usage;
mod validate;

pub use auth::AdminAuth;
pub use service::AdminApi;
