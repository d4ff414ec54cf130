//! One job: what was submitted, where it is now, and who waits for its result.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ConnId;

/// Index of a job in the engine's slab.
pub(crate) type JobId = usize;

/// Job priority; the numeric value is gearmand's (0 = high), used for queue indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Taken before normal and low jobs of the same function.
    High = 0,
    /// The default.
    Normal = 1,
    /// Taken last.
    Low = 2,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Queue index (0 = high).
    pub fn index(self) -> usize {
        self as usize
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum CoalesceKey {
    /// An explicit unique string.
    Unique(Bytes),
    /// Unique `-`: identical data coalesces.
    Data(Bytes),
}

/// A job held by the engine.
#[derive(Debug)]
pub(crate) struct Job {
    /// Process-wide sequence number, also the handle's counter; tells a reused slab
    /// slot from the job an old reference meant.
    pub(crate) seq: u64,
    pub(crate) function: usize,
    pub(crate) unique: Bytes,
    pub(crate) coalesce: Option<CoalesceKey>,
    pub(crate) data: Bytes,
    pub(crate) reducer: Bytes,
    pub(crate) priority: Priority,
    pub(crate) background: bool,
    /// Epoch seconds at which the job may run; 0 = now.
    pub(crate) when: i64,
    /// The job's key in the persistent store, while it is stored there.
    pub(crate) store_key: Option<u64>,
    /// Submitters waiting for JOB_CREATED while the job is `Persisting`: (conn, hold).
    pub(crate) created_waiters: Vec<(ConnId, u64)>,
    pub(crate) state: JobState,
    /// Foreground connections waiting for results, newest first; a connection that
    /// submitted twice is listed twice, as in gearmand.
    pub(crate) listeners: VecDeque<ConnId>,
    /// Times a worker lost the job (disconnect, CANT_DO, timeout).
    pub(crate) retries: u32,
    pub(crate) numerator: u32,
    pub(crate) denominator: u32,
    /// A background submit joined this (foreground) job: it must run even when every
    /// foreground listener leaves.
    pub(crate) bg_joined: bool,
    /// Nobody wants the result any more (cancelled, or a foreground job whose clients
    /// all left): discarded when a worker next reaches it.
    pub(crate) abandoned: bool,
    /// Counts assignments, so a stale CAN_DO_TIMEOUT deadline can be told apart.
    pub(crate) assignments: u32,
    /// When the job last became runnable (submit, requeue, epoch due), for the queue
    /// time histogram.
    pub(crate) queued_at_ms: i64,
    /// When the job was last assigned, for the run time histogram.
    pub(crate) assigned_at_ms: i64,
}

impl Job {
    /// `show jobs` PERSISTED column: background jobs that still matter.
    pub(crate) fn is_persisted(&self) -> bool {
        self.background && !self.abandoned
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
