//! Admin authentication: `authorization: Bearer <AURORA_MASTER_KEY>` on every call.
//!
//! The admin API is never anonymous. Without a configured master key every call fails, with a
//! message telling the operator what to set. Only the hash of the master key is kept, and the
//! presented token is checked against an argon2id hash (see [`Verifier`]).

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A tonic interceptor enforcing the master key.
#[derive(Clone)]
pub struct AdminAuth {
    verifier: Option<Arc<Verifier>>,
}

/// The master key as the control plane keeps it: an argon2id PHC string (random salt,
/// argon2's default cost: 19 MiB, 2 passes), never the key or a fast hash of it.
///
/// Verifying costs tens of milliseconds, too much for every admin call, so the first
/// successful verification is remembered as an HMAC-SHA256 of the presented key under a random
/// key that exists only in this process's memory: later calls compute one HMAC and compare it in
/// constant time (`hmac::verify`). Only the right key can be remembered (there is one), so the
/// memory is one tag; a wrong key pays the full argon2 cost every time, which is what slows a
/// guesser down.
struct Verifier {
    phc: String,
    cache_key: hmac::Key,
    verified: OnceLock<hmac::Tag>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").field("master_key_set", &self.verifier.is_some()).finish()
    }
}

impl AdminAuth {
    /// `master_key` is `AURORA_MASTER_KEY`, or `None` when it is not set; only its argon2id
    /// hash is kept.
    pub fn new(master_key: Option<&str>) -> Self {
        let random = SystemRandom::new();
        let verifier = master_key.filter(|key| !key.is_empty()).and_then(|key| {
            let mut salt = [0u8; 16];
            random.fill(&mut salt).ok()?;
            let salt = SaltString::encode_b64(&salt).ok()?;
            match Argon2::default().hash_password(key.as_bytes(), &salt) {
                Ok(phc) => Some(Arc::new(Verifier {
                    phc: phc.to_string(),
                    cache_key: hmac::Key::generate(hmac::HMAC_SHA256, &random).ok()?,
                    verified: OnceLock::new(),
                })),
                Err(err) => {
                    tracing::error!(error = %err, "cannot hash the master key; the admin API stays disabled");
                    None
                }
            }
        });
        AdminAuth { verifier }
    }

    fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(verifier) = &self.verifier else {
            return Err(Status::unauthenticated(
                "the admin API is disabled until AURORA_MASTER_KEY is set on the control plane",
            ));
        };
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization: send `authorization: Bearer <master key>`")
        })?;
        let token = aurora_core::bearer_token(header.as_bytes())
            .ok_or_else(|| Status::unauthenticated("malformed authorization: expected `Bearer <master key>`"))?;
        if verifier.verify(token.as_bytes()) { Ok(()) } else { Err(Status::unauthenticated("invalid master key")) }
    }
}

impl Verifier {
    fn verify(&self, token: &[u8]) -> bool {
        if let Some(tag) = self.verified.get() {
            if hmac::verify(&self.cache_key, token, tag.as_ref()).is_ok() {
                return true;
            }
        }
        let matches =
            PasswordHash::new(&self.phc).is_ok_and(|phc| Argon2::default().verify_password(token, &phc).is_ok());
        if matches {
            let _ = self.verified.set(hmac::sign(&self.cache_key, token));
        }
        matches
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

    const MK: &str = "0123456789abcdef0123456789abcdef-mk";

    #[test]
    fn accepts_only_the_master_key() {
        let auth = AdminAuth::new(Some(MK));
        let phc = &auth.verifier.as_ref().unwrap().phc;
        assert!(phc.starts_with("$argon2id$") && !phc.contains(MK), "{phc}");
        assert!(auth.check(&metadata(&format!("Bearer {MK}"))).is_ok());
        assert!(auth.verifier.as_ref().unwrap().verified.get().is_some(), "remembered");
        assert!(auth.check(&metadata(&format!("bearer {MK}"))).is_ok(), "from memory");
        for bad in [format!("Bearer {MK}2"), format!("Basic {MK}"), "Bearer ".into(), MK.into()] {
            let bad = bad.as_str();
            assert_eq!(auth.check(&metadata(bad)).map_err(|s| s.code()), Err(Code::Unauthenticated), "{bad}");
        }
        assert_eq!(auth.check(&MetadataMap::new()).map_err(|s| s.code()), Err(Code::Unauthenticated));
    }

    #[test]
    fn the_same_key_hashes_differently_each_start() {
        let (a, b) = (AdminAuth::new(Some(MK)), AdminAuth::new(Some(MK)));
        assert_ne!(a.verifier.as_ref().unwrap().phc, b.verifier.as_ref().unwrap().phc, "salted");
        assert!(format!("{:?}", AdminAuth::new(Some(MK))).contains("master_key_set: true"));
    }

    #[test]
    fn without_a_master_key_everything_is_rejected() {
        let status = AdminAuth::new(None).check(&metadata("Bearer anything")).expect_err("disabled");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("AURORA_MASTER_KEY"));
    }
}
