//! Client requests: SUBMIT_JOB and its variants (with coalescing), GET_STATUS,
//! GET_STATUS_UNIQUE, OPTION_REQ and SET_CLIENT_ID.

use std::cmp::Reverse;
use std::collections::VecDeque;

use bytes::Bytes;
use gearman_proto::{Command, Packet};

use crate::engine::error;
use crate::function::FunctionId;
use crate::job::{CoalesceKey, Job, JobExtra, JobId, JobState};
use crate::session::MAX_CLIENT_ID_BYTES;
use crate::{ConnId, Engine, NowMs, Outbox, Priority};

/// Longest unique (and reducer) accepted. gearmand accepts 64 but keeps 63 (its
/// quirk Q3); we keep all 64.
pub(crate) const MAX_UNIQUE_BYTES: usize = 64;

/// Job data at least this large is kept as a view of the read buffer it arrived in
/// rather than copied out; smaller data is copied, so that it does not pin a buffer
/// many times its size.
pub(crate) const KEEP_VIEW_DATA_BYTES: usize = 32 * 1024;

/// How a submit packet type maps to a job.
struct SubmitKind {
    priority: Priority,
    background: bool,
    epoch: bool,
    reduce: bool,
}

fn kind(command: Command) -> SubmitKind {
    let (priority, background, epoch, reduce) = match command {
        Command::SubmitJobBg => (Priority::Normal, true, false, false),
        Command::SubmitJobHigh => (Priority::High, false, false, false),
        Command::SubmitJobHighBg => (Priority::High, true, false, false),
        Command::SubmitJobLow => (Priority::Low, false, false, false),
        Command::SubmitJobLowBg => (Priority::Low, true, false, false),
        Command::SubmitJobEpoch => (Priority::Normal, true, true, false),
        Command::SubmitReduceJob => (Priority::Normal, false, false, true),
        Command::SubmitReduceJobBackground => (Priority::Normal, true, false, true),
        _ => (Priority::Normal, false, false, false),
    };
    SubmitKind { priority, background, epoch, reduce }
}

impl Engine {
    pub(crate) fn submit(&mut self, conn: ConnId, p: &Packet, now: NowMs, out: &mut dyn Outbox) {
        let k = kind(p.command);
        let unique = p.arg_bytes(1);
        let (when, reducer, data) = if k.epoch {
            (crate::job::strtol(p.arg(2)), Bytes::new(), p.arg_bytes(3))
        } else if k.reduce {
            // Body: function, unique, reducer, aggregate (ignored), data.
            (0, p.arg_bytes(2), p.arg_bytes(4))
        } else {
            (0, Bytes::new(), p.arg_bytes(2))
        };
        // gearmand checks only the reducer on REDUCE submits (quirk Q4); we check both.
        if unique.len() > MAX_UNIQUE_BYTES || reducer.len() > MAX_UNIQUE_BYTES {
            error(out, conn, "ARGUMENT_TOO_LARGE", "Unique value too large");
            return;
        }
        let fid = self.function_id(p.arg(0));
        if let Some(key) = CoalesceKey::of(&unique, &data) {
            if let Some(jid) = self.coalescing_job(fid, key) {
                self.stats.coalesced += 1;
                self.join(jid, conn, k.background, out);
                return;
            }
        }
        if let Some(f) = self.functions.get(fid) {
            let limit = f.max_queue.get(k.priority.index()).copied().unwrap_or(0);
            if limit > 0 && f.total >= limit as usize {
                error(out, conn, "QUEUE_ERROR", "Job queue is full");
                return;
            }
        }
        let future = when > 0 && when.saturating_mul(1000) > now;
        // The arguments are views into the connection's read buffer: a queued job
        // holding a small one would keep that whole buffer alive, so they are copied.
        // Large data stays a view: it fills most of its buffer anyway (the reader
        // sizes buffers for large packets), and not copying it is most of the cost
        // of passing it through.
        let data = if data.len() >= KEEP_VIEW_DATA_BYTES { data } else { Bytes::copy_from_slice(&data) };
        let jid = self.create_job(
            fid,
            Bytes::copy_from_slice(&unique),
            data,
            Bytes::copy_from_slice(&reducer),
            k.priority,
            k.background,
            when,
        );
        self.stats.submitted += 1;
        let Some(job) = self.jobs.get_mut(jid) else { return };
        job.since_ms = now;
        let seq = job.seq;
        let handle = crate::handle::Handle::new(&self.config.handle_prefix, seq);
        if !k.background {
            job.listeners.push_back(conn);
            if let Some(s) = self.sessions.get_mut(conn) {
                s.listening.push((jid, seq));
                s.listening_live += 1;
            }
        }
        if k.background && self.config.persistent {
            // Durable before acknowledged: JOB_CREATED waits for the store's commit,
            // holding this connection's place in reply order meanwhile.
            let key = self.next_key();
            let hold = self.next_hold_id();
            if let Some(job) = self.jobs.get_mut(jid) {
                job.state = JobState::Persisting;
                let x = job.extra_mut();
                x.store_key = Some(key);
                x.created_waiters.push((conn, hold));
            }
            self.by_store_key.insert(key, jid);
            out.hold(conn, hold);
            if let Some(record) = self.stored_job(jid) {
                out.persist(record);
            }
            return;
        }
        out.packet(conn, Command::JobCreated, &[&handle]);
        if future {
            if let Some(job) = self.jobs.get_mut(jid) {
                job.state = JobState::Scheduled;
            }
            if let Some(f) = self.functions.get_mut(fid) {
                f.scheduled += 1;
            }
            self.epoch_timers.push(Reverse((when.saturating_mul(1000), jid, seq, 0)));
        } else {
            self.enqueue(jid, now, out);
        }
    }

    /// Creates a job and files it in every index; the caller queues or stores it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_job(
        &mut self,
        fid: FunctionId,
        unique: Bytes,
        data: Bytes,
        reducer: Bytes,
        priority: Priority,
        background: bool,
        when: i64,
    ) -> JobId {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let coalescing = CoalesceKey::of(&unique, &data).is_some();
        let extra = (!reducer.is_empty() || when != 0)
            .then(|| Box::new(JobExtra { reducer, when, ..JobExtra::default() }));
        let job = Job {
            seq,
            function: fid,
            data,
            unique,
            listeners: VecDeque::new(),
            extra,
            state: JobState::Queued,
            since_ms: 0,
            retries: 0,
            assignments: 0,
            priority,
            background,
            bg_joined: false,
            abandoned: false,
            coalescing,
        };
        let (data_hash, unique_hash) = (self.data_key_hash(&job), self.unique_hash(&job));
        let jid = self.jobs.insert(Box::new(job));
        self.handles.insert(seq, jid);
        if let Some(hash) = data_hash {
            self.by_data.insert(hash, jid);
        }
        if let Some(hash) = unique_hash {
            self.by_unique.insert(hash, jid);
        }
        if let Some(f) = self.functions.get_mut(fid) {
            f.total += 1;
        }
        jid
    }

    fn next_hold_id(&mut self) -> u64 {
        let h = self.next_hold;
        self.next_hold = self.next_hold.wrapping_add(1);
        h
    }

    /// A submit that matched a live job: attach a foreground submitter as a listener
    /// (reviving the job if everyone had left) and answer with the existing handle.
    fn join(&mut self, jid: usize, conn: ConnId, background: bool, out: &mut dyn Outbox) {
        let Some(job) = self.jobs.get_mut(jid) else { return };
        if background {
            // gearmand lets the job be discarded when its foreground clients leave,
            // though this submitter was told it exists.
            job.bg_joined = true;
            job.abandoned = false;
        } else {
            job.listeners.push_front(conn);
            // gearmand leaves the flag set and the new client hangs (§4.10 [bug]).
            job.abandoned = false;
            let seq = job.seq;
            if let Some(s) = self.sessions.get_mut(conn) {
                s.listening.push((jid, seq));
                s.listening_live += 1;
            }
        }
        if self.jobs.get(jid).is_some_and(|j| j.is_persisting()) {
            // Answered with the original submitter once the store has committed.
            let hold = self.next_hold_id();
            if let Some(job) = self.jobs.get_mut(jid) {
                job.extra_mut().created_waiters.push((conn, hold));
            }
            out.hold(conn, hold);
            return;
        }
        let Some(job) = self.jobs.get(jid) else { return };
        out.packet(conn, Command::JobCreated, &[&self.handle_of(job.seq)]);
    }

    pub(crate) fn get_status(&mut self, conn: ConnId, handle: &[u8], out: &mut dyn Outbox) {
        let handle = strip_trailing_nul(handle);
        let job = self.job_by_handle(handle).and_then(|j| self.jobs.get(j));
        let (known, running, num, den) = match job {
            Some(j) => {
                (true, matches!(j.state, JobState::Running(_)), j.extra().numerator, j.extra().denominator)
            }
            None => (false, false, 0, 0),
        };
        let (num, den) = (num.to_string(), den.to_string());
        out.packet(
            conn,
            Command::StatusRes,
            &[handle, flag(known), flag(running), num.as_bytes(), den.as_bytes()],
        );
    }

    pub(crate) fn get_status_unique(&mut self, conn: ConnId, unique: &[u8], out: &mut dyn Outbox) {
        let unique = strip_trailing_nul(unique);
        let job = self.newest_with_unique(unique);
        let (known, running, num, den, clients) = match job {
            Some(j) => {
                let x = j.extra();
                (true, matches!(j.state, JobState::Running(_)), x.numerator, x.denominator, j.listeners.len())
            }
            None => (false, false, 0, 0, 0),
        };
        let (num, den, clients) = (num.to_string(), den.to_string(), clients.to_string());
        out.packet(
            conn,
            Command::StatusResUnique,
            &[unique, flag(known), flag(running), num.as_bytes(), den.as_bytes(), clients.as_bytes()],
        );
    }

    pub(crate) fn option_req(&mut self, conn: ConnId, name: &[u8], out: &mut dyn Outbox) {
        let name = strip_trailing_nul(name);
        if name.eq_ignore_ascii_case(b"exceptions") {
            if let Some(s) = self.sessions.get_mut(conn) {
                s.exceptions = true;
            }
            out.packet(conn, Command::OptionRes, &[name]);
        } else {
            error(out, conn, "UNKNOWN_OPTION", "Server does not recognize given option");
        }
    }

    pub(crate) fn set_client_id(&mut self, conn: ConnId, id: &[u8]) {
        if let Some(s) = self.sessions.get_mut(conn) {
            let id = id.get(..MAX_CLIENT_ID_BYTES).unwrap_or(id);
            s.client_id = Bytes::copy_from_slice(id);
        }
    }
}

fn flag(b: bool) -> &'static [u8] {
    if b {
        b"1"
    } else {
        b"0"
    }
}

/// Peers often send C strings: one trailing NUL is not part of the value.
pub(crate) fn strip_trailing_nul(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\0").unwrap_or(s)
}
