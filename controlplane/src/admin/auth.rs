//! Admin authentication: `authorization: Bearer <AURORA_MASTER_KEY>` on every call.
//!
//! The admin API is never anonymous. Without a configured master key every call fails, with a
//! message telling the operator what to set. Only the hash of the master key is kept, and the
//! presented token's hash is compared in constant time.

use aurora_core::KeyHash;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A tonic interceptor enforcing the master key.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    master_key: Option<KeyHash>,
}

impl AdminAuth {
    /// `master_key` is the hash of `AURORA_MASTER_KEY`, or `None` when it is not set.
    pub fn new(master_key: Option<KeyHash>) -> Self {
        AdminAuth { master_key }
    }

    fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(master_key) = &self.master_key else {
            return Err(Status::unauthenticated(
                "the admin API is disabled until AURORA_MASTER_KEY is set on the control plane",
            ));
        };
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization: send `authorization: Bearer <master key>`")
        })?;
        let token = aurora_core::bearer_token(header.as_bytes())
            .ok_or_else(|| Status::unauthenticated("malformed authorization: expected `Bearer <master key>`"))?;
        if KeyHash::of(token).ct_eq(master_key) { Ok(()) } else { Err(Status::unauthenticated("invalid master key")) }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::metadata::MetadataMap;

    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().expect("ascii"));
        map
    }

    #[test]
    fn accepts_only_the_master_key() {
        let auth = AdminAuth::new(Some(KeyHash::of("mk")));
        assert!(auth.check(&metadata("Bearer mk")).is_ok());
        assert!(auth.check(&metadata("bearer mk")).is_ok());
        for bad in ["Bearer mk2", "Basic mk", "Bearer ", "mk"] {
            assert_eq!(auth.check(&metadata(bad)).map_err(|s| s.code()), Err(Code::Unauthenticated), "{bad}");
        }
        assert_eq!(auth.check(&MetadataMap::new()).map_err(|s| s.code()), Err(Code::Unauthenticated));
    }

    #[test]
    fn without_a_master_key_everything_is_rejected() {
        let status = AdminAuth::new(None).check(&metadata("Bearer anything")).expect_err("disabled");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("AURORA_MASTER_KEY"));
    }
}
