//! One job: what was submitted, where it is now, and who waits for its result.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::{ConnId, Priority};

/// Index of a job in the engine's slab.
pub(crate) type JobId = usize;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// A background job the store has not committed yet: not runnable, and its
    /// submitters wait for JOB_CREATED.
    Persisting,
    /// In its function's queue for its priority.
    Queued,
    /// An epoch job waiting for its time (not in any queue yet).
    Scheduled,
    /// Assigned to a worker connection.
    Running(ConnId),
}

/// The key under which a job coalesces with later submits of the same function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CoalesceKey<'a> {
    /// An explicit unique string.
    Unique(&'a [u8]),
    /// Unique `-`: identical data coalesces.
    Data(&'a [u8]),
}

impl<'a> CoalesceKey<'a> {
    /// The key a job with this unique and data coalesces under, if any.
    pub(crate) fn of(unique: &'a [u8], data: &'a [u8]) -> Option<CoalesceKey<'a>> {
        match unique {
            b"" => None,
            b"-" if data.is_empty() => None,
            b"-" => Some(CoalesceKey::Data(data)),
            _ => Some(CoalesceKey::Unique(unique)),
        }
    }
}

/// A job held by the engine.
///
/// Kept small, because a queue can hold millions (`bench/memory`): the handle is not
/// stored (`handle.rs`), the coalesce key is derived from `unique` and `data`, and
/// what few jobs use lives in [`JobExtra`]. The engine boxes each job, so its slab
/// holds a pointer per slot and the memory of drained jobs goes back to the allocator
/// rather than staying in a slab sized for the peak.
#[derive(Debug)]
pub(crate) struct Job {
    /// Process-wide sequence number, also the handle's counter; tells a reused slab
    /// slot from the job an old reference meant.
    pub(crate) seq: u64,
    pub(crate) function: usize,
    /// The workload. Small data has an allocation of its own, never a view into a
    /// connection's read buffer, which would keep the whole buffer alive as long as
    /// the job; data of `KEEP_VIEW_DATA_BYTES` or more stays a view (see `submit`).
    pub(crate) data: Bytes,
    /// The unique key, in an allocation of its own too (empty: none).
    pub(crate) unique: Bytes,
    /// Foreground connections waiting for results, newest first; a connection that
    /// submitted twice is listed twice, as in gearmand.
    pub(crate) listeners: VecDeque<ConnId>,
    /// Fields most jobs leave at their defaults, allocated when first set.
    pub(crate) extra: Option<Box<JobExtra>>,
    pub(crate) state: JobState,
    /// When the job entered its state: became runnable (submit, requeue, epoch due)
    /// while queued, for the queue time histogram; was assigned while running, for
    /// the run time histogram.
    pub(crate) since_ms: i64,
    /// Times a worker lost the job (disconnect, CANT_DO, timeout).
    pub(crate) retries: u32,
    /// Counts assignments, so a stale CAN_DO_TIMEOUT deadline can be told apart.
    pub(crate) assignments: u32,
    pub(crate) priority: Priority,
    pub(crate) background: bool,
    /// A background submit joined this (foreground) job: it must run even when every
    /// foreground listener leaves.
    pub(crate) bg_joined: bool,
    /// Nobody wants the result any more (cancelled, or a foreground job whose clients
    /// all left): discarded when a worker next reaches it.
    pub(crate) abandoned: bool,
    /// The job holds the coalesce index entry of [`Job::coalesce_key`] (a cancel
    /// gives it up, so that later submits start a new job).
    pub(crate) coalescing: bool,
}

/// The fields of a job that most jobs leave at their defaults.
#[derive(Debug, Default)]
pub(crate) struct JobExtra {
    /// SUBMIT_REDUCE_JOB's reducer.
    pub(crate) reducer: Bytes,
    /// Epoch seconds at which the job may run; 0 = now.
    pub(crate) when: i64,
    /// The job's key in the persistent store, while it is stored there.
    pub(crate) store_key: Option<u64>,
    /// Submitters waiting for JOB_CREATED while the job is `Persisting`: (conn, hold).
    pub(crate) created_waiters: Vec<(ConnId, u64)>,
    /// The last WORK_STATUS numerator.
    pub(crate) numerator: u32,
    /// The last WORK_STATUS denominator.
    pub(crate) denominator: u32,
}

/// What [`Job::extra`] reads for a job without extra fields.
static NO_EXTRA: JobExtra = JobExtra {
    reducer: Bytes::new(),
    when: 0,
    store_key: None,
    created_waiters: Vec::new(),
    numerator: 0,
    denominator: 0,
};

impl Job {
    /// `show jobs` PERSISTED column: background jobs that still matter.
    pub(crate) fn is_persisted(&self) -> bool {
        self.background && !self.abandoned
    }

    /// The rarely used fields (their defaults when never set).
    pub(crate) fn extra(&self) -> &JobExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The rarely used fields, allocated on first use.
    pub(crate) fn extra_mut(&mut self) -> &mut JobExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The key this job holds in the coalesce index, if any.
    pub(crate) fn coalesce_key(&self) -> Option<CoalesceKey<'_>> {
        if self.coalescing {
            CoalesceKey::of(&self.unique, &self.data)
        } else {
            None
        }
    }
}

/// C `atoi` as gearmand applies it to status numbers: optional leading spaces and sign,
/// then digits; anything else stops the parse; the result wraps into 32 bits.
pub(crate) fn atoi_u32(s: &[u8]) -> u32 {
    strtol(s) as u32
}

/// C `strtol`/`strtoll` in base 10, saturating instead of overflowing.
pub(crate) fn strtol(s: &[u8]) -> i64 {
    let mut it = s.iter().copied().skip_while(|b| b.is_ascii_whitespace()).peekable();
    let negative = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    for b in it {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if negative {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_matches_c() {
        assert_eq!(strtol(b"42"), 42);
        assert_eq!(strtol(b"  -7x"), -7);
        assert_eq!(strtol(b"abc"), 0);
        assert_eq!(strtol(b""), 0);
        assert_eq!(strtol(b"99999999999999999999999"), i64::MAX);
        assert_eq!(atoi_u32(b"-1"), u32::MAX);
    }
}
