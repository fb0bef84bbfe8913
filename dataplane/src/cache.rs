//! The last-known-good configuration cache (`AURORA_CONFIG_CACHE`).
//!
//! A data plane that restarts while the control plane is unreachable serves from here instead
//! of staying down. Every write is atomic (write a temporary file, fsync, rename) and keeps the
//! previous generation beside the current one (`PATH.prev`). Each file carries a SHA-256 of its
//! payload, so a torn or corrupted file is detected and the older generation is used instead;
//! if neither is valid the data plane stays unready rather than serving an open gateway.
//!
//! Layout: `AURCACHE` (8 bytes), format version (u32 LE), sealed length (u64 LE), then the
//! payload (a prost-encoded `SnapshotChunk` holding everything) sealed with the [`seal`] key,
//! the 20-byte header as associated data. The AEAD tag is the checksum: a torn, flipped or
//! foreign-key file fails to open and counts as corrupt. Version 1 files (plaintext, from
//! before encryption) are not read: with the control plane up the replica resyncs at once.
//!
//! Beside the generations, a [`journal`] holds every delta applied since the current one
//! (`PATH.journal`, and `PATH.journal.prev` since the previous one), and the [`writer`] makes
//! each revision durable before it is acknowledged: recovery replays the journal over the newest
//! valid generation, so a replica that acknowledged revision R restarts at R or later.

mod journal;
pub mod seal;
pub mod writer;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aurora_proto::v1::SnapshotChunk;
use prost::Message;

use self::journal::{Journal, JournalPaths};
pub use self::seal::CacheKey;
use crate::snapshot::Snapshot;
use crate::snapshot::proto::snapshot_from_chunk;

const MAGIC: &[u8; 8] = b"AURCACHE";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid cache file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The cache's two generations on disk.
#[derive(Debug, Clone)]
pub struct ConfigCache {
    current: PathBuf,
    previous: PathBuf,
    temporary: PathBuf,
    /// Where the previous generation is linked before it replaces `previous`.
    previous_temporary: PathBuf,
    journals: JournalPaths,
    key: Arc<CacheKey>,
}

/// What recovery found: the configuration and how many journal deltas it replayed.
#[derive(Debug)]
pub struct Recovered {
    pub snapshot: Arc<Snapshot>,
    pub replayed: u64,
}

impl ConfigCache {
    pub fn new(path: &Path, key: CacheKey) -> Self {
        ConfigCache {
            key: Arc::new(key),
            current: path.to_owned(),
            previous: with_suffix(path, ".prev"),
            temporary: with_suffix(path, ".tmp"),
            previous_temporary: with_suffix(path, ".prev.tmp"),
            journals: JournalPaths::beside(path),
        }
    }

    pub fn previous_path(&self) -> &Path {
        &self.previous
    }

    /// Writes `snapshot` as the new current generation; the old current becomes the previous.
    pub fn store(&self, snapshot: &Snapshot) -> Result<(), CacheError> {
        let payload = snapshot.to_chunk().encode_to_vec();
        let sealed_length = (payload.len() + seal::OVERHEAD) as u64;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + seal::OVERHEAD);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&sealed_length.to_le_bytes());
        let sealed =
            self.key.seal(&bytes, &payload).map_err(|source| CacheError::Io { path: self.current.clone(), source })?;
        bytes.extend_from_slice(&sealed);

        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        if let Some(dir) = self.current.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // The cache holds upstream credentials: readable by the owner only. A temporary file
        // left by a crash is removed rather than reused, so it cannot keep wider permissions.
        remove_if_present(&self.temporary).map_err(io(&self.temporary))?;
        let mut file = owner_only_new(&self.temporary).map_err(io(&self.temporary))?;
        file.write_all(&bytes).map_err(io(&self.temporary))?;
        file.sync_all().map_err(io(&self.temporary))?;
        drop(file);
        // Each step replaces a file atomically, so at every instant the current generation
        // exists, complete: the old one is linked to `previous` first, then the new one is
        // renamed over it.
        if self.current.exists() {
            remove_if_present(&self.previous_temporary).map_err(io(&self.previous_temporary))?;
            fs::hard_link(&self.current, &self.previous_temporary).map_err(io(&self.previous_temporary))?;
            fs::rename(&self.previous_temporary, &self.previous).map_err(io(&self.previous))?;
        }
        fs::rename(&self.temporary, &self.current).map_err(io(&self.current))?;
        // Make the renames themselves durable.
        sync_parent(&self.current).map_err(io(&self.current))
    }

    /// Writes `snapshot` as the new current generation and starts an empty journal after it;
    /// the old journal becomes the previous generation's, so that generation stays replayable
    /// up to here. Every step is atomic, so a crash between them loses nothing.
    pub(crate) fn store_generation(&self, snapshot: &Snapshot) -> Result<Journal, CacheError> {
        self.store(snapshot)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        if self.journals.current.exists() {
            fs::rename(&self.journals.current, &self.journals.previous).map_err(io(&self.journals.previous))?;
        }
        Journal::create(&self.journals.current, &self.key, snapshot.store_id, snapshot.revision)
            .map_err(io(&self.journals.current))
    }

    /// The newest valid generation with its journal replayed over it, or `None` (each invalid
    /// file is logged).
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.recover().map(|recovered| recovered.snapshot)
    }

    /// Like [`ConfigCache::load`], saying how many journal deltas were replayed.
    pub fn recover(&self) -> Option<Recovered> {
        // The previous generation's journal runs into the current one's, so both replay over it.
        let candidates = [
            (&self.current, vec![&self.journals.current]),
            (&self.previous, vec![&self.journals.previous, &self.journals.current]),
        ];
        for (path, journals) in candidates {
            if !path.exists() {
                continue;
            }
            match read(path, &self.key) {
                Ok(snapshot) => {
                    let generation = snapshot.revision;
                    let (snapshot, replayed) = replay(snapshot, &journals, &self.key);
                    tracing::info!(path = %path.display(), generation, replayed, revision = snapshot.revision, "loaded cached configuration");
                    return Some(Recovered { snapshot, replayed });
                }
                Err(err) => tracing::warn!(error = %err, "ignoring cache generation"),
            }
        }
        None
    }
}

/// Applies the journals' deltas that follow `snapshot` without a gap, in order; stops at the
/// first gap or delta that does not apply. A journal from another store history is ignored.
fn replay(snapshot: Arc<Snapshot>, journals: &[&PathBuf], key: &CacheKey) -> (Arc<Snapshot>, u64) {
    let mut state = snapshot;
    let mut replayed = 0;
    for path in journals {
        let Some(contents) = journal::read(path, key) else { continue };
        if contents.store_id != state.store_id {
            tracing::warn!(path = %path.display(), "ignoring a journal from another store history");
            continue;
        }
        if contents.base > state.revision {
            // Written after a generation newer than this one (which must be damaged).
            tracing::warn!(path = %path.display(), base = contents.base, have = state.revision, "the journal starts after this generation; replay stops here");
            return (state, replayed);
        }
        for delta in &contents.deltas {
            if delta.revision <= state.revision {
                continue;
            }
            if delta.revision != state.revision + 1 {
                tracing::warn!(path = %path.display(), have = state.revision, next = delta.revision, "the journal does not continue this generation; replay stops here");
                return (state, replayed);
            }
            match state.apply(delta) {
                Ok(next) => {
                    state = Arc::new(next);
                    replayed += 1;
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), revision = delta.revision, error = %err, "a journal delta does not apply; replay stops here");
                    return (state, replayed);
                }
            }
        }
    }
    (state, replayed)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `path`, which must not exist, readable by its owner only: cache files hold upstream
/// credentials.
fn owner_only_new(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes a rename or creation in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
        None => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn read(path: &Path, key: &CacheKey) -> Result<Arc<Snapshot>, CacheError> {
    let invalid = |reason: &str| CacheError::Invalid { path: path.to_owned(), reason: reason.to_owned() };
    let bytes = fs::read(path).map_err(|source| CacheError::Io { path: path.to_owned(), source })?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(invalid("missing header"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| invalid("missing header"))?);
    if version != VERSION {
        return Err(invalid(&format!("format version {version}, not {VERSION} (unencrypted files are not read)")));
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| invalid("missing header"))?);
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    if sealed.len() as u64 != length {
        return Err(invalid("truncated"));
    }
    let payload = key.open(header, sealed).map_err(|err| invalid(&err.to_string()))?;
    let chunk = SnapshotChunk::decode(payload.as_slice()).map_err(|err| invalid(&err.to_string()))?;
    snapshot_from_chunk(chunk).map_err(|err| invalid(&err.to_string()))
}

#[cfg(test)]
mod tests {
    use aurora_core::{KeyHash, ProviderKind};

    use super::*;
    use crate::snapshot::{KeyId, ManagedKey, Settings, Upstream};

    fn snapshot(revision: u64) -> Snapshot {
        let mut snapshot = Snapshot::new(revision, Settings::default(), Some(KeyHash::of("m")));
        let kind = ProviderKind::Anthropic;
        snapshot.set_provider(Upstream::new(kind, true, kind.default_base_url_parsed(), Some("sk-ant")).unwrap());
        snapshot.keys.insert(
            KeyHash::of("k"),
            ManagedKey {
                id: KeyId([1; 16]),
                enabled: true,
                expires_at: std::num::NonZeroI64::new(5),
                allowed_providers: None,
                policy: None,
            },
        );
        snapshot
    }

    #[test]
    fn keeps_two_generations_and_falls_back_on_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConfigCache::new(&dir.path().join("sub/config.cache"), CacheKey::derive(b"node-token"));
        assert!(cache.load().is_none());

        cache.store(&snapshot(1)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&cache.current).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the cache holds credentials: owner-only");
        }
        // A temporary file left by a crash (world-readable) is replaced, not reused.
        fs::write(&cache.temporary, b"leftover").unwrap();
        cache.store(&snapshot(2)).unwrap();
        assert!(!cache.temporary.exists() && !cache.previous_temporary.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&cache.current).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner-only after replacing a leftover");
        }
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 2);
        assert_eq!(loaded.keys, snapshot(2).keys);
        assert_eq!(loaded.provider(ProviderKind::Anthropic).unwrap().credential().unwrap(), "sk-ant");

        // Flip one payload byte: the checksum catches it and the previous generation is used.
        let mut bytes = fs::read(&cache.current).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&cache.current, &bytes).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);

        // Both generations bad: nothing, never an empty (open) configuration.
        fs::write(cache.previous_path(), b"AURCACHE garbage").unwrap();
        assert!(cache.load().is_none());
    }
}

#[cfg(test)]
#[path = "cache/recovery_tests.rs"]
mod recovery_tests;
