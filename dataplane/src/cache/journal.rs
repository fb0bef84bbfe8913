//! The delta journal: every revision applied since the newest snapshot generation, appended and
//! fsync'd before the revision is acknowledged.
//!
//! Rewriting the whole snapshot for every change would cost tens of megabytes per change with a
//! million keys; appending the delta costs its own few bytes. Recovery replays the journal over
//! the newest valid snapshot generation; a torn or corrupt tail (a crash mid-append, a flipped
//! byte) fails its checksum and is ignored, never applied.
//!
//! Layout: a header `AURJRNL1` (8 bytes), the store id (16) and the base revision (u64 LE) the
//! journal starts after; then records, each a payload length (u32 LE), the SHA-256 of the
//! payload (32 bytes) and the payload, a prost-encoded `aurora.v1.Delta`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use aurora_proto::v1::Delta;
use prost::Message;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"AURJRNL1";
const HEADER_LEN: usize = 8 + 16 + 8;
const RECORD_HEADER_LEN: usize = 4 + 32;
/// A delta larger than this is not a delta this journal wrote: stop reading there.
const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// A journal file open for appending.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl Journal {
    /// Atomically replaces `path` with an empty journal starting after `base` (written to a
    /// temporary file, fsync'd, renamed, and the directory fsync'd).
    pub(crate) fn create(path: &Path, store_id: [u8; 16], base: u64) -> std::io::Result<Self> {
        let temporary = super::with_suffix(path, ".tmp");
        let _ = fs::remove_file(&temporary);
        let mut file = super::owner_only_new(&temporary)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&store_id);
        header.extend_from_slice(&base.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        super::sync_parent(path)?;
        Ok(Journal { file, records: 0, bytes: HEADER_LEN as u64 })
    }

    /// Appends one delta; durable only after [`Journal::sync`].
    pub(crate) fn append(&mut self, delta: &Delta) -> std::io::Result<()> {
        let payload = delta.encode_to_vec();
        let length = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("delta too large"))?;
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&Sha256::digest(&payload));
        record.extend_from_slice(&payload);
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
pub(crate) fn read(path: &Path) -> Option<JournalContents> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        tracing::warn!(path = %path.display(), "ignoring a journal without a valid header");
        return None;
    }
    let store_id: [u8; 16] = bytes[8..24].try_into().ok()?;
    let base = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
    let mut deltas = Vec::new();
    let mut at = HEADER_LEN;
    while let Some((delta, next)) = record_at(&bytes, at) {
        deltas.push(delta);
        at = next;
    }
    let ignored_tail = bytes.len() - at;
    if ignored_tail > 0 {
        tracing::warn!(path = %path.display(), ignored_bytes = ignored_tail, "ignoring a torn or corrupt journal tail");
    }
    Some(JournalContents { store_id, base, deltas })
}

/// The record starting at `at` and where the next one starts, if it is complete and intact.
fn record_at(bytes: &[u8], at: usize) -> Option<(Delta, usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
    let length = usize::try_from(u32::from_le_bytes(header[..4].try_into().ok()?)).ok()?;
    if length > MAX_RECORD_LEN {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(length)?)?;
    if Sha256::digest(payload).as_slice() != &header[4..] {
        return None;
    }
    Some((Delta::decode(payload).ok()?, start + length))
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
