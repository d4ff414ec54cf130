//! Worker requests: abilities, the PRE_SLEEP/NOOP/GRAB handshake, and WORK_* results
//! forwarded to the job's listening clients.

use std::cmp::Reverse;

use gearman_proto::{Command, Packet};

use crate::engine::error;
use crate::function::FunctionId;
use crate::job::{atoi_u32, JobId, JobState};
use crate::session::Session;
use crate::submit::strip_trailing_nul;
use crate::{ConnId, Engine, NowMs, Outbox};

/// gearmand never lets a CAN_DO_TIMEOUT fire sooner than this.
const MIN_WORK_TIMEOUT_MS: u32 = 1000;

/// gearmand's handle buffer: WORK_FAIL handles of this size or more are refused.
const MAX_HANDLE_BYTES: usize = 64;

/// Dead queue entries (cancelled or gone jobs) one GRAB_JOB or PRE_SLEEP discards at
/// most; the rest are left for the worker's next request.
pub(crate) const MAX_DISCARDS_PER_REQUEST: usize = 1024;

/// What a look into a worker's queues found.
enum Head<T> {
    /// A live job (or, from `assign_next`, one was assigned).
    Job(T),
    /// Nothing queued.
    Empty,
    /// The discard budget ran out before a live job or the end of the queues.
    Unfinished,
}

impl Engine {
    pub(crate) fn can_do(&mut self, conn: ConnId, name: &[u8], timeout_ms: u32) {
        let fid = self.function_id(name);
        let Some(s) = self.sessions.get_mut(conn) else { return };
        s.register(fid, timeout_ms, self.ready.contains(fid));
        let newly_wide = if !s.wide && s.abilities.len() > self.wide_after {
            let ready = &self.ready;
            s.widen(|f| ready.contains(f))
        } else {
            Vec::new()
        };
        let wide = s.wide;
        // A connection asleep already can be woken for its new function too.
        let asleep = (s.sleeping && !s.noop_sent).then_some(s.sleep_gen);
        if let Some(f) = self.functions.get_mut(fid) {
            f.workers.push(conn);
            if wide && !f.wide_workers.contains(&conn) {
                f.wide_workers.push(conn);
            }
            if let Some(generation) = asleep {
                f.sleepers.push_back((conn, generation));
            }
        }
        for other in newly_wide {
            if let Some(f) = self.functions.get_mut(other) {
                if !f.wide_workers.contains(&conn) {
                    f.wide_workers.push(conn);
                }
            }
        }
    }

    pub(crate) fn cant_do(&mut self, conn: ConnId, name: &[u8], now: NowMs, out: &mut dyn Outbox) {
        let Some(&fid) = self.function_ids.get(name) else { return };
        self.drop_abilities(conn, |a| a == fid, now, out);
    }

    pub(crate) fn reset_abilities(&mut self, conn: ConnId, now: NowMs, out: &mut dyn Outbox) {
        self.drop_abilities(conn, |_| true, now, out);
    }

    /// Unregisters the matching functions and requeues the jobs this connection holds
    /// for them (each counts as a retry, as in gearmand).
    fn drop_abilities(
        &mut self,
        conn: ConnId,
        matches: impl Fn(FunctionId) -> bool,
        now: NowMs,
        out: &mut dyn Outbox,
    ) {
        let Some(s) = self.sessions.get_mut(conn) else { return };
        let woken_not_grabbed = s.sleeping && s.noop_sent;
        let dropped = s.unregister(matches);
        let wide = s.wide;
        let held: Vec<(JobId, u64)> = s.running.clone();
        for &fid in &dropped {
            if let Some(f) = self.functions.get_mut(fid) {
                f.workers.retain(|&w| w != conn);
                if wide {
                    f.wide_workers.retain(|&w| w != conn);
                }
            }
        }
        for (jid, seq) in held {
            let Some(job) = self.live_job(jid, seq) else { continue };
            if !dropped.contains(&job.function) {
                continue;
            }
            if let Some(s) = self.sessions.get_mut(conn) {
                s.running.retain(|&(j, q)| !(j == jid && q == seq));
            }
            self.requeue_lost(jid, seq, now, out);
        }
        if woken_not_grabbed {
            self.pass_on_wakeup(&dropped, now, out);
        }
    }

    pub(crate) fn pre_sleep(&mut self, conn: ConnId, now: NowMs, out: &mut dyn Outbox) {
        // Awake while promoting due epoch jobs, so a connection that already slept is
        // not woken by them and then answered with a second NOOP below.
        let was_sleeping = self.sessions.get_mut(conn).is_some_and(|s| std::mem::take(&mut s.sleeping));
        self.promote_due(now, out);
        // A cursor rather than an iterator: has_live_job discards jobs (needs `self`
        // mutably) but never changes this connection's abilities.
        let mut cursor = self.candidates(conn);
        let mut has_work = false;
        let mut budget = MAX_DISCARDS_PER_REQUEST;
        while let Some(fid) = self.next_candidate(conn, &mut cursor) {
            // Discards left over count as work: the NOOP brings a GRAB_JOB that goes on.
            if !matches!(self.live_head(fid, &mut budget, out), Head::Empty) {
                has_work = true;
                break;
            }
        }
        if has_work {
            if let Some(s) = self.sessions.get_mut(conn) {
                s.sleeping = was_sleeping;
            }
            out.packet(conn, Command::Noop, &[]);
            return;
        }
        self.add_sleeper(conn, false);
    }

    pub(crate) fn grab_job(&mut self, conn: ConnId, kind: Command, now: NowMs, out: &mut dyn Outbox) {
        // Clear the sleep flags first: the epoch jobs promoted below must not NOOP the
        // connection that is asking for work right now.
        let Some(s) = self.sessions.get_mut(conn) else { return };
        s.sleeping = false;
        s.noop_sent = false;
        self.promote_due(now, out);
        match self.assign_next(conn, kind, now, out) {
            Head::Job(()) => {}
            // NO_JOB at once, not held: the worker's PRE_SLEEP goes on discarding, and
            // the NOOP it gets back brings the next GRAB_JOB.
            Head::Unfinished => out.packet(conn, Command::NoJob, &[]),
            Head::Empty if self.config.grab_hold_ms > 0 => self.hold_grab(conn, kind, now),
            Head::Empty => out.packet(conn, Command::NoJob, &[]),
        }
    }

    /// Assigns `conn` the next job of its functions, if there is one within
    /// [`MAX_DISCARDS_PER_REQUEST`] discarded entries.
    fn assign_next(&mut self, conn: ConnId, kind: Command, now: NowMs, out: &mut dyn Outbox) -> Head<()> {
        let mut cursor = self.candidates(conn);
        let mut budget = MAX_DISCARDS_PER_REQUEST;
        while let Some(fid) = self.next_candidate(conn, &mut cursor) {
            match self.live_head(fid, &mut budget, out) {
                Head::Job((prio, jid)) => {
                    self.pop_head(fid, prio);
                    if self.config.round_robin {
                        if let Some(s) = self.sessions.get_mut(conn) {
                            s.send_to_back(fid);
                        }
                    }
                    self.assign(conn, jid, kind, now, out);
                    return Head::Job(());
                }
                Head::Unfinished => return Head::Unfinished,
                Head::Empty => {}
            }
        }
        Head::Empty
    }

    /// Leaves a GRAB_JOB that found nothing unanswered for `--grab-hold`: the worker
    /// is filed first among its functions' sleepers, and the next job queued for one
    /// of them is its answer (`answer_woken_grabs`); NO_JOB when the hold ends
    /// (`end_due_holds`) or when the worker sends anything else.
    fn hold_grab(&mut self, conn: ConnId, kind: Command, now: NowMs) {
        self.drop_stale_holds();
        self.add_sleeper(conn, true);
        let Some(s) = self.sessions.get_mut(conn) else { return };
        s.held_grab = Some(kind);
        let until = now.saturating_add(i64::from(self.config.grab_hold_ms));
        self.held_until.push_back((until, conn, s.sleep_gen));
    }

    /// Answers a held GRAB_JOB of `conn` with NO_JOB, if it has one.
    pub(crate) fn release_held_grab(&mut self, conn: ConnId, out: &mut dyn Outbox) {
        if self.sessions.get_mut(conn).and_then(Session::take_held_grab).is_some() {
            out.packet(conn, Command::NoJob, &[]);
        }
    }

    /// Answers the held GRAB_JOBs whose hold is over with NO_JOB.
    pub(crate) fn end_due_holds(&mut self, now: NowMs, out: &mut dyn Outbox) {
        while let Some(&(until, conn, generation)) = self.held_until.front() {
            if until > now {
                break;
            }
            self.held_until.pop_front();
            if self.sessions.get(conn).is_some_and(|s| s.holds(generation)) {
                self.release_held_grab(conn, out);
            }
        }
        self.drop_stale_holds();
    }

    /// Drops deadlines of holds answered early from the front, so that the next
    /// deadline the server sleeps to is a live one.
    fn drop_stale_holds(&mut self) {
        while let Some(&(_, conn, generation)) = self.held_until.front() {
            if self.sessions.get(conn).is_some_and(|s| s.holds(generation)) {
                break;
            }
            self.held_until.pop_front();
        }
    }

    /// Answers the held GRAB_JOBs that newly queued jobs woke, each with a job of its
    /// functions (NO_JOB in the rare case that another worker got there first).
    pub(crate) fn answer_woken_grabs(&mut self, now: NowMs, out: &mut dyn Outbox) {
        if self.held_woken.is_empty() {
            return;
        }
        // Taken and given back, so the list keeps its allocation; assigning never
        // queues a job, so nothing is added meanwhile.
        let mut woken = std::mem::take(&mut self.held_woken);
        for &conn in &woken {
            let Some(kind) = self.sessions.get_mut(conn).and_then(Session::take_held_grab) else { continue };
            if !matches!(self.assign_next(conn, kind, now, out), Head::Job(())) {
                out.packet(conn, Command::NoJob, &[]);
            }
        }
        woken.clear();
        self.held_woken = woken;
        self.drop_stale_holds();
    }

    /// Starts a walk over the functions of `conn` that may have work, in the order it
    /// is served (latest CAN_DO first, see `Session::ranks`), skipping functions with
    /// empty queues. A worker with few functions walks its list; a wide one (10,000
    /// functions) takes the best of its functions with queued jobs, which the engine
    /// keeps sorted for it, so neither GRAB_JOB nor PRE_SLEEP looks at every function.
    fn candidates(&self, conn: ConnId) -> Candidates {
        match self.sessions.get(conn) {
            Some(s) if s.wide => Candidates::Best(None),
            _ => Candidates::Walk(0),
        }
    }

    /// The next function of a [`Engine::candidates`] walk.
    fn next_candidate(&self, conn: ConnId, cursor: &mut Candidates) -> Option<FunctionId> {
        match cursor {
            Candidates::Walk(pos) => loop {
                let fid = self.sessions.get(conn)?.abilities.get(*pos)?.function;
                *pos += 1;
                if self.ready.contains(fid) {
                    return Some(fid);
                }
            },
            // The caller tried the last one and found it empty, which took it out of
            // the set; seeing it again would mean the set is wrong, so stop.
            Candidates::Best(last) => {
                let best = self.sessions.get(conn)?.best_ready()?;
                if *last == Some(best) {
                    return None;
                }
                *last = Some(best);
                Some(best)
            }
        }
    }

    /// The first wanted job of a function, highest priority first, as `(priority,
    /// job)`, left in its queue. Entries of abandoned (cancelled) or gone jobs at the
    /// heads are discarded on the way, as gearmand's peek and grab do; skipping over them
    /// instead made every PRE_SLEEP scan all of them again. At most `budget` of them,
    /// shared by the request's calls: a mass `cancel job` of a million queued jobs
    /// made the next request discard all of them under the engine lock (0.7 s).
    fn live_head(
        &mut self,
        fid: FunctionId,
        budget: &mut usize,
        out: &mut dyn Outbox,
    ) -> Head<(usize, JobId)> {
        for prio in 0..3 {
            loop {
                let head = self.functions.get(fid).and_then(|f| f.queues.get(prio)).and_then(|q| q.front());
                let Some(&(jid, seq)) = head else { break };
                let live = self.live_job(jid, seq).map(|j| !j.abandoned);
                if live == Some(true) {
                    return Head::Job((prio, jid));
                }
                if *budget == 0 {
                    return Head::Unfinished;
                }
                *budget -= 1;
                self.pop_head(fid, prio);
                if live == Some(false) {
                    self.remove_job(jid, out);
                }
            }
        }
        Head::Empty
    }

    fn pop_head(&mut self, fid: FunctionId, prio: usize) {
        if let Some(q) = self.functions.get_mut(fid).and_then(|f| f.queues.get_mut(prio)) {
            q.pop_front();
        }
        self.unready_if_empty(fid);
    }

    fn assign(&mut self, conn: ConnId, jid: JobId, kind: Command, now: NowMs, out: &mut dyn Outbox) {
        let timeout =
            self.jobs.get(jid).and_then(|j| self.sessions.get(conn).map(|s| s.timeout_for(j.function)));
        let Some(job) = self.jobs.get_mut(jid) else { return };
        job.state = JobState::Running(conn);
        job.assignments = job.assignments.wrapping_add(1);
        let queued_at = std::mem::replace(&mut job.since_ms, now);
        let (seq, fid, assignment) = (job.seq, job.function, job.assignments);
        self.stats.queue_time.observe(now.saturating_sub(queued_at));
        if let Some(f) = self.functions.get_mut(fid) {
            f.running += 1;
        }
        if let Some(s) = self.sessions.get_mut(conn) {
            s.running.push((jid, seq));
        }
        if let Some(ms) = timeout.filter(|&t| t > 0) {
            let due = now.saturating_add(i64::from(ms.max(MIN_WORK_TIMEOUT_MS)));
            self.work_timers.push(Reverse((due, jid, seq, assignment)));
        }
        let Some(job) = self.jobs.get(jid) else { return };
        let fname = self.functions.get(fid).map(|f| &f.name[..]).unwrap_or_default();
        let handle = self.handle_of(job.seq);
        match kind {
            Command::GrabJob => out.packet_data(conn, Command::JobAssign, &[&handle, fname], &job.data),
            Command::GrabJobAll if !job.extra().reducer.is_empty() => out.packet_data(
                conn,
                Command::JobAssignAll,
                &[&handle, fname, &job.unique, &job.extra().reducer],
                &job.data,
            ),
            _ => out.packet_data(conn, Command::JobAssignUniq, &[&handle, fname, &job.unique], &job.data),
        }
    }

    /// Whether the data of a result that `conn` is sending for the job `handle` can
    /// be dropped unread: the job runs on `conn` and no client listens to it (a
    /// background job, or one whose submitters all left). If so, later submits stop
    /// joining the job, as if it had completed already: a client that joined while
    /// the data was being dropped would get the result without it. The result itself
    /// (with empty data) must still be handled.
    pub fn drop_result_data(&mut self, conn: ConnId, handle: &[u8]) -> bool {
        let droppable = self
            .job_running_on(conn, strip_trailing_nul(handle))
            .filter(|&j| self.jobs.get(j).is_some_and(|j| j.listeners.is_empty()));
        let Some(jid) = droppable else { return false };
        self.stop_coalescing(jid);
        true
    }

    /// The one client the data of a final result (`command`: WORK_COMPLETE or
    /// WORK_EXCEPTION) that `conn` is sending for the job `handle` can go to without
    /// passing through the engine: the job runs on `conn` and exactly one client
    /// listens, and `takes(client)` (the server can send that client data this way).
    /// If so, later submits stop joining the job, as for [`Engine::drop_result_data`]:
    /// a client that joined meanwhile would get a result without its data. The result
    /// itself, with the data read so far, must still be handled; the server sends the
    /// rest to the client after it.
    pub fn forward_result_data(
        &mut self,
        conn: ConnId,
        handle: &[u8],
        command: Command,
        takes: impl FnOnce(ConnId) -> bool,
    ) -> Option<ConnId> {
        if !matches!(command, Command::WorkComplete | Command::WorkException) {
            return None;
        }
        let jid = self.job_running_on(conn, strip_trailing_nul(handle))?;
        let job = self.jobs.get(jid)?;
        if job.listeners.len() != 1 {
            return None;
        }
        let client = *job.listeners.front()?;
        if !takes(client) {
            return None;
        }
        self.stop_coalescing(jid);
        Some(client)
    }

    /// Whether `conn` runs jobs and nobody listens to the results of any of them: a
    /// hint that its next large result need not be read (see `drop_result_data`).
    pub fn runs_only_unwanted_results(&self, conn: ConnId) -> bool {
        let Some(s) = self.sessions.get(conn) else { return false };
        !s.running.is_empty()
            && s.running
                .iter()
                .all(|&(jid, seq)| self.jobs.get(jid).is_some_and(|j| j.seq == seq && j.listeners.is_empty()))
    }

    /// The job named `handle` (without a trailing NUL) if it runs on `conn`: the
    /// only job whose results `conn` may send.
    fn job_running_on(&self, conn: ConnId, handle: &[u8]) -> Option<JobId> {
        self.job_by_handle(handle)
            .filter(|&j| self.jobs.get(j).is_some_and(|j| j.state == JobState::Running(conn)))
    }

    pub(crate) fn work_result(&mut self, conn: ConnId, p: &Packet, now: NowMs, out: &mut dyn Outbox) {
        let raw_handle = p.arg(0);
        let handle = strip_trailing_nul(raw_handle);
        if p.command == Command::WorkFail && raw_handle.len() >= MAX_HANDLE_BYTES {
            error(
                out,
                conn,
                "ARGUMENT_TOO_LARGE",
                "Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
            );
            return;
        }
        let Some(jid) = self.job_running_on(conn, handle) else {
            let text = match p.command {
                Command::WorkData | Command::WorkWarning => "Job does not exist on server",
                Command::WorkException => "An exception was received for a job that does not exist",
                _ => "Job given in work result not found",
            };
            error(out, conn, "JOB_NOT_FOUND", text);
            return;
        };
        let Some(job) = self.jobs.get_mut(jid) else { return };
        let assigned_at = job.since_ms;
        match p.command {
            Command::WorkStatus => {
                let x = job.extra_mut();
                x.numerator = atoi_u32(p.arg(1));
                x.denominator = atoi_u32(p.arg(2));
                for &c in &job.listeners {
                    out.packet(c, Command::WorkStatus, &[p.arg(0), p.arg(1), p.arg(2)]);
                }
            }
            Command::WorkData | Command::WorkWarning => {
                for &c in &job.listeners {
                    out.packet_data(c, p.command, &[p.arg(0)], &p.arg_bytes(1));
                }
            }
            Command::WorkComplete => {
                for &c in &job.listeners {
                    out.packet_data(c, Command::WorkComplete, &[p.arg(0)], &p.arg_bytes(1));
                }
                self.stats.completed += 1;
                self.observe_run(assigned_at, now);
                self.remove_job(jid, out);
            }
            Command::WorkFail => {
                // Forwarded byte for byte, a trailing NUL included (quirk Q2).
                for &c in &job.listeners {
                    out.packet(c, Command::WorkFail, &[raw_handle]);
                }
                self.stats.failed += 1;
                self.observe_run(assigned_at, now);
                self.remove_job(jid, out);
            }
            Command::WorkException => {
                for &c in &job.listeners {
                    if self.sessions.get(c).is_some_and(|s| s.exceptions) {
                        out.packet_data(c, Command::WorkException, &[p.arg(0)], &p.arg_bytes(1));
                    } else {
                        // gearmand appends a NUL here, which hangs libgearman (Q1).
                        out.packet(c, Command::WorkFail, &[handle]);
                    }
                }
                self.stats.excepted += 1;
                self.observe_run(assigned_at, now);
                self.remove_job(jid, out);
            }
            _ => {}
        }
    }
}

/// Where a walk over a worker's candidate functions stands.
enum Candidates {
    /// Walking the worker's own list, at this position.
    Walk(usize),
    /// A wide worker's best ready function each time; the last one given.
    Best(Option<FunctionId>),
}

#[cfg(test)]
mod tests {
    use gearman_proto::{Command, Magic, Packet};

    use super::MAX_DISCARDS_PER_REQUEST;
    use crate::{ConnId, Engine, EngineConfig, NowMs, PeerInfo, RecordingOutbox, Sent};

    const NOW: NowMs = 1_700_000_000_000;

    fn send(e: &mut Engine, out: &mut RecordingOutbox, c: ConnId, cmd: Command, args: &[&[u8]]) -> Vec<Sent> {
        let p = Packet::new(Magic::Req, cmd, args).expect("valid layout");
        e.handle_packet(c, &p, NOW, out);
        e.check_invariants().expect("invariants hold");
        out.take()
    }

    /// PRE_SLEEP discards the cancelled jobs it finds at the head of a queue (as
    /// gearmand's peek does), so asking again does not rescan them.
    #[test]
    fn pre_sleep_discards_cancelled_jobs_ahead_of_it() {
        let config = EngineConfig { handle_prefix: "H:t".into(), ..EngineConfig::default() };
        let (mut e, mut out) = (Engine::new(config), RecordingOutbox::default());
        let c = e.connect(PeerInfo { label: 0, ip: "127.0.0.1".into() });
        let w = e.connect(PeerInfo { label: 1, ip: "127.0.0.1".into() });
        send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
        for _ in 0..3 {
            send(&mut e, &mut out, c, Command::SubmitJobHighBg, &[b"f", b"", b"x"]);
        }
        send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"live"]);
        for h in ["H:t:1", "H:t:2", "H:t:3"] {
            e.handle_admin(c, format!("cancel job {h}").as_bytes(), &mut out);
        }
        out.take();
        assert_eq!(
            send(&mut e, &mut out, w, Command::PreSleep, &[]),
            vec![Sent::Packet(w, Command::Noop, vec![])]
        );
        assert_eq!(e.job_count(), 1, "the cancelled jobs were discarded");
        e.handle_admin(c, b"cancel job H:t:4", &mut out);
        out.take();
        assert_eq!(send(&mut e, &mut out, w, Command::PreSleep, &[]), vec![], "nothing live: sleep");
        assert_eq!(e.job_count(), 0);
        assert_eq!(
            send(&mut e, &mut out, w, Command::GrabJob, &[]),
            vec![Sent::Packet(w, Command::NoJob, vec![])]
        );
    }

    #[test]
    fn a_mass_cancel_is_discarded_a_bounded_slice_per_request() {
        let config = EngineConfig { handle_prefix: "H:t".into(), grab_hold_ms: 2, ..EngineConfig::default() };
        let (mut e, mut out) = (Engine::new(config), RecordingOutbox::default());
        let c = e.connect(PeerInfo { label: 0, ip: "127.0.0.1".into() });
        let w = e.connect(PeerInfo { label: 1, ip: "127.0.0.1".into() });
        send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
        let dead = 2 * MAX_DISCARDS_PER_REQUEST + 10;
        // Straight into the engine: `send` checks every invariant, O(jobs) each time.
        let submit = Packet::new(Magic::Req, Command::SubmitJobBg, &[b"f", b"", b"x"]).expect("valid layout");
        for _ in 0..dead {
            e.handle_packet(c, &submit, NOW, &mut out);
        }
        send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"live"]);
        for i in 1..=dead {
            e.handle_admin(c, format!("cancel job H:t:{i}").as_bytes(), &mut out);
        }
        out.take();
        // Each request discards one slice and says so the usual way: NO_JOB at once
        // (not held), then NOOP after PRE_SLEEP, so the worker comes back for more.
        assert_eq!(
            send(&mut e, &mut out, w, Command::GrabJob, &[]),
            vec![Sent::Packet(w, Command::NoJob, vec![])]
        );
        assert_eq!(e.job_count(), dead + 1 - MAX_DISCARDS_PER_REQUEST);
        assert_eq!(
            send(&mut e, &mut out, w, Command::PreSleep, &[]),
            vec![Sent::Packet(w, Command::Noop, vec![])]
        );
        assert_eq!(e.job_count(), 11);
        let assigned = send(&mut e, &mut out, w, Command::GrabJob, &[]);
        let handle = format!("H:t:{}", dead + 1).into_bytes();
        assert_eq!(
            assigned,
            vec![Sent::Packet(w, Command::JobAssign, vec![handle, b"f".to_vec(), b"live".to_vec()])]
        );
        assert_eq!(e.job_count(), 1);
        e.check_invariants().expect("invariants hold");
    }
}
