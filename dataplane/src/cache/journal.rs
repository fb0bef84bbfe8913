//! The delta journal: every revision applied since the newest snapshot generation, appended and
//! fsync'd before the revision is acknowledged.
//!
//! Rewriting the whole snapshot for every change would cost tens of megabytes per change with a
//! million keys; appending the delta costs its own few bytes. Recovery replays the journal over
//! the newest valid snapshot generation; a torn or corrupt tail (a crash mid-append, a flipped
//! byte) fails its checksum and is ignored, never applied.
//!
//! Layout: a header `AURJRNL2` (8 bytes), the store id (16) and the base revision (u64 LE) the
//! journal starts after; then records, each a sealed length (u32 LE) and a prost-encoded
//! `aurora.v1.Delta` sealed with the cache key (see `seal`), the header as associated data.
//! The AEAD tag is each record's checksum.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use aurora_proto::v1::Delta;
use prost::Message;

use super::seal::CacheKey;

const MAGIC: &[u8; 8] = b"AURJRNL2";
const HEADER_LEN: usize = 8 + 16 + 8;
const RECORD_HEADER_LEN: usize = 4;
/// A delta larger than this is not a delta this journal wrote: stop reading there.
const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// A journal file open for appending.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    key: std::sync::Arc<CacheKey>,
    header: [u8; HEADER_LEN],
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl Journal {
    /// Atomically replaces `path` with an empty journal starting after `base` (written to a
    /// temporary file, fsync'd, renamed, and the directory fsync'd).
    pub(crate) fn create(
        path: &Path,
        key: &std::sync::Arc<CacheKey>,
        store_id: [u8; 16],
        base: u64,
    ) -> std::io::Result<Self> {
        let temporary = super::with_suffix(path, ".tmp");
        let _ = fs::remove_file(&temporary);
        let mut file = super::owner_only_new(&temporary)?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..24].copy_from_slice(&store_id);
        header[24..].copy_from_slice(&base.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        super::sync_parent(path)?;
        Ok(Journal { file, key: key.clone(), header, records: 0, bytes: HEADER_LEN as u64 })
    }

    /// Appends one delta; durable only after [`Journal::sync`].
    pub(crate) fn append(&mut self, delta: &Delta) -> std::io::Result<()> {
        let sealed = self.key.seal(&self.header, &delta.encode_to_vec())?;
        let length = u32::try_from(sealed.len()).map_err(|_| std::io::Error::other("delta too large"))?;
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + sealed.len());
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&sealed);
        self.file.write_all(&record)?;
        self.records += 1;
        self.bytes += record.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable (one fsync for a whole group of appends).
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// What a journal file holds, as far as it is intact.
#[derive(Debug)]
pub(crate) struct JournalContents {
    pub(crate) store_id: [u8; 16],
    pub(crate) base: u64,
    pub(crate) deltas: Vec<Delta>,
}

/// Reads the intact prefix of the journal at `path`; `None` if it is missing or its header is
/// not a journal's.
pub(crate) fn read(path: &Path, key: &CacheKey) -> Option<JournalContents> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        tracing::warn!(path = %path.display(), "ignoring a journal without a valid header");
        return None;
    }
    let store_id: [u8; 16] = bytes[8..24].try_into().ok()?;
    let base = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
    let mut deltas = Vec::new();
    let mut at = HEADER_LEN;
    while let Some((delta, next)) = record_at(&bytes, at, key) {
        deltas.push(delta);
        at = next;
    }
    let ignored_tail = bytes.len() - at;
    if ignored_tail > 0 {
        tracing::warn!(path = %path.display(), ignored_bytes = ignored_tail, "ignoring a torn or corrupt journal tail");
    }
    Some(JournalContents { store_id, base, deltas })
}

/// The record starting at `at` and where the next one starts, if it is complete, intact and
/// sealed with `key` for this journal's header.
fn record_at(bytes: &[u8], at: usize, key: &CacheKey) -> Option<(Delta, usize)> {
    let length = bytes.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let length = usize::try_from(u32::from_le_bytes(length.try_into().ok()?)).ok()?;
    if length > MAX_RECORD_LEN {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let sealed = bytes.get(start..start.checked_add(length)?)?;
    let payload = key.open(&bytes[..HEADER_LEN], sealed).ok()?;
    Some((Delta::decode(payload.as_slice()).ok()?, start + length))
}

/// The journal files beside a cache file: `PATH.journal` (since the current generation) and
/// `PATH.journal.prev` (since the previous one).
#[derive(Debug, Clone)]
pub(crate) struct JournalPaths {
    pub(crate) current: PathBuf,
    pub(crate) previous: PathBuf,
}

impl JournalPaths {
    pub(crate) fn beside(cache: &Path) -> Self {
        JournalPaths {
            current: super::with_suffix(cache, ".journal"),
            previous: super::with_suffix(cache, ".journal.prev"),
        }
    }
}
