//! One function name: its job queues by priority, the workers that can do it, and
//! the counters the admin `status` commands show.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::chunked_deque::ChunkedDeque;
use crate::job::JobId;
use crate::ConnId;

/// Index of a function in the engine's slab.
pub(crate) type FunctionId = usize;

/// A function and everything queued for it.
#[derive(Debug)]
pub(crate) struct Function {
    pub(crate) name: Bytes,
    /// FIFO queues, indexed by [`crate::Priority::index`]. Entries carry the job's seq
    /// so a slot reused after the job left can never be mistaken for it.
    pub(crate) queues: [ChunkedDeque<(JobId, u64)>; 3],
    /// Registered worker entries (a connection that sent CAN_DO twice is here twice).
    pub(crate) workers: Vec<ConnId>,
    /// Workers that went to sleep able to do this function, longest asleep first:
    /// `(connection, sleep generation)`. An entry whose session has since grabbed,
    /// been woken or slept again (newer generation) is stale and skipped when popped,
    /// so waking a worker costs O(1) whatever the number of workers.
    pub(crate) sleepers: VecDeque<(ConnId, u64)>,
    /// Wide workers (`Session::wide`) registered for this function, once each: told
    /// when it gains or loses queued jobs.
    pub(crate) wide_workers: Vec<ConnId>,
    /// `maxqueue` limits per priority; 0 = unlimited.
    pub(crate) max_queue: [u32; 3],
    /// Jobs of this function in any state (queued, scheduled, running).
    pub(crate) total: usize,
    /// Jobs assigned to a worker.
    pub(crate) running: usize,
    /// Epoch jobs not yet due (shown with the normal queue in `prioritystatus`).
    pub(crate) scheduled: usize,
    /// Order of creation, for stable admin listings.
    pub(crate) created: u64,
}

impl Function {
    pub(crate) fn new(name: Bytes, created: u64) -> Function {
        Function {
            name,
            queues: Default::default(),
            workers: Vec::new(),
            sleepers: VecDeque::new(),
            wide_workers: Vec::new(),
            max_queue: [0; 3],
            total: 0,
            running: 0,
            scheduled: 0,
            created,
        }
    }

    /// Jobs waiting in the queue for `priority` (abandoned ones included, as gearmand).
    pub(crate) fn queued(&self, priority: usize) -> usize {
        self.queues.get(priority).map_or(0, ChunkedDeque::len)
    }
}
