//! Encryption of the cache at rest: a copied cache file or volume snapshot yields neither an
//! upstream credential nor a key hash to guess offline.
//!
//! ChaCha20-Poly1305 (ring's AEAD, the same library rustls uses) with a key derived by
//! HKDF-SHA256 from a secret the replica already holds (`AURORA_CACHE_KEY` if set, else the
//! node token), a fresh random nonce per sealed message, and the file's own header as associated
//! data. The tag authenticates too: a flipped byte fails to open, exactly like a bad checksum.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

const SALT: &[u8] = b"aurora data-plane cache v2";
const INFO: &[u8] = b"config-cache";
/// What sealing adds to a message: the nonce before it, the tag after it.
pub(crate) const OVERHEAD: usize = NONCE_LEN + 16;

/// The cache's encryption key. Its `Debug` shows nothing of it.
pub struct CacheKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// A sealed message did not open: wrong key, or damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot decrypt (damaged, or sealed with another AURORA_CACHE_KEY or node token)")]
pub struct Unsealable;

impl CacheKey {
    /// Derives the key from `secret`.
    pub fn derive(secret: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret);
        let mut bytes = [0u8; 32];
        // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 × 32).
        if let Ok(okm) = prk.expand(&[INFO], &CHACHA20_POLY1305) {
            let _ = okm.fill(&mut bytes);
        }
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).unwrap_or_else(|_| unreachable!("a 32-byte key"));
        CacheKey { key: LessSafeKey::new(unbound), random: SystemRandom::new() }
    }

    /// `nonce || ciphertext || tag` of `plaintext`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness for a nonce"))?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| std::io::Error::other("cannot seal"))?;
        out.append(&mut body);
        Ok(out)
    }

    /// The plaintext of a message [`CacheKey::seal`] made with the same `aad`.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < OVERHEAD {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut body = body.to_vec();
        let plaintext = self.key.open_in_place(nonce, Aad::from(aad), &mut body).map_err(|_| Unsealable)?;
        let length = plaintext.len();
        body.truncate(length);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_with_the_same_key_and_header() {
        let key = CacheKey::derive(b"node-token");
        let sealed = key.seal(b"header", b"sk-ant-secret").unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"sk-ant-secret"), "the plaintext is not in the output");
        assert_eq!(key.open(b"header", &sealed).unwrap(), b"sk-ant-secret");
        assert_eq!(key.open(b"other", &sealed), Err(Unsealable), "bound to its header");
        assert_eq!(CacheKey::derive(b"another token").open(b"header", &sealed), Err(Unsealable));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(key.open(b"header", &flipped), Err(Unsealable), "authenticated");
        assert_ne!(key.seal(b"header", b"x").unwrap(), key.seal(b"header", b"x").unwrap(), "fresh nonces");
        assert_eq!(format!("{key:?}"), "CacheKey(..)");
    }
}
