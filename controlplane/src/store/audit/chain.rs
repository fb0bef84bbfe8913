//! The audit trail's hash chain: the canonical encoding each record's hash covers, and the walk
//! that checks a chain and names its first broken link.
//!
//! A record's hash is SHA-256 over a domain tag and every field in a fixed order, each
//! length-prefixed (integers as 8 big-endian bytes), ending with the previous record's hash. So
//! a record's hash depends on its own sequence number and on every record before it: editing a
//! field, deleting a row or swapping two rows changes what the walk recomputes. The chain's
//! ends are kept beside it (`audit_chain`): where it starts (moved forward by pruning) and the
//! newest record, so a deleted newest row is found too.

use sha2::{Digest, Sha256};

use super::AuditRecord;
use crate::store::Revision;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash before the first record ever written.
pub const GENESIS: Hash = [0; 32];

/// Separates these hashes from every other use of SHA-256 (and from later encodings).
const DOMAIN: &[u8] = b"aurora.audit.v1\0";

/// The hash of `record` chained onto `prev` (its own `hash` field is not an input).
pub(crate) fn record_hash(record: &AuditRecord, prev: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(record.seq.to_be_bytes());
    hasher.update(record.committed_at_ms.to_be_bytes());
    hasher.update(record.revision.to_be_bytes());
    for text in [
        record.action.as_str(),
        record.target.as_str(),
        record.changes.as_str(),
        record.actor.as_str(),
        record.peer.as_str(),
        record.replica.as_str(),
    ] {
        hasher.update(u64::try_from(text.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(prev);
    hasher.finalize().into()
}

/// Where the stored chain starts and ends (`audit_chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEnds {
    /// The oldest retained record's sequence number (the next one when none is retained).
    pub first_seq: u64,
    /// The hash of the record before `first_seq` ([`GENESIS`] until something is pruned).
    pub anchor: Hash,
    /// The newest record's sequence number, 0 before the first.
    pub last_seq: u64,
    pub last_hash: Hash,
}

/// The first broken link the walk found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq} (revision {revision}) was altered: its content does not match its stored hash")]
    Altered { seq: u64, revision: Revision },
    #[error(
        "record {seq} does not follow the record before it: its previous-hash link does not match (a row was replaced or reordered)"
    )]
    Unlinked { seq: u64 },
    #[error("records {from} to {to} are missing: the chain jumps from {before} to {after} (deleted)", from = .expected, to = .found - 1, before = .expected - 1, after = .found)]
    Missing { expected: u64, found: u64 },
    #[error("record {seq} is for revision {revision} but the record before it is for revision {previous}: revision {missing} has no audit record", missing = .previous + 1)]
    RevisionGap { seq: u64, revision: Revision, previous: Revision },
    #[error("the chain ends at record {found} but its head says {expected}: records {from} to {expected} are missing (deleted)", from = .found + 1)]
    Truncated { expected: u64, found: u64 },
    #[error("the newest record {seq} does not match the chain head's hash (it was altered or replaced)")]
    HeadMismatch { seq: u64 },
    #[error(
        "the store is at revision {head} but the newest audit record is for revision {recorded}: the revisions after it have no audit record (records deleted)"
    )]
    Unrecorded { seq: u64, head: Revision, recorded: Revision },
    #[error("the chain head says records {first} to {last}, which is impossible (the head row was altered)")]
    BadEnds { first: u64, last: u64 },
}

impl ChainBreak {
    /// The sequence number of the record the break is at.
    pub fn seq(&self) -> u64 {
        match *self {
            ChainBreak::Altered { seq, .. }
            | ChainBreak::Unlinked { seq }
            | ChainBreak::RevisionGap { seq, .. }
            | ChainBreak::HeadMismatch { seq }
            | ChainBreak::Unrecorded { seq, .. } => seq,
            ChainBreak::Missing { expected, .. } => expected,
            ChainBreak::Truncated { found, .. } => found + 1,
            ChainBreak::BadEnds { first, .. } => first,
        }
    }
}

/// Walks records in `seq` order, one at a time, so a long chain is checked in bounded memory.
#[derive(Debug)]
pub(crate) struct Walk {
    ends: ChainEnds,
    next_seq: u64,
    prev_hash: Hash,
    prev_revision: Option<Revision>,
    checked: u64,
}

impl Walk {
    pub(crate) fn new(ends: ChainEnds) -> Result<Self, ChainBreak> {
        if ends.last_seq.saturating_add(1) < ends.first_seq {
            return Err(ChainBreak::BadEnds { first: ends.first_seq, last: ends.last_seq });
        }
        Ok(Walk { ends, next_seq: ends.first_seq, prev_hash: ends.anchor, prev_revision: None, checked: 0 })
    }

    /// Checks the next record.
    pub(crate) fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq > self.next_seq {
            return Err(ChainBreak::Missing { expected: self.next_seq, found: record.seq });
        }
        if record.seq < self.next_seq {
            // Not from an ordered read of unique numbers: the rows were renumbered.
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        if record_hash(record, &record.prev_hash) != record.hash {
            return Err(ChainBreak::Altered { seq: record.seq, revision: record.revision });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        if let Some(previous) = self.prev_revision {
            // Every revision commits exactly one record, so revisions advance by one.
            if record.revision != previous + 1 {
                return Err(ChainBreak::RevisionGap { seq: record.seq, revision: record.revision, previous });
            }
        }
        self.prev_hash = record.hash;
        self.prev_revision = Some(record.revision);
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// After the last record: the walk must end where the chain's head says, and (when it holds
    /// a record) at the store's head revision. Returns how many records were checked.
    pub(crate) fn finish_at(self, head: Revision) -> Result<u64, ChainBreak> {
        let last_revision = self.prev_revision;
        let seq = self.next_seq;
        let checked = self.finish()?;
        match last_revision {
            Some(recorded) if recorded != head => Err(ChainBreak::Unrecorded { seq, head, recorded }),
            _ => Ok(checked),
        }
    }

    fn finish(self) -> Result<u64, ChainBreak> {
        let found = self.next_seq - 1;
        if found < self.ends.last_seq {
            return Err(ChainBreak::Truncated { expected: self.ends.last_seq, found });
        }
        if found > self.ends.last_seq || self.prev_hash != self.ends.last_hash {
            return Err(ChainBreak::HeadMismatch { seq: found });
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> (Vec<AuditRecord>, ChainEnds) {
        let mut prev = GENESIS;
        let records: Vec<AuditRecord> = (1..=n)
            .map(|seq| {
                let mut record = AuditRecord {
                    seq,
                    committed_at_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0),
                    revision: seq + 10,
                    action: "key.create".into(),
                    target: format!("key-{seq}"),
                    changes: r#"{"name":"ci"}"#.into(),
                    actor: "master-key".into(),
                    peer: "127.0.0.1:5000".into(),
                    replica: "host:1:abcd".into(),
                    prev_hash: prev,
                    hash: GENESIS,
                };
                record.hash = record_hash(&record, &prev);
                prev = record.hash;
                record
            })
            .collect();
        let ends = ChainEnds { first_seq: 1, anchor: GENESIS, last_seq: n, last_hash: prev };
        (records, ends)
    }

    fn walk(records: &[AuditRecord], ends: ChainEnds) -> Result<u64, ChainBreak> {
        let mut walk = Walk::new(ends)?;
        for record in records {
            walk.check(record)?;
        }
        walk.finish()
    }

    #[test]
    fn an_intact_chain_verifies_and_an_empty_one_too() {
        let (records, ends) = chain(5);
        assert_eq!(walk(&records, ends), Ok(5));
        let (_, empty) = chain(0);
        assert_eq!(walk(&[], empty), Ok(0));
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_its_record() {
        let (records, ends) = chain(5);

        let mut edited = records.clone();
        edited[2].changes = r#"{"name":"evil"}"#.into();
        assert_eq!(walk(&edited, ends), Err(ChainBreak::Altered { seq: 3, revision: 13 }));

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(walk(&deleted, ends), Err(ChainBreak::Missing { expected: 2, found: 3 }));

        let truncated = &records[..4];
        assert_eq!(walk(truncated, ends), Err(ChainBreak::Truncated { expected: 5, found: 4 }));

        // Swapping two rows' contents (keeping the seq column in order) breaks their hashes.
        let mut swapped = records.clone();
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = AuditRecord { seq: 2, ..b };
        swapped[2] = AuditRecord { seq: 3, ..a };
        assert_eq!(walk(&swapped, ends).map_err(|e| e.seq()), Err(2));

        // A row rebuilt with a valid hash of its own but linked to the wrong predecessor.
        let mut relinked = records.clone();
        relinked[3].prev_hash = GENESIS;
        relinked[3].hash = record_hash(&relinked[3], &GENESIS);
        assert_eq!(walk(&relinked, ends), Err(ChainBreak::Unlinked { seq: 4 }));
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let (records, ends) = chain(5);
        let pruned = ChainEnds { first_seq: 3, anchor: records[1].hash, ..ends };
        assert_eq!(walk(&records[2..], pruned), Ok(3));
        let everything_pruned = ChainEnds { first_seq: 6, anchor: ends.last_hash, ..ends };
        assert_eq!(walk(&[], everything_pruned), Ok(0));
        // The anchor must be the pruned predecessor's hash.
        let wrong_anchor = ChainEnds { anchor: GENESIS, ..pruned };
        assert_eq!(walk(&records[2..], wrong_anchor), Err(ChainBreak::Unlinked { seq: 3 }));
    }

    #[test]
    fn a_missing_revision_is_a_gap() {
        let (mut records, _) = chain(3);
        records[2].revision += 1;
        records[2].hash = record_hash(&records[2], &records[2].prev_hash.clone());
        let ends = ChainEnds { first_seq: 1, anchor: GENESIS, last_seq: 3, last_hash: records[2].hash };
        assert_eq!(walk(&records, ends), Err(ChainBreak::RevisionGap { seq: 3, revision: 14, previous: 12 }));
    }
}
