//! Mixed traffic through every data path at once. Clients submit foreground and
//! background jobs of every size around ours' thresholds (16 KiB: shared segments and
//! dropped results; 32 KiB: data kept as views, forwarded results; 512 KiB: the largest
//! forward), pipelined or one at a time, some coalesced under a shared unique key.
//! Workers answer with WORK_COMPLETE, WORK_DATA then WORK_COMPLETE, or WORK_FAIL,
//! written whole, head first or in random pieces; some die halfway through a result,
//! and some clients leave with jobs outstanding.
//!
//! What must hold, on both servers: every job's data reaches its worker intact; every
//! client that stayed gets exactly the packets its jobs' workers sent, byte for byte;
//! every acknowledged background job runs to completion exactly once, however many
//! workers died on it; and the server still answers afterwards. A run is seeded
//! (`GEARMAN_MIXED_SEED` replays one) and each failure names the seed.
#![allow(missing_docs)]

mod support;
#[macro_use]
mod wire;

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{metric, req, start_with_monitor, Kind};
use wire::*;

const FUNCTION: &[u8] = b"mixed";

/// Result and data sizes: each side of every size ours treats differently.
const SIZES: &[usize] = &[
    0,
    1,
    1000,
    16383,
    16384,
    16385,
    32767,
    32768,
    40_000,
    65536,
    100_000,
    300 * 1024,
    512 * 1024,
    512 * 1024 + 1,
    700_000,
];

/// Bytes at the front of a job's data that say what the worker is to do.
const SPEC_BYTES: usize = 10;

/// No progress for this long fails the run.
const STALL: Duration = Duration::from_secs(30);

/// A packet a client is to get: its command and what follows the job handle.
type Reply = (u32, Vec<u8>);

/// What a worker does with a job; all of it travels in the job's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    id: u32,
    result_len: u32,
    /// 0: WORK_COMPLETE; 1: WORK_DATA with the first half, WORK_COMPLETE with the rest;
    /// 2: WORK_FAIL.
    mode: u8,
    seed: u8,
    data_len: usize,
}

impl Spec {
    fn data(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(self.data_len);
        d.extend_from_slice(&self.id.to_be_bytes());
        d.extend_from_slice(&self.result_len.to_be_bytes());
        d.extend_from_slice(&[self.mode, self.seed]);
        d.extend(pattern(self.data_len - SPEC_BYTES, self.seed ^ 0x5a));
        d
    }

    fn parse(data: &[u8]) -> Option<Spec> {
        let head = data.get(..SPEC_BYTES)?;
        let spec = Spec {
            id: u32::from_be_bytes(head[..4].try_into().ok()?),
            result_len: u32::from_be_bytes(head[4..8].try_into().ok()?),
            mode: head[8],
            seed: head[9],
            data_len: data.len(),
        };
        (spec.data() == data).then_some(spec)
    }

    fn result(&self) -> Vec<u8> {
        pattern(self.result_len as usize, self.seed)
    }

    /// The packets (command, data after the handle) the client is to get, in order.
    fn replies(&self) -> Vec<Reply> {
        let result = self.result();
        match self.mode {
            0 => vec![(WORK_COMPLETE, result)],
            1 => {
                let (a, b) = result.split_at(result.len() / 2);
                vec![(WORK_DATA, a.to_vec()), (WORK_COMPLETE, b.to_vec())]
            }
            _ => vec![(WORK_FAIL, Vec::new())],
        }
    }
}

/// Distinct bytes per seed, so a result cut, shifted or swapped anywhere shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8)).collect()
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// What every thread reports to.
struct Shared {
    seed: u64,
    port: u16,
    failures: Mutex<Vec<String>>,
    /// Results written whole, by job id.
    completed: Mutex<HashMap<u32, u32>>,
    stop: AtomicBool,
    /// Workers that died halfway through a result.
    deaths: AtomicUsize,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// A response stream read in pieces, so that a read timeout never loses bytes.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn connect(port: u16) -> std::io::Result<Reader> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        stream.set_write_timeout(Some(STALL))?;
        Ok(Reader { stream, buf: Vec::new() })
    }

    /// The next packet, `Ok(None)` if none came within the read timeout.
    fn next(&mut self) -> std::io::Result<Option<(u32, Vec<u8>)>> {
        loop {
            if self.buf.len() >= 12 {
                if &self.buf[..4] != b"\0RES" {
                    return Err(std::io::Error::other(format!("bad magic {:?}", &self.buf[..4])));
                }
                let command = u32::from_be_bytes(self.buf[4..8].try_into().unwrap());
                let len = u32::from_be_bytes(self.buf[8..12].try_into().unwrap()) as usize;
                if self.buf.len() >= 12 + len {
                    let body = self.buf[12..12 + len].to_vec();
                    self.buf.drain(..12 + len);
                    return Ok(Some((command, body)));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }
}

/// Splits a body into `n` fields, the last one taking the rest (it may hold NULs).
fn fields(body: &[u8], n: usize) -> Vec<&[u8]> {
    body.splitn(n, |&b| b == 0).collect()
}

/// Writes `bytes` whole, or its first `head` bytes and then the rest after a pause, or
/// in random pieces with short pauses between them.
fn write_chunked(s: &mut TcpStream, bytes: &[u8], head: usize, rng: &mut Rng) -> std::io::Result<()> {
    match below(rng, 3) {
        0 => s.write_all(bytes),
        1 => {
            let (a, b) = bytes.split_at(head.min(bytes.len()));
            s.write_all(a)?;
            std::thread::sleep(Duration::from_millis(2));
            s.write_all(b)
        }
        _ => {
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = (1 + below(rng, 96 * 1024)).min(rest.len());
                s.write_all(&rest[..n])?;
                rest = &rest[n..];
                if below(rng, 4) == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            Ok(())
        }
    }
}

/// The next packet among `wanted` on worker `index`'s connection, NOOPs skipped
/// otherwise. `None` once the run stops, or when the connection fails or brings
/// anything else (reported unless the run is stopping).
fn next_of(w: &mut Reader, shared: &Shared, index: u64, wanted: &[u32]) -> Option<(u32, Vec<u8>)> {
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        match w.next() {
            Ok(Some(packet)) if wanted.contains(&packet.0) => return Some(packet),
            Ok(Some((NOOP, _))) | Ok(None) if !stopping => {}
            Ok(Some((NOOP, _))) | Ok(None) => return None,
            Ok(Some((command, _))) => {
                shared.fail(format!("worker {index}: packet {command} when waiting for {wanted:?}"));
                return None;
            }
            Err(e) => {
                if !stopping {
                    shared.fail(format!("worker {index}: {e} when waiting for {wanted:?}"));
                }
                return None;
            }
        }
    }
}

/// One worker slot: a worker that, when it dies, comes back as a new connection.
fn worker(shared: &Shared, index: u64) {
    let mut rng = Rng(shared.seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    'connection: while !shared.stop.load(Ordering::Relaxed) {
        let Ok(mut w) = Reader::connect(shared.port) else {
            shared.fail(format!("worker {index}: could not connect"));
            return;
        };
        let _ = w.send(&req(CAN_DO, &[FUNCTION]));
        loop {
            if w.send(&req(GRAB_JOB, &[])).is_err() {
                shared.fail(format!("worker {index}: GRAB_JOB not sent"));
                return;
            }
            // The answer to GRAB_JOB; a NOOP from an earlier sleep may come first.
            let Some((command, body)) = next_of(&mut w, shared, index, &[JOB_ASSIGN, NO_JOB]) else { return };
            if command == NO_JOB {
                let _ = w.send(&req(PRE_SLEEP, &[]));
                if next_of(&mut w, shared, index, &[NOOP]).is_none() {
                    return;
                }
                continue;
            }
            let f = fields(&body, 3);
            let (handle, data) = (f[0], f.get(2).copied().unwrap_or_default());
            let Some(spec) = Spec::parse(data) else {
                shared.fail(format!(
                    "worker {index}: job {:?} came with damaged data ({} bytes)",
                    handle,
                    data.len()
                ));
                continue;
            };
            let mut out = Vec::new();
            let mut first_len = 0;
            for (command, payload) in spec.replies() {
                let packet = if command == WORK_FAIL {
                    req(command, &[handle])
                } else {
                    req(command, &[handle, &payload])
                };
                if first_len == 0 {
                    first_len = packet.len();
                }
                out.extend_from_slice(&packet);
            }
            let head = 12 + handle.len() + 1;
            if first_len > head && below(&mut rng, 16) == 0 {
                // Dies inside its first reply packet: no whole packet of this job
                // reached the server, so the job must be run again, elsewhere.
                let cut = head + below(&mut rng, first_len - head);
                let _ = w.stream.write_all(&out[..cut]);
                std::thread::sleep(Duration::from_millis(below(&mut rng, 5) as u64));
                let _ = w.stream.shutdown(Shutdown::Both);
                shared.deaths.fetch_add(1, Ordering::Relaxed);
                continue 'connection;
            }
            if let Err(e) = write_chunked(&mut w.stream, &out, head, &mut rng) {
                shared.fail(format!("worker {index}: result of job {} not sent: {e}", spec.id));
                return;
            }
            *shared.completed.lock().unwrap().entry(spec.id).or_default() += 1;
        }
    }
}

/// A job as a client submits it.
#[derive(Debug, Clone)]
struct Job {
    spec: Spec,
    background: bool,
    unique: Vec<u8>,
}

/// What one client saw through.
#[derive(Debug, Default)]
struct ClientReport {
    /// Background jobs acknowledged with JOB_CREATED.
    background: Vec<u32>,
    /// Foreground jobs whose every reply arrived (shared ones included).
    foreground: Vec<u32>,
    /// Foreground jobs abandoned when the client left.
    abandoned: Vec<u32>,
}

/// A client working through `jobs` with up to `window` outstanding at a time; with
/// `leave_every` > 0 it leaves (and comes back as a new connection) right after every
/// `leave_every`th foreground submit, abandoning its outstanding jobs.
fn client(shared: &Shared, index: u64, jobs: Vec<Job>, window: usize, leave_every: usize) -> ClientReport {
    let mut report = ClientReport::default();
    let mut foreground_submits = 0;
    let mut jobs: VecDeque<Job> = jobs.into();
    'connection: loop {
        let Ok(mut c) = Reader::connect(shared.port) else {
            shared.fail(format!("client {index}: could not connect"));
            return report;
        };
        // Submitted, JOB_CREATED not in yet (replies come in request order).
        let mut unacked: VecDeque<Job> = VecDeque::new();
        // Foreground jobs by handle, with the replies still to come.
        let mut running: HashMap<Vec<u8>, (Job, VecDeque<Reply>)> = HashMap::new();
        let mut last_progress = Instant::now();
        loop {
            while unacked.len() + running.len() < window {
                let Some(job) = jobs.pop_front() else { break };
                let command = if job.background { SUBMIT_JOB_BG } else { SUBMIT_JOB };
                if c.send(&req(command, &[FUNCTION, &job.unique, &job.spec.data()])).is_err() {
                    shared.fail(format!("client {index}: submit of job {} not sent", job.spec.id));
                    return report;
                }
                foreground_submits += usize::from(!job.background);
                let leave = leave_every > 0 && !job.background && foreground_submits % leave_every == 0;
                unacked.push_back(job);
                if leave {
                    // Leaves without waiting: what was not acknowledged may or may not
                    // have run, so only acknowledged background jobs are owed a run.
                    report.abandoned.extend(
                        unacked
                            .iter()
                            .chain(running.values().map(|r| &r.0))
                            .filter_map(|j| (!j.background).then_some(j.spec.id)),
                    );
                    drop(c);
                    continue 'connection;
                }
            }
            if unacked.is_empty() && running.is_empty() {
                return report;
            }
            let packet = match c.next() {
                Ok(Some(p)) => p,
                Ok(None) if last_progress.elapsed() < STALL => continue,
                Ok(None) => {
                    let waiting: Vec<u32> = running.values().map(|r| r.0.spec.id).collect();
                    shared.fail(format!(
                        "client {index}: nothing for {STALL:?}; {} unacknowledged, waiting for jobs {waiting:?}",
                        unacked.len()
                    ));
                    return report;
                }
                Err(e) => {
                    shared.fail(format!("client {index}: {e}"));
                    return report;
                }
            };
            last_progress = Instant::now();
            match packet {
                (JOB_CREATED, handle) => {
                    let Some(job) = unacked.pop_front() else {
                        shared.fail(format!("client {index}: JOB_CREATED with nothing submitted"));
                        return report;
                    };
                    if job.background {
                        report.background.push(job.spec.id);
                    } else {
                        let replies = job.spec.replies().into();
                        running.insert(handle, (job, replies));
                    }
                }
                (command, body) => {
                    let f = fields(&body, 2);
                    let (handle, data) = (f[0].to_vec(), f.get(1).copied().unwrap_or_default());
                    let Some((job, replies)) = running.get_mut(&handle) else {
                        shared
                            .fail(format!("client {index}: packet {command} for unknown handle {handle:?}"));
                        return report;
                    };
                    let Some((want_command, want_data)) = replies.pop_front() else { unreachable!() };
                    if command != want_command || data != want_data.as_slice() {
                        shared.fail(format!(
                            "client {index}: job {} ({} B result, mode {}): got packet {command} with {} B, \
                             wanted {want_command} with {} B{}",
                            job.spec.id,
                            job.spec.result_len,
                            job.spec.mode,
                            data.len(),
                            want_data.len(),
                            if command == want_command { " (different bytes)" } else { "" },
                        ));
                        return report;
                    }
                    if replies.is_empty() {
                        report.foreground.push(job.spec.id);
                        running.remove(&handle);
                    }
                }
            }
        }
    }
}

fn case_mixed_traffic(kind: Kind) {
    mixed_traffic(kind, "2");
}
both!(case_mixed_traffic, ours_mixed_traffic, real_mixed_traffic);

/// Ours on one thread runs tokio's single-threaded scheduler: other wake-ups, other
/// interleavings of the same paths.
#[test]
fn ours_mixed_traffic_on_one_thread() {
    mixed_traffic(Kind::Ours, "1");
}

fn mixed_traffic(kind: Kind, threads: &str) {
    // Ours with a monitor port, to show that its shortcuts were taken.
    let Some((server, monitor)) = start_with_monitor(kind, &["-t", threads]) else { return };
    let seed = std::env::var("GEARMAN_MIXED_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("mixed traffic against {kind:?} at -t {threads}: GEARMAN_MIXED_SEED={seed}");
    let shared = Arc::new(Shared {
        seed,
        port: server.port,
        failures: Mutex::new(Vec::new()),
        completed: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        deaths: AtomicUsize::new(0),
    });

    // Jobs: ids are unique; a shared job is handed to two clients under one unique key.
    let mut rng = Rng(seed);
    const CLIENTS: usize = 5;
    const JOBS_PER_CLIENT: usize = 48;
    let mut lists: Vec<Vec<Job>> = vec![Vec::new(); CLIENTS];
    let mut next_id = 0u32;
    let mut new_spec = |rng: &mut Rng, mode: u8| {
        next_id += 1;
        let data_len = SIZES[below(rng, SIZES.len())].max(SPEC_BYTES);
        Spec {
            id: next_id,
            result_len: SIZES[below(rng, SIZES.len())] as u32,
            mode,
            seed: rng.next_u64() as u8,
            data_len,
        }
    };
    for list in lists.iter_mut() {
        for _ in 0..JOBS_PER_CLIENT {
            let background = below(&mut rng, 3) == 0;
            let mode = [0, 0, 1, 1, 2][below(&mut rng, 5)];
            list.push(Job { spec: new_spec(&mut rng, mode), background, unique: Vec::new() });
        }
    }
    // Foreground jobs that two neighbouring clients submit under one unique key. They
    // end with one packet: a client that joins late misses the WORK_DATA before it.
    // gearmand 1.1.20 hangs a client that joins a job whose only client left before
    // it ran (docs/COMPATIBILITY.md, row 4; seen here once in CI), so against it the
    // last client, the one that leaves, shares no job. Ours revives such a job, and
    // shares them with every client.
    let sharing = if kind == Kind::Real { CLIENTS - 1 } else { CLIENTS };
    let mut shared_ids = Vec::new();
    for i in 0..sharing {
        for _ in 0..2 {
            let mode = [0, 2][below(&mut rng, 2)];
            let spec = new_spec(&mut rng, mode);
            let job = Job { spec, background: false, unique: format!("shared-{}", spec.id).into_bytes() };
            shared_ids.push(spec.id);
            for list in [i, (i + 1) % sharing] {
                let at = below(&mut rng, lists[list].len() + 1);
                lists[list].insert(at, job.clone());
            }
        }
    }

    let workers: Vec<_> = (0..4)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || worker(&shared, i))
        })
        .collect();
    let clients: Vec<_> = lists
        .into_iter()
        .enumerate()
        .map(|(i, jobs)| {
            let shared = shared.clone();
            // One at a time, pipelined, and one client that keeps leaving: the last.
            let (window, leave_every) = [(1, 0), (4, 0), (16, 0), (2, 0), (3, 8)][i];
            std::thread::spawn(move || client(&shared, i as u64, jobs, window, leave_every))
        })
        .collect();
    let reports: Vec<ClientReport> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    // Every acknowledged background job runs, however many workers die on it.
    let background: Vec<u32> = reports.iter().flat_map(|r| r.background.iter().copied()).collect();
    let t0 = Instant::now();
    while t0.elapsed() < STALL {
        let done = shared.completed.lock().unwrap();
        if background.iter().all(|id| done.contains_key(id)) {
            break;
        }
        drop(done);
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let failures = shared.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "GEARMAN_MIXED_SEED={seed} against {kind:?}:\n{}", failures.join("\n"));
    let done = shared.completed.lock().unwrap();
    let stayed: Vec<u32> = reports.iter().flat_map(|r| r.foreground.iter().copied()).collect();
    let abandoned: Vec<u32> = reports.iter().flat_map(|r| r.abandoned.iter().copied()).collect();
    for id in &background {
        assert_eq!(
            done.get(id),
            Some(&1),
            "GEARMAN_MIXED_SEED={seed}: background job {id} ran {:?} times",
            done.get(id)
        );
    }
    for id in &stayed {
        // A shared job may run twice when its second submit came after the first ran.
        let most = if shared_ids.contains(id) { 2 } else { 1 };
        let ran = done.get(id).copied().unwrap_or(0);
        assert!((1..=most).contains(&ran), "GEARMAN_MIXED_SEED={seed}: foreground job {id} ran {ran} times");
    }
    // The run covered what it is for.
    assert!(background.len() >= 40, "only {} background jobs acknowledged", background.len());
    assert!(stayed.len() >= 100, "only {} foreground jobs seen through", stayed.len());
    assert!(!abandoned.is_empty(), "the leaving client abandoned nothing");
    let deaths = shared.deaths.load(Ordering::Relaxed);
    assert!(deaths > 0, "no worker died halfway through a result");
    if let Some(port) = monitor {
        // Results nobody listened to were dropped unread, and results with one
        // listener passed through pipes: the paths this test is most about.
        assert!(metric(port, "gearman_result_bytes_dropped_total") > 0, "no result data dropped unread");
        assert!(metric(port, "gearman_result_bytes_forwarded_total") > 0, "no result data forwarded");
    }
    eprintln!(
        "{kind:?}: {} background and {} foreground jobs checked, {} abandoned, {} results written whole, \
         {deaths} workers died halfway",
        background.len(),
        stayed.len(),
        abandoned.len(),
        done.values().sum::<u32>()
    );

    // And the server still serves.
    let mut probe = server.connect();
    probe.sync();
}
