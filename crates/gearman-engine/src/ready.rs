//! The functions that have queued jobs, so that a worker registered for thousands of
//! functions finds its work without looking at every one of them.

use crate::function::FunctionId;

/// Marks a function as absent from [`ReadySet::members`].
const ABSENT: usize = usize::MAX;

/// A set of function ids with O(1) insert, remove and membership, and iteration in
/// no particular order. Function ids are slab keys, so they are small and dense and a
/// plain vector can map each to its place.
#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    members: Vec<FunctionId>,
    /// `position[fid]`: where `fid` sits in `members`, or [`ABSENT`].
    position: Vec<usize>,
}

impl ReadySet {
    /// Number of functions in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The functions in the set, in no particular order.
    #[cfg(test)]
    pub(crate) fn members(&self) -> &[FunctionId] {
        &self.members
    }

    /// Whether `fid` is in the set.
    pub(crate) fn contains(&self, fid: FunctionId) -> bool {
        self.position.get(fid).is_some_and(|&p| p != ABSENT)
    }

    /// Adds `fid`; returns whether it was absent.
    pub(crate) fn insert(&mut self, fid: FunctionId) -> bool {
        if self.contains(fid) {
            return false;
        }
        if self.position.len() <= fid {
            self.position.resize(fid + 1, ABSENT);
        }
        self.position[fid] = self.members.len();
        self.members.push(fid);
        true
    }

    /// Removes `fid`; returns whether it was present.
    pub(crate) fn remove(&mut self, fid: FunctionId) -> bool {
        let Some(&at) = self.position.get(fid).filter(|&&p| p != ABSENT) else { return false };
        self.members.swap_remove(at);
        if let Some(&moved) = self.members.get(at) {
            self.position[moved] = at;
        }
        self.position[fid] = ABSENT;
        true
    }

    /// Gives back room after a burst of many functions (see `Engine::compact`);
    /// returns whether it did (only when mostly empty, as the engine's other indexes).
    pub(crate) fn shrink(&mut self) -> bool {
        let cap = self.members.capacity().max(self.position.capacity());
        if cap <= 1024 || self.members.len().saturating_mul(4) >= cap {
            return false;
        }
        let before = self.members.capacity() + self.position.capacity();
        self.members.shrink_to_fit();
        let last = self.position.iter().rposition(|&p| p != ABSENT).map_or(0, |i| i + 1);
        self.position.truncate(last);
        self.position.shrink_to_fit();
        self.members.capacity() + self.position.capacity() < before
    }
}

#[cfg(test)]
mod tests {
    use super::ReadySet;
    use std::collections::BTreeSet;

    #[test]
    fn insert_remove_contains_agree_with_a_model() {
        let mut set = ReadySet::default();
        let mut model = BTreeSet::new();
        // A fixed pseudo-random walk over 50 ids: inserts, repeats, removes of absent ids.
        let mut x: u64 = 12345;
        for _ in 0..5000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let fid = (x >> 33) as usize % 50;
            if (x >> 20) & 1 == 0 {
                set.insert(fid);
                model.insert(fid);
            } else {
                set.remove(fid);
                model.remove(&fid);
            }
            assert_eq!(set.len(), model.len());
            let got: BTreeSet<usize> = set.members().iter().copied().collect();
            assert_eq!(got, model);
            for probe in 0..55 {
                assert_eq!(set.contains(probe), model.contains(&probe), "fid {probe}");
            }
        }
        for fid in 0..50 {
            set.remove(fid);
        }
        assert_eq!(set.len(), 0);
        set.shrink();
        assert!(!set.contains(3));
        set.insert(3);
        assert!(set.contains(3));
    }
}
