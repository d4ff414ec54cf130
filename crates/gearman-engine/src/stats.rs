//! Counters and histograms for monitoring, plus snapshots of the per-function gauges
//! and the worker list.
//!
//! The engine is owned by one lock, so the counters are plain integers and the
//! histograms fixed arrays: counting costs an add, never an allocation or an atomic.
//! The server renders them (Prometheus text, JSON); the engine only counts.

use bytes::Bytes;

use crate::{Engine, NowMs};

/// Most buckets a [`Histogram`] can have (bounds; `+Inf` is kept apart).
pub const MAX_BUCKETS: usize = 16;

/// Upper bounds, in milliseconds, of the job time histograms (queued and running).
pub const JOB_TIME_BOUNDS_MS: &[u64] =
    &[1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000];

/// A fixed-bucket histogram of non-negative integer observations (the unit is the
/// caller's: milliseconds for job times, microseconds for store latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Upper bounds (inclusive), ascending; at most [`MAX_BUCKETS`] are used.
    pub bounds: &'static [u64],
    /// Observations per bucket (not cumulative): `counts[i]` is for values in
    /// `(bounds[i-1], bounds[i]]`; values above the last bound are only in `count`.
    pub counts: [u64; MAX_BUCKETS],
    /// Sum of every observation.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds.
    pub const fn new(bounds: &'static [u64]) -> Histogram {
        Histogram { bounds, counts: [0; MAX_BUCKETS], sum: 0, count: 0 }
    }

    /// Records one value (negative values, from a clock step back, count as 0).
    pub fn observe(&mut self, value: i64) {
        let v = u64::try_from(value).unwrap_or(0);
        self.count = self.count.wrapping_add(1);
        self.sum = self.sum.wrapping_add(v);
        let n = self.bounds.len().min(MAX_BUCKETS);
        if let Some(i) = self.bounds.iter().take(n).position(|&b| v <= b) {
            if let Some(c) = self.counts.get_mut(i) {
                *c = c.wrapping_add(1);
            }
        }
    }

    /// `(upper bound, cumulative count)` for every finite bucket, as Prometheus
    /// wants them; the `+Inf` bucket is `count`.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut acc = 0u64;
        self.bounds.iter().zip(self.counts.iter()).map(move |(&b, &c)| {
            acc = acc.wrapping_add(c);
            (b, acc)
        })
    }
}

/// Engine-wide counters since start. Every field only grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Submits that created a job (coalesced submits are not counted here).
    pub submitted: u64,
    /// Submits that joined a live job with the same unique key.
    pub coalesced: u64,
    /// WORK_COMPLETE results.
    pub completed: u64,
    /// WORK_FAIL results, plus jobs failed after `--job-retries` assignments.
    pub failed: u64,
    /// WORK_EXCEPTION results.
    pub excepted: u64,
    /// Running jobs requeued because their worker left, dropped the function or
    /// timed out.
    pub retried: u64,
    /// Jobs cancelled with the admin `cancel job` (a repeated cancel counts once).
    pub cancelled: u64,
    /// CAN_DO_TIMEOUT deadlines that fired (each also counts in `retried` or `failed`).
    pub timed_out: u64,
    /// Milliseconds from submit (or requeue, or an epoch job's due time) to assignment.
    pub queue_time: Histogram,
    /// Milliseconds from assignment to a WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION.
    pub run_time: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            submitted: 0,
            coalesced: 0,
            completed: 0,
            failed: 0,
            excepted: 0,
            retried: 0,
            cancelled: 0,
            timed_out: 0,
            queue_time: Histogram::new(JOB_TIME_BOUNDS_MS),
            run_time: Histogram::new(JOB_TIME_BOUNDS_MS),
        }
    }
}

/// One function's gauges at the moment of the snapshot (the admin `status` and
/// `prioritystatus` facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionGauges {
    /// Function name.
    pub name: Bytes,
    /// Jobs in the queue by priority, indexed by [`crate::Priority::index`].
    pub queued: [usize; 3],
    /// Epoch jobs not due yet.
    pub scheduled: usize,
    /// Jobs assigned to a worker.
    pub running: usize,
    /// Jobs in any state (the first number of `status`).
    pub total: usize,
    /// Registered worker entries (the last number of `status`).
    pub workers: usize,
}

/// One connection as the admin `workers` command lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    /// First column (the fd label).
    pub label: i64,
    /// Peer address.
    pub ip: String,
    /// SET_CLIENT_ID value (`-` if never set).
    pub client_id: Bytes,
    /// Registered functions, most recent first.
    pub functions: Vec<Bytes>,
}

impl Engine {
    /// The counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every function's gauges, in creation order (as the admin `status`).
    pub fn function_gauges(&self) -> Vec<FunctionGauges> {
        self.functions_in_order()
            .into_iter()
            .filter_map(|fid| self.functions.get(fid))
            .map(|f| FunctionGauges {
                name: f.name.clone(),
                queued: [f.queued(0), f.queued(1), f.queued(2)],
                scheduled: f.scheduled,
                running: f.running,
                total: f.total,
                workers: f.workers.len(),
            })
            .collect()
    }

    /// Every connection, newest first (as the admin `workers`).
    pub fn worker_entries(&self) -> Vec<WorkerEntry> {
        let mut sessions: Vec<_> = self.sessions.iter().map(|(_, s)| s).collect();
        sessions.sort_unstable_by_key(|s| std::cmp::Reverse(s.created));
        sessions
            .into_iter()
            .map(|s| WorkerEntry {
                label: s.label,
                ip: s.ip.clone(),
                client_id: s.client_id.clone(),
                functions: s
                    .abilities
                    .iter()
                    .filter_map(|a| self.functions.get(a.function).map(|f| f.name.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Connections that registered at least one function.
    pub fn worker_connection_count(&self) -> usize {
        self.sessions.iter().filter(|(_, s)| !s.abilities.is_empty()).count()
    }

    /// Records the end of a run that started at `assigned_at`.
    pub(crate) fn observe_run(&mut self, assigned_at: NowMs, now: NowMs) {
        self.stats.run_time.observe(now.saturating_sub(assigned_at));
    }
}

#[cfg(test)]
mod tests {
    use gearman_proto::{Command, Magic, Packet};

    use super::*;
    use crate::{ConnId, EngineConfig, PeerInfo, RecordingOutbox};

    const NOW: NowMs = 1_700_000_000_000;

    fn conn(e: &mut Engine) -> ConnId {
        e.connect(PeerInfo { label: 0, ip: "127.0.0.1".into() })
    }

    fn send(e: &mut Engine, c: ConnId, now: NowMs, cmd: Command, args: &[&[u8]]) {
        let p = Packet::new(Magic::Req, cmd, args).unwrap();
        e.handle_packet(c, &p, now, &mut RecordingOutbox::default());
        e.check_invariants().unwrap();
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig { handle_prefix: "H:t".into(), ..Default::default() })
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::new(&[1, 10]);
        for v in [0, 1, 2, 10, 11, -5] {
            h.observe(v);
        }
        assert_eq!(h.count, 6);
        assert_eq!(h.sum, 24);
        assert_eq!(h.cumulative().collect::<Vec<_>>(), vec![(1, 3), (10, 5)]);
    }

    #[test]
    fn counts_submits_results_and_times() {
        let mut e = engine();
        let (c, w) = (conn(&mut e), conn(&mut e));
        send(&mut e, c, NOW, Command::SubmitJobBg, &[b"f", b"u", b"1"]);
        send(&mut e, c, NOW, Command::SubmitJobBg, &[b"f", b"u", b"1"]);
        send(&mut e, c, NOW, Command::SubmitJob, &[b"f", b"u", b"1"]);
        send(&mut e, c, NOW, Command::SubmitJobHighBg, &[b"f", b"", b"2"]);
        send(&mut e, c, NOW, Command::SubmitJobLowBg, &[b"f", b"", b"3"]);
        assert_eq!((e.stats().submitted, e.stats().coalesced), (3, 2));
        let g = e.function_gauges();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].queued, g[0].total, g[0].running, g[0].workers), ([1, 1, 1], 3, 0, 0));
        send(&mut e, w, NOW, Command::CanDo, &[b"f"]);
        assert_eq!(e.worker_connection_count(), 1);
        // High first: H:t:2, then H:t:1, then H:t:3.
        send(&mut e, w, NOW + 7, Command::GrabJob, &[]);
        send(&mut e, w, NOW + 10, Command::WorkComplete, &[b"H:t:2", b"r"]);
        send(&mut e, w, NOW + 20, Command::GrabJob, &[]);
        send(&mut e, w, NOW + 20, Command::WorkFail, &[b"H:t:1"]);
        send(&mut e, w, NOW + 20, Command::GrabJob, &[]);
        send(&mut e, w, NOW + 2020, Command::WorkException, &[b"H:t:3", b"x"]);
        let s = e.stats();
        assert_eq!((s.completed, s.failed, s.excepted, s.retried, s.cancelled), (1, 1, 1, 0, 0));
        assert_eq!(s.queue_time.count, 3);
        assert_eq!(s.queue_time.sum, 7 + 20 + 20);
        assert_eq!(s.run_time.count, 3);
        assert_eq!(s.run_time.sum, 3 + 2000);
        assert_eq!(e.job_count(), 0);
    }

    #[test]
    fn counts_retries_timeouts_and_cancels() {
        let mut e = engine();
        let (c, w, a) = (conn(&mut e), conn(&mut e), conn(&mut e));
        send(&mut e, c, NOW, Command::SubmitJobBg, &[b"f", b"", b"1"]);
        send(&mut e, w, NOW, Command::CanDoTimeout, &[b"f", b"1000"]);
        send(&mut e, w, NOW + 5, Command::GrabJob, &[]);
        e.tick(NOW + 1005, &mut RecordingOutbox::default());
        assert_eq!((e.stats().timed_out, e.stats().retried), (1, 1));
        // Requeued at the timeout: the next wait is measured from there.
        send(&mut e, w, NOW + 1010, Command::GrabJob, &[]);
        assert_eq!(e.stats().queue_time.sum, 5 + 5);
        e.disconnect(w, NOW + 1020, &mut RecordingOutbox::default());
        assert_eq!((e.stats().timed_out, e.stats().retried), (1, 2));
        let mut out = RecordingOutbox::default();
        e.handle_admin(a, b"cancel job H:t:1", &mut out);
        e.handle_admin(a, b"cancel job H:t:1", &mut out);
        assert_eq!(e.stats().cancelled, 1);
        e.check_invariants().unwrap();
    }

    #[test]
    fn a_job_failed_after_its_retries_counts_as_failed_not_retried() {
        let config = EngineConfig { handle_prefix: "H:t".into(), job_retries: 1, ..Default::default() };
        let mut e = Engine::new(config);
        let (c, w) = (conn(&mut e), conn(&mut e));
        send(&mut e, c, NOW, Command::SubmitJobBg, &[b"f", b"", b"1"]);
        send(&mut e, w, NOW, Command::CanDo, &[b"f"]);
        send(&mut e, w, NOW, Command::GrabJob, &[]);
        e.disconnect(w, NOW, &mut RecordingOutbox::default());
        assert_eq!((e.stats().failed, e.stats().retried, e.stats().run_time.count), (1, 0, 0));
        assert_eq!(e.job_count(), 0);
    }
}
