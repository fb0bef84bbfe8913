//! Secrets at rest in the store: envelope encryption of every upstream credential.
//!
//! The operator supplies one or more key-encryption keys (KEKs) in `AURORA_ENCRYPTION_KEY`
//! (or the file `AURORA_ENCRYPTION_KEY_FILE` names): 32 random bytes each, base64, as
//! `openssl rand -base64 32` prints them, separated by commas or whitespace. The first is the
//! current key, which seals everything new; the others are older keys still accepted for
//! reading, so a key can be rotated without downtime (see docs/OPERATIONS.md).
//!
//! Each sealed value gets its own random data key (DEK). The value is encrypted under the DEK,
//! the DEK is wrapped (encrypted) under the current KEK, and both travel together with the KEK's
//! id in one self-describing blob:
//!
//! ```text
//! "AUS1" | kek id (8) | wrap nonce (12) | wrapped DEK + tag (48) | data nonce (12) | data + tag
//! ```
//!
//! Both layers are AES-256-GCM (ring, the library rustls already uses here). The associated
//! data binds each blob to the object and field it was sealed for (`anthropic`/`credential`),
//! so a blob copied into another row or column does not open. Rotating the KEK only re-wraps
//! the DEKs ([`Keyring::rewrap`]); the data stays as it was.
//!
//! A KEK's id is derived from the key itself (SHA-256, truncated), so ids can never be assigned
//! wrongly, and an error can say which key a blob needs without revealing anything of it.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// The variable the operator sets; errors name it.
pub const ENCRYPTION_KEY_VAR: &str = "AURORA_ENCRYPTION_KEY";

const MAGIC: &[u8; 4] = b"AUS1";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const ID_LEN: usize = 8;
const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
const HEADER_LEN: usize = MAGIC.len() + ID_LEN + NONCE_LEN + WRAPPED_LEN + NONCE_LEN;

/// A key-encryption key's id: the first 8 bytes of SHA-256("aurora kek id v1" || key), shown
/// as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The operator's key-encryption keys, current first. Cheap to clone; its `Debug` shows only
/// the ids.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<(KeyId, LessSafeKey)>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

/// `AURORA_ENCRYPTION_KEY` cannot be used. Never repeats a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("{ENCRYPTION_KEY_VAR} holds no key: set it to one or more keys from `openssl rand -base64 32`")]
    Empty,
    #[error(
        "{ENCRYPTION_KEY_VAR}: key {position} is not 32 bytes of base64 (generate one with `openssl rand -base64 32`)"
    )]
    Malformed { position: usize },
    #[error("{ENCRYPTION_KEY_VAR}: key {position} is the same key as key {first}")]
    Duplicate { position: usize, first: usize },
    #[error("no randomness available to generate an encryption key")]
    NoRandomness,
}

/// A sealed value could not be opened, or a value could not be sealed. Never repeats a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The blob names a KEK the keyring does not hold.
    #[error(
        "sealed under encryption key {0}, which {ENCRYPTION_KEY_VAR} (or {ENCRYPTION_KEY_VAR}_FILE) does not hold: \
         add that key (older keys may follow the current one, separated by commas)"
    )]
    UnknownKey(KeyId),
    /// The blob is not one this module made, or was altered, or belongs to another field.
    #[error("cannot decrypt: damaged, or sealed for another object or field")]
    Damaged,
    #[error("no randomness available to seal a value")]
    NoRandomness,
}

impl Keyring {
    /// Parses `AURORA_ENCRYPTION_KEY`: base64 keys of 32 bytes, current first, separated by
    /// commas or whitespace.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<(KeyId, LessSafeKey)> = Vec::new();
        for (index, item) in text.split([',', ' ', '\n', '\r', '\t']).filter(|s| !s.is_empty()).enumerate() {
            let position = index + 1;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(item)
                .ok()
                .filter(|bytes| bytes.len() == KEY_LEN)
                .ok_or(KeyringError::Malformed { position })?;
            let id = key_id(&bytes);
            if let Some(first) = keys.iter().position(|(known, _)| *known == id) {
                return Err(KeyringError::Duplicate { position, first: first + 1 });
            }
            keys.push((id, aes_key(&bytes)));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { inner: Arc::new(Inner { keys, random: SystemRandom::new() }) })
    }

    /// A fresh key in the form [`Keyring::parse`] reads (base64 of 32 random bytes).
    pub fn generate_key() -> Result<String, KeyringError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| KeyringError::NoRandomness)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> KeyId {
        self.inner.keys[0].0
    }

    /// Every key's id, current first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.inner.keys.iter().map(|(id, _)| *id).collect()
    }

    /// Seals `plaintext` for `field` of `object` under a fresh data key wrapped by the current
    /// KEK.
    pub fn seal(&self, object: &str, field: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut dek = [0u8; KEY_LEN];
        self.fill(&mut dek)?;
        let data_key = aes_key(&dek);
        let (id, kek) = &self.inner.keys[0];
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id.0);
        self.seal_part(kek, &wrap_aad(*id, object, field), &dek, &mut out)?;
        self.seal_part(&data_key, &data_aad(object, field), plaintext, &mut out)?;
        Ok(out)
    }

    /// The plaintext of a blob [`Keyring::seal`] made for the same `object` and `field`.
    pub fn open(&self, object: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let blob = Blob::parse(sealed)?;
        let dek = self.unwrap_dek(&blob, object, field)?;
        let mut data = blob.data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(blob.data_nonce).map_err(|_| SealError::Damaged)?;
        let plaintext = aes_key(&dek)
            .open_in_place(nonce, Aad::from(data_aad(object, field)), &mut data)
            .map_err(|_| SealError::Damaged)?;
        let length = plaintext.len();
        data.truncate(length);
        Ok(data)
    }

    /// The id of the KEK a blob is sealed under.
    pub fn key_id_of(sealed: &[u8]) -> Result<KeyId, SealError> {
        Ok(Blob::parse(sealed)?.key_id)
    }

    /// The same blob with its data key re-wrapped under the current KEK, or `None` when it is
    /// already sealed under it. The data part is not touched (it is checked, though: a blob that
    /// does not open is never re-wrapped).
    pub fn rewrap(&self, object: &str, field: &str, sealed: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        self.open(object, field, sealed)?;
        let blob = Blob::parse(sealed)?;
        let (id, kek) = &self.inner.keys[0];
        if blob.key_id == *id {
            return Ok(None);
        }
        let dek = self.unwrap_dek(&blob, object, field)?;
        let mut out = Vec::with_capacity(sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id.0);
        self.seal_part(kek, &wrap_aad(*id, object, field), &dek, &mut out)?;
        out.extend_from_slice(blob.data_nonce);
        out.extend_from_slice(blob.data);
        Ok(Some(out))
    }

    fn unwrap_dek(&self, blob: &Blob<'_>, object: &str, field: &str) -> Result<[u8; KEY_LEN], SealError> {
        let kek = self
            .inner
            .keys
            .iter()
            .find(|(id, _)| *id == blob.key_id)
            .map(|(_, key)| key)
            .ok_or(SealError::UnknownKey(blob.key_id))?;
        let mut wrapped = blob.wrapped.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(blob.wrap_nonce).map_err(|_| SealError::Damaged)?;
        let dek = kek
            .open_in_place(nonce, Aad::from(wrap_aad(blob.key_id, object, field)), &mut wrapped)
            .map_err(|_| SealError::Damaged)?;
        <[u8; KEY_LEN]>::try_from(&*dek).map_err(|_| SealError::Damaged)
    }

    /// Appends `nonce || ciphertext || tag` of `plaintext` to `out`.
    fn seal_part(&self, key: &LessSafeKey, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.fill(&mut nonce)?;
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| SealError::Damaged)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(())
    }

    fn fill(&self, bytes: &mut [u8]) -> Result<(), SealError> {
        self.inner.random.fill(bytes).map_err(|_| SealError::NoRandomness)
    }
}

/// A blob's parts, borrowed.
struct Blob<'a> {
    key_id: KeyId,
    wrap_nonce: &'a [u8],
    wrapped: &'a [u8],
    data_nonce: &'a [u8],
    data: &'a [u8],
}

impl<'a> Blob<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, SealError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || !sealed.starts_with(MAGIC) {
            return Err(SealError::Damaged);
        }
        let rest = &sealed[MAGIC.len()..];
        let (id, rest) = rest.split_at(ID_LEN);
        let (wrap_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED_LEN);
        let (data_nonce, data) = rest.split_at(NONCE_LEN);
        let key_id = KeyId(<[u8; ID_LEN]>::try_from(id).map_err(|_| SealError::Damaged)?);
        Ok(Blob { key_id, wrap_nonce, wrapped, data_nonce, data })
    }
}

fn key_id(key: &[u8]) -> KeyId {
    let mut input = b"aurora kek id v1".to_vec();
    input.extend_from_slice(key);
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&hash.as_ref()[..ID_LEN]);
    KeyId(id)
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    // ring refuses only a key of the wrong length, and every caller passes 32 bytes.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("a 32-byte key")))
}

fn wrap_aad(id: KeyId, object: &str, field: &str) -> Vec<u8> {
    let mut aad = b"aurora dek v1\0".to_vec();
    aad.extend_from_slice(&id.0);
    aad.extend_from_slice(object.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

fn data_aad(object: &str, field: &str) -> Vec<u8> {
    let mut aad = b"aurora data v1\0".to_vec();
    aad.extend_from_slice(object.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keyring(keys: &[&str]) -> Keyring {
        Keyring::parse(&keys.join(",")).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_object_and_field() {
        let key = Keyring::generate_key().unwrap();
        let ring = keyring(&[&key]);
        let sealed = ring.seal("anthropic", "credential", b"sk-ant-secret").unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"sk-ant-secret"), "the plaintext is not in the blob");
        assert_eq!(ring.open("anthropic", "credential", &sealed).unwrap(), b"sk-ant-secret");
        assert_eq!(ring.open("openai", "credential", &sealed), Err(SealError::Damaged), "bound to its object");
        assert_eq!(ring.open("anthropic", "client_key", &sealed), Err(SealError::Damaged), "bound to its field");
        assert_ne!(ring.seal("a", "b", b"x").unwrap(), ring.seal("a", "b", b"x").unwrap(), "fresh keys and nonces");
        assert_eq!(Keyring::key_id_of(&sealed).unwrap(), ring.current_id());
    }

    #[test]
    fn a_tampered_blob_never_opens() {
        let ring = keyring(&[&Keyring::generate_key().unwrap()]);
        let sealed = ring.seal("openai", "credential", b"sk-proj-secret").unwrap();
        for index in MAGIC.len() + ID_LEN..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[index] ^= 0x01;
            assert_eq!(ring.open("openai", "credential", &flipped), Err(SealError::Damaged), "byte {index}");
        }
        assert_eq!(ring.open("openai", "credential", &sealed[..sealed.len() - 1]), Err(SealError::Damaged));
        assert_eq!(ring.open("openai", "credential", b"plaintext"), Err(SealError::Damaged));
        let mut other_id = sealed.clone();
        other_id[MAGIC.len()] ^= 0x01;
        assert!(matches!(ring.open("openai", "credential", &other_id), Err(SealError::UnknownKey(_))));
    }

    #[test]
    fn a_wrong_key_names_the_key_it_needs_and_the_variable() {
        let (old, new) = (Keyring::generate_key().unwrap(), Keyring::generate_key().unwrap());
        let sealed = keyring(&[&old]).seal("zai", "credential", b"zai-secret").unwrap();
        let err = keyring(&[&new]).open("zai", "credential", &sealed).unwrap_err();
        assert_eq!(err, SealError::UnknownKey(keyring(&[&old]).current_id()));
        let message = err.to_string();
        assert!(message.contains(ENCRYPTION_KEY_VAR) && message.contains(&keyring(&[&old]).current_id().to_string()));
        assert!(!message.contains(&old) && !message.contains(&new), "{message}");
    }

    #[test]
    fn rotation_reads_old_blobs_and_rewraps_them_under_the_current_key() {
        let (old, new) = (Keyring::generate_key().unwrap(), Keyring::generate_key().unwrap());
        let before = keyring(&[&old]);
        let sealed = before.seal("vllm", "client_key", b"-----BEGIN PRIVATE KEY-----").unwrap();
        let rotated = keyring(&[&new, &old]);
        assert_eq!(rotated.open("vllm", "client_key", &sealed).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        let rewrapped = rotated.rewrap("vllm", "client_key", &sealed).unwrap().expect("under the old key");
        assert_eq!(Keyring::key_id_of(&rewrapped).unwrap(), rotated.current_id());
        assert_eq!(rotated.rewrap("vllm", "client_key", &rewrapped).unwrap(), None, "already current");
        let only_new = keyring(&[&new]);
        assert_eq!(only_new.open("vllm", "client_key", &rewrapped).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(matches!(only_new.open("vllm", "client_key", &sealed), Err(SealError::UnknownKey(_))));
        assert_eq!(rotated.rewrap("vllm", "credential", &sealed), Err(SealError::Damaged), "checked first");
    }

    #[test]
    fn keys_are_32_bytes_of_base64_without_repeats() {
        let (a, b) = (Keyring::generate_key().unwrap(), Keyring::generate_key().unwrap());
        assert_eq!(keyring(&[&a, &b]).ids().len(), 2);
        assert_eq!(Keyring::parse(&format!("{a}\n{b}\n")).unwrap().ids(), keyring(&[&a, &b]).ids());
        assert_eq!(Keyring::parse(" ,\n").unwrap_err(), KeyringError::Empty);
        assert_eq!(Keyring::parse("short").unwrap_err(), KeyringError::Malformed { position: 1 });
        let sixteen = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(Keyring::parse(&format!("{a},{sixteen}")).unwrap_err(), KeyringError::Malformed { position: 2 });
        assert_eq!(
            Keyring::parse(&format!("{a},{b},{a}")).unwrap_err(),
            KeyringError::Duplicate { position: 3, first: 1 }
        );
        let shown = format!("{:?}", keyring(&[&a]));
        assert!(!shown.contains(&a) && shown.contains(&keyring(&[&a]).current_id().to_string()), "{shown}");
    }
}
