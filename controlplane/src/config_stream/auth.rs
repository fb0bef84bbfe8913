//! Node-token authentication for the config stream.
//!
//! The stream carries upstream credentials, so it is never open without a token: the control
//! plane refuses to start without `AURORA_NODE_TOKEN`, and every stream must present it as
//! `authorization: Bearer <token>`. Only the token's hash is kept, compared in constant time.

use aurora_core::KeyHash;
use tonic::service::Interceptor;
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy)]
pub struct NodeAuth {
    token: KeyHash,
}

impl NodeAuth {
    pub fn new(token: &str) -> Self {
        NodeAuth { token: KeyHash::of(token) }
    }
}

impl Interceptor for NodeAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| aurora_core::bearer_token(value.as_bytes()))
            .ok_or_else(|| {
                Status::unauthenticated("missing node token: send `authorization: Bearer <AURORA_NODE_TOKEN>`")
            })?;
        if KeyHash::of(presented).ct_eq(&self.token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid node token: check AURORA_NODE_TOKEN on this data plane"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request.metadata_mut().insert("authorization", header.parse().unwrap());
        }
        NodeAuth::new("node-secret").call(request).map(drop)
    }

    #[test]
    fn requires_the_exact_token() {
        assert!(call(Some("Bearer node-secret")).is_ok());
        assert_eq!(call(Some("Bearer other")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(call(Some("node-secret")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(call(None).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
