//! The managed keys of a snapshot: compact to hold, cheap to change one key at a time.
//!
//! A million keys must fit in well under 200 MB and a one-key delta must not copy them all.
//! A persistent map gives the second but costs over 300 bytes a key; a flat hash map gives the
//! first but would be copied whole for every revision. So the table is both: a flat, immutable
//! `base` shared by every revision built on it, plus a small persistent `overlay` holding what
//! changed since (upserts, and tombstones for deletions). When the overlay grows past an eighth
//! of the base it is folded into a new base, which keeps lookups at two probes and the cost of
//! each change amortised O(1). Building a snapshot from scratch writes straight into the base.
//!
//! Rotated keys also answer to their previous secret while it is in grace: those few hashes
//! live beside the table in [`PreviousSecrets`], never in the per-key payload.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use aurora_core::KeyHash;
use nohash_hasher::NoHashHasher;

use super::ManagedKey;
use super::previous_secrets::PreviousSecrets;

/// Key hashes are SHA-256 digests, already uniformly random: no need to hash them again.
type NoHash = BuildHasherDefault<NoHashHasher<u64>>;

/// Below this many changes the overlay is never folded, whatever the size of the base.
const MIN_OVERLAY_TO_COMPACT: usize = 4096;

#[derive(Clone, Default)]
pub struct KeyTable {
    base: Arc<HashMap<KeyHash, ManagedKey, NoHash>>,
    /// Changes since `base` was built: `Some` is an upsert, `None` a deletion.
    overlay: imbl::GenericHashMap<KeyHash, Option<ManagedKey>, NoHash, imbl::shared_ptr::DefaultSharedPtr>,
    len: usize,
    /// Previous secrets in grace, each indexed to its key's current hash.
    previous: PreviousSecrets,
}

impl KeyTable {
    pub fn get(&self, hash: &KeyHash) -> Option<&ManagedKey> {
        match self.overlay.get(hash) {
            Some(change) => change.as_ref(),
            None => self.base.get(hash),
        }
    }

    /// The key a presented token's hash belongs to: its current secret, or its previous one
    /// while that is in grace at `now` (Unix seconds; read only for a previous secret).
    pub fn lookup(&self, hash: &KeyHash, now: impl FnOnce() -> i64) -> Option<&ManagedKey> {
        match self.get(hash) {
            Some(key) => Some(key),
            None => self.get(self.previous.current_for(hash, now)?),
        }
    }

    /// Sets (or, with `None`, clears) the previous secret of the key under `current`: its hash
    /// and the Unix second its grace ends.
    pub fn set_previous(&mut self, current: KeyHash, previous: Option<(KeyHash, i64)>) {
        if previous.is_some() || !self.previous.is_empty() {
            self.previous.set(current, previous);
        }
    }

    /// The previous secret of the key under `current`, as [`KeyTable::set_previous`] set it.
    pub fn previous_of(&self, current: &KeyHash) -> Option<(KeyHash, i64)> {
        self.previous.of_current(current)
    }

    pub fn contains_key(&self, hash: &KeyHash) -> bool {
        self.get(hash).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `additional` more keys at once, when the table can be written in place
    /// (a snapshot being built): growing by doubling would briefly hold two tables.
    pub fn reserve(&mut self, additional: usize) {
        if let Some(base) = self.exclusive_base() {
            base.reserve(additional);
        }
    }

    /// Inserts or replaces a key; returns the key it replaced.
    pub fn insert(&mut self, hash: KeyHash, key: ManagedKey) -> Option<ManagedKey> {
        let previous = self.get(&hash).cloned();
        if previous.is_none() {
            self.len += 1;
        }
        if let Some(base) = self.exclusive_base() {
            base.insert(hash, key);
        } else {
            self.overlay.insert(hash, Some(key));
            self.compact_if_large();
        }
        previous
    }

    /// Removes a key, and its previous secret with it; returns it if it was there. A hash that
    /// is a previous secret's stops that secret.
    pub fn remove(&mut self, hash: &KeyHash) -> Option<ManagedKey> {
        if !self.previous.is_empty() {
            self.previous.remove_current(hash);
            self.previous.remove_previous(hash);
        }
        let previous = self.get(hash).cloned()?;
        self.len -= 1;
        if let Some(base) = self.exclusive_base() {
            base.remove(hash);
        } else if self.base.contains_key(hash) {
            self.overlay.insert(*hash, None);
            self.compact_if_large();
        } else {
            self.overlay.remove(hash);
        }
        Some(previous)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&KeyHash, &ManagedKey)> {
        let unchanged = self.base.iter().filter(|(hash, _)| !self.overlay.contains_key(*hash));
        let changed = self.overlay.iter().filter_map(|(hash, key)| key.as_ref().map(|key| (hash, key)));
        unchanged.chain(changed)
    }

    /// The base, when no other revision shares it and nothing is layered on it: then it can be
    /// written in place (building a snapshot, or a table no request can see yet).
    fn exclusive_base(&mut self) -> Option<&mut HashMap<KeyHash, ManagedKey, NoHash>> {
        if self.overlay.is_empty() { Arc::get_mut(&mut self.base) } else { None }
    }

    fn compact_if_large(&mut self) {
        if self.overlay.len() < MIN_OVERLAY_TO_COMPACT.max(self.base.len() / 8) {
            return;
        }
        let mut base = HashMap::with_capacity_and_hasher(self.len, NoHash::default());
        base.extend(self.iter().map(|(hash, key)| (*hash, key.clone())));
        self.base = Arc::new(base);
        self.overlay = imbl::GenericHashMap::default();
    }
}

impl PartialEq for KeyTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.previous == other.previous
            && self.iter().all(|(hash, key)| other.get(hash) == Some(key))
    }
}

impl Eq for KeyTable {}

impl fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTable")
            .field("len", &self.len)
            .field("overlay", &self.overlay.len())
            .field("previous", &self.previous.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::KeyId;

    fn key(id: u8) -> ManagedKey {
        ManagedKey { id: KeyId([id; 16]), enabled: true, expires_at: None, allowed_providers: None, policy: None }
    }

    fn hash(i: u32) -> KeyHash {
        KeyHash::of(i.to_string())
    }

    #[test]
    fn revisions_share_the_base_and_never_see_each_others_changes() {
        let mut first = KeyTable::default();
        for i in 0..10 {
            assert_eq!(first.insert(hash(i), key(1)), None);
        }
        let mut second = first.clone();
        assert_eq!(second.insert(hash(3), key(2)), Some(key(1)));
        assert_eq!(second.remove(&hash(4)), Some(key(1)));
        assert_eq!(second.insert(hash(100), key(3)), None);
        assert_eq!(second.remove(&hash(100)), Some(key(3)));
        assert_eq!(second.remove(&hash(999)), None);

        assert_eq!(first.len(), 10);
        assert_eq!(first.get(&hash(3)), Some(&key(1)));
        assert!(first.contains_key(&hash(4)));
        assert_eq!(second.len(), 9);
        assert_eq!(second.get(&hash(3)), Some(&key(2)));
        assert!(!second.contains_key(&hash(4)) && !second.contains_key(&hash(100)));
        assert_eq!(second.iter().count(), 9);
        assert_ne!(first, second);
    }

    #[test]
    fn compaction_keeps_every_key() {
        let mut table = KeyTable::default();
        for i in 0..1000 {
            table.insert(hash(i), key(1));
        }
        let shared = table.clone();
        let mut expected: HashMap<KeyHash, ManagedKey> = shared.iter().map(|(h, k)| (*h, k.clone())).collect();
        // Enough changes to fold the overlay several times.
        for i in 0..20_000 {
            if i % 3 == 0 {
                table.remove(&hash(i % 1500));
                expected.remove(&hash(i % 1500));
            } else {
                table.insert(hash(i % 1500), key((i % 200) as u8));
                expected.insert(hash(i % 1500), key((i % 200) as u8));
            }
        }
        assert_eq!(table.len(), expected.len());
        assert_eq!(table.iter().count(), expected.len());
        assert!(expected.iter().all(|(h, k)| table.get(h) == Some(k)));
        assert_eq!(shared.len(), 1000, "the shared revision is untouched");
    }

    #[test]
    fn a_previous_secret_finds_its_key_until_the_grace_ends_and_goes_with_it() {
        let mut table = KeyTable::default();
        table.insert(hash(2), key(1));
        table.set_previous(hash(2), Some((hash(1), 100)));
        let shared = table.clone();
        assert_eq!(table.lookup(&hash(1), || 99), Some(&key(1)));
        assert_eq!(table.lookup(&hash(1), || 100), None);
        assert_eq!(table.lookup(&hash(2), || unreachable!("a current secret reads no clock")), Some(&key(1)));
        assert_eq!(table.len(), 1, "a previous secret is not a key");
        assert_eq!(table.iter().count(), 1);

        // Deleting the key stops both secrets.
        table.remove(&hash(2));
        assert_eq!(table.lookup(&hash(1), || 0), None);
        assert_eq!(table.previous_of(&hash(2)), None);
        assert_ne!(table, shared);
        assert_eq!(shared.lookup(&hash(1), || 0), Some(&key(1)), "the shared revision still has it");

        // An upsert without a previous secret drops the one it had.
        let mut table = shared.clone();
        table.insert(hash(2), key(3));
        table.set_previous(hash(2), None);
        assert_eq!(table.lookup(&hash(1), || 0), None);
        assert_eq!(table.lookup(&hash(2), || 0), Some(&key(3)));
    }
}
