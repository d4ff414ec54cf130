//! Storage for values by a small integer key that grows a page at a time.
//!
//! The `slab` crate keeps its entries in one `Vec`, which doubles when full: the
//! insert that crosses a power of two copies every entry. For the engine's jobs, with
//! a million queued that was one submit copying 16 MB under the engine lock (see
//! `chunked_deque.rs` for what that costs). Here entries live in pages of a fixed
//! size, so an insert allocates at most one page and never moves an entry; only the
//! short list of pages doubles. A lookup costs one more load (the page), which stays
//! in cache.

/// log2 of the entries per page.
const PAGE_BITS: u32 = 12;
/// Entries per page: 64 KiB of 16-byte slots.
const PAGE: usize = 1 << PAGE_BITS;
/// End of the free list.
const NONE: usize = usize::MAX;

/// One entry: a value, or a link in the list of free keys.
#[derive(Debug)]
enum Slot<T> {
    Vacant(usize),
    Occupied(T),
}

/// Values by key, keys reused after removal (most recently freed first), as `slab`.
#[derive(Debug)]
pub(crate) struct PagedSlab<T> {
    /// Every page but the last is full; the last grows by doubling to [`PAGE`].
    pages: Vec<Vec<Slot<T>>>,
    /// First free key, or [`NONE`].
    next_free: usize,
    len: usize,
}

impl<T> Default for PagedSlab<T> {
    fn default() -> Self {
        PagedSlab { pages: Vec::new(), next_free: NONE, len: 0 }
    }
}

impl<T> PagedSlab<T> {
    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries, vacant ones included, held without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.pages.iter().map(Vec::capacity).sum()
    }

    fn slot(&self, key: usize) -> Option<&Slot<T>> {
        self.pages.get(key >> PAGE_BITS)?.get(key & (PAGE - 1))
    }

    fn slot_mut(&mut self, key: usize) -> Option<&mut Slot<T>> {
        self.pages.get_mut(key >> PAGE_BITS)?.get_mut(key & (PAGE - 1))
    }

    /// The value at `key`.
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.slot(key)? {
            Slot::Occupied(v) => Some(v),
            Slot::Vacant(_) => None,
        }
    }

    /// The value at `key`, to change.
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.slot_mut(key)? {
            Slot::Occupied(v) => Some(v),
            Slot::Vacant(_) => None,
        }
    }

    /// Whether `key` holds a value.
    pub(crate) fn contains(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        let key = self.next_free;
        if let Some(slot) = self.slot_mut(key) {
            if let Slot::Vacant(next) = *slot {
                *slot = Slot::Occupied(value);
                self.next_free = next;
                return key;
            }
        }
        // The free list is empty: a new key at the end.
        self.next_free = NONE;
        if self.pages.last().is_none_or(|page| page.len() == PAGE) {
            // A slab that filled a page holds many values: the next page comes whole.
            let page = if self.pages.is_empty() { Vec::new() } else { Vec::with_capacity(PAGE) };
            self.pages.push(page);
        }
        let p = self.pages.len() - 1;
        let page = &mut self.pages[p];
        page.push(Slot::Occupied(value));
        (p << PAGE_BITS) | (page.len() - 1)
    }

    /// Takes the value at `key` out, freeing the key.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let next = self.next_free;
        let slot = self.slot_mut(key)?;
        if matches!(slot, Slot::Vacant(_)) {
            return None;
        }
        let Slot::Occupied(value) = std::mem::replace(slot, Slot::Vacant(next)) else { return None };
        self.next_free = key;
        self.len -= 1;
        Some(value)
    }

    /// The values with their keys, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter().enumerate().filter_map(move |(i, slot)| match slot {
                Slot::Occupied(v) => Some(((p << PAGE_BITS) | i, v)),
                Slot::Vacant(_) => None,
            })
        })
    }

    /// Gives back the pages behind the last value, and the unused end of the last
    /// page kept. Keys in use stay valid. The engine calls this every few seconds
    /// under its lock, so it costs what it frees: it looks at the vacant tail only,
    /// and rebuilds the free list (a pass over the kept entries) only when it cut
    /// keys off, which happens once after a drain.
    pub(crate) fn shrink_to_fit(&mut self) {
        let slots: usize = self.pages.iter().map(Vec::len).sum();
        let end = self.end_of_values();
        if end < slots {
            let kept_pages = end.div_ceil(PAGE);
            self.pages.truncate(kept_pages);
            if let Some(last) = self.pages.last_mut() {
                last.truncate(end - ((kept_pages - 1) << PAGE_BITS));
            }
            self.rebuild_free_list();
        }
        if let Some(last) = self.pages.last_mut() {
            last.shrink_to_fit();
        }
        self.pages.shrink_to_fit();
    }

    /// One past the highest key holding a value, found from the back.
    fn end_of_values(&self) -> usize {
        for (p, page) in self.pages.iter().enumerate().rev() {
            if let Some(i) = page.iter().rposition(|slot| matches!(slot, Slot::Occupied(_))) {
                return (p << PAGE_BITS) + i + 1;
            }
        }
        0
    }

    /// Links every vacant key, lowest first.
    fn rebuild_free_list(&mut self) {
        self.next_free = NONE;
        for (p, page) in self.pages.iter_mut().enumerate().rev() {
            for (i, slot) in page.iter_mut().enumerate().rev() {
                if let Slot::Vacant(next) = slot {
                    *next = self.next_free;
                    self.next_free = (p << PAGE_BITS) | i;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{PagedSlab, PAGE};

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        InsertMany(u16),
        Remove(usize),
        RemoveRange(usize, u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Insert),
            1 => (0..6000u16).prop_map(Op::InsertMany),
            3 => (0..10_000usize).prop_map(Op::Remove),
            1 => (0..10_000usize, 0..6000u16).prop_map(|(k, n)| Op::RemoveRange(k, n)),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// Keys stay valid and values stay put whatever is inserted, removed and
        /// shrunk; a key is never handed out twice while in use.
        #[test]
        fn behaves_as_a_map_of_its_keys(ops in proptest::collection::vec(op(), 1..120)) {
            let (mut s, mut model) = (PagedSlab::default(), BTreeMap::new());
            for op in ops {
                match op {
                    Op::Insert(v) => {
                        let k = s.insert(v);
                        prop_assert!(model.insert(k, v).is_none(), "key {} reused while in use", k);
                    }
                    Op::InsertMany(n) => for v in 0..u32::from(n) {
                        let k = s.insert(v);
                        prop_assert!(model.insert(k, v).is_none(), "key {} reused while in use", k);
                    },
                    Op::Remove(k) => prop_assert_eq!(s.remove(k), model.remove(&k)),
                    Op::RemoveRange(k, n) => for k in k..k + usize::from(n) {
                        prop_assert_eq!(s.remove(k), model.remove(&k));
                    },
                    Op::Shrink => s.shrink_to_fit(),
                }
                prop_assert_eq!(s.len(), model.len());
            }
            prop_assert!(s.iter().map(|(k, &v)| (k, v)).eq(model.iter().map(|(&k, &v)| (k, v))));
            for (&k, &v) in &model {
                prop_assert_eq!(s.get(k), Some(&v));
                prop_assert!(s.contains(k));
            }
        }
    }

    #[test]
    fn keys_are_dense_and_reused() {
        let mut s = PagedSlab::default();
        let keys: Vec<usize> = (0..3 * PAGE as u32 + 3).map(|v| s.insert(v)).collect();
        assert!(keys.iter().copied().eq(0..3 * PAGE + 3));
        assert_eq!(s.remove(PAGE + 1), Some(PAGE as u32 + 1));
        assert_eq!(s.remove(PAGE + 1), None);
        assert_eq!(s.insert(7), PAGE + 1, "the freed key comes back first");
        assert_eq!(s.get(PAGE + 1), Some(&7));
        assert_eq!(s.get_mut(3 * PAGE + 3), None);
    }

    #[test]
    fn a_drained_slab_gives_its_pages_back() {
        let mut s = PagedSlab::default();
        for v in 0..5 * PAGE {
            s.insert(v);
        }
        for k in 10..5 * PAGE {
            s.remove(k);
        }
        s.shrink_to_fit();
        assert!(s.capacity() <= PAGE, "capacity {}", s.capacity());
        assert_eq!(s.get(9), Some(&9));
        assert_eq!(s.insert(1), 10, "keys after the kept ones are handed out again");
        for k in 0..=10 {
            s.remove(k);
        }
        s.shrink_to_fit();
        assert_eq!(s.capacity(), 0);
    }

    #[test]
    fn shrinking_with_the_last_key_in_use_changes_nothing() {
        let mut s = PagedSlab::default();
        for v in 0..3 * PAGE {
            s.insert(v);
        }
        for k in 0..2 * PAGE {
            s.remove(k);
        }
        let capacity = s.capacity();
        s.shrink_to_fit();
        assert_eq!(s.capacity(), capacity, "no page behind the last value to give back");
        assert_eq!(s.insert(0), 2 * PAGE - 1, "the free list was kept: last freed first");
        assert_eq!(s.get(3 * PAGE - 1), Some(&(3 * PAGE - 1)));
    }
}
