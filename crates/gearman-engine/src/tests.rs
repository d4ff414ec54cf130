//! Socket-free tests of the engine: exact outputs for each protocol path
//! (PROTOCOL.md §4, ADMIN.md), a deeper consistency check than
//! [`Engine::check_invariants`] run after every step, and a property test that drives
//! random operation sequences.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use gearman_proto::{Command, Magic, Packet, Sender};
use proptest::prelude::*;

use crate::job::{CoalesceKey, JobState};
use crate::{ConnId, Engine, EngineConfig, NowMs, PeerInfo, RecordingOutbox, Sent};

/// Connection id used for admin lines (the engine does not need a session for them).
const ADMIN: ConnId = 9_999;
/// Start time of every test, in ms (a whole number of seconds).
const T0: NowMs = 1_700_000_000_000;
/// `T0` in seconds, for SUBMIT_JOB_EPOCH.
const T0_S: i64 = T0 / 1000;

fn config() -> EngineConfig {
    EngineConfig {
        handle_prefix: "H:t".into(),
        pid: 42,
        version: "1.1.20+ds".into(),
        ..EngineConfig::default()
    }
}

fn pkt(conn: ConnId, command: Command, args: &[&[u8]]) -> Sent {
    Sent::Packet(conn, command, args.iter().map(|a| a.to_vec()).collect())
}

fn text(conn: ConnId, s: &str) -> Sent {
    Sent::Text(conn, s.as_bytes().to_vec())
}

fn err(conn: ConnId, code: &str, message: &str) -> Sent {
    pkt(conn, Command::Error, &[code.as_bytes(), message.as_bytes()])
}

fn created(conn: ConnId, handle: &str) -> Sent {
    pkt(conn, Command::JobCreated, &[handle.as_bytes()])
}

fn noop(conn: ConnId) -> Sent {
    pkt(conn, Command::Noop, &[])
}

fn no_job(conn: ConnId) -> Sent {
    pkt(conn, Command::NoJob, &[])
}

fn assign(conn: ConnId, handle: &str, function: &str, data: &str) -> Sent {
    pkt(conn, Command::JobAssign, &[handle.as_bytes(), function.as_bytes(), data.as_bytes()])
}

fn status_res(conn: ConnId, handle: &str, known: bool, running: bool, num: u32, den: u32) -> Sent {
    let (num, den) = (num.to_string(), den.to_string());
    pkt(
        conn,
        Command::StatusRes,
        &[handle.as_bytes(), flag(known), flag(running), num.as_bytes(), den.as_bytes()],
    )
}

fn flag(b: bool) -> &'static [u8] {
    if b {
        b"1"
    } else {
        b"0"
    }
}

const NOT_FOUND: &str = "Job given in work result not found";

// ---------------------------------------------------------------------------------
// Deep invariants: every index and counter agrees with the jobs and sessions.
// ---------------------------------------------------------------------------------

fn invariants(e: &Engine) -> Result<(), String> {
    e.check_invariants()?;
    deep_invariants(e)
}

fn deep_invariants(e: &Engine) -> Result<(), String> {
    if e.handles.len() != e.jobs.len() {
        return Err(format!("{} handles for {} jobs", e.handles.len(), e.jobs.len()));
    }
    if e.function_ids.len() != e.functions.len() {
        return Err(format!("{} names for {} functions", e.function_ids.len(), e.functions.len()));
    }
    for (name, &fid) in &e.function_ids {
        if e.functions.get(fid).map(|f| &f.name) != Some(name) {
            return Err(format!("function index {name:?} -> {fid} mismatched"));
        }
    }
    for (fid, f) in &e.functions {
        let scheduled =
            e.jobs.iter().filter(|(_, j)| j.function == fid && j.state == JobState::Scheduled).count();
        if scheduled != f.scheduled {
            return Err(format!("function {fid}: scheduled {} but {scheduled}", f.scheduled));
        }
        let mut entries: HashMap<ConnId, usize> = HashMap::new();
        for &w in &f.workers {
            *entries.entry(w).or_default() += 1;
        }
        let mut abilities: HashMap<ConnId, usize> = HashMap::new();
        for (cid, s) in &e.sessions {
            let n = s.abilities.iter().filter(|a| a.function == fid).count();
            if n > 0 {
                abilities.insert(cid, n);
            }
        }
        if entries != abilities {
            return Err(format!("function {fid}: worker entries {entries:?} vs abilities {abilities:?}"));
        }
    }
    let mut queued_functions = 0;
    for (fid, f) in &e.functions {
        let queued = f.queues.iter().any(|q| !q.is_empty());
        queued_functions += usize::from(queued);
        if e.ready.contains(fid) != queued {
            return Err(format!("function {fid}: ready {} but queued {queued}", e.ready.contains(fid)));
        }
    }
    if e.ready.len() != queued_functions {
        return Err(format!("{} ready functions, {queued_functions} with queued jobs", e.ready.len()));
    }
    for (cid, s) in &e.sessions {
        if s.noop_sent && !s.sleeping {
            return Err(format!("session {cid}: NOOP sent but not sleeping"));
        }
        // The rank index lists each function once, with the timeout of its first
        // (latest) entry, ranked in the order of the list.
        let mut last_rank = i64::MAX;
        let mut firsts = HashSet::new();
        for a in &s.abilities {
            if !firsts.insert(a.function) {
                continue;
            }
            match s.ranks.get(&a.function) {
                Some(r) if r.timeout_ms == a.timeout_ms && r.rank < last_rank => last_rank = r.rank,
                other => return Err(format!("session {cid}: rank of {} is {other:?}", a.function)),
            }
        }
        if firsts.len() != s.ranks.len() {
            return Err(format!("session {cid}: {} ranks for {} functions", s.ranks.len(), firsts.len()));
        }
        // A wide worker's sorted ready functions are exactly its functions with queued
        // jobs, and each of its functions lists it once among its wide workers.
        let want: std::collections::BTreeSet<_> = if s.wide {
            s.ranks.iter().filter(|(&f, _)| e.ready.contains(f)).map(|(&f, r)| (Reverse(r.rank), f)).collect()
        } else {
            Default::default()
        };
        if s.ready_ranked != want {
            return Err(format!("session {cid}: ready_ranked {:?}, want {want:?}", s.ready_ranked));
        }
        for (fid, f) in &e.functions {
            let listed = f.wide_workers.iter().filter(|&&w| w == cid).count();
            let want = usize::from(s.wide && s.can(fid));
            if listed != want {
                return Err(format!("function {fid} lists wide worker {cid} {listed} times, want {want}"));
            }
        }
        for a in &s.abilities {
            if !e.functions.contains(a.function) {
                return Err(format!("session {cid}: ability for a dropped function"));
            }
        }
        let mut seen = HashSet::new();
        for &(jid, seq) in &s.running {
            if !seen.insert((jid, seq)) {
                return Err(format!("session {cid} holds job {jid} twice"));
            }
            match e.live_job(jid, seq) {
                Some(j) if j.state == JobState::Running(cid) => {}
                _ => return Err(format!("session {cid} holds job {jid} that is not running on it")),
            }
        }
        // Entries for jobs that ended or dropped this listener are stale and kept until
        // compaction (`Engine::unlisten`); live ones must match the job's listeners.
        let mut live = 0;
        for &(jid, seq) in &s.listening {
            let Some(j) = e.live_job(jid, seq) else { continue };
            let mine = s.listening.iter().filter(|&&x| x == (jid, seq)).count();
            let theirs = j.listeners.iter().filter(|&&c| c == cid).count();
            if mine < theirs {
                return Err(format!("session {cid} listens {mine} times to job {jid}, job lists {theirs}"));
            }
            if theirs > 0 {
                live += 1;
            }
        }
        if s.listening_live < live || s.listening.len() > 2 * s.listening_live + 17 {
            return Err(format!(
                "session {cid}: {} listening entries, {} counted live, {live} live",
                s.listening.len(),
                s.listening_live
            ));
        }
    }
    for (jid, j) in e.jobs.iter() {
        if !e.functions.contains(j.function) {
            return Err(format!("job {jid} of a dropped function"));
        }
        for &c in &j.listeners {
            let listed =
                e.sessions.get(c).map_or(0, |s| s.listening.iter().filter(|&&x| x == (jid, j.seq)).count());
            if listed == 0 {
                return Err(format!("job {jid} lists listener {c} which does not listen"));
            }
        }
        // Abandoned = cancelled (listeners detached) or a foreground job all clients
        // left; a job somebody waits for, or a background job never cancelled, is wanted.
        if j.abandoned && !j.listeners.is_empty() {
            return Err(format!("abandoned job {jid} still has listeners"));
        }
        if !j.abandoned && !j.background && !j.bg_joined && j.listeners.is_empty() {
            return Err(format!("foreground job {jid} with no listener is not abandoned"));
        }
        if j.state == JobState::Scheduled {
            if !j.background {
                return Err(format!("scheduled job {jid} is foreground"));
            }
            if !e.epoch_timers.iter().any(|r| r.0 .1 == jid && r.0 .2 == j.seq) {
                return Err(format!("scheduled job {jid} has no timer"));
            }
        }
        if let Some(key) = j.coalesce_key() {
            if e.coalescing_job(j.function, key) != Some(jid) {
                return Err(format!("job {jid} is not the one found by its coalesce key"));
            }
        }
        // `-` jobs are not found by GET_STATUS_UNIQUE (gearmand files them by data hash).
        let indexed = usize::from(crate::engine::has_status_unique(&j.unique));
        let n = e.by_unique.candidates(e.by_unique.hash(&j.unique[..])).filter(|&x| x == jid).count();
        if n != indexed {
            return Err(format!("job {jid} is {n} times in the unique index"));
        }
    }
    for (hash, jid) in e.by_data.iter() {
        match e.jobs.get(jid).map(|j| (j.function, j.coalesce_key())) {
            Some((fid, Some(CoalesceKey::Data(data)))) if e.data_hash(fid, data) == hash => {}
            _ => return Err(format!("data index entry for job {jid} is stale")),
        }
    }
    let data_keyed =
        e.jobs.iter().filter(|(_, j)| matches!(j.coalesce_key(), Some(CoalesceKey::Data(_)))).count();
    if e.by_data.len() != data_keyed {
        return Err(format!("{} data index entries for {data_keyed} jobs", e.by_data.len()));
    }
    for (hash, jid) in e.by_unique.iter() {
        match e.jobs.get(jid) {
            Some(j) if e.by_unique.hash(&j.unique[..]) == hash => {}
            _ => return Err(format!("unique index entry for job {jid} is stale")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Harness: every step runs the engine, checks the invariants and returns the output.
// ---------------------------------------------------------------------------------

struct Harness {
    e: Engine,
    out: RecordingOutbox,
    now: NowMs,
    labels: i64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(config())
    }

    fn with(config: EngineConfig) -> Harness {
        let h = Harness { e: Engine::new(config), out: RecordingOutbox::default(), now: T0, labels: 0 };
        h.check();
        h
    }

    fn check(&self) {
        if let Err(e) = invariants(&self.e) {
            panic!("invariant broken: {e}");
        }
    }

    fn take(&mut self) -> Vec<Sent> {
        self.check();
        self.out.take()
    }

    fn connect(&mut self) -> ConnId {
        self.labels += 1;
        let c = self.e.connect(PeerInfo { label: self.labels, ip: "127.0.0.1".into() });
        assert_eq!(self.take(), vec![]);
        c
    }

    fn packet(&mut self, c: ConnId, p: &Packet) -> Vec<Sent> {
        self.e.handle_packet(c, p, self.now, &mut self.out);
        self.take()
    }

    fn send(&mut self, c: ConnId, command: Command, args: &[&[u8]]) -> Vec<Sent> {
        let p = Packet::new(Magic::Req, command, args).expect("argument count matches the layout");
        self.packet(c, &p)
    }

    fn submit(&mut self, c: ConnId, command: Command, f: &str, u: &str, data: &str) -> Vec<Sent> {
        self.send(c, command, &[f.as_bytes(), u.as_bytes(), data.as_bytes()])
    }

    /// Submits and asserts the only output is JOB_CREATED with `handle`.
    fn submit_ok(&mut self, c: ConnId, command: Command, f: &str, u: &str, data: &str, handle: &str) {
        assert_eq!(self.submit(c, command, f, u, data), vec![created(c, handle)]);
    }

    fn epoch(&mut self, c: ConnId, f: &str, u: &str, when: &str, data: &str) -> Vec<Sent> {
        self.send(c, Command::SubmitJobEpoch, &[f.as_bytes(), u.as_bytes(), when.as_bytes(), data.as_bytes()])
    }

    fn reduce(
        &mut self,
        c: ConnId,
        command: Command,
        f: &str,
        u: &str,
        reducer: &str,
        data: &str,
    ) -> Vec<Sent> {
        self.send(
            c,
            command,
            &[f.as_bytes(), u.as_bytes(), reducer.as_bytes(), b"aggregate", data.as_bytes()],
        )
    }

    fn can_do(&mut self, w: ConnId, f: &str) {
        assert_eq!(self.send(w, Command::CanDo, &[f.as_bytes()]), vec![]);
    }

    fn can_do_timeout(&mut self, w: ConnId, f: &str, ms: &str) {
        assert_eq!(self.send(w, Command::CanDoTimeout, &[f.as_bytes(), ms.as_bytes()]), vec![]);
    }

    fn grab(&mut self, w: ConnId) -> Vec<Sent> {
        self.send(w, Command::GrabJob, &[])
    }

    fn grab_uniq(&mut self, w: ConnId) -> Vec<Sent> {
        self.send(w, Command::GrabJobUniq, &[])
    }

    fn grab_all(&mut self, w: ConnId) -> Vec<Sent> {
        self.send(w, Command::GrabJobAll, &[])
    }

    fn pre_sleep(&mut self, w: ConnId) -> Vec<Sent> {
        self.send(w, Command::PreSleep, &[])
    }

    fn get_status(&mut self, c: ConnId, handle: &str) -> Vec<Sent> {
        self.send(c, Command::GetStatus, &[handle.as_bytes()])
    }

    fn complete(&mut self, w: ConnId, handle: &str, result: &str) -> Vec<Sent> {
        self.send(w, Command::WorkComplete, &[handle.as_bytes(), result.as_bytes()])
    }

    fn admin(&mut self, line: &str) -> Vec<Sent> {
        self.e.handle_admin(ADMIN, line.as_bytes(), &mut self.out);
        self.take()
    }

    /// Runs an admin line that must answer with exactly one text reply.
    fn admin_text(&mut self, line: &str) -> String {
        let sent = self.admin(line);
        match &sent[..] {
            [Sent::Text(ADMIN, t)] => String::from_utf8(t.clone()).expect("admin replies are UTF-8 here"),
            other => panic!("expected one admin reply to {line:?}, got {other:?}"),
        }
    }

    fn tick(&mut self, now: NowMs) -> Vec<Sent> {
        self.now = now;
        self.e.tick(now, &mut self.out);
        self.take()
    }

    fn disconnect(&mut self, c: ConnId) -> Vec<Sent> {
        self.e.disconnect(c, self.now, &mut self.out);
        self.take()
    }

    fn next_deadline(&self) -> Option<NowMs> {
        self.e.next_deadline()
    }
}

// ---------------------------------------------------------------------------------
// Job lifecycle
// ---------------------------------------------------------------------------------

/// The server may drop a result's data unread only when nobody listens to the job:
/// a background job, or a foreground one whose clients all left; never the data of
/// a job that runs on another worker. Once it may, later submits with the job's
/// unique start a new job, as they would once the result was in.
#[test]
fn result_data_is_dropped_only_for_jobs_of_this_worker_that_nobody_listens_to() {
    let mut h = Harness::new();
    let (c, c2, w, other) = (h.connect(), h.connect(), h.connect(), h.connect());
    h.can_do(w, "f");
    h.can_do(other, "f");
    h.submit_ok(c, Command::SubmitJobBg, "f", "u1", "bg", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "u2", "fg", "H:t:2");
    assert!(!h.e.drop_result_data(w, b"H:t:1"), "not assigned yet");
    assert!(!h.e.runs_only_unwanted_results(w), "runs nothing");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "bg")]);
    assert!(!h.e.drop_result_data(other, b"H:t:1"), "another worker's job");
    assert!(!h.e.drop_result_data(w, b"H:t:9"), "no such job");
    assert!(h.e.runs_only_unwanted_results(w));
    assert!(h.e.drop_result_data(w, b"H:t:1\0"), "a trailing NUL names the same job");
    h.submit_ok(c2, Command::SubmitJob, "f", "u1", "again", "H:t:3");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "f", "fg")]);
    assert!(!h.e.drop_result_data(w, b"H:t:2"), "its client listens");
    assert!(!h.e.runs_only_unwanted_results(w));
    h.submit_ok(c2, Command::SubmitJob, "f", "u2", "fg", "H:t:2");
    h.disconnect(c);
    h.disconnect(c2);
    assert!(h.e.runs_only_unwanted_results(w), "its clients left");
    assert!(h.e.drop_result_data(w, b"H:t:2"));
    // The results, their data dropped, complete the jobs as usual.
    assert_eq!(h.complete(w, "H:t:2", ""), vec![]);
    assert_eq!(h.complete(w, "H:t:1", ""), vec![]);
    assert!(!h.e.runs_only_unwanted_results(w));
    assert_eq!(h.admin_text("status"), "f\t1\t0\t2\n.\n");
}

/// A final result's data may bypass the engine only when the job runs on this
/// worker and exactly one client listens; a submit with the job's unique then starts
/// a new job, as it would once the result was in.
#[test]
fn final_result_data_is_forwarded_only_to_the_one_client_of_this_workers_job() {
    let mut h = Harness::new();
    let (c, c2, w, other) = (h.connect(), h.connect(), h.connect(), h.connect());
    h.can_do(w, "f");
    h.can_do(other, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "u1", "one", "H:t:1");
    h.submit_ok(c, Command::SubmitJobBg, "f", "u2", "bg", "H:t:2");
    let fwd = |h: &mut Harness, w, handle: &str, command| {
        h.e.forward_result_data(w, handle.as_bytes(), command, |_| true)
    };
    assert_eq!(fwd(&mut h, w, "H:t:1", Command::WorkComplete), None, "not assigned yet");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "one")]);
    assert_eq!(fwd(&mut h, other, "H:t:1", Command::WorkComplete), None, "another worker's job");
    assert_eq!(fwd(&mut h, w, "H:t:9", Command::WorkComplete), None, "no such job");
    assert_eq!(fwd(&mut h, w, "H:t:1", Command::WorkData), None, "not a final result");
    h.submit_ok(c2, Command::SubmitJob, "f", "u1", "one", "H:t:1");
    assert_eq!(fwd(&mut h, w, "H:t:1", Command::WorkComplete), None, "two clients listen");
    h.disconnect(c2);
    assert_eq!(
        h.e.forward_result_data(w, b"H:t:1", Command::WorkComplete, |_| false),
        None,
        "the server can't"
    );
    // ... and then the job still takes joiners.
    let c4 = h.connect();
    h.submit_ok(c4, Command::SubmitJob, "f", "u1", "one", "H:t:1");
    h.disconnect(c4);
    assert_eq!(
        fwd(&mut h, w, "H:t:1\0", Command::WorkException),
        Some(c),
        "a trailing NUL names the same job"
    );
    // The job no longer takes joiners: the same unique is a new job.
    let c3 = h.connect();
    h.submit_ok(c3, Command::SubmitJob, "f", "u1", "one", "H:t:3");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "f", "bg")]);
    assert_eq!(fwd(&mut h, w, "H:t:2", Command::WorkComplete), None, "nobody listens");
    // The result, with the data read so far, completes the job as usual.
    assert_eq!(
        h.complete(w, "H:t:1", "par"),
        vec![Sent::Packet(c, Command::WorkComplete, vec![b"H:t:1".to_vec(), b"par".to_vec()])]
    );
    assert_eq!(h.admin_text("status"), "f\t2\t1\t2\n.\n");
}

#[test]
fn lifecycle_submit_grab_forward_complete() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", false, false, 0, 0)]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "da\0ta"), vec![created(c, "H:t:1")]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, false, 0, 0)]);
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\n.\n");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "da\0ta")]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 0, 0)]);
    assert_eq!(h.admin_text("status"), "f\t1\t1\t1\n.\n");
    assert_eq!(
        h.send(w, Command::WorkData, &[b"H:t:1", b"part\0one"]),
        vec![pkt(c, Command::WorkData, &[b"H:t:1", b"part\0one"])]
    );
    assert_eq!(
        h.send(w, Command::WorkWarning, &[b"H:t:1", b"careful"]),
        vec![pkt(c, Command::WorkWarning, &[b"H:t:1", b"careful"])]
    );
    assert_eq!(
        h.send(w, Command::WorkStatus, &[b"H:t:1", b"3", b"10"]),
        vec![pkt(c, Command::WorkStatus, &[b"H:t:1", b"3", b"10"])]
    );
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 3, 10)]);
    // Numbers are parsed like C atoi but forwarded byte for byte.
    assert_eq!(
        h.send(w, Command::WorkStatus, &[b"H:t:1", b" 7x", b"-1"]),
        vec![pkt(c, Command::WorkStatus, &[b"H:t:1", b" 7x", b"-1"])]
    );
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 7, u32::MAX)]);
    assert_eq!(h.complete(w, "H:t:1", "done"), vec![pkt(c, Command::WorkComplete, &[b"H:t:1", b"done"])]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", false, false, 0, 0)]);
    assert_eq!(h.e.job_count(), 0);
    assert_eq!(h.admin_text("status"), "f\t0\t0\t1\n.\n");
    assert_eq!(h.admin_text("show jobs"), ".\n");
    assert_eq!(h.complete(w, "H:t:1", "again"), vec![err(w, "JOB_NOT_FOUND", NOT_FOUND)]);
    // The handle counter keeps counting.
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "x", "H:t:2");
}

#[test]
fn get_status_strips_one_trailing_nul_and_covers_background_jobs() {
    let mut h = Harness::new();
    let c = h.connect();
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "x", "H:t:1");
    assert_eq!(h.get_status(c, "H:t:1\0"), vec![status_res(c, "H:t:1", true, false, 0, 0)]);
    assert_eq!(h.get_status(c, "H:t:10"), vec![status_res(c, "H:t:10", false, false, 0, 0)]);
}

#[test]
fn echo_returns_the_body() {
    let mut h = Harness::new();
    let c = h.connect();
    assert_eq!(h.send(c, Command::EchoReq, &[b"he\0llo"]), vec![pkt(c, Command::EchoRes, &[b"he\0llo"])]);
    assert_eq!(h.send(c, Command::EchoReq, &[b""]), vec![pkt(c, Command::EchoRes, &[b""])]);
}

/// Records what the engine sends, the payload `Bytes` given to `packet_data`, and the
/// wire bytes an outbox that sends payloads by reference would write.
#[derive(Default)]
struct ViewOutbox {
    sent: RecordingOutbox,
    payloads: Vec<(ConnId, Command, bytes::Bytes)>,
    wire: bytes::BytesMut,
}

impl crate::Outbox for ViewOutbox {
    fn packet(&mut self, conn: ConnId, command: Command, args: &[&[u8]]) {
        gearman_proto::encode_parts(Magic::Res, command, args, &mut self.wire);
        self.sent.packet(conn, command, args);
    }
    fn packet_data(&mut self, conn: ConnId, command: Command, head: &[&[u8]], data: &bytes::Bytes) {
        gearman_proto::encode_prefix(Magic::Res, command, head, data.len(), &mut self.wire);
        self.wire.extend_from_slice(data);
        self.payloads.push((conn, command, data.clone()));
        // The default method: what every other outbox does with it.
        self.sent.packet_data(conn, command, head, data);
    }
    fn text(&mut self, conn: ConnId, text: &[u8]) {
        self.sent.text(conn, text);
    }
    fn close(&mut self, conn: ConnId) {
        self.sent.close(conn);
    }
    fn hold(&mut self, conn: ConnId, hold: u64) {
        self.sent.hold(conn, hold);
    }
    fn fill(&mut self, conn: ConnId, hold: u64, command: Command, args: &[&[u8]]) {
        self.sent.fill(conn, hold, command, args);
    }
    fn persist(&mut self, job: crate::StoredJob) {
        self.sent.persist(job);
    }
    fn forget(&mut self, key: u64) {
        self.sent.forget(key);
    }
}

/// Whether `inner` lies within the memory of `outer`.
fn shares(outer: &bytes::Bytes, inner: &bytes::Bytes) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    !inner.is_empty() && i >= o && i + inner.len() <= o + outer.len()
}

/// A request packet whose body is one buffer, as the decoder hands them out.
fn req(command: Command, args: &[&[u8]]) -> (Packet, bytes::Bytes) {
    let body = bytes::Bytes::from(args.join(&0u8));
    let p = Packet::from_body(Magic::Req, command, body.clone()).expect("valid layout");
    (p, body)
}

#[test]
fn large_payloads_pass_through_by_reference() {
    let mut e = Engine::new(config());
    let mut out = ViewOutbox::default();
    let c = e.connect(PeerInfo { label: 1, ip: "127.0.0.1".into() });
    let w = e.connect(PeerInfo { label: 2, ip: "127.0.0.1".into() });
    e.handle_packet(w, &req(Command::CanDo, &[b"f"]).0, T0, &mut out);
    let big = vec![0x5au8; 65536];
    let small = vec![0x33u8; crate::submit::KEEP_VIEW_DATA_BYTES - 1];
    let at_limit = vec![0x44u8; crate::submit::KEEP_VIEW_DATA_BYTES];
    let mut expected = bytes::BytesMut::new();
    for (n, data) in [&big, &small, &at_limit].into_iter().enumerate() {
        let handle = format!("H:t:{}", n + 1);
        let (submit, submit_body) = req(Command::SubmitJob, &[b"f", b"", data]);
        e.handle_packet(c, &submit, T0, &mut out);
        drop(submit);
        e.handle_packet(w, &req(Command::GrabJob, &[]).0, T0, &mut out);
        let (_, cmd, assigned) = out.payloads.pop().expect("JOB_ASSIGN went through packet_data");
        assert_eq!(cmd, Command::JobAssign);
        assert_eq!(&assigned[..], &data[..]);
        // Large data is the submitted packet's memory; smaller data was copied out.
        let keep = data.len() >= crate::submit::KEEP_VIEW_DATA_BYTES;
        assert_eq!(shares(&submit_body, &assigned), keep, "{} bytes", data.len());
        let result = vec![0xc3u8; 40_000 + n];
        let (complete, complete_body) = req(Command::WorkComplete, &[handle.as_bytes(), &result]);
        e.handle_packet(w, &complete, T0, &mut out);
        let (to, cmd, forwarded) = out.payloads.pop().expect("WORK_COMPLETE went through packet_data");
        assert_eq!((to, cmd), (c, Command::WorkComplete));
        assert!(shares(&complete_body, &forwarded), "results are forwarded by reference");
        assert_eq!(
            out.sent.take(),
            vec![
                created(c, &handle),
                pkt(w, Command::JobAssign, &[handle.as_bytes(), b"f", data]),
                pkt(c, Command::WorkComplete, &[handle.as_bytes(), &result]),
            ]
        );
        gearman_proto::encode_parts(Magic::Res, Command::JobCreated, &[handle.as_bytes()], &mut expected);
        gearman_proto::encode_parts(
            Magic::Res,
            Command::JobAssign,
            &[handle.as_bytes(), b"f", data],
            &mut expected,
        );
        gearman_proto::encode_parts(
            Magic::Res,
            Command::WorkComplete,
            &[handle.as_bytes(), &result],
            &mut expected,
        );
    }
    // ECHO_RES passes the payload through too.
    let (echo, echo_body) = req(Command::EchoReq, &[&big]);
    e.handle_packet(c, &echo, T0, &mut out);
    let (_, cmd, echoed) = out.payloads.pop().expect("ECHO_RES went through packet_data");
    assert_eq!(cmd, Command::EchoRes);
    assert!(shares(&echo_body, &echoed));
    assert_eq!(out.sent.take(), vec![pkt(c, Command::EchoRes, &[&big])]);
    gearman_proto::encode_parts(Magic::Res, Command::EchoRes, &[&big], &mut expected);
    assert_eq!(out.wire, expected, "the bytes sent are unchanged");
}

#[test]
fn assign_packet_layouts_for_each_grab_kind() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "u1", "d1", "H:t:1");
    assert_eq!(h.reduce(c, Command::SubmitReduceJob, "f", "u2", "red", "d2"), vec![created(c, "H:t:2")]);
    h.submit_ok(c, Command::SubmitJob, "f", "u3", "d3", "H:t:3");
    assert_eq!(
        h.reduce(c, Command::SubmitReduceJobBackground, "f", "u4", "red4", "d4"),
        vec![created(c, "H:t:4")]
    );
    assert_eq!(h.reduce(c, Command::SubmitReduceJob, "f", "u5", "red5", "d5"), vec![created(c, "H:t:5")]);
    assert_eq!(
        h.reduce(c, Command::SubmitReduceJobBackground, "f", "u6", "", "d6"),
        vec![created(c, "H:t:6")]
    );
    assert_eq!(h.grab_uniq(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:1", b"f", b"u1", b"d1"])]);
    assert_eq!(h.grab_all(w), vec![pkt(w, Command::JobAssignAll, &[b"H:t:2", b"f", b"u2", b"red", b"d2"])]);
    assert_eq!(h.grab_all(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:3", b"f", b"u3", b"d3"])]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:4", "f", "d4")]);
    assert_eq!(h.grab_uniq(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:5", b"f", b"u5", b"d5"])]);
    assert_eq!(h.grab_all(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:6", b"f", b"u6", b"d6"])]);
    assert_eq!(h.grab_all(w), vec![no_job(w)]);
    // A worker may hold all of them at once; status counts them running.
    assert_eq!(h.admin_text("status"), "f\t6\t6\t1\n.\n");
    // The reduce job is a normal foreground job for its listener.
    assert_eq!(h.complete(w, "H:t:2", "r"), vec![pkt(c, Command::WorkComplete, &[b"H:t:2", b"r"])]);
    assert_eq!(h.complete(w, "H:t:4", "r"), vec![]);
}

#[test]
fn get_status_unique_in_every_state() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let su = |c: ConnId, known: &[u8], running: &[u8], n: &[u8], d: &[u8], clients: &[u8]| {
        pkt(c, Command::StatusResUnique, &[b"u", known, running, n, d, clients])
    };
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u"]), vec![su(c, b"0", b"0", b"0", b"0", b"0")]);
    h.submit_ok(c, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u"]), vec![su(c, b"1", b"0", b"0", b"0", b"1")]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u\0"]), vec![su(c, b"1", b"1", b"0", b"0", b"1")]);
    assert_eq!(h.send(w, Command::WorkStatus, &[b"H:t:1", b"1", b"2"]).len(), 1);
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u"]), vec![su(c, b"1", b"1", b"1", b"2", b"1")]);
    assert_eq!(h.complete(w, "H:t:1", "").len(), 1);
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u"]), vec![su(c, b"0", b"0", b"0", b"0", b"0")]);
    // A background job has no waiting clients.
    h.submit_ok(c, Command::SubmitJobBg, "f", "u", "x", "H:t:2");
    assert_eq!(h.send(c, Command::GetStatusUnique, &[b"u"]), vec![su(c, b"1", b"0", b"0", b"0", b"0")]);
}

// ---------------------------------------------------------------------------------
// Coalescing
// ---------------------------------------------------------------------------------

#[test]
fn coalescing_two_foreground_and_one_background_share_one_job() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let b = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "d1", "H:t:1");
    h.submit_ok(c2, Command::SubmitJobHigh, "f", "u", "d2", "H:t:1");
    h.submit_ok(b, Command::SubmitJobLowBg, "f", "u", "d3", "H:t:1");
    assert_eq!(
        h.send(c1, Command::GetStatusUnique, &[b"u"]),
        vec![pkt(c1, Command::StatusResUnique, &[b"u", b"1", b"0", b"0", b"0", b"2"])]
    );
    // One job; the first submit's priority and data stay.
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\n.\n");
    assert_eq!(h.admin_text("prioritystatus"), "f\t0\t1\t0\t1\n.\n");
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t0\n.\n");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "d1")]);
    assert_eq!(
        h.send(w, Command::WorkData, &[b"H:t:1", b"p"]),
        vec![pkt(c2, Command::WorkData, &[b"H:t:1", b"p"]), pkt(c1, Command::WorkData, &[b"H:t:1", b"p"])]
    );
    assert_eq!(
        h.send(w, Command::WorkStatus, &[b"H:t:1", b"1", b"2"]),
        vec![
            pkt(c2, Command::WorkStatus, &[b"H:t:1", b"1", b"2"]),
            pkt(c1, Command::WorkStatus, &[b"H:t:1", b"1", b"2"])
        ]
    );
    assert_eq!(
        h.complete(w, "H:t:1", "r"),
        vec![
            pkt(c2, Command::WorkComplete, &[b"H:t:1", b"r"]),
            pkt(c1, Command::WorkComplete, &[b"H:t:1", b"r"])
        ]
    );
    assert_eq!(h.e.job_count(), 0);
    // The next submit with that unique is a new job.
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "d1", "H:t:2");
}

#[test]
fn same_client_submitting_twice_listens_twice() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    let done = pkt(c, Command::WorkComplete, &[b"H:t:1", b""]);
    assert_eq!(h.complete(w, "H:t:1", ""), vec![done.clone(), done]);
}

#[test]
fn empty_unique_never_coalesces() {
    let mut h = Harness::new();
    let c = h.connect();
    h.submit_ok(c, Command::SubmitJob, "f", "", "same", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "same", "H:t:2");
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "same", "H:t:3");
    assert_eq!(h.admin_text("status"), "f\t3\t0\t0\n.\n");
}

#[test]
fn dash_unique_coalesces_on_identical_non_empty_data_only() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "-", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJobBg, "f", "-", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "-", "y", "H:t:2");
    h.submit_ok(c, Command::SubmitJob, "f", "-", "", "H:t:3");
    h.submit_ok(c, Command::SubmitJob, "f", "-", "", "H:t:4");
    // A `-` job does not match an explicit unique equal to its data.
    h.submit_ok(c, Command::SubmitJob, "f", "x", "x", "H:t:5");
    assert_eq!(h.admin_text("show unique jobs"), "-\n-\n-\n-\nx\n.\n");
    // `-` jobs are not found by their unique.
    assert_eq!(
        h.send(c, Command::GetStatusUnique, &[b"-"]),
        vec![pkt(c, Command::StatusResUnique, &[b"-", b"0", b"0", b"0", b"0", b"0"])]
    );
    assert_eq!(h.grab_uniq(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:1", b"f", b"-", b"x"])]);
}

#[test]
fn coalescing_onto_a_running_job() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
    h.submit_ok(c2, Command::SubmitJobLow, "f", "u", "other", "H:t:1");
    assert_eq!(h.admin_text("status"), "f\t1\t1\t1\n.\n");
    assert_eq!(
        h.complete(w, "H:t:1", "r"),
        vec![
            pkt(c2, Command::WorkComplete, &[b"H:t:1", b"r"]),
            pkt(c1, Command::WorkComplete, &[b"H:t:1", b"r"])
        ]
    );
}

#[test]
fn same_unique_under_another_function_is_another_job() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "g");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "g", "u", "x", "H:t:2");
    assert_eq!(h.admin_text("status"), "g\t1\t0\t1\nf\t1\t0\t0\n.\n");
    // GET_STATUS_UNIQUE ignores the function and reports the newer job (Q6).
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "g", "x")]);
    assert_eq!(
        h.send(c, Command::GetStatusUnique, &[b"u"]),
        vec![pkt(c, Command::StatusResUnique, &[b"u", b"1", b"1", b"0", b"0", b"1"])]
    );
}

#[test]
fn sixty_four_byte_uniques_are_kept_whole_and_sixty_five_refused() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let u64b = "u".repeat(63) + "Z";
    let u65 = "u".repeat(65);
    h.submit_ok(c, Command::SubmitJob, "f", &u64b, "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", &u64b, "x", "H:t:1");
    let too_large = err(c, "ARGUMENT_TOO_LARGE", "Unique value too large");
    assert_eq!(h.submit(c, Command::SubmitJob, "f", &u65, "x"), vec![too_large.clone()]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", &u65, "x"), vec![too_large.clone()]);
    assert_eq!(h.epoch(c, "f", &u65, "0", "x"), vec![too_large.clone()]);
    assert_eq!(h.reduce(c, Command::SubmitReduceJob, "f", &u65, "r", "x"), vec![too_large.clone()]);
    assert_eq!(h.reduce(c, Command::SubmitReduceJob, "f", "u", &"r".repeat(65), "x"), vec![too_large]);
    assert_eq!(h.e.job_count(), 1);
    assert_eq!(h.admin_text("show unique jobs"), format!("{u64b}\n.\n"));
    assert_eq!(
        h.grab_uniq(w),
        vec![pkt(w, Command::JobAssignUniq, &[b"H:t:1", b"f", u64b.as_bytes(), b"x"])]
    );
}

// ---------------------------------------------------------------------------------
// Priorities and function order
// ---------------------------------------------------------------------------------

fn grab_data(h: &mut Harness, w: ConnId) -> String {
    match &h.grab(w)[..] {
        [Sent::Packet(c, Command::JobAssign, args)] if *c == w => {
            let f = String::from_utf8(args[1].clone()).expect("utf8");
            let d = String::from_utf8(args[2].clone()).expect("utf8");
            format!("{f}:{d}")
        }
        [Sent::Packet(c, Command::NoJob, _)] if *c == w => "none".into(),
        other => panic!("unexpected grab reply {other:?}"),
    }
}

#[test]
fn high_before_normal_before_low_fifo_within_a_function() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJobLow, "f", "", "l1", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "n1", "H:t:2");
    h.submit_ok(c, Command::SubmitJobHigh, "f", "", "h1", "H:t:3");
    h.submit_ok(c, Command::SubmitJobLowBg, "f", "", "l2", "H:t:4");
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "n2", "H:t:5");
    h.submit_ok(c, Command::SubmitJobHighBg, "f", "", "h2", "H:t:6");
    assert_eq!(h.admin_text("prioritystatus"), "f\t2\t2\t2\t1\n.\n");
    let order: Vec<String> = (0..7).map(|_| grab_data(&mut h, w)).collect();
    assert_eq!(order, ["f:h1", "f:h2", "f:n1", "f:n2", "f:l1", "f:l2", "none"]);
    assert_eq!(h.admin_text("prioritystatus"), "f\t0\t0\t0\t1\n.\n");
}

#[test]
fn across_functions_the_most_recently_registered_wins() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "a");
    h.can_do(w, "b");
    h.can_do(w, "c");
    for f in ["a", "b", "c"] {
        for d in ["1", "2"] {
            assert_eq!(h.submit(c, Command::SubmitJobBg, f, "", d).len(), 1);
        }
    }
    let order: Vec<String> = (0..7).map(|_| grab_data(&mut h, w)).collect();
    assert_eq!(order, ["c:1", "c:2", "b:1", "b:2", "a:1", "a:2", "none"]);

    // Priority applies only within one function.
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "a");
    h.can_do(w, "c");
    h.submit_ok(c, Command::SubmitJobHighBg, "a", "", "high", "H:t:1");
    h.submit_ok(c, Command::SubmitJobLowBg, "c", "", "low", "H:t:2");
    let order: Vec<String> = (0..3).map(|_| grab_data(&mut h, w)).collect();
    assert_eq!(order, ["c:low", "a:high", "none"]);
}

#[test]
fn round_robin_rotates_functions() {
    let mut h = Harness::with(EngineConfig { round_robin: true, ..config() });
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "a");
    h.can_do(w, "b");
    h.can_do(w, "c");
    for f in ["a", "b", "c"] {
        for d in ["1", "2"] {
            assert_eq!(h.submit(c, Command::SubmitJobBg, f, "", d).len(), 1);
        }
    }
    let order: Vec<String> = (0..7).map(|_| grab_data(&mut h, w)).collect();
    assert_eq!(order, ["c:1", "b:1", "a:1", "c:2", "b:2", "a:2", "none"]);
    assert_eq!(h.admin_text("workers"), "2 127.0.0.1 - : c b a\n1 127.0.0.1 - :\n.\n");
}

#[test]
fn a_worker_with_many_functions_is_served_in_the_same_order() {
    // Past WIDE_WORKER_ABILITIES functions, the candidates come from the functions
    // with queued jobs rather than from the worker's list; the order must not change.
    for round_robin in [false, true] {
        let mut h = Harness::with(EngineConfig { round_robin, ..config() });
        let c = h.connect();
        let w = h.connect();
        for i in 0..100 {
            h.can_do(w, &format!("f{i}"));
        }
        assert!(h.e.sessions.get(w).is_some_and(|s| s.wide));
        for f in ["f5", "f99", "f50"] {
            for d in ["1", "2"] {
                assert_eq!(h.submit(c, Command::SubmitJobBg, f, "", d).len(), 1);
            }
        }
        // A job for a function the worker cannot do is never offered.
        assert_eq!(h.submit(c, Command::SubmitJobBg, "other", "", "x").len(), 1);
        let order: Vec<String> = (0..7).map(|_| grab_data(&mut h, w)).collect();
        let want = if round_robin {
            ["f99:1", "f50:1", "f5:1", "f99:2", "f50:2", "f5:2", "none"]
        } else {
            ["f99:1", "f99:2", "f50:1", "f50:2", "f5:1", "f5:2", "none"]
        };
        assert_eq!(order, want, "round_robin {round_robin}");
        // Registering again moves a function to the front, as for a short list.
        h.can_do(w, "f5");
        h.submit_ok(c, Command::SubmitJobBg, "f99", "", "3", "H:t:8");
        h.submit_ok(c, Command::SubmitJobBg, "f5", "", "3", "H:t:9");
        assert_eq!(grab_data(&mut h, w), "f5:3");
    }
}

#[test]
fn a_sleeping_worker_with_many_functions_is_filed_once_and_woken_for_any_of_them() {
    let mut h = Harness::new();
    let c = h.connect();
    let wide: Vec<ConnId> = (0..2).map(|_| h.connect()).collect();
    for &w in &wide {
        for i in 0..100 {
            h.can_do(w, &format!("f{i}"));
        }
    }
    let narrow = h.connect();
    h.can_do(narrow, "f7");
    assert_eq!(h.pre_sleep(wide[0]), vec![]);
    assert_eq!(h.pre_sleep(narrow), vec![]);
    assert_eq!(h.pre_sleep(wide[1]), vec![]);
    // PRE_SLEEP of a wide worker costs one entry, not one per function.
    let filed: usize = h.e.functions.iter().map(|(_, f)| f.sleepers.len()).sum();
    assert_eq!((filed, h.e.wide_sleepers.len()), (1, 2));
    // Nobody is woken for a function none of them does.
    assert_eq!(h.submit(c, Command::SubmitJobBg, "other", "", "x"), vec![created(c, "H:t:1")]);
    // One sleeper per job: the narrow one (filed under f7) first, then the wide ones
    // in the order they went to sleep.
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f7", "", "1"), vec![created(c, "H:t:2"), noop(narrow)]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f7", "", "2"), vec![created(c, "H:t:3"), noop(wide[0])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f42", "", "3"), vec![created(c, "H:t:4"), noop(wide[1])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f42", "", "4"), vec![created(c, "H:t:5")]);
    assert!(h.e.wide_sleepers.is_empty());
    assert_eq!(h.grab(wide[1]), vec![assign(wide[1], "H:t:4", "f42", "3")]);
    // Queued work: PRE_SLEEP answers NOOP at once, whichever function has it.
    assert_eq!(h.pre_sleep(wide[1]), vec![noop(wide[1])]);
    // A woken wide worker that leaves passes its wake-up on.
    assert_eq!(h.grab(wide[1]), vec![assign(wide[1], "H:t:5", "f42", "4")]);
    assert_eq!(h.grab(narrow), vec![assign(narrow, "H:t:2", "f7", "1")]);
    assert_eq!(h.grab(wide[1]), vec![assign(wide[1], "H:t:3", "f7", "2")]);
    assert_eq!(h.grab(wide[1]), vec![no_job(wide[1])]);
    assert_eq!(h.pre_sleep(wide[1]), vec![]);
    let third = h.connect();
    for i in 0..100 {
        h.can_do(third, &format!("f{i}"));
    }
    assert_eq!(h.pre_sleep(third), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f9", "", "5"), vec![created(c, "H:t:6"), noop(wide[1])]);
    assert_eq!(h.disconnect(wide[1]), vec![noop(third)]);
    // It also inherits the jobs wide[1] held, the latest registered function first.
    assert_eq!(h.grab(third), vec![assign(third, "H:t:4", "f42", "3")]);
}

#[test]
fn wide_sleeper_entries_stay_bounded_when_workers_cycle() {
    let mut h = Harness::new();
    let w = h.connect();
    for i in 0..40 {
        h.can_do(w, &format!("f{i}"));
    }
    // PRE_SLEEP again and again without a job: every earlier entry goes stale.
    for _ in 0..500 {
        assert_eq!(h.pre_sleep(w), vec![]);
    }
    assert!(h.e.wide_sleepers.len() <= 2 * h.e.sessions.len() + 16 + 1, "{}", h.e.wide_sleepers.len());
}

// ---------------------------------------------------------------------------------
// PRE_SLEEP / NOOP
// ---------------------------------------------------------------------------------

#[test]
fn one_noop_per_sleep_until_the_worker_grabs() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "1"), vec![created(c, "H:t:1"), noop(w)]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "2"), vec![created(c, "H:t:2")]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "1")]);
    // Work is still queued: PRE_SLEEP answers NOOP at once and does not sleep.
    assert_eq!(h.pre_sleep(w), vec![noop(w)]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "3"), vec![created(c, "H:t:3")]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "f", "2")]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:3", "f", "3")]);
    assert_eq!(h.grab(w), vec![no_job(w)]);
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "4"), vec![created(c, "H:t:4"), noop(w)]);
    // A job for another function does not wake it.
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "g", "", "5"), vec![created(c, "H:t:5")]);
}

#[test]
fn can_do_on_a_sleeping_connection_does_not_wake_it() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "1", "H:t:1");
    assert_eq!(h.pre_sleep(w), vec![]);
    h.can_do(w, "f");
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "2"), vec![created(c, "H:t:2"), noop(w)]);
}

#[test]
fn one_sleeper_per_job_is_woken_by_default() {
    let mut h = Harness::new();
    let c = h.connect();
    let ws: Vec<ConnId> = (0..3).map(|_| h.connect()).collect();
    for &w in &ws {
        h.can_do(w, "f");
        assert_eq!(h.pre_sleep(w), vec![]);
    }
    // Longest asleep first, one per job, nobody twice.
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "1"), vec![created(c, "H:t:1"), noop(ws[0])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "2"), vec![created(c, "H:t:2"), noop(ws[1])]);
    assert_eq!(h.grab(ws[0]), vec![assign(ws[0], "H:t:1", "f", "1")]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "3"), vec![created(c, "H:t:3"), noop(ws[2])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "4"), vec![created(c, "H:t:4")]);
}

#[test]
fn a_woken_worker_that_leaves_passes_its_wakeup_on() {
    let mut h = Harness::new();
    let c = h.connect();
    let ws: Vec<ConnId> = (0..3).map(|_| h.connect()).collect();
    for &w in &ws {
        h.can_do(w, "f");
        assert_eq!(h.pre_sleep(w), vec![]);
    }
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "1"), vec![created(c, "H:t:1"), noop(ws[0])]);
    // Woken, gone before grabbing: the next sleeper gets the NOOP.
    assert_eq!(h.disconnect(ws[0]), vec![noop(ws[1])]);
    // Woken, then stops doing the function: passed on again.
    assert_eq!(h.send(ws[1], Command::CantDo, &[b"f"]), vec![noop(ws[2])]);
    assert_eq!(h.grab(ws[2]), vec![assign(ws[2], "H:t:1", "f", "1")]);
    // A sleeper that never was woken leaves: nothing to pass on.
    let w4 = h.connect();
    h.can_do(w4, "f");
    assert_eq!(h.pre_sleep(w4), vec![]);
    assert_eq!(h.disconnect(w4), vec![]);
}

#[test]
fn a_worker_woken_that_sleeps_again_can_be_woken_again() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "1"), vec![created(c, "H:t:1"), noop(w)]);
    // Another worker takes the job before the woken one asks.
    let other = h.connect();
    h.can_do(other, "f");
    assert_eq!(h.grab(other), vec![assign(other, "H:t:1", "f", "1")]);
    // The woken one sends PRE_SLEEP again instead of GRAB_JOB: it is asleep anew and
    // the next job must wake it.
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "2"), vec![created(c, "H:t:2"), noop(w)]);
}

#[test]
fn sleeper_queues_stay_bounded_when_workers_cycle() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    // Registered for two functions, woken only through "g": the entries under "f"
    // go stale each cycle and must be compacted away.
    h.can_do(w, "f");
    h.can_do(w, "g");
    for i in 0..1000 {
        assert_eq!(h.pre_sleep(w), vec![]);
        let handle = format!("H:t:{}", i + 1);
        assert_eq!(h.submit(c, Command::SubmitJobBg, "g", "", "x"), vec![created(c, &handle), noop(w)]);
        assert_eq!(h.grab(w), vec![assign(w, &handle, "g", "x")]);
        h.send(w, Command::WorkComplete, &[handle.as_bytes(), b""]);
    }
    let longest = h.e.functions.iter().map(|(_, f)| f.sleepers.len()).max().unwrap_or(0);
    assert!(longest <= 2 + 16 + 1, "sleeper queue grew to {longest}");
}

#[test]
fn every_sleeper_is_woken_with_worker_wakeup_0() {
    let mut h = Harness::with(EngineConfig { worker_wakeup: 0, ..config() });
    let c = h.connect();
    let ws: Vec<ConnId> = (0..3).map(|_| h.connect()).collect();
    for &w in &ws {
        h.can_do(w, "f");
        assert_eq!(h.pre_sleep(w), vec![]);
    }
    let busy = h.connect();
    h.can_do(busy, "f");
    assert_eq!(
        h.submit(c, Command::SubmitJobBg, "f", "", "1"),
        vec![created(c, "H:t:1"), noop(ws[0]), noop(ws[1]), noop(ws[2])]
    );
}

#[test]
fn worker_wakeup_one_rotates_across_sleepers() {
    let mut h = Harness::with(EngineConfig { worker_wakeup: 1, ..config() });
    let c = h.connect();
    let ws: Vec<ConnId> = (0..3).map(|_| h.connect()).collect();
    for &w in &ws {
        h.can_do(w, "f");
        assert_eq!(h.pre_sleep(w), vec![]);
    }
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "1"), vec![created(c, "H:t:1"), noop(ws[0])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "2"), vec![created(c, "H:t:2"), noop(ws[1])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "3"), vec![created(c, "H:t:3"), noop(ws[2])]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "4"), vec![created(c, "H:t:4")]);
    assert_eq!(h.grab(ws[0]), vec![assign(ws[0], "H:t:1", "f", "1")]);
    assert_eq!(h.grab(ws[0]), vec![assign(ws[0], "H:t:2", "f", "2")]);
    assert_eq!(h.grab(ws[0]), vec![assign(ws[0], "H:t:3", "f", "3")]);
    assert_eq!(h.grab(ws[0]), vec![assign(ws[0], "H:t:4", "f", "4")]);
    assert_eq!(h.pre_sleep(ws[0]), vec![]);
    // The cursor went past the third worker: the next wake-up starts at the first.
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "5"), vec![created(c, "H:t:5"), noop(ws[0])]);
}

// ---------------------------------------------------------------------------------
// Lost assignments and retries
// ---------------------------------------------------------------------------------

#[test]
fn worker_disconnect_requeues_to_the_tail_with_the_same_handle() {
    let mut h = Harness::new();
    let c = h.connect();
    let w1 = h.connect();
    let w2 = h.connect();
    h.can_do(w1, "f");
    h.can_do(w2, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "b", "H:t:2");
    assert_eq!(h.grab(w1), vec![assign(w1, "H:t:1", "f", "a")]);
    assert_eq!(h.send(w1, Command::WorkStatus, &[b"H:t:1", b"1", b"2"]).len(), 1);
    assert_eq!(h.pre_sleep(w2), vec![noop(w2)]);
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:2", "f", "b")]);
    assert_eq!(h.pre_sleep(w2), vec![]);
    // The client is told nothing; the sleeping worker is woken.
    assert_eq!(h.disconnect(w1), vec![noop(w2)]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, false, 0, 0)]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t1\t0\t0\nH:t:2\t0\t0\t0\n.\n");
    assert_eq!(h.admin_text("status"), "f\t2\t1\t1\n.\n");
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:1", "f", "a")]);
    // Requeue goes to the tail: a newer job of the same priority comes first.
    let mut h = Harness::new();
    let c = h.connect();
    let w1 = h.connect();
    let w2 = h.connect();
    h.can_do(w1, "f");
    h.can_do(w2, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "b", "H:t:2");
    assert_eq!(h.grab(w1), vec![assign(w1, "H:t:1", "f", "a")]);
    assert_eq!(h.disconnect(w1), vec![]);
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:2", "f", "b")]);
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:1", "f", "a")]);
}

#[test]
fn job_retries_one_fails_after_the_first_lost_assignment() {
    let mut h = Harness::with(EngineConfig { job_retries: 1, ..config() });
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "a", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.disconnect(w), vec![pkt(c, Command::WorkFail, &[b"H:t:1"])]);
    assert_eq!(h.e.job_count(), 0);
    assert_eq!(h.admin_text("status"), "f\t0\t0\t0\n.\n");
    // Its unique is free again.
    h.submit_ok(c, Command::SubmitJob, "f", "u", "a", "H:t:2");
}

#[test]
fn job_retries_two_fails_after_the_second_lost_assignment() {
    let mut h = Harness::with(EngineConfig { job_retries: 2, ..config() });
    let c1 = h.connect();
    let c2 = h.connect();
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "a", "H:t:1");
    h.submit_ok(c2, Command::SubmitJob, "f", "u", "a", "H:t:1");
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.disconnect(w), vec![]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t1\t0\t0\n.\n");
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.grab(w).len(), 1);
    // Timeout, CANT_DO and disconnect all count; here CANT_DO.
    assert_eq!(
        h.send(w, Command::CantDo, &[b"f"]),
        vec![pkt(c2, Command::WorkFail, &[b"H:t:1"]), pkt(c1, Command::WorkFail, &[b"H:t:1"])]
    );
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn cant_do_and_reset_abilities_requeue_held_jobs() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    let w2 = h.connect();
    h.can_do(w, "f");
    h.can_do(w, "g");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "g", "", "b", "H:t:2");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "g", "b")]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "a")]);
    // CANT_DO of an unknown function is ignored; CANT_DO g requeues only the g job.
    assert_eq!(h.send(w, Command::CantDo, &[b"nope"]), vec![]);
    assert_eq!(h.send(w, Command::CantDo, &[b"g"]), vec![]);
    assert_eq!(h.admin_text("status"), "f\t1\t1\t1\ng\t1\t0\t0\n.\n");
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t0\nH:t:2\t1\t0\t0\n.\n");
    assert_eq!(h.complete(w, "H:t:2", "late"), vec![err(w, "JOB_NOT_FOUND", NOT_FOUND)]);
    h.can_do(w2, "g");
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:2", "g", "b")]);
    assert_eq!(h.pre_sleep(w2), vec![]);
    h.can_do(w2, "f");
    assert_eq!(h.send(w, Command::ResetAbilities, &[]), vec![noop(w2)]);
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\ng\t1\t1\t1\n.\n");
    assert_eq!(h.admin_text("workers"), "3 127.0.0.1 - : f g\n2 127.0.0.1 - :\n1 127.0.0.1 - :\n.\n");
    assert_eq!(
        h.send(w, Command::WorkData, &[b"H:t:1", b"x"]),
        vec![err(w, "JOB_NOT_FOUND", "Job does not exist on server")]
    );
    assert_eq!(h.grab(w2), vec![assign(w2, "H:t:1", "f", "a")]);
    assert_eq!(h.complete(w2, "H:t:1", "ok"), vec![pkt(c, Command::WorkComplete, &[b"H:t:1", b"ok"])]);
}

// ---------------------------------------------------------------------------------
// CAN_DO_TIMEOUT
// ---------------------------------------------------------------------------------

#[test]
fn can_do_timeout_requeues_and_the_late_result_errors() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    let sleeper = h.connect();
    h.can_do_timeout(w, "f", "1500");
    h.can_do(sleeper, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "a")]);
    assert_eq!(h.next_deadline(), Some(T0 + 1500));
    assert_eq!(h.pre_sleep(sleeper), vec![]);
    assert_eq!(h.tick(T0 + 1499), vec![]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 0, 0)]);
    assert_eq!(h.tick(T0 + 1500), vec![noop(sleeper)]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, false, 0, 0)]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t1\t0\t0\n.\n");
    assert_eq!(h.complete(w, "H:t:1", "late"), vec![err(w, "JOB_NOT_FOUND", NOT_FOUND)]);
    // The same worker may take it again and finish in time.
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "a")]);
    assert_eq!(h.next_deadline(), Some(T0 + 3000));
    assert_eq!(h.complete(w, "H:t:1", "ok"), vec![pkt(c, Command::WorkComplete, &[b"H:t:1", b"ok"])]);
    // The completed job's timer firing later does nothing (gearmand's stale-timer bug).
    assert_eq!(h.tick(T0 + 10_000), vec![]);
    assert_eq!(h.next_deadline(), None);
    let b = h.connect();
    for d in ["1", "2", "3"] {
        assert_eq!(h.submit(b, Command::SubmitJobBg, "other", "", d).len(), 1);
    }
    assert_eq!(h.admin_text("prioritystatus"), "f\t0\t0\t0\t2\nother\t0\t3\t0\t0\n.\n");
    assert_eq!(h.admin_text("status"), "f\t0\t0\t2\nother\t3\t0\t0\n.\n");
    assert_eq!(h.grab(w), vec![no_job(w)]);
}

#[test]
fn can_do_timeout_values_below_a_second_become_a_second_and_junk_means_none() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do_timeout(w, "f", "1");
    h.can_do_timeout(w, "g", "abc");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "g", "", "b", "H:t:2");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "g", "b")]);
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "a")]);
    assert_eq!(h.next_deadline(), Some(T0 + 1000));
    assert_eq!(h.tick(T0 + 999), vec![]);
    assert_eq!(h.tick(T0 + 1000), vec![]);
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\ng\t1\t1\t1\n.\n");
}

#[test]
fn can_do_timeout_with_job_retries_fails_the_job() {
    let mut h = Harness::with(EngineConfig { job_retries: 1, ..config() });
    let c = h.connect();
    let w = h.connect();
    h.can_do_timeout(w, "f", "2000");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.tick(T0 + 2000), vec![pkt(c, Command::WorkFail, &[b"H:t:1"])]);
    assert_eq!(h.e.job_count(), 0);
}

// ---------------------------------------------------------------------------------
// Epoch jobs
// ---------------------------------------------------------------------------------

#[test]
fn epoch_jobs_in_the_past_run_now() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let past = (T0_S - 1).to_string();
    assert_eq!(h.epoch(c, "f", "", &past, "p"), vec![created(c, "H:t:1")]);
    assert_eq!(h.epoch(c, "f", "", "abc", "junk"), vec![created(c, "H:t:2")]);
    assert_eq!(h.epoch(c, "f", "", "-5", "neg"), vec![created(c, "H:t:3")]);
    assert_eq!(h.epoch(c, "f", "", &T0_S.to_string(), "now"), vec![created(c, "H:t:4")]);
    assert_eq!(h.next_deadline(), None);
    let order: Vec<String> = (0..5).map(|_| grab_data(&mut h, w)).collect();
    assert_eq!(order, ["f:p", "f:junk", "f:neg", "f:now", "none"]);
}

#[test]
fn future_epoch_job_waits_and_wakes_a_sleeper_when_due() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.pre_sleep(w), vec![]);
    let when = (T0_S + 5).to_string();
    // Not runnable yet, so nobody is woken at submit time.
    assert_eq!(h.epoch(c, "f", "e", &when, "later"), vec![created(c, "H:t:1")]);
    assert_eq!(h.next_deadline(), Some(T0 + 5000));
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\n.\n");
    assert_eq!(h.admin_text("prioritystatus"), "f\t0\t1\t0\t1\n.\n");
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t1\n.\n");
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, false, 0, 0)]);
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.tick(T0 + 4999), vec![]);
    assert_eq!(h.tick(T0 + 5000), vec![noop(w)]);
    assert_eq!(h.next_deadline(), None);
    assert_eq!(h.admin_text("prioritystatus"), "f\t0\t1\t0\t1\n.\n");
    assert_eq!(h.grab_uniq(w), vec![pkt(w, Command::JobAssignUniq, &[b"H:t:1", b"f", b"e", b"later"])]);
    assert_eq!(h.complete(w, "H:t:1", ""), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn future_epoch_job_is_not_grabbed_early_and_grab_at_its_time_takes_it() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let when = (T0_S + 2).to_string();
    assert_eq!(h.epoch(c, "f", "", &when, "e"), vec![created(c, "H:t:1")]);
    assert_eq!(h.grab(w), vec![no_job(w)]);
    assert_eq!(h.pre_sleep(w), vec![]);
    // The worker polls at the due time without a tick having run: it gets the job,
    // and no NOOP (it is the one asking).
    h.now = T0 + 2000;
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "e")]);
}

#[test]
fn pre_sleep_at_the_due_time_answers_one_noop() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let when = (T0_S + 2).to_string();
    assert_eq!(h.epoch(c, "f", "", &when, "e"), vec![created(c, "H:t:1")]);
    assert_eq!(h.pre_sleep(w), vec![]);
    h.now = T0 + 2000;
    // A second PRE_SLEEP without a tick in between: the job becomes due now.
    assert_eq!(h.pre_sleep(w), vec![noop(w)]);
}

#[test]
fn cancelling_a_scheduled_epoch_job_removes_it() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    let when = (T0_S + 5).to_string();
    assert_eq!(h.epoch(c, "f", "u", &when, "e"), vec![created(c, "H:t:1")]);
    assert_eq!(h.admin("cancel job H:t:1"), vec![text(ADMIN, "OK\r\n")]);
    assert_eq!(h.e.job_count(), 0);
    assert_eq!(h.admin_text("status"), "f\t0\t0\t1\n.\n");
    assert_eq!(h.pre_sleep(w), vec![]);
    assert_eq!(h.tick(T0 + 5000), vec![]);
    assert_eq!(h.grab(w), vec![no_job(w)]);
}

// ---------------------------------------------------------------------------------
// Client disconnect
// ---------------------------------------------------------------------------------

#[test]
fn abandoned_foreground_job_is_discarded_at_grab() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c2, Command::SubmitJob, "f", "", "b", "H:t:2");
    assert_eq!(h.disconnect(c1), vec![]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t1\t0\nH:t:2\t0\t0\t0\n.\n");
    assert_eq!(h.admin_text("status"), "f\t2\t0\t1\n.\n");
    // PRE_SLEEP still sees the live job.
    assert_eq!(h.pre_sleep(w), vec![noop(w)]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "f", "b")]);
    assert_eq!(h.admin_text("status"), "f\t1\t1\t1\n.\n");
    assert_eq!(h.grab(w), vec![no_job(w)]);
}

#[test]
fn pre_sleep_ignores_abandoned_jobs() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    assert_eq!(h.disconnect(c), vec![]);
    assert_eq!(h.pre_sleep(w), vec![]);
}

#[test]
fn running_job_of_a_departed_client_finishes_silently() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "b", "H:t:2");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.disconnect(c), vec![]);
    assert_eq!(h.send(w, Command::WorkData, &[b"H:t:1", b"x"]), vec![]);
    assert_eq!(h.send(w, Command::WorkStatus, &[b"H:t:1", b"1", b"2"]), vec![]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![]);
    assert_eq!(h.admin_text("show jobs"), "H:t:2\t0\t1\t0\n.\n");
    // If the worker dies instead, the abandoned job is not requeued.
    assert_eq!(h.disconnect(w), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn background_job_survives_a_coalesced_foreground_client_leaving() {
    let mut h = Harness::new();
    let b = h.connect();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(b, Command::SubmitJobBg, "f", "u", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "y", "H:t:1");
    assert_eq!(h.disconnect(c), vec![]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t1\n.\n");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn a_background_submit_joining_a_foreground_job_keeps_it_alive() {
    let mut h = Harness::new();
    let c = h.connect();
    let b = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "u", "x", "H:t:1");
    h.submit_ok(b, Command::SubmitJobBg, "f", "u", "y", "H:t:1");
    assert_eq!(h.disconnect(c), vec![]);
    // gearmand would discard it here, though the background submitter was told it exists.
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t0\n.\n");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn a_new_client_joining_an_abandoned_job_revives_it() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.disconnect(c1), vec![]);
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t1\t0\n.\n");
    h.submit_ok(c2, Command::SubmitJob, "f", "u", "y", "H:t:1");
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t0\t0\n.\n");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![pkt(c2, Command::WorkComplete, &[b"H:t:1", b"r"])]);
}

#[test]
fn a_new_client_joining_an_abandoned_running_job_gets_the_result() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.disconnect(c1), vec![]);
    h.submit_ok(c2, Command::SubmitJob, "f", "u", "y", "H:t:1");
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![pkt(c2, Command::WorkComplete, &[b"H:t:1", b"r"])]);
}

#[test]
fn a_client_that_also_runs_its_own_job_leaving_removes_it() {
    let mut h = Harness::new();
    let c = h.connect();
    h.can_do(c, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:1");
    assert_eq!(h.grab(c), vec![assign(c, "H:t:1", "f", "x")]);
    assert_eq!(h.disconnect(c), vec![]);
    assert_eq!(h.e.job_count(), 0);
    assert_eq!(h.e.connection_count(), 0);
    // Packets from a closed connection are ignored.
    assert_eq!(h.submit(c, Command::SubmitJob, "f", "", "x"), vec![]);
    assert_eq!(h.disconnect(c), vec![]);
}

// ---------------------------------------------------------------------------------
// Exceptions
// ---------------------------------------------------------------------------------

#[test]
fn exception_goes_as_exception_or_plain_fail_per_listener() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(
        h.send(c1, Command::OptionReq, &[b"exceptions"]),
        vec![pkt(c1, Command::OptionRes, &[b"exceptions"])]
    );
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "x", "H:t:1");
    h.submit_ok(c2, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(
        h.send(w, Command::WorkException, &[b"H:t:1", b"boom"]),
        vec![pkt(c2, Command::WorkFail, &[b"H:t:1"]), pkt(c1, Command::WorkException, &[b"H:t:1", b"boom"])]
    );
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn exceptions_config_turns_the_option_on_for_every_connection() {
    let mut h = Harness::with(EngineConfig { exceptions: true, ..config() });
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(
        h.send(w, Command::WorkException, &[b"H:t:1", b"boom"]),
        vec![pkt(c, Command::WorkException, &[b"H:t:1", b"boom"])]
    );
}

#[test]
fn option_req_forms() {
    let mut h = Harness::new();
    let c = h.connect();
    assert_eq!(
        h.send(c, Command::OptionReq, &[b"EXCEPTIONS"]),
        vec![pkt(c, Command::OptionRes, &[b"EXCEPTIONS"])]
    );
    assert_eq!(
        h.send(c, Command::OptionReq, &[b"exceptions\0"]),
        vec![pkt(c, Command::OptionRes, &[b"exceptions"])]
    );
    let unknown = err(c, "UNKNOWN_OPTION", "Server does not recognize given option");
    assert_eq!(h.send(c, Command::OptionReq, &[b"foo"]), vec![unknown.clone()]);
    assert_eq!(h.send(c, Command::OptionReq, &[b""]), vec![unknown]);
}

#[test]
fn work_fail_forwards_the_workers_bytes() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:2");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.send(w, Command::WorkFail, &[b"H:t:1\0"]), vec![pkt(c, Command::WorkFail, &[b"H:t:1\0"])]);
    assert_eq!(h.send(w, Command::WorkFail, &[b"H:t:2"]), vec![pkt(c, Command::WorkFail, &[b"H:t:2"])]);
    assert_eq!(h.e.job_count(), 0);
    let long = "H".repeat(64);
    assert_eq!(
        h.send(w, Command::WorkFail, &[long.as_bytes()]),
        vec![err(
            w,
            "ARGUMENT_TOO_LARGE",
            "Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf"
        )]
    );
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

#[test]
fn response_magic_is_refused() {
    let mut h = Harness::new();
    let c = h.connect();
    let p = Packet::new(Magic::Res, Command::SubmitJob, &[b"f", b"", b"x"]).expect("valid");
    assert_eq!(h.packet(c, &p), vec![err(c, "INVALID_MAGIC", "Request magic expected")]);
    let p = Packet::new(Magic::Res, Command::Noop, &[]).expect("valid");
    assert_eq!(h.packet(c, &p), vec![err(c, "INVALID_MAGIC", "Request magic expected")]);
    assert_eq!(h.e.job_count(), 0);
    assert_eq!(h.admin_text("status"), ".\n");
}

#[test]
fn server_only_and_rejected_commands_are_invalid() {
    let mut h = Harness::new();
    let c = h.connect();
    let mut seen = 0;
    for &command in Command::ALL {
        if command.is_from_peer() {
            continue;
        }
        assert!(matches!(command.sender(), Sender::Server | Sender::Rejected));
        let args: Vec<&[u8]> = vec![&b"x"[..]; command.layout().argc];
        let p = Packet::new(Magic::Req, command, &args).expect("valid");
        assert_eq!(h.packet(c, &p), vec![err(c, "INVALID_COMMAND", "Command not expected")], "{command:?}");
        seen += 1;
    }
    // NOOP, JOB_CREATED, NO_JOB, JOB_ASSIGN(_UNIQ/_ALL), ECHO_RES, ERROR, STATUS_RES(_UNIQUE),
    // OPTION_RES, type 5, ALL_YOURS, SUBMIT_JOB_SCHED.
    assert_eq!(seen, 14);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn work_packets_from_a_non_owner_get_exact_texts() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    let other = h.connect();
    h.can_do(w, "f");
    h.can_do(other, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    for who in [other, c] {
        for handle in [&b"H:t:1"[..], b"H:t:77"] {
            let cases: [(Command, Vec<&[u8]>, &str); 6] = [
                (Command::WorkData, vec![handle, b"d"], "Job does not exist on server"),
                (Command::WorkWarning, vec![handle, b"d"], "Job does not exist on server"),
                (Command::WorkStatus, vec![handle, b"1", b"2"], NOT_FOUND),
                (Command::WorkComplete, vec![handle, b"d"], NOT_FOUND),
                (Command::WorkFail, vec![handle], NOT_FOUND),
                (
                    Command::WorkException,
                    vec![handle, b"d"],
                    "An exception was received for a job that does not exist",
                ),
            ];
            for (command, args, message) in cases {
                assert_eq!(
                    h.send(who, command, &args),
                    vec![err(who, "JOB_NOT_FOUND", message)],
                    "{command:?}"
                );
            }
        }
    }
    // The owner's job is untouched.
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 0, 0)]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![pkt(c, Command::WorkComplete, &[b"H:t:1", b"r"])]);
}

// ---------------------------------------------------------------------------------
// maxqueue
// ---------------------------------------------------------------------------------

fn limits(h: &Harness, name: &str) -> [u32; 3] {
    let fid = h.e.function_ids[name.as_bytes()];
    h.e.functions[fid].max_queue
}

#[test]
fn maxqueue_forms() {
    let mut h = Harness::new();
    assert_eq!(
        h.admin("maxqueue"),
        vec![text(
            ADMIN,
            "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n"
        )]
    );
    assert_eq!(h.admin("create function f"), vec![text(ADMIN, "OK\r\n")]);
    let ok = vec![text(ADMIN, "OK\r\n")];
    assert_eq!(h.admin("maxqueue f 3"), ok);
    assert_eq!(limits(&h, "f"), [3, 3, 3]);
    assert_eq!(h.admin("MAXQUEUE f 1 2"), ok);
    assert_eq!(limits(&h, "f"), [1, 2, 0]);
    assert_eq!(h.admin("maxqueue f 4 5 6"), ok);
    assert_eq!(limits(&h, "f"), [4, 5, 6]);
    assert_eq!(h.admin("maxqueue f -1 x 7"), ok);
    assert_eq!(limits(&h, "f"), [0, 0, 7]);
    assert_eq!(h.admin("maxqueue f"), ok);
    assert_eq!(limits(&h, "f"), [0, 0, 0]);
    assert_eq!(h.admin("maxqueue f 1 2 3 4"), vec![Sent::Close(ADMIN)]);
    assert_eq!(limits(&h, "f"), [0, 0, 0]);
    // Unknown (or differently cased) names: OK, nothing stored, nothing created.
    assert_eq!(h.admin("maxqueue F 1"), ok);
    assert_eq!(h.admin("maxqueue g 1"), ok);
    assert_eq!(h.admin_text("status"), "f\t0\t0\t0\n.\n");
    assert_eq!(h.admin("create function g"), ok);
    assert_eq!(limits(&h, "g"), [0, 0, 0]);
}

#[test]
fn maxqueue_enforcement_and_coalesced_submits_never_refused() {
    let mut h = Harness::new();
    let c = h.connect();
    assert_eq!(h.admin_text("create function mq"), "OK\r\n");
    assert_eq!(h.admin_text("maxqueue mq 1 2 0"), "OK\r\n");
    let full = err(c, "QUEUE_ERROR", "Job queue is full");
    h.submit_ok(c, Command::SubmitJobHigh, "mq", "u", "x", "H:t:1");
    assert_eq!(h.submit(c, Command::SubmitJobHigh, "mq", "", "x"), vec![full.clone()]);
    assert_eq!(h.submit(c, Command::SubmitJobHighBg, "mq", "", "x"), vec![full.clone()]);
    h.submit_ok(c, Command::SubmitJob, "mq", "", "x", "H:t:2");
    assert_eq!(h.submit(c, Command::SubmitJobBg, "mq", "", "x"), vec![full.clone()]);
    let when = (T0_S + 100).to_string();
    assert_eq!(h.epoch(c, "mq", "", &when, "x"), vec![full.clone()]);
    h.submit_ok(c, Command::SubmitJobLow, "mq", "", "x", "H:t:3");
    h.submit_ok(c, Command::SubmitJobLowBg, "mq", "", "x", "H:t:4");
    // Coalesced submits are never refused.
    h.submit_ok(c, Command::SubmitJobHigh, "mq", "u", "x", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "mq", "u", "x", "H:t:1");
    assert_eq!(h.admin_text("status"), "mq\t4\t0\t0\n.\n");
    // Running jobs count too.
    let w = h.connect();
    h.can_do(w, "mq");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.submit(c, Command::SubmitJob, "mq", "", "x"), vec![full]);
    assert_eq!(h.admin_text("maxqueue mq"), "OK\r\n");
    h.submit_ok(c, Command::SubmitJobHigh, "mq", "", "x", "H:t:5");
    assert_eq!(h.admin_text("status"), "mq\t5\t1\t1\n.\n");
}

// ---------------------------------------------------------------------------------
// Admin replies
// ---------------------------------------------------------------------------------

#[test]
fn status_and_prioritystatus_byte_exact() {
    let mut h = Harness::new();
    assert_eq!(h.admin_text("status"), ".\n");
    assert_eq!(h.admin_text("prioritystatus"), ".\n");
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "resize");
    h.can_do(w, "thumb");
    h.submit_ok(c, Command::SubmitJobLow, "thumb", "", "t", "H:t:1");
    h.submit_ok(c, Command::SubmitJob, "resize", "", "r", "H:t:2");
    h.submit_ok(c, Command::SubmitJobHighBg, "resize", "", "r", "H:t:3");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "thumb", "t")]);
    assert_eq!(h.admin_text("status"), "resize\t2\t0\t1\nthumb\t1\t1\t1\n.\n");
    assert_eq!(h.admin_text("prioritystatus"), "resize\t1\t1\t0\t1\nthumb\t0\t0\t0\t1\n.\n");
    // Case-insensitive, extra tokens ignored.
    assert_eq!(h.admin_text("STATUS extra args"), "resize\t2\t0\t1\nthumb\t1\t1\t1\n.\n");
    assert_eq!(h.admin_text("PrioritySTATUS x"), "resize\t1\t1\t0\t1\nthumb\t0\t0\t0\t1\n.\n");
    // Registering twice counts twice; names print up to the first NUL; empty names print.
    h.can_do(w, "thumb");
    h.submit_ok(c, Command::SubmitJobBg, "", "", "e", "H:t:4");
    assert_eq!(h.send(w, Command::CanDo, &[b"nu\0l"]), vec![]);
    assert_eq!(h.admin_text("status"), "resize\t2\t0\t1\nthumb\t1\t1\t2\n\t1\t0\t0\nnu\t0\t0\t1\n.\n");
}

#[test]
fn workers_byte_exact() {
    let mut h = Harness::new();
    assert_eq!(h.admin_text("workers"), ".\n");
    let w = h.connect();
    let c = h.connect();
    let x = h.connect();
    assert_eq!(h.send(w, Command::SetClientId, &[b"worker-1"]), vec![]);
    h.can_do(w, "resize");
    h.can_do(w, "thumb");
    h.can_do(w, "thumb");
    assert_eq!(h.send(c, Command::SetClientId, &[b""]), vec![]);
    let long = "x".repeat(200);
    assert_eq!(h.send(x, Command::SetClientId, &[long.as_bytes()]), vec![]);
    let expected = format!(
        "3 127.0.0.1 {} :\n2 127.0.0.1  :\n1 127.0.0.1 worker-1 : thumb thumb resize\n.\n",
        "x".repeat(127)
    );
    assert_eq!(h.admin_text("WORKERS"), expected);
    assert_eq!(h.disconnect(x), vec![]);
    assert_eq!(h.admin_text("workers"), "2 127.0.0.1  :\n1 127.0.0.1 worker-1 : thumb thumb resize\n.\n");
}

#[test]
fn show_jobs_and_show_unique_jobs_byte_exact() {
    let mut h = Harness::new();
    assert_eq!(h.admin_text("show jobs"), ".\n");
    assert_eq!(h.admin_text("show unique jobs"), ".\n");
    let c = h.connect();
    h.submit_ok(c, Command::SubmitJob, "f", "", "a", "H:t:1");
    h.submit_ok(c, Command::SubmitJobBg, "f", "u-1", "a", "H:t:2");
    h.submit_ok(c, Command::SubmitJobBg, "f", "-", "a", "H:t:3");
    h.submit_ok(c, Command::SubmitJobHigh, "f", "u-3", "a", "H:t:4");
    assert_eq!(h.admin("cancel job H:t:2"), vec![text(ADMIN, "OK\r\n")]);
    assert_eq!(
        h.admin_text("show jobs"),
        "H:t:1\t0\t0\t0\nH:t:2\t0\t1\t0\nH:t:3\t0\t0\t1\nH:t:4\t0\t0\t0\n.\n"
    );
    assert_eq!(h.admin_text("SHOW UNIQUE JOBS"), "\nu-1\n-\nu-3\n.\n");
    assert_eq!(
        h.admin_text("Show Jobs"),
        "H:t:1\t0\t0\t0\nH:t:2\t0\t1\t0\nH:t:3\t0\t0\t1\nH:t:4\t0\t0\t0\n.\n"
    );
}

#[test]
fn version_getpid_verbose() {
    let mut h = Harness::new();
    assert_eq!(h.admin("version"), vec![text(ADMIN, "OK 1.1.20+ds\n")]);
    assert_eq!(h.admin("version extra args"), vec![text(ADMIN, "OK 1.1.20+ds\n")]);
    assert_eq!(h.admin("getpid"), vec![text(ADMIN, "OK 42\n")]);
    assert_eq!(h.admin("VERBOSE x"), vec![text(ADMIN, "OK ERROR\n")]);
}

#[test]
fn create_function_forms() {
    let mut h = Harness::new();
    assert_eq!(h.admin("create function foo"), vec![text(ADMIN, "OK\r\n")]);
    assert_eq!(h.admin("CREATE FUNCTION foo"), vec![text(ADMIN, "OK\r\n")]);
    assert_eq!(h.admin_text("status"), "foo\t0\t0\t0\n.\n");
    let bad = "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n";
    for line in ["create", "create function", "create x y", "create function a b"] {
        assert_eq!(h.admin(line), vec![text(ADMIN, bad)], "{line}");
    }
    // The command token is echoed as spelled.
    assert_eq!(
        h.admin("CREATE x"),
        vec![text(
            ADMIN,
            "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+CREATE\r\n"
        )]
    );
    assert_eq!(h.admin_text("status"), "foo\t0\t0\t0\n.\n");
}

#[test]
fn drop_function_forms_and_refusals() {
    let mut h = Harness::new();
    let ok = vec![text(ADMIN, "OK\r\n")];
    let busy = vec![text(ADMIN, "ERR there are still connected workers or executing clients\r\n")];
    let missing = vec![text(ADMIN, "ERR function not found\r\n")];
    let bad = "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n";
    for line in ["drop", "drop function", "drop x y", "drop function a b"] {
        assert_eq!(h.admin(line), vec![text(ADMIN, bad)], "{line}");
    }
    assert_eq!(h.admin("create function cbar"), ok);
    assert_eq!(h.admin("DROP FUNCTION CBAR"), ok);
    assert_eq!(h.admin_text("status"), ".\n");
    assert_eq!(h.admin("drop function cbar"), missing);
    // A registered worker blocks the drop.
    let w = h.connect();
    h.can_do(w, "g");
    assert_eq!(h.admin("drop function g"), busy);
    assert_eq!(h.send(w, Command::CantDo, &[b"g"]), vec![]);
    assert_eq!(h.admin("drop function g"), ok);
    // Queued jobs block it too (gearmand drops and leaves them dangling).
    let c = h.connect();
    h.submit_ok(c, Command::SubmitJobBg, "q", "u", "x", "H:t:1");
    assert_eq!(h.admin("drop function q"), busy);
    assert_eq!(h.admin_text("status"), "q\t1\t0\t0\n.\n");
    h.can_do(w, "q");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.send(w, Command::ResetAbilities, &[]), vec![]);
    // Still one requeued job.
    assert_eq!(h.admin("drop function q"), busy);
    h.can_do(w, "q");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.complete(w, "H:t:1", ""), vec![]);
    assert_eq!(h.send(w, Command::CantDo, &[b"q"]), vec![]);
    assert_eq!(h.admin("drop function Q"), ok);
    assert_eq!(h.admin_text("status"), ".\n");
    // The name can be used again.
    h.submit_ok(c, Command::SubmitJobBg, "q", "u", "x", "H:t:2");
    assert_eq!(h.admin_text("status"), "q\t1\t0\t0\n.\n");
    h.can_do(w, "q");
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "q", "x")]);
}

#[test]
fn cancel_forms() {
    let mut h = Harness::new();
    let unknown = vec![text(ADMIN, "ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n")];
    assert_eq!(h.admin("cancel"), unknown);
    assert_eq!(h.admin("cancel job"), unknown);
    let c = h.connect();
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "x", "H:t:1");
    assert_eq!(h.admin("cancel foo H:t:1"), vec![text(ADMIN, "ERR UNKNOWN_ERROR\r\n")]);
    assert_eq!(h.admin("cancel job H:t:1 x"), vec![text(ADMIN, "ERR UNKNOWN_ERROR\r\n")]);
    assert_eq!(h.admin("cancel job H:t:1 x y"), vec![text(ADMIN, "ERR UNKNOWN_ERROR\r\n")]);
    assert_eq!(h.admin("cancel job H:t:9"), vec![text(ADMIN, "ERR UNKNOWN_JOB\r\n")]);
    assert_eq!(h.admin("show jobs"), vec![text(ADMIN, "H:t:1\t0\t0\t1\n.\n")]);
    assert_eq!(h.admin("CANCEL JOB H:t:1"), vec![text(ADMIN, "OK\r\n")]);
    // gearmand's gearman_server_job_cancel succeeds again while the job is still held.
    assert_eq!(h.admin("cancel job H:t:1"), vec![text(ADMIN, "OK\r\n")]);
    assert_eq!(h.admin("show jobs"), vec![text(ADMIN, "H:t:1\t0\t1\t0\n.\n")]);
    // Once a worker reaches it, it is gone and unknown.
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.grab(w), vec![no_job(w)]);
    assert_eq!(h.admin("cancel job H:t:1"), vec![text(ADMIN, "ERR UNKNOWN_JOB\r\n")]);
}

#[test]
fn cancel_queued_job_fails_listeners_and_is_discarded_at_grab() {
    let mut h = Harness::new();
    let c1 = h.connect();
    let c2 = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c1, Command::SubmitJob, "f", "u", "x", "H:t:1");
    h.submit_ok(c2, Command::SubmitJob, "f", "u", "x", "H:t:1");
    assert_eq!(
        h.admin("cancel job H:t:1"),
        vec![
            pkt(c2, Command::WorkFail, &[b"H:t:1"]),
            pkt(c1, Command::WorkFail, &[b"H:t:1"]),
            text(ADMIN, "OK\r\n")
        ]
    );
    assert_eq!(h.admin_text("show jobs"), "H:t:1\t0\t1\t0\n.\n");
    assert_eq!(h.admin_text("status"), "f\t1\t0\t1\n.\n");
    assert_eq!(h.pre_sleep(w), vec![]);
    // A new submit with the same unique is a new job, not the cancelled one.
    assert_eq!(h.submit(c1, Command::SubmitJob, "f", "u", "y"), vec![created(c1, "H:t:2"), noop(w)]);
    // Both are alive under "u"; GET_STATUS_UNIQUE reports the new one (one client).
    assert_eq!(
        h.send(c2, Command::GetStatusUnique, &[b"u"]),
        vec![pkt(c2, Command::StatusResUnique, &[b"u", b"1", b"0", b"0", b"0", b"1"])]
    );
    assert_eq!(h.grab(w), vec![assign(w, "H:t:2", "f", "y")]);
    assert_eq!(h.admin_text("status"), "f\t1\t1\t1\n.\n");
    assert_eq!(h.grab(w), vec![no_job(w)]);
    assert_eq!(h.complete(w, "H:t:2", "r"), vec![pkt(c1, Command::WorkComplete, &[b"H:t:2", b"r"])]);
    // Clients that leave after a cancel do not disturb anything.
    assert_eq!(h.disconnect(c2), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn cancel_running_job_detaches_listeners() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    h.submit_ok(c, Command::SubmitJob, "f", "", "x", "H:t:1");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(
        h.admin("cancel job H:t:1"),
        vec![pkt(c, Command::WorkFail, &[b"H:t:1"]), text(ADMIN, "OK\r\n")]
    );
    assert_eq!(h.send(w, Command::WorkData, &[b"H:t:1", b"d"]), vec![]);
    assert_eq!(h.get_status(c, "H:t:1"), vec![status_res(c, "H:t:1", true, true, 0, 0)]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![]);
    assert_eq!(h.e.job_count(), 0);
    // A cancelled running job whose worker dies is not requeued.
    h.submit_ok(c, Command::SubmitJobBg, "f", "", "x", "H:t:2");
    assert_eq!(h.grab(w).len(), 1);
    assert_eq!(h.admin_text("cancel job H:t:2"), "OK\r\n");
    assert_eq!(h.disconnect(w), vec![]);
    assert_eq!(h.e.job_count(), 0);
}

#[test]
fn unknown_and_malformed_admin_lines() {
    let mut h = Harness::new();
    let cases = [
        ("bogus", "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"),
        ("", "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        ("  status", "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        ("shutdown", "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
        ("shutdown graceful", "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
        ("show", "ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"),
        ("show foo", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        ("show jobs x", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        ("show unique", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        ("show unique jobs x", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        ("status\t", "ERR UNKNOWN_COMMAND Unknown+server+commandstatus\t\r\n"),
    ];
    for (line, reply) in cases {
        assert_eq!(h.admin(line), vec![text(ADMIN, reply)], "{line:?}");
    }
    assert_eq!(h.admin("status "), vec![text(ADMIN, ".\n")]);
    assert_eq!(h.admin("a b c d e f"), vec![Sent::Close(ADMIN)]);
    assert_eq!(h.admin("status b c d e f"), vec![Sent::Close(ADMIN)]);
    assert_eq!(h.admin("a b c d e"), vec![text(ADMIN, "ERR UNKNOWN_COMMAND Unknown+server+commanda\r\n")]);
}

// ---------------------------------------------------------------------------------
// Memory: what a queued job holds.
// ---------------------------------------------------------------------------------

#[test]
fn a_queued_job_is_small_and_owns_its_bytes() {
    // The slab holds a pointer per job, and a job fits jemalloc's 160-byte class.
    assert_eq!(std::mem::size_of::<Box<crate::job::Job>>(), std::mem::size_of::<usize>());
    #[cfg(target_pointer_width = "64")]
    assert!(std::mem::size_of::<crate::job::Job>() <= 160, "{}", std::mem::size_of::<crate::job::Job>());

    let mut h = Harness::new();
    let c = h.connect();
    let data = [7u8; 100];
    let p = Packet::new(Magic::Req, Command::SubmitJobBg, &[b"fn", b"", &data]).expect("layout");
    assert_eq!(h.packet(c, &p), vec![created(c, "H:t:1")]);
    let p2 = Packet::new(Magic::Req, Command::SubmitJobBg, &[b"fn", b"u", &data]).expect("layout");
    assert_eq!(h.packet(c, &p2), vec![created(c, "H:t:2")]);
    // Nothing the engine keeps may point into a packet: in the server a packet is a
    // view into a connection's read buffer, which would stay alive with the job.
    let inside = |p: &Packet, b: &[u8]| !b.is_empty() && p.body().as_ptr_range().contains(&b.as_ptr());
    for (_, j) in h.e.jobs.iter() {
        assert_eq!(&j.data[..], &data[..]);
        assert!(!inside(&p, &j.data) && !inside(&p2, &j.data));
        assert!(!inside(&p2, &j.unique));
        assert!(j.extra.is_none(), "a plain background job needs no extra fields");
        assert_eq!(j.listeners.capacity(), 0);
    }
    for (_, f) in &h.e.functions {
        assert!(!inside(&p, &f.name));
    }
}

// ---------------------------------------------------------------------------------
// Property test: random operation sequences keep every invariant.
// ---------------------------------------------------------------------------------

const FUNCTIONS: [&str; 3] = ["a", "b", "c"];
const UNIQUES: [&str; 5] = ["", "-", "u1", "u2", "u3"];
const DATA: [&str; 3] = ["", "x", "y"];
const SUBMITS: [Command; 9] = [
    Command::SubmitJob,
    Command::SubmitJobBg,
    Command::SubmitJobHigh,
    Command::SubmitJobHighBg,
    Command::SubmitJobLow,
    Command::SubmitJobLowBg,
    Command::SubmitJobEpoch,
    Command::SubmitReduceJob,
    Command::SubmitReduceJobBackground,
];
const WORK: [Command; 6] = [
    Command::WorkData,
    Command::WorkWarning,
    Command::WorkStatus,
    Command::WorkComplete,
    Command::WorkFail,
    Command::WorkException,
];
const GRABS: [Command; 3] = [Command::GrabJob, Command::GrabJobUniq, Command::GrabJobAll];

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Disconnect(u8),
    Submit {
        c: u8,
        kind: u8,
        f: u8,
        u: u8,
        d: u8,
        when: u8,
    },
    CanDo {
        c: u8,
        f: u8,
        timeout: Option<u16>,
    },
    CantDo {
        c: u8,
        f: u8,
    },
    Reset(u8),
    Grab {
        c: u8,
        kind: u8,
    },
    PreSleep(u8),
    Work {
        c: u8,
        kind: u8,
        held: bool,
        pick: u8,
    },
    Status {
        c: u8,
        pick: u8,
        unique: bool,
    },
    Exceptions(u8),
    Cancel(u8),
    Drop(u8),
    Create(u8),
    MaxQueue {
        f: u8,
        n: u8,
    },
    Admin(u8),
    /// Time passes; with `tick` false the engine only sees it in the next request.
    Advance {
        ms: u16,
        tick: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = any::<u8>;
    prop_oneof![
        2 => Just(Op::Connect),
        1 => c().prop_map(Op::Disconnect),
        6 => (c(), 0..9u8, 0..3u8, 0..5u8, 0..3u8, 0..6u8)
            .prop_map(|(c, kind, f, u, d, when)| Op::Submit { c, kind, f, u, d, when }),
        3 => (c(), 0..3u8, prop::option::weighted(0.3, 0..2500u16))
            .prop_map(|(c, f, timeout)| Op::CanDo { c, f, timeout }),
        1 => (c(), 0..4u8).prop_map(|(c, f)| Op::CantDo { c, f }),
        1 => c().prop_map(Op::Reset),
        5 => (c(), 0..3u8).prop_map(|(c, kind)| Op::Grab { c, kind }),
        3 => c().prop_map(Op::PreSleep),
        5 => (c(), 0..6u8, prop::bool::weighted(0.8), c())
            .prop_map(|(c, kind, held, pick)| Op::Work { c, kind, held, pick }),
        1 => (c(), c(), any::<bool>()).prop_map(|(c, pick, unique)| Op::Status { c, pick, unique }),
        1 => c().prop_map(Op::Exceptions),
        1 => c().prop_map(Op::Cancel),
        1 => (0..4u8).prop_map(Op::Drop),
        1 => (0..3u8).prop_map(Op::Create),
        1 => (0..3u8, 0..4u8).prop_map(|(f, n)| Op::MaxQueue { f, n }),
        1 => (0..5u8).prop_map(Op::Admin),
        2 => (0..3000u16, prop::bool::weighted(0.7)).prop_map(|(ms, tick)| Op::Advance { ms, tick }),
    ]
}

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        items.get(usize::from(i) % items.len()).copied()
    }
}

/// What the test remembers to judge the engine's output.
#[derive(Default)]
struct Model {
    live: Vec<ConnId>,
    /// Function names each connection registered (entries may repeat).
    registered: HashMap<ConnId, Vec<Vec<u8>>>,
    /// Sent PRE_SLEEP since its last GRAB: the only connections a NOOP may go to.
    pre_slept: HashSet<ConnId>,
    /// Handles each connection got from a foreground submit.
    fg_handles: HashMap<ConnId, HashSet<Vec<u8>>>,
    /// Handles each connection was assigned (possibly no longer held).
    assigned: HashMap<ConnId, Vec<Vec<u8>>>,
    /// Every handle ever created.
    handles: Vec<Vec<u8>>,
    /// Handles an admin `cancel job` answered OK for.
    cancelled: HashSet<Vec<u8>>,
    /// Sent a GRAB_JOB the engine holds (`--grab-hold`): its answer may come with any
    /// later operation, and comes before anything else sent to that connection.
    held: HashSet<ConnId>,
}

impl Model {
    fn conn(&self, i: u8) -> Option<ConnId> {
        pick(&self.live, i)
    }

    fn forget(&mut self, c: ConnId) {
        self.live.retain(|&x| x != c);
        self.registered.remove(&c);
        self.pre_slept.remove(&c);
        self.fg_handles.remove(&c);
        self.assigned.remove(&c);
        self.held.remove(&c);
    }

    /// Takes the answers to held GRAB_JOBs out of `sent`, checking each as a grab reply.
    fn answers(&mut self, sent: &mut Vec<Sent>) -> Result<(), TestCaseError> {
        let mut rest = Vec::with_capacity(sent.len());
        for s in sent.drain(..) {
            // A held worker may be a client too, and get results meanwhile.
            let answer = matches!(
                &s,
                Sent::Packet(c, Command::NoJob | Command::JobAssign | Command::JobAssignUniq | Command::JobAssignAll, _)
                    if self.held.contains(c)
            );
            let Sent::Packet(c, command, args) = &s else {
                rest.push(s);
                continue;
            };
            if !answer {
                rest.push(s);
                continue;
            }
            self.grab_reply(*c, *command, args)?;
            self.held.remove(c);
        }
        *sent = rest;
        Ok(())
    }

    /// Checks one reply to a GRAB_JOB of `c`.
    fn grab_reply(&mut self, c: ConnId, command: Command, args: &[Vec<u8>]) -> Result<(), TestCaseError> {
        match command {
            Command::NoJob => {}
            Command::JobAssign | Command::JobAssignUniq | Command::JobAssignAll => {
                let registered = self.registered.get(&c).is_some_and(|r| r.contains(&args[1]));
                prop_assert!(registered, "assigned a function it did not register: {:?}", args);
                prop_assert!(self.handles.contains(&args[0]));
                self.assigned.entry(c).or_default().push(args[0].clone());
            }
            other => prop_assert!(false, "bad grab reply {other:?} {args:?}"),
        }
        Ok(())
    }

    /// Checks outputs that any operation may produce.
    fn judge(&self, sent: &[Sent]) -> Result<(), TestCaseError> {
        for s in sent {
            let Some(c) = s.conn() else {
                // The engine under test has no store, so it never persists or forgets.
                return Err(TestCaseError::fail(format!("store operation without a store: {s:?}")));
            };
            prop_assert!(c == ADMIN || self.live.contains(&c), "output to a closed connection: {s:?}");
            if let Sent::Packet(c, command, args) = s {
                match command {
                    Command::Noop => prop_assert!(self.pre_slept.contains(c), "NOOP to a non-sleeper: {s:?}"),
                    Command::WorkData
                    | Command::WorkWarning
                    | Command::WorkStatus
                    | Command::WorkComplete
                    | Command::WorkFail
                    | Command::WorkException => {
                        let h = args.first().map(|h| h.strip_suffix(b"\0").unwrap_or(h)).unwrap_or_default();
                        let known = self.fg_handles.get(c).is_some_and(|set| set.contains(h));
                        prop_assert!(known, "result for a job this client did not submit: {s:?}");
                    }
                    Command::JobCreated
                    | Command::JobAssign
                    | Command::JobAssignUniq
                    | Command::JobAssignAll
                    | Command::NoJob => {
                        prop_assert!(false, "unsolicited {s:?}");
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn run_ops(cfg: EngineConfig, wide_after: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::with(cfg);
    h.e.wide_after = wide_after;
    let mut m = Model::default();
    for op in ops {
        let mut sent = Vec::new();
        match *op {
            Op::Connect => {
                let c = h.connect();
                m.live.push(c);
            }
            Op::Disconnect(i) => {
                if let Some(c) = m.conn(i) {
                    m.forget(c);
                    sent = h.disconnect(c);
                }
            }
            Op::Submit { c, kind, f, u, d, when } => {
                let Some(c) = m.conn(c) else { continue };
                let command = SUBMITS[usize::from(kind)];
                let (f, u, d) = (FUNCTIONS[usize::from(f)], UNIQUES[usize::from(u)], DATA[usize::from(d)]);
                sent = match command {
                    Command::SubmitJobEpoch => {
                        let when = (h.now / 1000 + i64::from(when) - 2).to_string();
                        h.epoch(c, f, u, &when, d)
                    }
                    Command::SubmitReduceJob | Command::SubmitReduceJobBackground => {
                        h.reduce(c, command, f, u, if when % 2 == 0 { "" } else { "r" }, d)
                    }
                    _ => h.submit(c, command, f, u, d),
                };
                let background = !matches!(
                    command,
                    Command::SubmitJob
                        | Command::SubmitJobHigh
                        | Command::SubmitJobLow
                        | Command::SubmitReduceJob
                );
                if m.held.remove(&c) {
                    // The held grab of the submitter itself is answered (NO_JOB) first.
                    let first = sent.iter().position(|s| matches!(s, Sent::Packet(x, ..) if *x == c));
                    let Some(i) = first else { return Err(TestCaseError::fail("held grab not answered")) };
                    if let Sent::Packet(_, command, args) = sent.remove(i) {
                        m.grab_reply(c, command, &args)?;
                    }
                }
                let reply = sent.iter().position(|s| matches!(s, Sent::Packet(x, ..) if *x == c));
                let Some(i) = reply else { return Err(TestCaseError::fail("no reply to a submit")) };
                match sent.remove(i) {
                    Sent::Packet(_, Command::JobCreated, args) => {
                        let handle = args[0].clone();
                        prop_assert!(handle.starts_with(b"H:t:"));
                        if !m.handles.contains(&handle) {
                            m.handles.push(handle.clone());
                        }
                        if !background {
                            m.fg_handles.entry(c).or_default().insert(handle);
                        }
                    }
                    Sent::Packet(_, Command::Error, args) => {
                        prop_assert!(args[0] == b"QUEUE_ERROR", "submit error {:?}", args);
                    }
                    other => prop_assert!(false, "bad submit reply {other:?}"),
                }
            }
            Op::CanDo { c, f, timeout } => {
                let Some(c) = m.conn(c) else { continue };
                let f = FUNCTIONS[usize::from(f)];
                sent = match timeout {
                    Some(ms) => h.send(c, Command::CanDoTimeout, &[f.as_bytes(), ms.to_string().as_bytes()]),
                    None => h.send(c, Command::CanDo, &[f.as_bytes()]),
                };
                m.answers(&mut sent)?;
                prop_assert_eq!(&sent, &vec![]);
                m.registered.entry(c).or_default().push(f.as_bytes().to_vec());
            }
            Op::CantDo { c, f } => {
                let Some(c) = m.conn(c) else { continue };
                let f = FUNCTIONS.get(usize::from(f)).copied().unwrap_or("zz");
                sent = h.send(c, Command::CantDo, &[f.as_bytes()]);
                if let Some(r) = m.registered.get_mut(&c) {
                    r.retain(|x| x != f.as_bytes());
                }
            }
            Op::Reset(c) => {
                let Some(c) = m.conn(c) else { continue };
                sent = h.send(c, Command::ResetAbilities, &[]);
                m.registered.remove(&c);
            }
            Op::Grab { c, kind } => {
                let Some(c) = m.conn(c) else { continue };
                m.pre_slept.remove(&c);
                sent = h.send(c, GRABS[usize::from(kind)], &[]);
                m.answers(&mut sent)?;
                let mine: Vec<usize> = sent
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| matches!(s, Sent::Packet(x, ..) if *x == c))
                    .map(|(i, _)| i)
                    .collect();
                match mine[..] {
                    [] => {
                        prop_assert!(h.e.config.grab_hold_ms > 0, "no reply to a grab: {:?}", sent);
                        m.held.insert(c);
                    }
                    [i] => match sent.remove(i) {
                        Sent::Packet(_, command, args) => m.grab_reply(c, command, &args)?,
                        other => prop_assert!(false, "bad grab reply {other:?}"),
                    },
                    _ => prop_assert!(false, "grab replies: {:?}", sent),
                }
            }
            Op::PreSleep(c) => {
                let Some(c) = m.conn(c) else { continue };
                m.pre_slept.insert(c);
                sent = h.pre_sleep(c);
                prop_assert!(sent.iter().filter(|s| **s == noop(c)).count() <= 1, "two NOOPs: {:?}", sent);
            }
            Op::Work { c, kind, held, pick: p } => {
                let Some(c) = m.conn(c) else { continue };
                let handle = if held {
                    m.assigned.get(&c).filter(|a| !a.is_empty()).map(|a| a[usize::from(p) % a.len()].clone())
                } else {
                    None
                };
                let handle = handle.unwrap_or_else(|| format!("H:t:{}", p % 40).into_bytes());
                let command = WORK[usize::from(kind)];
                let args: Vec<&[u8]> = match command {
                    Command::WorkStatus => vec![&handle, b"1", b"3"],
                    Command::WorkFail => vec![&handle],
                    _ => vec![&handle, b"r"],
                };
                sent = h.send(c, command, &args);
                m.answers(&mut sent)?;
                sent.retain(|s| !matches!(s, Sent::Packet(x, Command::Error, _) if *x == c));
            }
            Op::Status { c, pick: p, unique } => {
                let Some(c) = m.conn(c) else { continue };
                sent = if unique {
                    h.send(c, Command::GetStatusUnique, &[UNIQUES[usize::from(p) % UNIQUES.len()].as_bytes()])
                } else {
                    h.send(c, Command::GetStatus, &[format!("H:t:{}", p % 40).as_bytes()])
                };
                m.answers(&mut sent)?;
                prop_assert_eq!(sent.len(), 1);
                sent.clear();
            }
            Op::Exceptions(c) => {
                let Some(c) = m.conn(c) else { continue };
                let mut reply = h.send(c, Command::OptionReq, &[b"exceptions"]);
                m.answers(&mut reply)?;
                prop_assert_eq!(reply, vec![pkt(c, Command::OptionRes, &[b"exceptions"])]);
            }
            Op::Cancel(p) => {
                let handle = pick(&m.handles.iter().collect::<Vec<_>>(), p).cloned().unwrap_or_default();
                let line = format!("cancel job {}", String::from_utf8_lossy(&handle));
                sent = h.admin(&line);
                let last = sent.pop();
                if last == Some(text(ADMIN, "OK\r\n")) {
                    m.cancelled.insert(handle);
                }
                prop_assert!(
                    last == Some(text(ADMIN, "OK\r\n")) || last == Some(text(ADMIN, "ERR UNKNOWN_JOB\r\n")),
                    "cancel reply {:?}",
                    last
                );
            }
            Op::Drop(f) => {
                let f = FUNCTIONS.get(usize::from(f)).copied().unwrap_or("A");
                let reply = h.admin_text(&format!("drop function {f}"));
                prop_assert!(
                    [
                        "OK\r\n",
                        "ERR function not found\r\n",
                        "ERR there are still connected workers or executing clients\r\n"
                    ]
                    .contains(&reply.as_str()),
                    "drop reply {reply:?}"
                );
            }
            Op::Create(f) => {
                prop_assert_eq!(
                    h.admin_text(&format!("create function {}", FUNCTIONS[usize::from(f)])),
                    "OK\r\n"
                );
            }
            Op::MaxQueue { f, n } => {
                let line = format!("maxqueue {} {n}", FUNCTIONS[usize::from(f)]);
                prop_assert_eq!(h.admin_text(&line), "OK\r\n");
            }
            Op::Admin(i) => {
                let line =
                    ["status", "prioritystatus", "workers", "show jobs", "show unique jobs"][usize::from(i)];
                let reply = h.admin_text(line);
                prop_assert!(reply.ends_with(".\n"));
            }
            Op::Advance { ms, tick } => {
                let now = h.now + i64::from(ms);
                if tick {
                    sent = h.tick(now);
                } else {
                    h.now = now;
                }
            }
        }
        m.answers(&mut sent)?;
        m.judge(&sent)?;
        // Only a cancel may abandon a background job (a departing coalesced foreground
        // client must not: PROTOCOL.md §4.10).
        for (_, j) in h.e.jobs.iter() {
            let handle = h.e.handle_of(j.seq).to_vec();
            prop_assert!(!(j.abandoned && j.background) || m.cancelled.contains(&handle), "{:?}", j);
        }
        if let Some(d) = h.e.next_deadline() {
            let ticked = matches!(op, Op::Advance { tick: true, .. });
            prop_assert!(d > h.now || !ticked, "deadline {d} left after tick at {}", h.now);
        }
    }
    drain(&mut h, &mut m)
}

/// Everyone leaves, time runs far ahead, and one fresh worker must be able to finish
/// every remaining job: nothing leaks and nothing is stuck.
fn drain(h: &mut Harness, m: &mut Model) -> Result<(), TestCaseError> {
    for c in m.live.clone() {
        m.forget(c);
        let mut sent = h.disconnect(c);
        m.answers(&mut sent)?;
        m.judge(&sent)?;
    }
    let far = h.now + 1_000_000;
    prop_assert_eq!(h.tick(far), vec![]);
    // With every client gone, exactly the uncancelled background jobs are still wanted.
    let wanted: HashSet<Vec<u8>> =
        h.e.jobs
            .iter()
            .filter(|(_, j)| (j.background || j.bg_joined) && !j.abandoned)
            .map(|(_, j)| h.e.handle_of(j.seq).to_vec())
            .collect();
    let mut ran = HashSet::new();
    let w = h.connect();
    for f in FUNCTIONS {
        h.can_do(w, f);
    }
    for _ in 0..10_000 {
        match &h.grab_all(w)[..] {
            [Sent::Packet(_, Command::NoJob, _)] => break,
            [] if h.e.config.grab_hold_ms > 0 => {
                // Held: nothing else is queued, so the hold ends with NO_JOB.
                let end = h.now + i64::from(h.e.config.grab_hold_ms);
                prop_assert_eq!(h.tick(end), vec![no_job(w)]);
                break;
            }
            [Sent::Packet(_, Command::JobAssignUniq | Command::JobAssignAll, args)] => {
                let handle = args[0].clone();
                prop_assert!(wanted.contains(&handle), "ran an unwanted job {:?}", handle);
                prop_assert!(ran.insert(handle.clone()), "ran a job twice");
                prop_assert_eq!(h.send(w, Command::WorkComplete, &[&handle, b""]), vec![]);
            }
            other => prop_assert!(false, "bad drain reply {other:?}"),
        }
    }
    prop_assert_eq!(ran, wanted);
    prop_assert_eq!(h.e.job_count(), 0);
    prop_assert_eq!(h.admin_text("show jobs"), ".\n");
    Ok(())
}

fn engine_config() -> impl Strategy<Value = EngineConfig> {
    (0..3u32, 0..2u32, any::<bool>(), any::<bool>(), prop::sample::select(vec![0u32, 2])).prop_map(
        |(job_retries, worker_wakeup, round_robin, exceptions, grab_hold_ms)| EngineConfig {
            job_retries,
            worker_wakeup,
            grab_hold_ms,
            round_robin,
            exceptions,
            ..config()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(
        cfg in engine_config(),
        wide_after in prop::sample::select(vec![0usize, 1, crate::engine::WIDE_WORKER_ABILITIES]),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run_ops(cfg, wide_after, &ops)?;
    }
}

#[test]
fn a_clients_listening_list_stays_bounded_as_its_jobs_end() {
    let mut h = Harness::new();
    let c = h.connect();
    let w = h.connect();
    h.can_do(w, "f");
    // 200 outstanding foreground jobs, completed in turn; each completion is O(1) and
    // the client's list of jobs it waits on is compacted as they end.
    for i in 1..=200 {
        h.submit_ok(c, Command::SubmitJob, "f", "", "x", &format!("H:t:{i}"));
    }
    for i in 1..=200 {
        let handle = format!("H:t:{i}");
        assert_eq!(h.grab(w), vec![assign(w, &handle, "f", "x")]);
        h.send(w, Command::WorkComplete, &[handle.as_bytes(), b""]);
    }
    let s = h.e.sessions.get(c).map(|s| (s.listening.len(), s.listening_live));
    assert!(matches!(s, Some((len, 0)) if len <= 17), "{s:?}");
    // The client leaves: nothing stale is detached twice or revived.
    assert_eq!(h.disconnect(c), vec![]);
    assert_eq!(h.admin_text("status"), "f\t0\t0\t1\n.\n");
}

#[test]
fn compact_gives_back_room_after_a_burst() {
    // Driven without the harness: its invariant check after every packet is O(jobs).
    let mut e = Engine::new(config());
    let mut out = RecordingOutbox::default();
    let peer = || PeerInfo { label: 0, ip: "127.0.0.1".into() };
    let (c, w) = (e.connect(peer()), e.connect(peer()));
    let send = |e: &mut Engine, out: &mut RecordingOutbox, conn, cmd, args: &[&[u8]]| {
        let p = Packet::new(Magic::Req, cmd, args).expect("valid layout");
        e.handle_packet(conn, &p, 0, out);
        out.take()
    };
    send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
    for i in 0..5000 {
        send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", format!("u{i}").as_bytes(), b"x"]);
    }
    let grown = (e.jobs.capacity(), e.handles.capacity(), e.by_unique.capacity());
    assert!(grown.0 >= 5000 && grown.1 >= 5000 && grown.2 >= 5000, "{grown:?}");
    for _ in 0..5000 {
        let assigned = send(&mut e, &mut out, w, Command::GrabJob, &[]);
        let Some(Sent::Packet(_, Command::JobAssign, args)) = assigned.first() else {
            panic!("{assigned:?}")
        };
        let handle = args.first().cloned().unwrap_or_default();
        send(&mut e, &mut out, w, Command::WorkComplete, &[&handle, b""]);
    }
    assert_eq!(e.job_count(), 0);
    assert!(e.compact(), "a drained engine has room to give back");
    let after = (e.jobs.capacity(), e.handles.capacity(), e.by_unique.capacity());
    // At most 1024 left, the size below which `compact` leaves a table alone (the
    // sequence window keeps its one chunk of 1024 slots).
    assert!(after.0 <= 1024 && after.1 <= 1024 && after.2 <= 1024, "{after:?}");
    assert!(!e.compact(), "nothing left to shrink");
    e.check_invariants().expect("invariants hold");
    // Still works afterwards.
    let created = send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"y"]);
    assert_eq!(created, vec![Sent::Packet(c, Command::JobCreated, vec![b"H:t:5001".to_vec()])]);
}

fn holding() -> Harness {
    Harness::with(EngineConfig { grab_hold_ms: 2, ..config() })
}

#[test]
fn a_held_grab_is_answered_by_the_next_job_before_any_sleeper_is_woken() {
    let mut h = holding();
    let (c, w, sleeper) = (h.connect(), h.connect(), h.connect());
    h.can_do(sleeper, "f");
    h.can_do(w, "f");
    assert_eq!(h.pre_sleep(sleeper), vec![]);
    assert_eq!(h.grab(w), vec![], "no job yet: the GRAB_JOB is held, not answered");
    assert_eq!(h.next_deadline(), Some(h.now + 2));
    // The held worker is served first and directly: no NOOP, no second GRAB_JOB.
    assert_eq!(
        h.submit(c, Command::SubmitJob, "f", "", "x"),
        vec![created(c, "H:t:1"), assign(w, "H:t:1", "f", "x")]
    );
    assert_eq!(h.next_deadline(), None, "the answered hold left no deadline behind");
    let later = h.now + 5;
    assert_eq!(h.tick(later), vec![]);
    assert_eq!(h.complete(w, "H:t:1", "r"), vec![pkt(c, Command::WorkComplete, &[b"H:t:1", b"r"])]);
    // The sleeper is still asleep and still first in line for a NOOP.
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "y"), vec![created(c, "H:t:2"), noop(sleeper)]);
}

#[test]
fn a_held_grab_ends_with_no_job_when_its_time_is_up() {
    let mut h = holding();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.grab(w), vec![]);
    let t = h.now;
    assert_eq!(h.tick(t + 1), vec![]);
    assert_eq!(h.tick(t + 2), vec![no_job(w)]);
    assert_eq!(h.next_deadline(), None);
    // Then the usual cycle: PRE_SLEEP, and a NOOP for the next job.
    assert_eq!(h.pre_sleep(w), vec![]);
    let c = h.connect();
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "x"), vec![created(c, "H:t:1"), noop(w)]);
    assert_eq!(h.grab(w), vec![assign(w, "H:t:1", "f", "x")]);
}

#[test]
fn anything_else_from_a_held_worker_is_answered_after_no_job() {
    let mut h = holding();
    let w = h.connect();
    h.can_do(w, "f");
    assert_eq!(h.grab(w), vec![]);
    assert_eq!(h.send(w, Command::EchoReq, &[b"hi"]), vec![no_job(w), pkt(w, Command::EchoRes, &[b"hi"])]);
    // A second GRAB_JOB behind a held one: NO_JOB for the first, the second held.
    assert_eq!(h.grab(w), vec![]);
    assert_eq!(h.grab(w), vec![no_job(w)]);
    let c = h.connect();
    assert_eq!(
        h.submit(c, Command::SubmitJobBg, "f", "", "x"),
        vec![created(c, "H:t:1"), assign(w, "H:t:1", "f", "x")]
    );
}

#[test]
fn a_held_worker_that_leaves_is_forgotten() {
    let mut h = holding();
    let (c, w) = (h.connect(), h.connect());
    h.can_do(w, "f");
    assert_eq!(h.grab(w), vec![]);
    assert_eq!(h.disconnect(w), vec![]);
    assert_eq!(h.submit(c, Command::SubmitJobBg, "f", "", "x"), vec![created(c, "H:t:1")]);
    let later = h.now + 10;
    assert_eq!(h.tick(later), vec![]);
    assert_eq!(h.admin_text("status"), "f\t1\t0\t0\n.\n");
}

#[test]
fn a_held_wide_worker_is_answered_for_any_of_its_functions() {
    let mut h = holding();
    h.e.wide_after = 0;
    let (c, w) = (h.connect(), h.connect());
    h.can_do(w, "f");
    h.can_do(w, "g");
    assert_eq!(h.send(w, Command::GrabJobUniq, &[]), vec![]);
    assert_eq!(
        h.submit(c, Command::SubmitJobBg, "g", "u", "x"),
        vec![created(c, "H:t:1"), pkt(w, Command::JobAssignUniq, &[b"H:t:1", b"g", b"u", b"x"])]
    );
}
