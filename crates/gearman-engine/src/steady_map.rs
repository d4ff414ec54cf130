//! A hash map on a [`SteadyTable`], for indexes that grow with the number of jobs.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use crate::steady_table::SteadyTable;

/// A map from keys to values whose growth never rehashes every entry in one insert.
#[derive(Debug, Default)]
pub(crate) struct SteadyMap<K, V> {
    hasher: foldhash::fast::RandomState,
    table: SteadyTable<(K, V)>,
}

impl<K: Hash + Eq, V> SteadyMap<K, V> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Entries the map holds without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The value of `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.table.find(self.hasher.hash_one(key), |e| e.0.borrow() == key).map(|e| &e.1)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        if let Some(e) = self.table.find_mut(hash, |e| e.0 == key) {
            return Some(std::mem::replace(&mut e.1, value));
        }
        self.table.insert(hash, (key, value));
        None
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.table.remove(self.hasher.hash_one(key), |e| e.0.borrow() == key).map(|e| e.1)
    }

    /// Gives back the room of removed entries (see [`SteadyTable::shrink_to_fit`]).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::SteadyMap;

    #[test]
    fn insert_replaces_and_borrowed_keys_find_owned_ones() {
        let mut map = SteadyMap::<Vec<u8>, u8>::default();
        assert_eq!(map.insert(b"name".to_vec(), 1), None);
        assert_eq!(map.insert(b"name".to_vec(), 2), Some(1));
        assert_eq!(map.get(&b"name"[..]), Some(&2));
        assert_eq!(map.len(), 1);
        assert_eq!(map.remove(&b"name"[..]), Some(2));
        assert_eq!(map.remove(&b"name"[..]), None);
        assert_eq!(map.len(), 0);
    }
}
