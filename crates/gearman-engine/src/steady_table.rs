//! A hash table that grows without stopping the engine.
//!
//! A standard hash table doubles in one go: every entry is rehashed into the new table
//! inside the insert that crossed the load limit. For the engine's per-job indexes that
//! insert runs under the engine lock, and with a million unique jobs queued it took
//! 0.6 s (1.3 s at 1.8M; `examples/stall.rs`): every connection of the server stood
//! still meanwhile. Here a full table is set aside as `old` and a new one twice its
//! size takes the inserts, while each insert moves the entries of a few of the old
//! table's buckets across. Lookups try both tables until the old one is empty. Each
//! entry keeps its hash, so moving it never looks at the item (for a job index, that
//! look was a cache miss per entry).

use hashbrown::HashTable;

/// Buckets of the old table moved per insert. Any rate above 8/7 finishes the move
/// before the new table, sized for twice the entries, can fill up; two keeps the
/// added cost of an insert small and the time with two tables short.
pub(crate) const BUCKETS_MOVED_PER_INSERT: usize = 2;

/// Smallest table allocated on growth.
const MIN_CAPACITY: usize = 16;

/// An item with the hash it is filed under.
#[derive(Debug)]
struct Hashed<T> {
    hash: u64,
    item: T,
}

/// Items filed by a hash the caller computes; several may share a hash (and be equal).
#[derive(Debug)]
pub(crate) struct SteadyTable<T> {
    /// Where inserts go.
    table: HashTable<Hashed<T>>,
    /// The table before the last growth; empty when no move is under way.
    old: HashTable<Hashed<T>>,
    /// Next bucket of `old` to move.
    cursor: usize,
}

impl<T> Default for SteadyTable<T> {
    fn default() -> Self {
        SteadyTable { table: HashTable::new(), old: HashTable::new(), cursor: 0 }
    }
}

impl<T> SteadyTable<T> {
    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.table.len() + self.old.len()
    }

    /// Items the table holds without allocating (both tables while a move is under way).
    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity() + self.old.capacity()
    }

    /// The first item filed under `hash` that `eq` accepts.
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        let mut eq = |h: &Hashed<T>| eq(&h.item);
        self.table.find(hash, &mut eq).or_else(|| self.old.find(hash, eq)).map(|h| &h.item)
    }

    /// The first item filed under `hash` that `eq` accepts, to change.
    pub(crate) fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let mut eq = |h: &Hashed<T>| eq(&h.item);
        match self.table.find_mut(hash, &mut eq) {
            Some(h) => Some(&mut h.item),
            None => self.old.find_mut(hash, eq).map(|h| &mut h.item),
        }
    }

    /// Every item filed under `hash` (and perhaps a few others: hashes are compared by
    /// their top bits only).
    pub(crate) fn iter_hash(&self, hash: u64) -> impl Iterator<Item = &T> {
        self.table.iter_hash(hash).chain(self.old.iter_hash(hash)).map(|h| &h.item)
    }

    /// Every item with its hash, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.table.iter().chain(self.old.iter()).map(|h| (h.hash, &h.item))
    }

    /// Removes the first item filed under `hash` that `eq` accepts.
    pub(crate) fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        let mut eq = |h: &Hashed<T>| eq(&h.item);
        let found = match self.table.find_entry(hash, &mut eq) {
            Ok(e) => Some(e.remove().0),
            Err(_) => self.old.find_entry(hash, eq).ok().map(|e| e.remove().0),
        };
        found.map(|h| h.item)
    }

    /// Files `item` under `hash`, beside any items already there.
    pub(crate) fn insert(&mut self, hash: u64, item: T) -> &mut T {
        self.move_some(BUCKETS_MOVED_PER_INSERT);
        if self.table.len() == self.table.capacity() {
            self.grow();
        }
        &mut self.table.insert_unique(hash, Hashed { hash, item }, |h| h.hash).into_mut().item
    }

    /// Gives back the room of removed items. Finishes a move first, so it costs as
    /// much as the table has items: the engine calls it only when the table is mostly
    /// empty (`Engine::compact`).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.finish_move();
        self.table.shrink_to_fit(|h| h.hash);
    }

    /// Sets the full table aside and starts a new one twice its size. A move still
    /// under way (only possible if removals and inserts outran it) is finished first.
    fn grow(&mut self) {
        self.finish_move();
        if self.table.len() < self.table.capacity() {
            return;
        }
        let bigger = HashTable::with_capacity((self.table.len() * 2).max(MIN_CAPACITY));
        self.old = std::mem::replace(&mut self.table, bigger);
        self.cursor = 0;
    }

    /// Moves the items of up to `buckets` buckets of the old table into the new one.
    fn move_some(&mut self, buckets: usize) {
        if self.old.is_empty() {
            // Removals may have emptied it before the move reached its end.
            if self.old.capacity() > 0 {
                self.old = HashTable::new();
                self.cursor = 0;
            }
            return;
        }
        let end = self.cursor.saturating_add(buckets).min(self.old.num_buckets());
        for index in self.cursor..end {
            if let Ok(entry) = self.old.get_bucket_entry(index) {
                let (moving, _) = entry.remove();
                self.table.insert_unique(moving.hash, moving, |h| h.hash);
            }
        }
        self.cursor = end;
        if self.old.is_empty() || self.cursor == self.old.num_buckets() {
            self.old = HashTable::new();
            self.cursor = 0;
        }
    }

    fn finish_move(&mut self) {
        self.move_some(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::{SteadyTable, BUCKETS_MOVED_PER_INSERT};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A key's hash, deliberately weak so that different keys share hashes.
    fn hash(key: u16) -> u64 {
        u64::from(key % 1024).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys from a range wide enough that the table grows through several moves.
        prop_oneof![
            8 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 4096, v)),
            4 => any::<u16>().prop_map(|k| Op::Remove(k % 4096)),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// Used as a map (insert only when absent, the engine's way), it agrees with one.
        #[test]
        fn agrees_with_a_std_hash_map(ops in proptest::collection::vec(op(), 1..3000)) {
            let mut table = SteadyTable::<(u16, u32)>::default();
            let mut model = HashMap::<u16, u32>::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        match table.find_mut(hash(k), |e| e.0 == k) {
                            Some(e) => e.1 = v,
                            None => { table.insert(hash(k), (k, v)); }
                        }
                        model.insert(k, v);
                    }
                    Op::Remove(k) => {
                        let got = table.remove(hash(k), |e| e.0 == k).map(|e| e.1);
                        prop_assert_eq!(got, model.remove(&k));
                    }
                    Op::Shrink => table.shrink_to_fit(),
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(table.find(hash(*k), |e| e.0 == *k).map(|e| e.1), Some(*v));
                prop_assert!(table.iter_hash(hash(*k)).any(|e| e == &(*k, *v)));
            }
            let mut listed: Vec<_> = table.iter().map(|(h, &e)| { assert_eq!(h, hash(e.0)); e }).collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            listed.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
        }
    }

    #[test]
    fn no_insert_moves_more_than_a_few_buckets() {
        let mut table = SteadyTable::<u64>::default();
        let mut growths = 0;
        for k in 0..300_000u64 {
            let (capacity_before, old_before) = (table.table.capacity(), table.old.len());
            table.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k);
            if table.table.capacity() != capacity_before {
                // A growth: the full table was set aside whole (not rehashed), the move
                // before it over or finished by its last few buckets in this insert.
                growths += 1;
                assert_eq!(table.old.capacity(), capacity_before, "the table was resized at once at {k}");
                assert!(
                    old_before <= BUCKETS_MOVED_PER_INSERT,
                    "growth at {k} with {old_before} left to move"
                );
            } else {
                let moved = old_before - table.old.len();
                assert!(moved <= BUCKETS_MOVED_PER_INSERT, "insert of {k} moved {moved} items");
            }
        }
        assert!(growths >= 10, "300k inserts went through {growths} growths");
        assert_eq!(table.len(), 300_000);
        for k in 0..300_000u64 {
            assert_eq!(table.find(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), |&x| x == k), Some(&k));
        }
    }

    #[test]
    fn equal_items_under_one_hash_are_all_kept() {
        let mut table = SteadyTable::<u8>::default();
        for _ in 0..100 {
            table.insert(7, 1);
        }
        assert_eq!(table.iter_hash(7).count(), 100);
        assert_eq!(table.remove(7, |&x| x == 1), Some(1));
        assert_eq!(table.len(), 99);
    }
}
