//! Jobs filed by a hash of one of their fields (unique key, coalesce key), holding
//! only the job's id: the key itself is read from the job when a lookup compares.
//! Keeping a copy of the key in the index, as a `HashMap<Bytes, _>` does, took 56 to
//! 64 bytes a slot per index; an id and its hash take 16.

use std::hash::{BuildHasher, Hash};

use crate::job::JobId;
use crate::steady_table::SteadyTable;

/// Job ids by the hash of a key the engine derives from each job.
#[derive(Debug, Default)]
pub(crate) struct JobIndex {
    hasher: foldhash::fast::RandomState,
    table: SteadyTable<JobId>,
}

impl JobIndex {
    /// The hash `key` is filed under in this index.
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The first job filed under `hash` that `is_it` accepts.
    pub(crate) fn find(&self, hash: u64, mut is_it: impl FnMut(JobId) -> bool) -> Option<JobId> {
        self.table.find(hash, |&jid| is_it(jid)).copied()
    }

    /// Every job filed under `hash`, with perhaps a few others the caller must skip.
    pub(crate) fn candidates(&self, hash: u64) -> impl Iterator<Item = JobId> + '_ {
        self.table.iter_hash(hash).copied()
    }

    /// Files `jid` under `hash`.
    pub(crate) fn insert(&mut self, hash: u64, jid: JobId) {
        self.table.insert(hash, jid);
    }

    /// Takes `jid` out from under `hash`; returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, jid: JobId) -> bool {
        self.table.remove(hash, |&j| j == jid).is_some()
    }

    /// Every entry as `(hash, job)`, for the invariant checks.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, JobId)> + '_ {
        self.table.iter().map(|(h, &j)| (h, j))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Entries held without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Gives back the room of removed entries (see [`SteadyTable::shrink_to_fit`]).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit();
    }
}
