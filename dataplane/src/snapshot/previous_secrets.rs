//! Rotated-out secrets still in their grace period, indexed to the key that replaced them.
//!
//! Only rotated keys have an entry, so a snapshot of a million keys that were never rotated
//! pays nothing per key: [`ManagedKey`](super::ManagedKey) does not grow, and these two small
//! persistent maps stay empty. Each entry is indexed both ways: by the previous hash (what a
//! lookup presents) and by the current hash (what an upsert or a delete of the key names), so
//! a later change to the key replaces or drops its previous secret without a scan.
//!
//! The grace period's end is an absolute Unix second compared with the request's clock at
//! every lookup: it ends on time on every replica without a new revision, even while the
//! control plane is unreachable. Entries past their end are left in place (harmless, and gone
//! with the key's next change or the next snapshot, which no longer carries them).

use std::fmt;
use std::hash::BuildHasherDefault;

use aurora_core::KeyHash;
use nohash_hasher::NoHashHasher;

type NoHash = BuildHasherDefault<NoHashHasher<u64>>;
type Map<V> = imbl::GenericHashMap<KeyHash, V, NoHash, imbl::shared_ptr::DefaultSharedPtr>;

/// A previous secret: the hash of the key's current secret and when it stops (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PreviousSecret {
    pub(super) current: KeyHash,
    pub(super) expires_at: i64,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct PreviousSecrets {
    by_previous: Map<PreviousSecret>,
    /// The current hash → its previous hash.
    by_current: Map<KeyHash>,
}

impl PreviousSecrets {
    /// The key whose previous secret hashes to `hash`, if that secret is still in grace at `now`
    /// (Unix seconds, read only when there is an entry).
    pub(super) fn current_for(&self, hash: &KeyHash, now: impl FnOnce() -> i64) -> Option<&KeyHash> {
        let entry = self.by_previous.get(hash)?;
        (now() < entry.expires_at).then_some(&entry.current)
    }

    /// Records that the key now under `current` has `previous` (hash, end of grace) or none,
    /// replacing whatever previous secret it had.
    pub(super) fn set(&mut self, current: KeyHash, previous: Option<(KeyHash, i64)>) {
        self.remove_current(&current);
        if let Some((hash, expires_at)) = previous {
            // A hash indexed to another key (which cannot happen with random secrets) is moved.
            self.remove_previous(&hash);
            self.by_previous.insert(hash, PreviousSecret { current, expires_at });
            self.by_current.insert(current, hash);
        }
    }

    /// Forgets the previous secret of the key under `current` (the key was deleted or moved to
    /// a new hash by a rotation).
    pub(super) fn remove_current(&mut self, current: &KeyHash) {
        if let Some(previous) = self.by_current.remove(current) {
            self.by_previous.remove(&previous);
        }
    }

    /// Forgets `previous` itself (a delete that names a previous hash).
    pub(super) fn remove_previous(&mut self, previous: &KeyHash) {
        if let Some(entry) = self.by_previous.remove(previous) {
            self.by_current.remove(&entry.current);
        }
    }

    /// The previous secret of the key under `current`.
    pub(super) fn of_current(&self, current: &KeyHash) -> Option<(KeyHash, i64)> {
        let previous = self.by_current.get(current)?;
        self.by_previous.get(previous).map(|entry| (*previous, entry.expires_at))
    }

    pub(super) fn len(&self) -> usize {
        self.by_previous.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_previous.is_empty()
    }
}

impl fmt::Debug for PreviousSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreviousSecrets").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(name: &str) -> KeyHash {
        KeyHash::of(name)
    }

    #[test]
    fn a_previous_secret_is_accepted_until_its_second() {
        let mut previous = PreviousSecrets::default();
        previous.set(hash("new"), Some((hash("old"), 100)));
        assert_eq!(previous.current_for(&hash("old"), || 99), Some(&hash("new")));
        assert_eq!(previous.current_for(&hash("old"), || 100), None, "the grace ends at its second");
        assert_eq!(previous.current_for(&hash("new"), || 0), None, "a current hash is not a previous one");
        let mut clock_read = false;
        assert_eq!(
            previous.current_for(&hash("unknown"), || {
                clock_read = true;
                0
            }),
            None
        );
        assert!(!clock_read, "no entry, no clock");
    }

    #[test]
    fn setting_removing_and_replacing_keep_both_indexes_in_step() {
        let mut previous = PreviousSecrets::default();
        previous.set(hash("b"), Some((hash("a"), 100)));
        let shared = previous.clone();
        // A second rotation: the key moves from b to c; a's entry goes with b's.
        previous.remove_current(&hash("b"));
        previous.set(hash("c"), Some((hash("b"), 200)));
        assert_eq!(previous.len(), 1);
        assert_eq!(previous.current_for(&hash("a"), || 0), None);
        assert_eq!(previous.current_for(&hash("b"), || 0), Some(&hash("c")));
        assert_eq!(previous.of_current(&hash("c")), Some((hash("b"), 200)));
        // An upsert without a previous secret (its grace ended) drops it.
        previous.set(hash("c"), None);
        assert!(previous.is_empty() && previous.of_current(&hash("c")).is_none());
        // A delete that names the previous hash.
        previous.set(hash("e"), Some((hash("d"), 5)));
        previous.remove_previous(&hash("d"));
        assert!(previous.is_empty() && previous.of_current(&hash("e")).is_none());
        assert_eq!(shared.current_for(&hash("a"), || 0), Some(&hash("b")), "other revisions are untouched");
    }
}
