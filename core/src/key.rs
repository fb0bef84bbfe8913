//! Gateway key secrets and their hashes.
//!
//! A gateway key's plaintext exists in exactly two places: in the response to the admin call
//! that created it, and in the client that uses it. Everything Aurora stores or distributes is a
//! SHA-256 hash. Secrets carry 256 bits of randomness, so a fast unsalted hash is enough: there is
//! nothing to brute-force, and the data plane can hash every presented token in well under a
//! microsecond.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110); surrounding ASCII whitespace is dropped; an empty token is no token.
pub fn bearer_token(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(bearer_token_bytes(value)?).ok()
}

/// [`bearer_token`] as bytes, surrounding ASCII whitespace (HTTP's) dropped: what the data plane
/// hashes, without checking UTF-8 first (a token that is not UTF-8 matches no key anyway).
pub fn bearer_token_bytes(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Every generated secret starts with this, so secret scanners can recognise a leaked one.
pub const SECRET_PREFIX: &str = "aur_";

/// 43 characters from a 62-letter alphabet carry 43 * log2(62) ≈ 256 bits.
const SECRET_RANDOM_CHARS: usize = 43;

/// The SHA-256 of a gateway token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Every request hashes its token once, so this is ring's SHA-256: assembly that uses the
    /// CPU's SHA extensions where it has them (RustCrypto's `sha2` fell back to its portable code
    /// whenever its own feature detection said no).
    pub fn of(token: impl AsRef<[u8]>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_ref());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        KeyHash(hash)
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyHash(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(KeyHash)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in constant time, for the master key where no hash map lookup is involved.
    /// Word by word: `subtle` hides every element from the optimizer, and 32 bytes compared one
    /// at a time cost every request some 200 instructions where four words cost a few dozen.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.words().ct_eq(&other.words()).into()
    }

    fn words(&self) -> [u64; 4] {
        let word = |i: usize| u64::from_ne_bytes(self.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        [word(0), word(1), word(2), word(3)]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short, non-reversible fingerprint for display (the first 4 bytes of the hash).
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

/// Feeds the hasher one word of the digest: a SHA-256 output is already uniformly random, so
/// hash tables keyed by it can skip hashing it again (see `nohash_hasher`).
impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

impl nohash_hasher::IsEnabled for KeyHash {}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.fingerprint())
    }
}

impl FromStr for KeyHash {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)?;
        Ok(KeyHash(bytes))
    }
}

impl Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        hex.parse().map_err(serde::de::Error::custom)
    }
}

/// A freshly generated gateway key secret. Its `Debug` never prints the secret.
pub struct KeySecret(String);

impl KeySecret {
    pub fn generate() -> Self {
        let random: String = rand::rng().sample_iter(&Alphanumeric).take(SECRET_RANDOM_CHARS).map(char::from).collect();
        KeySecret(format!("{SECRET_PREFIX}{random}"))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The prefix and the last four characters, e.g. `aur_…x9Qz`: enough to tell keys apart in
    /// a listing, useless to an attacker.
    pub fn redacted(&self) -> String {
        let tail = &self.0[self.0.len() - 4..];
        format!("{SECRET_PREFIX}…{tail}")
    }

    /// The plaintext, for the one response that returns it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = KeySecret::generate();
        let b = KeySecret::generate();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.expose().len(), SECRET_PREFIX.len() + SECRET_RANDOM_CHARS);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), KeyHash::of(a.expose()));
        assert!(a.redacted().ends_with(&a.expose()[a.expose().len() - 4..]));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer_token(b"BEARER abc"), Some("abc"));
        for bad in [&b"Bearer "[..], b"Bearer", b"Basic abc", b"abc", b"Bearerabc"] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
            assert_eq!(bearer_token_bytes(bad), None, "{bad:?}");
        }
        // The bytes are the token whatever they are; only the `&str` form needs UTF-8.
        assert_eq!(bearer_token_bytes(b"Bearer \tab\xff "), Some(&b"ab\xff"[..]));
        assert_eq!(bearer_token(b"Bearer ab\xff"), None);
        assert_eq!(KeyHash::of(b"abc"), KeyHash::of("abc"));
    }

    #[test]
    fn hash_hex_round_trips() {
        let hash = KeyHash::of("change-me");
        assert_eq!(hash.to_hex().parse::<KeyHash>().unwrap(), hash);
        assert!(hash.ct_eq(&KeyHash::of("change-me")));
        assert!(!hash.ct_eq(&KeyHash::of("change-me2")));
        // A difference in any one byte is seen.
        for at in 0..32 {
            let mut bytes = *hash.as_bytes();
            bytes[at] ^= 1;
            assert!(!hash.ct_eq(&KeyHash::from_bytes(bytes)), "byte {at}");
        }
    }
}
