//! Live jobs by sequence number, the number in their handle.

use crate::chunked_deque::ChunkedDeque;
use crate::engine::HashMap;
use crate::job::JobId;

/// An empty window slot (no live job has that sequence number).
const NONE: u32 = u32::MAX;

/// The window may hold this many slots per live job in it before old ones move out.
const MAX_SLOTS_PER_JOB: usize = 4;

/// Windows smaller than this are never trimmed for sparseness.
const MIN_TRIM_SLOTS: usize = 1024;

/// Jobs by sequence number. Sequence numbers are handed out in increasing order, and
/// jobs mostly finish in about the order they came, so the recent ones sit in a dense
/// window: a lookup is an index, neighbours share cache lines, and a slot costs 4
/// bytes. A hash map of a million handles cost a cache miss per WORK_COMPLETE and
/// about 30 bytes a job. Jobs that outlive the window's start (one long job, an epoch
/// job due next week) move to a map, so the window never grows past a few slots per
/// live job.
#[derive(Debug, Default)]
pub(crate) struct SeqIndex {
    /// Sequence number of `window[0]`.
    base: u64,
    window: ChunkedDeque<u32>,
    /// Slots of `window` that hold a job.
    in_window: usize,
    /// Live jobs older than the window.
    old: HashMap<u64, JobId>,
}

impl SeqIndex {
    /// Files `jid` under `seq`.
    pub(crate) fn insert(&mut self, seq: u64, jid: JobId) {
        let end = self.base + self.window.len() as u64;
        let behind = !self.window.is_empty() && seq < end;
        let slot = u32::try_from(jid).ok().filter(|&s| s != NONE);
        let Some(slot) = slot.filter(|_| !behind) else {
            // A number inside or before the window (handles never go back), or an id
            // too large for a slot: filed aside, found all the same.
            self.old.insert(seq, jid);
            return;
        };
        if self.window.is_empty() || seq - end >= MIN_TRIM_SLOTS as u64 {
            // A jump ahead: what the window holds moves out, and it starts over here.
            self.move_out(self.window.len());
            self.base = seq;
        }
        while self.base + (self.window.len() as u64) < seq {
            self.window.push_back(NONE);
        }
        self.window.push_back(slot);
        self.in_window += 1;
        let limit = (self.in_window * MAX_SLOTS_PER_JOB).max(MIN_TRIM_SLOTS);
        if self.window.len() > limit {
            self.move_out(self.window.len() - limit);
        }
    }

    /// The job filed under `seq`.
    pub(crate) fn get(&self, seq: u64) -> Option<JobId> {
        match self.window_pos(seq).and_then(|i| self.window.get(i)) {
            Some(&slot) if slot != NONE => Some(slot as JobId),
            _ => self.old.get(&seq).copied(),
        }
    }

    /// Takes the job filed under `seq` out of the index.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<JobId> {
        let Some(slot) = self.window_pos(seq).and_then(|i| self.window.get_mut(i)) else {
            return self.old.remove(&seq);
        };
        if *slot == NONE {
            return self.old.remove(&seq);
        }
        let jid = std::mem::replace(slot, NONE) as JobId;
        self.in_window -= 1;
        self.skip_empty_front();
        Some(jid)
    }

    /// Number of jobs filed.
    pub(crate) fn len(&self) -> usize {
        self.in_window + self.old.len()
    }

    /// Slots allocated, for deciding when to shrink.
    pub(crate) fn capacity(&self) -> usize {
        self.window.capacity() + self.old.capacity()
    }

    /// Gives back unused room.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.window.shrink_to_fit();
        self.old.shrink_to_fit();
    }

    fn window_pos(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        (i < self.window.len()).then_some(i)
    }

    /// Moves the window's first `n` slots out, their jobs to `old`. Each slot leaves
    /// once, so over time this is O(1) per insert.
    fn move_out(&mut self, n: usize) {
        for _ in 0..n {
            let Some(slot) = self.window.pop_front() else { break };
            if slot != NONE {
                self.old.insert(self.base, slot as JobId);
                self.in_window -= 1;
            }
            self.base += 1;
        }
        self.skip_empty_front();
    }

    fn skip_empty_front(&mut self) {
        while self.window.front() == Some(&NONE) {
            self.window.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any mix of inserts (increasing numbers, with jumps), removals and lookups
        /// answers as a plain map would, and the window stays bounded.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec((0u8..10, 0u64..3000, 0usize..5000), 1..600)) {
            let mut ix = SeqIndex::default();
            let mut model = std::collections::BTreeMap::new();
            let mut next = 1u64;
            for (op, n, jid) in ops {
                match op {
                    0..=4 => {
                        next += if op == 4 { 1 + n } else { 1 };
                        ix.insert(next, jid);
                        model.insert(next, jid);
                    }
                    5..=7 => {
                        let seq = model.keys().nth(n as usize % model.len().max(1)).copied().unwrap_or(n);
                        prop_assert_eq!(ix.remove(seq), model.remove(&seq));
                    }
                    _ => prop_assert_eq!(ix.get(n), model.get(&n).copied()),
                }
                prop_assert_eq!(ix.len(), model.len());
                prop_assert!(ix.window.len() <= (ix.in_window * MAX_SLOTS_PER_JOB).max(MIN_TRIM_SLOTS) + MIN_TRIM_SLOTS);
            }
            for (seq, jid) in &model {
                prop_assert_eq!(ix.get(*seq), Some(*jid));
            }
        }
    }

    #[test]
    fn finds_and_removes_jobs_in_and_out_of_order() {
        let mut ix = SeqIndex::default();
        for seq in 1..=100u64 {
            ix.insert(seq, seq as usize + 1000);
        }
        assert_eq!(ix.len(), 100);
        assert_eq!(ix.get(1), Some(1001));
        assert_eq!(ix.get(100), Some(1100));
        assert_eq!(ix.get(0), None);
        assert_eq!(ix.get(101), None);
        assert_eq!(ix.remove(50), Some(1050));
        assert_eq!(ix.remove(50), None);
        assert_eq!(ix.get(50), None);
        assert_eq!(ix.remove(1), Some(1001));
        assert_eq!(ix.base, 2, "the window's front moves past finished jobs");
        for seq in 2..=100u64 {
            if seq != 50 {
                assert_eq!(ix.remove(seq), Some(seq as usize + 1000), "seq {seq}");
            }
        }
        assert_eq!(ix.len(), 0);
        assert!(ix.window.is_empty());
        ix.insert(500, 7);
        assert_eq!(ix.get(500), Some(7));
    }

    #[test]
    fn a_job_that_stays_while_millions_pass_moves_out_of_the_window() {
        let mut ix = SeqIndex::default();
        ix.insert(1, 42);
        for seq in 2..200_000u64 {
            ix.insert(seq, 7);
            assert_eq!(ix.remove(seq), Some(7));
        }
        assert!(ix.window.len() <= MIN_TRIM_SLOTS, "window {}", ix.window.len());
        assert_eq!(ix.get(1), Some(42), "the old job is still found");
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.remove(1), Some(42));
        assert_eq!(ix.len(), 0);
    }

    #[test]
    fn sequence_gaps_and_huge_job_ids_are_still_found() {
        let mut ix = SeqIndex::default();
        ix.insert(10, 1);
        ix.insert(15, 2);
        ix.insert(1_000_000, 3);
        ix.insert(1_000_001, u32::MAX as usize);
        ix.insert(1_000_002, usize::MAX);
        for (seq, jid) in
            [(10, 1), (15, 2), (1_000_000, 3), (1_000_001, u32::MAX as usize), (1_000_002, usize::MAX)]
        {
            assert_eq!(ix.get(seq), Some(jid), "seq {seq}");
        }
        assert_eq!(ix.len(), 5);
        for (seq, jid) in
            [(15, 2), (1_000_002, usize::MAX), (10, 1), (1_000_000, 3), (1_000_001, u32::MAX as usize)]
        {
            assert_eq!(ix.remove(seq), Some(jid), "seq {seq}");
        }
        assert_eq!(ix.len(), 0);
    }
}
