//! A FIFO queue that grows a chunk at a time.
//!
//! A `VecDeque` doubles when it is full: the push that crosses a power of two copies
//! every entry into a new buffer. The engine keeps an entry per queued job in its
//! function queues and its sequence window, so with a million jobs queued that one
//! submit copied 16 MB under the engine lock (20 to 65 ms with jemalloc, which copies
//! where glibc remaps; `examples/stall.rs`) while every connection waited. Here the
//! entries live in chunks of at most [`CHUNK`]: a push copies at most one chunk's
//! entries, a pop frees at most one chunk, and only the short list of chunks doubles.

use std::collections::VecDeque;

/// Entries per chunk. A power of two, so indexing is a shift and a mask; small enough
/// that growing a chunk copies a few kilobytes, large enough that a million entries
/// need only a thousand chunks.
pub(crate) const CHUNK: usize = 1024;

/// A FIFO queue of chunks. Every chunk but the last holds [`CHUNK`] entries, the
/// first counting those already popped (`head` of them), which is what makes
/// [`ChunkedDeque::get`] a shift and a mask and the length a sum. Popped entries stay
/// in place until their chunk goes, so entries are `Copy`: nothing needs dropping.
#[derive(Debug)]
pub(crate) struct ChunkedDeque<T> {
    chunks: VecDeque<Vec<T>>,
    /// Entries of the first chunk already popped.
    head: usize,
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> Self {
        ChunkedDeque { chunks: VecDeque::new(), head: 0 }
    }
}

impl<T: Copy> ChunkedDeque<T> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.chunks.back().map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len() - self.head)
    }

    /// Whether the queue holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `value` at the back.
    pub(crate) fn push_back(&mut self, value: T) {
        let single = self.chunks.len() == 1;
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            // A short queue that went round its only chunk: move its entries to the
            // front (fewer than half a chunk) rather than start a second chunk, so
            // that a queue that never holds many keeps one small buffer.
            Some(_) if single && self.head >= CHUNK / 2 => {
                self.drop_popped_of_single_chunk();
                self.push_back(value);
            }
            _ => {
                // A queue that filled a chunk is a long one: its next chunk is
                // allocated whole rather than grown from empty.
                let mut chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK) };
                chunk.push(value);
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Removes and returns the front entry.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let single = self.chunks.len() == 1;
        let first = self.chunks.front_mut()?;
        let value = *first.get(self.head)?;
        self.head += 1;
        if self.head == first.len() {
            if single {
                // Empty: keep the one buffer for the next push, as a VecDeque would.
                first.clear();
            } else {
                self.chunks.pop_front();
            }
            self.head = 0;
        }
        Some(value)
    }

    /// The front entry.
    pub(crate) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// The entry `i` places behind the front.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        // Past the back, the last chunk's length answers None.
        let at = self.head.checked_add(i)?;
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
    }

    /// The entry `i` places behind the front, to change.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let at = self.head.checked_add(i)?;
        self.chunks.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
    }

    /// Entries the queue holds without allocating (popped ones still in place count).
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    /// Gives back the memory of empty and partly filled chunks.
    pub(crate) fn shrink_to_fit(&mut self) {
        if self.is_empty() {
            *self = ChunkedDeque::default();
            return;
        }
        if self.chunks.len() == 1 {
            self.drop_popped_of_single_chunk();
        }
        // Only the last chunk can have room to spare.
        if let Some(last) = self.chunks.back_mut() {
            last.shrink_to_fit();
        }
        self.chunks.shrink_to_fit();
    }

    /// In a queue of one chunk, moves the entries over the popped ones (which are
    /// fewer than [`CHUNK`], so the copy is bounded).
    fn drop_popped_of_single_chunk(&mut self) {
        if let Some(only) = self.chunks.front_mut() {
            only.drain(..self.head);
            self.head = 0;
        }
    }
}

/// The entries, front first.
impl<'a, T: Copy> IntoIterator for &'a ChunkedDeque<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Skip<std::iter::Flatten<std::collections::vec_deque::Iter<'a, Vec<T>>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten().skip(self.head)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::{ChunkedDeque, CHUNK};

    /// An operation on both queues.
    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        PushMany(u16),
        PopMany(u16),
        Set(usize, u32),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (0..3000u16).prop_map(Op::PushMany),
            1 => (0..3000u16).prop_map(Op::PopMany),
            2 => (0..5000usize, any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// Whatever the operations, the chunked queue answers as a VecDeque would.
        #[test]
        fn behaves_as_a_vecdeque(ops in proptest::collection::vec(op(), 1..200)) {
            let (mut q, mut model) = (ChunkedDeque::default(), VecDeque::new());
            for op in ops {
                match op {
                    Op::Push(v) => { q.push_back(v); model.push_back(v); }
                    Op::Pop => prop_assert_eq!(q.pop_front(), model.pop_front()),
                    Op::PushMany(n) => for v in 0..u32::from(n) { q.push_back(v); model.push_back(v); },
                    Op::PopMany(n) => for _ in 0..n { prop_assert_eq!(q.pop_front(), model.pop_front()); },
                    Op::Set(i, v) => {
                        prop_assert_eq!(q.get_mut(i).map(|s| { *s = v; }), model.get_mut(i).map(|s| { *s = v; }));
                    }
                    Op::Shrink => q.shrink_to_fit(),
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.is_empty(), model.is_empty());
                prop_assert_eq!(q.front(), model.front());
                prop_assert!(q.capacity() >= q.len());
                for i in [0, q.len() / 2, q.len().saturating_sub(1), q.len(), q.len() + CHUNK] {
                    prop_assert_eq!(q.get(i), model.get(i));
                }
            }
            prop_assert!((&q).into_iter().eq(model.iter()));
        }
    }

    #[test]
    fn a_long_queue_never_holds_more_than_two_chunks_of_slack() {
        let mut q = ChunkedDeque::default();
        for v in 0..10 * CHUNK + 7 {
            q.push_back(v);
        }
        for _ in 0..3 * CHUNK + 5 {
            q.pop_front();
        }
        assert!(q.capacity() <= q.len() + 2 * CHUNK, "capacity {} for {}", q.capacity(), q.len());
        while q.pop_front().is_some() {}
        assert!(q.capacity() <= CHUNK, "an emptied queue keeps one chunk at most: {}", q.capacity());
        q.shrink_to_fit();
        assert_eq!(q.capacity(), 0);
    }

    #[test]
    fn a_short_queue_that_never_empties_keeps_one_small_buffer() {
        let mut q = ChunkedDeque::default();
        for v in 0..10u32 {
            q.push_back(v);
        }
        for v in 10..10 * CHUNK as u32 {
            q.push_back(v);
            assert_eq!(q.pop_front(), Some(v - 10));
        }
        assert_eq!(q.len(), 10);
        assert_eq!(q.chunks.len(), 1, "went round its one chunk");
        assert!(q.capacity() <= CHUNK, "capacity {}", q.capacity());
        assert!((&q).into_iter().copied().eq(10 * CHUNK as u32 - 10..10 * CHUNK as u32));
    }
}
