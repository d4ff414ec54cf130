//! The engine: owns all state and dispatches each request to the module that
//! handles its command family.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use bytes::Bytes;
use gearman_proto::{Command, Magic, Packet};
use slab::Slab;

use crate::function::{Function, FunctionId};
use crate::job::{CoalesceKey, Job, JobId, JobState};
use crate::job_index::JobIndex;
use crate::paged_slab::PagedSlab;
use crate::ready::ReadySet;
use crate::seq_index::SeqIndex;
use crate::session::Session;
use crate::steady_map::SteadyMap;
use crate::{ConnId, EngineConfig, NowMs, Outbox};

/// What the server knows about a new connection, for the `workers` admin list.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// First column of `workers` lines (gearmand prints the socket fd).
    pub label: i64,
    /// Numeric peer address.
    pub ip: String,
}

/// The engine's hash maps. foldhash instead of SipHash: the submit path hashes a handle,
/// a function name and often a unique per job, and SipHash was 8% of the server's time
/// under `bg-submit`; foldhash is still seeded per map, so clients cannot choose keys
/// that collide.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A timer entry: `(due ms, job, job seq, assignment number)`.
type Deadline = Reverse<(NowMs, JobId, u64, u32)>;

/// All jobs, functions and sessions, and the rules between them.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    /// Boxed, so the slab holds a pointer per slot (see [`Job`]).
    pub(crate) jobs: PagedSlab<Box<Job>>,
    pub(crate) functions: Slab<Function>,
    pub(crate) function_ids: HashMap<Bytes, FunctionId>,
    pub(crate) sessions: Slab<Session>,
    /// Live jobs by sequence number, the number in their handle.
    pub(crate) handles: SeqIndex,
    /// Every live job with a unique (other than `-`), by the unique: for
    /// GET_STATUS_UNIQUE, and for coalescing, which looks for the one among them that
    /// has the submit's function and still coalesces (see [`Engine::coalescing_job`]).
    pub(crate) by_unique: JobIndex,
    /// The jobs of unique `-` that coalesce, by function and data.
    pub(crate) by_data: JobIndex,
    /// Epoch jobs by due time: (due ms, job, seq, 0).
    pub(crate) epoch_timers: BinaryHeap<Deadline>,
    /// CAN_DO_TIMEOUT deadlines of running jobs.
    pub(crate) work_timers: BinaryHeap<Deadline>,
    pub(crate) next_seq: u64,
    pub(crate) next_order: u64,
    /// Stored jobs by store key, to route the store's answers.
    pub(crate) by_store_key: SteadyMap<u64, JobId>,
    pub(crate) next_store_key: u64,
    /// Ids of places held in reply order (see [`Outbox::hold`]).
    pub(crate) next_hold: u64,
    /// Source of [`crate::session::Session::sleep_gen`].
    pub(crate) next_sleep_gen: u64,
    /// Monitoring counters (`stats.rs`).
    pub(crate) stats: crate::stats::Stats,
    /// Functions whose queues hold entries (some may be stale or abandoned).
    pub(crate) ready: ReadySet,
    /// Sleeping workers registered for more than [`Engine::wide_after`] functions,
    /// as `(connection, sleep generation)`: filed once here rather than in each of
    /// their functions' sleeper queues, which would make every PRE_SLEEP cost as much
    /// as the worker has functions.
    pub(crate) wide_sleepers: VecDeque<(ConnId, u64)>,
    /// Held GRAB_JOBs by when their hold ends: `(deadline, connection, sleep
    /// generation)`, in deadline order since every hold is as long. Entries of holds
    /// answered early go stale and are dropped from the front.
    pub(crate) held_until: VecDeque<(NowMs, ConnId, u64)>,
    /// Workers whose held GRAB_JOB a newly queued job woke, to be answered with it
    /// before the engine returns (see [`Engine::answer_woken_grabs`]).
    pub(crate) held_woken: Vec<ConnId>,
    /// [`WIDE_WORKER_ABILITIES`]; tests lower it to run every path through the wide one.
    pub(crate) wide_after: usize,
}

/// Whether a job with this unique is found by GET_STATUS_UNIQUE: gearmand files `-`
/// jobs under a hash of their data, so GET_STATUS_UNIQUE never finds them by "-";
/// leaving them out of the index does the same.
pub(crate) fn has_status_unique(unique: &[u8]) -> bool {
    !unique.is_empty() && unique != b"-"
}

/// Marks a sleeper picked for a queued job as woken: a NOOP, or for a held GRAB_JOB
/// a place in `held_woken`, to be answered with the job.
fn wake(s: &mut Session, w: ConnId, held_woken: &mut Vec<ConnId>, out: &mut dyn Outbox) {
    s.noop_sent = true;
    if s.held_grab.is_some() {
        held_woken.push(w);
    } else {
        out.packet(w, Command::Noop, &[]);
    }
}

/// Files a sleeper entry at the back of a sleeper queue, or `first` in line.
fn file_sleeper(queue: &mut VecDeque<(ConnId, u64)>, entry: (ConnId, u64), first: bool) {
    if first {
        queue.push_front(entry);
    } else {
        queue.push_back(entry);
    }
}

/// Workers with more functions than this sleep in [`Engine::wide_sleepers`] and are
/// served from [`Engine::ready`]; below it, walking their functions is cheaper.
pub(crate) const WIDE_WORKER_ABILITIES: usize = 32;

impl Engine {
    /// A new, empty engine.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            jobs: PagedSlab::default(),
            functions: Slab::new(),
            function_ids: HashMap::default(),
            sessions: Slab::new(),
            handles: SeqIndex::default(),
            by_unique: JobIndex::default(),
            by_data: JobIndex::default(),
            epoch_timers: BinaryHeap::new(),
            work_timers: BinaryHeap::new(),
            next_seq: 1,
            next_order: 0,
            by_store_key: SteadyMap::default(),
            next_store_key: 1,
            next_hold: 1,
            next_sleep_gen: 1,
            stats: crate::stats::Stats::default(),
            ready: ReadySet::default(),
            wide_sleepers: VecDeque::new(),
            held_until: VecDeque::new(),
            held_woken: Vec::new(),
            wide_after: WIDE_WORKER_ABILITIES,
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Registers a new connection and returns its id.
    pub fn connect(&mut self, peer: PeerInfo) -> ConnId {
        let order = self.bump_order();
        self.sessions.insert(Session::new(peer.label, peer.ip, self.config.exceptions, order))
    }

    /// Forgets a connection: its waits end, and the jobs it was running go back to
    /// their queues (or fail once `--job-retries` is reached).
    pub fn disconnect(&mut self, conn: ConnId, now: NowMs, out: &mut dyn Outbox) {
        let Some(session) = self.sessions.try_remove(conn) else { return };
        for (jid, seq) in session.listening {
            self.detach_listener(jid, seq, conn);
        }
        for a in &session.abilities {
            if let Some(f) = self.functions.get_mut(a.function) {
                f.workers.retain(|&w| w != conn);
                if session.wide {
                    f.wide_workers.retain(|&w| w != conn);
                }
            }
        }
        for (jid, seq) in session.running {
            self.requeue_lost(jid, seq, now, out);
        }
        if session.sleeping && session.noop_sent {
            let functions: Vec<FunctionId> = session.abilities.iter().map(|a| a.function).collect();
            self.pass_on_wakeup(&functions, now, out);
        }
    }

    /// The job a handle names, if it is live.
    pub(crate) fn job_by_handle(&self, handle: &[u8]) -> Option<JobId> {
        let seq = crate::handle::parse(&self.config.handle_prefix, handle)?;
        self.handles.get(seq)
    }

    /// The handle of the job with sequence number `seq`.
    pub(crate) fn handle_of(&self, seq: u64) -> crate::handle::Handle {
        crate::handle::Handle::new(&self.config.handle_prefix, seq)
    }

    /// Number of jobs held in any state (SIGUSR1 drain waits for zero).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.sessions.len()
    }

    /// Handles one binary packet from `conn`.
    pub fn handle_packet(&mut self, conn: ConnId, packet: &Packet, now: NowMs, out: &mut dyn Outbox) {
        if !self.sessions.contains(conn) {
            return;
        }
        // Replies go out in request order: a held GRAB_JOB is answered before anything
        // that came after it.
        self.release_held_grab(conn, out);
        if packet.magic == Magic::Res {
            error(out, conn, "INVALID_MAGIC", "Request magic expected");
            return;
        }
        match packet.command {
            Command::EchoReq => out.packet_data(conn, Command::EchoRes, &[], &packet.arg_bytes(0)),
            Command::SubmitJob
            | Command::SubmitJobBg
            | Command::SubmitJobHigh
            | Command::SubmitJobHighBg
            | Command::SubmitJobLow
            | Command::SubmitJobLowBg
            | Command::SubmitJobEpoch
            | Command::SubmitReduceJob
            | Command::SubmitReduceJobBackground => self.submit(conn, packet, now, out),
            Command::GetStatus => self.get_status(conn, packet.arg(0), out),
            Command::GetStatusUnique => self.get_status_unique(conn, packet.arg(0), out),
            Command::OptionReq => self.option_req(conn, packet.arg(0), out),
            Command::SetClientId => self.set_client_id(conn, packet.arg(0)),
            Command::CanDo => self.can_do(conn, packet.arg(0), 0),
            Command::CanDoTimeout => {
                let ms = crate::job::strtol(packet.arg(1)).clamp(0, i64::from(u32::MAX)) as u32;
                self.can_do(conn, packet.arg(0), ms)
            }
            Command::CantDo => self.cant_do(conn, packet.arg(0), now, out),
            Command::ResetAbilities => self.reset_abilities(conn, now, out),
            Command::PreSleep => self.pre_sleep(conn, now, out),
            Command::GrabJob | Command::GrabJobUniq | Command::GrabJobAll => {
                self.grab_job(conn, packet.command, now, out)
            }
            Command::WorkData
            | Command::WorkWarning
            | Command::WorkStatus
            | Command::WorkComplete
            | Command::WorkFail
            | Command::WorkException => self.work_result(conn, packet, now, out),
            _ => error(out, conn, "INVALID_COMMAND", "Command not expected"),
        }
    }

    /// Gives back the room of collections that grew for a burst (a million queued jobs)
    /// and are now mostly empty: slabs, indexes and queues keep their capacity
    /// otherwise, and with it the server's memory after a drain. O(capacity) when it
    /// shrinks something, so call it now and then (the server does every few seconds),
    /// not per request. Returns whether anything shrank.
    pub fn compact(&mut self) -> bool {
        fn sparse(len: usize, capacity: usize) -> bool {
            capacity > 1024 && len.saturating_mul(4) < capacity
        }
        let mut shrank = false;
        macro_rules! shrink_sparse {
            ($($m:expr),*) => {$(
                if sparse($m.len(), $m.capacity()) {
                    $m.shrink_to_fit();
                    shrank = true;
                }
            )*};
        }
        // The jobs' keys cannot move, so that frees only the vacant tail; enough after
        // a drain.
        shrink_sparse!(
            self.jobs,
            self.handles,
            self.by_unique,
            self.by_data,
            self.by_store_key,
            self.function_ids
        );
        shrink_sparse!(self.epoch_timers, self.work_timers, self.wide_sleepers);
        shrank |= self.ready.shrink();
        for (_, f) in &mut self.functions {
            for q in &mut f.queues {
                shrink_sparse!(q);
            }
            shrink_sparse!(f.sleepers);
        }
        shrank
    }

    /// Runs timers due at `now`: epoch jobs become runnable (and wake sleepers), and
    /// jobs past their CAN_DO_TIMEOUT go back to the queue.
    pub fn tick(&mut self, now: NowMs, out: &mut dyn Outbox) {
        self.end_due_holds(now, out);
        self.promote_due(now, out);
        while let Some(&Reverse((due, jid, seq, assignment))) = self.work_timers.peek() {
            if due > now {
                break;
            }
            self.work_timers.pop();
            let Some(job) = self.live_job(jid, seq) else { continue };
            if job.assignments != assignment {
                continue;
            }
            if let JobState::Running(worker) = job.state {
                self.stats.timed_out += 1;
                if let Some(s) = self.sessions.get_mut(worker) {
                    s.running.retain(|&(j, q)| !(j == jid && q == seq));
                }
                self.requeue_lost(jid, seq, now, out);
            }
        }
    }

    /// When [`Engine::tick`] next has work to do, if ever.
    pub fn next_deadline(&self) -> Option<NowMs> {
        let e = self.epoch_timers.peek().map(|Reverse(t)| t.0);
        let w = self.work_timers.peek().map(|Reverse(t)| t.0);
        let h = self.held_until.front().map(|t| t.0);
        [e, w, h].into_iter().flatten().min()
    }

    /// Moves epoch jobs whose time has come into their normal queues.
    pub(crate) fn promote_due(&mut self, now: NowMs, out: &mut dyn Outbox) {
        while let Some(&Reverse((due, jid, seq, _))) = self.epoch_timers.peek() {
            if due > now {
                break;
            }
            self.epoch_timers.pop();
            let Some(job) = self.live_job(jid, seq) else { continue };
            if job.state != JobState::Scheduled {
                continue;
            }
            let fid = job.function;
            if let Some(f) = self.functions.get_mut(fid) {
                f.scheduled = f.scheduled.saturating_sub(1);
            }
            if let Some(job) = self.jobs.get_mut(jid) {
                job.since_ms = now;
            }
            self.enqueue(jid, now, out);
        }
    }

    pub(crate) fn bump_order(&mut self) -> u64 {
        self.next_order = self.next_order.wrapping_add(1);
        self.next_order
    }

    /// The job at `jid` if it is still the one with sequence `seq`.
    pub(crate) fn live_job(&self, jid: JobId, seq: u64) -> Option<&Job> {
        self.jobs.get(jid).map(|j| &**j).filter(|j| j.seq == seq)
    }

    /// Looks up or creates a function record.
    pub(crate) fn function_id(&mut self, name: &[u8]) -> FunctionId {
        // Looked up by slice: cloning the packet's `Bytes` first cost an atomic
        // reference count (and its first clone an allocation) on every submit.
        if let Some(&id) = self.function_ids.get(name) {
            return id;
        }
        let name = Bytes::copy_from_slice(name);
        let order = self.bump_order();
        let id = self.functions.insert(Function::new(name.clone(), order));
        self.function_ids.insert(name, id);
        id
    }

    /// Puts a job at the tail of its priority queue and wakes sleeping workers.
    pub(crate) fn enqueue(&mut self, jid: JobId, now: NowMs, out: &mut dyn Outbox) {
        let Some(job) = self.jobs.get_mut(jid) else { return };
        job.state = JobState::Queued;
        let (fid, prio, seq) = (job.function, job.priority.index(), job.seq);
        if let Some(q) = self.functions.get_mut(fid).and_then(|f| f.queues.get_mut(prio)) {
            q.push_back((jid, seq));
        }
        self.mark_ready(fid);
        self.wake_sleepers(fid, now, out);
    }

    /// `fid` has queued jobs now: files it in [`Engine::ready`] and tells its wide
    /// workers.
    pub(crate) fn mark_ready(&mut self, fid: FunctionId) {
        if !self.ready.insert(fid) {
            return;
        }
        let Some(f) = self.functions.get(fid) else { return };
        for &w in &f.wide_workers {
            if let Some(s) = self.sessions.get_mut(w) {
                s.set_ready(fid, true);
            }
        }
    }

    /// Takes `fid` out of [`Engine::ready`] once its last queue entry is gone.
    pub(crate) fn unready_if_empty(&mut self, fid: FunctionId) {
        let Some(f) = self.functions.get(fid) else {
            self.ready.remove(fid);
            return;
        };
        if f.queues.iter().any(|q| !q.is_empty()) || !self.ready.remove(fid) {
            return;
        }
        for &w in &f.wide_workers {
            if let Some(s) = self.sessions.get_mut(w) {
                s.set_ready(fid, false);
            }
        }
    }

    /// Wakes sleeping workers of `fid` that were not woken yet, longest asleep first
    /// (held GRAB_JOBs before them), stopping after `--worker-wakeup` of them (0 = all
    /// of them, as gearmand's default; our default is 1, see
    /// `EngineConfig::worker_wakeup`): a NOOP each, or for a held GRAB_JOB, a job.
    pub(crate) fn wake_sleepers(&mut self, fid: FunctionId, now: NowMs, out: &mut dyn Outbox) {
        self.pick_sleepers(fid, out);
        self.answer_woken_grabs(now, out);
    }

    /// [`Engine::wake_sleepers`] but for the held GRAB_JOBs, which it only lists in
    /// [`Engine::held_woken`].
    fn pick_sleepers(&mut self, fid: FunctionId, out: &mut dyn Outbox) {
        let limit = self.config.worker_wakeup as usize;
        let mut woken = 0usize;
        loop {
            let Some(f) = self.functions.get_mut(fid) else { return };
            let Some((w, generation)) = f.sleepers.pop_front() else { break };
            let Some(s) = self.sessions.get_mut(w) else { continue };
            if !s.sleeping || s.noop_sent || s.sleep_gen != generation {
                continue;
            }
            wake(s, w, &mut self.held_woken, out);
            woken += 1;
            if limit > 0 && woken >= limit {
                return;
            }
        }
        if !self.wide_sleepers.is_empty() {
            self.wake_wide_sleepers(fid, limit.saturating_sub(woken), limit == 0, out);
        }
    }

    /// [`Engine::wake_sleepers`] among the wide workers: O(wide sleepers), which only
    /// workers registered for many functions pay for. Stale entries are dropped on the
    /// way; sleepers that cannot do `fid` keep their place.
    fn wake_wide_sleepers(&mut self, fid: FunctionId, mut left: usize, all: bool, out: &mut dyn Outbox) {
        let sessions = &mut self.sessions;
        let held_woken = &mut self.held_woken;
        self.wide_sleepers.retain(|&(w, generation)| {
            let Some(s) = sessions.get_mut(w) else { return false };
            if !s.sleeping || s.noop_sent || s.sleep_gen != generation {
                return false;
            }
            if (!all && left == 0) || !s.can(fid) {
                return true;
            }
            wake(s, w, held_woken, out);
            left = left.saturating_sub(1);
            false
        });
    }

    /// Files a connection that just went to sleep as a sleeper of each function it can
    /// do, dropping stale entries once they outnumber the live ones. A held GRAB_JOB
    /// goes `first` in line: that worker is awake and answered faster than a NOOP.
    pub(crate) fn add_sleeper(&mut self, conn: ConnId, first: bool) {
        let generation = self.next_sleep_gen;
        self.next_sleep_gen += 1;
        let Some(s) = self.sessions.get_mut(conn) else { return };
        s.sleeping = true;
        s.noop_sent = false;
        s.sleep_gen = generation;
        let Some(s) = self.sessions.get(conn) else { return };
        if s.wide {
            file_sleeper(&mut self.wide_sleepers, (conn, generation), first);
            if self.wide_sleepers.len() > 2 * self.sessions.len() + 16 {
                let sessions = &self.sessions;
                self.wide_sleepers.retain(|&(w, g)| {
                    sessions.get(w).is_some_and(|s| s.sleeping && !s.noop_sent && s.sleep_gen == g)
                });
            }
            return;
        }
        for a in &s.abilities {
            let Some(f) = self.functions.get_mut(a.function) else { continue };
            file_sleeper(&mut f.sleepers, (conn, generation), first);
            // Amortised O(1): compaction runs only after the queue doubled past the
            // number of registered workers.
            if f.sleepers.len() > 2 * f.workers.len() + 16 {
                let sessions = &self.sessions;
                f.sleepers.retain(|&(w, g)| {
                    sessions.get(w).is_some_and(|s| s.sleeping && !s.noop_sent && s.sleep_gen == g)
                });
            }
        }
    }

    /// A worker that was woken but left (or dropped functions) before it grabbed:
    /// its wake-up is passed on, so queued jobs of those functions are not left
    /// waiting for a NOOP that went nowhere.
    pub(crate) fn pass_on_wakeup(&mut self, functions: &[FunctionId], now: NowMs, out: &mut dyn Outbox) {
        for &fid in functions {
            let has_queued = self.functions.get(fid).is_some_and(|f| f.queues.iter().any(|q| !q.is_empty()));
            if has_queued {
                self.wake_sleepers(fid, now, out);
            }
        }
    }

    /// The job that a submit to `fid` with `key` joins, if any.
    pub(crate) fn coalescing_job(&self, fid: FunctionId, key: CoalesceKey<'_>) -> Option<JobId> {
        let is_it =
            |jid| self.jobs.get(jid).is_some_and(|j| j.function == fid && j.coalesce_key() == Some(key));
        match key {
            CoalesceKey::Unique(unique) => self.by_unique.find(self.by_unique.hash(unique), is_it),
            CoalesceKey::Data(data) => self.by_data.find(self.data_hash(fid, data), is_it),
        }
    }

    /// Keeps later submits from joining `jid`: they start a new job. A job with a
    /// unique stays in `by_unique` (GET_STATUS_UNIQUE still finds it), where clearing
    /// `coalescing` alone keeps submits away; a `-` job leaves `by_data`.
    pub(crate) fn stop_coalescing(&mut self, jid: JobId) {
        let data_hash = self.jobs.get(jid).and_then(|j| self.data_key_hash(j));
        if let Some(job) = self.jobs.get_mut(jid) {
            job.coalescing = false;
        }
        if let Some(hash) = data_hash {
            self.by_data.remove(hash, jid);
        }
    }

    /// The hash a coalescing `-` job of `fid` with `data` is filed under in
    /// [`Engine::by_data`].
    pub(crate) fn data_hash(&self, fid: FunctionId, data: &[u8]) -> u64 {
        self.by_data.hash(&(fid, data))
    }

    /// Where `job` is filed in [`Engine::by_data`], if it is a coalescing `-` job.
    pub(crate) fn data_key_hash(&self, job: &Job) -> Option<u64> {
        match job.coalesce_key() {
            Some(CoalesceKey::Data(data)) => Some(self.data_hash(job.function, data)),
            _ => None,
        }
    }

    /// Where `job` is filed in [`Engine::by_unique`], if it has a unique there.
    pub(crate) fn unique_hash(&self, job: &Job) -> Option<u64> {
        has_status_unique(&job.unique).then(|| self.by_unique.hash(&job.unique[..]))
    }

    /// The newest live job with `unique`, as GET_STATUS_UNIQUE reports.
    pub(crate) fn newest_with_unique(&self, unique: &[u8]) -> Option<&Job> {
        let hash = self.by_unique.hash(unique);
        let jobs = self.by_unique.candidates(hash).filter_map(|jid| self.jobs.get(jid));
        jobs.filter(|j| j.unique[..] == *unique).max_by_key(|j| j.seq).map(|j| &**j)
    }

    /// Removes a job for good: from every index, counter and session list.
    pub(crate) fn remove_job(&mut self, jid: JobId, out: &mut dyn Outbox) {
        if !self.jobs.contains(jid) {
            return;
        }
        self.unstore(jid, out);
        let Some(job) = self.jobs.remove(jid) else { return };
        self.handles.remove(job.seq);
        if let Some(hash) = self.data_key_hash(&job) {
            self.by_data.remove(hash, jid);
        }
        if let Some(hash) = self.unique_hash(&job) {
            self.by_unique.remove(hash, jid);
        }
        if let Some(f) = self.functions.get_mut(job.function) {
            f.total = f.total.saturating_sub(1);
            match job.state {
                JobState::Running(w) => {
                    f.running = f.running.saturating_sub(1);
                    if let Some(s) = self.sessions.get_mut(w) {
                        s.running.retain(|&(j, q)| !(j == jid && q == job.seq));
                    }
                }
                JobState::Scheduled => f.scheduled = f.scheduled.saturating_sub(1),
                JobState::Queued | JobState::Persisting => {}
            }
        }
        for c in job.listeners {
            self.unlisten(c, jid, job.seq);
        }
    }

    /// A client stopped listening to a job (it ended or was cancelled). The entry is
    /// left in the session's list, where a later [`Engine::detach_listener`] finds it
    /// stale and skips it, and the list is compacted once stale entries outnumber the
    /// live ones: removing it at once scanned the client's whole backlog, so a client
    /// with 1M foreground jobs outstanding paid 1 ms per completion.
    pub(crate) fn unlisten(&mut self, conn: ConnId, jid: JobId, seq: u64) {
        let Some(s) = self.sessions.get_mut(conn) else { return };
        s.listening_live = s.listening_live.saturating_sub(1);
        if s.listening.len() > 2 * s.listening_live + 16 {
            let jobs = &self.jobs;
            s.listening.retain(|&(j, q)| {
                !(j == jid && q == seq)
                    && jobs.get(j).is_some_and(|job| job.seq == q && job.listeners.contains(&conn))
            });
            s.listening_live = s.listening.len();
        }
    }

    /// A worker lost a running job (it left, dropped the function, or timed out):
    /// requeue it at the tail, or fail it once `--job-retries` assignments are used.
    /// The caller has already taken the job off the worker's session.
    pub(crate) fn requeue_lost(&mut self, jid: JobId, seq: u64, now: NowMs, out: &mut dyn Outbox) {
        let retries_limit = self.config.job_retries;
        let Some(job) = self.jobs.get_mut(jid).filter(|j| j.seq == seq) else { return };
        if !matches!(job.state, JobState::Running(_)) {
            return;
        }
        job.retries = job.retries.saturating_add(1);
        let fid = job.function;
        if job.abandoned {
            self.remove_job(jid, out);
            return;
        }
        if retries_limit > 0 && job.retries >= retries_limit {
            let handle = crate::handle::Handle::new(&self.config.handle_prefix, job.seq);
            for &c in &job.listeners {
                out.packet(c, Command::WorkFail, &[&handle]);
            }
            self.stats.failed += 1;
            self.remove_job(jid, out);
            return;
        }
        self.stats.retried += 1;
        job.since_ms = now;
        if let Some(x) = job.extra.as_deref_mut() {
            x.numerator = 0;
            x.denominator = 0;
        }
        // Mark it queued before the counters so remove paths never see it twice.
        job.state = JobState::Queued;
        if let Some(f) = self.functions.get_mut(fid) {
            f.running = f.running.saturating_sub(1);
        }
        self.enqueue(jid, now, out);
    }

    /// Detaches a listening client from a job; a foreground job nobody waits for any
    /// more is flagged abandoned. Background jobs stay wanted (gearmand drops them:
    /// PROTOCOL.md §4.10 [bug]).
    fn detach_listener(&mut self, jid: JobId, seq: u64, conn: ConnId) {
        let Some(job) = self.jobs.get_mut(jid).filter(|j| j.seq == seq) else { return };
        job.listeners.retain(|&c| c != conn);
        if job.listeners.is_empty() && !job.background && !job.bg_joined {
            job.abandoned = true;
        }
    }

    /// Checks that every index and counter agrees with the jobs themselves; for tests
    /// and fuzzing. Returns a description of the first inconsistency.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.held_woken.is_empty() {
            return Err(format!("held grabs woken but not answered: {:?}", self.held_woken));
        }
        for (cid, s) in &self.sessions {
            if s.held_grab.is_none() {
                continue;
            }
            if !s.sleeping || s.noop_sent {
                return Err(format!("held grab of {cid} is not filed as a sleeper"));
            }
            if !self.held_until.iter().any(|&(_, c, g)| c == cid && g == s.sleep_gen) {
                return Err(format!("held grab of {cid} has no deadline"));
            }
        }
        for (fid, f) in &self.functions {
            let total = self.jobs.iter().filter(|(_, j)| j.function == fid).count();
            if total != f.total {
                return Err(format!("function {fid}: total {} but {total} jobs", f.total));
            }
            let running = self
                .jobs
                .iter()
                .filter(|(_, j)| j.function == fid && matches!(j.state, JobState::Running(_)))
                .count();
            if running != f.running {
                return Err(format!("function {fid}: running {} but {running}", f.running));
            }
            for q in &f.queues {
                for &(jid, seq) in q {
                    match self.live_job(jid, seq) {
                        Some(j) if j.state == JobState::Queued && j.function == fid => {}
                        _ => return Err(format!("function {fid}: stale queue entry {jid}")),
                    }
                }
            }
        }
        for (jid, j) in self.jobs.iter() {
            if self.handles.get(j.seq) != Some(jid) {
                return Err(format!("job {jid} missing from the handle index"));
            }
            let in_queues: usize = self
                .functions
                .get(j.function)
                .map(|f| f.queues.iter().flatten().filter(|&&(q, s)| q == jid && s == j.seq).count())
                .unwrap_or(0);
            let want = usize::from(j.state == JobState::Queued);
            if in_queues != want {
                return Err(format!("job {jid} is in {in_queues} queues, state {:?}", j.state));
            }
            if let JobState::Running(w) = j.state {
                let held = self.sessions.get(w).is_some_and(|s| s.running.contains(&(jid, j.seq)));
                if !held {
                    return Err(format!("job {jid} running on {w} which does not hold it"));
                }
            }
        }
        Ok(())
    }
}

/// Sends an ERROR packet.
pub(crate) fn error(out: &mut dyn Outbox, conn: ConnId, code: &str, text: &str) {
    out.packet(conn, Command::Error, &[code.as_bytes(), text.as_bytes()]);
}
