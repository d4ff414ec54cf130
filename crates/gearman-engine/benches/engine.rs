//! Engine microbenchmarks: the hot operations, each measured against growing state.
//!
//! Run with `cargo bench -p gearman-engine --bench engine`. The sync [`Engine`] is
//! driven directly, as `src/tests.rs` does, with an [`Outbox`] that only counts what it
//! is given. Every operation is measured on three axes, one at a time, the others at
//! their smallest: jobs already queued for the function (`depth`: 0, 10k, 1M), functions
//! known to the engine (`functions`: 1, 100, 10k) and idle connected sessions (`conns`:
//! 10, 1k, 10k). The time per call must not grow along any axis; `docs/MICROBENCHMARKS.md`
//! has the figures.
//!
//! State is built once per benchmark (per op and parameter) and every operation leaves
//! it as it found it: what a timed batch adds is removed, untimed, after the batch.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use gearman_engine::{ConnId, Engine, EngineConfig, NowMs, Outbox, PeerInfo, StoredJob};
use gearman_proto::{Command, Magic, Packet};

/// The engine's clock never moves: no epoch jobs or timeouts are involved.
const NOW: NowMs = 1_700_000_000_000;
/// The function every operation works on.
const F: &[u8] = b"f";
/// A small job payload.
const DATA: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Timed operations per batch, between untimed preparation and clean-up.
const BATCH: u64 = 1000;

const DEPTHS: [usize; 3] = [0, 10_000, 1_000_000];
const FUNCTIONS: [usize; 3] = [1, 100, 10_000];
const CONNS: [usize; 3] = [10, 1_000, 10_000];

fn packet(command: Command, args: &[&[u8]]) -> Packet {
    Packet::new(Magic::Req, command, args).expect("benchmark packets follow the command layouts")
}

/// Counts what the engine sends and drops it. While `capture` is on it also keeps the
/// handle of every JOB_CREATED and JOB_ASSIGN*, in one reused buffer (no allocation per
/// packet once warm), so a benchmark can answer for the job it was given.
#[derive(Default)]
struct Sink {
    packets: u64,
    texts: u64,
    capture: bool,
    arena: Vec<u8>,
    ends: Vec<usize>,
}

impl Sink {
    fn start_capture(&mut self) {
        self.capture = true;
        self.arena.clear();
        self.ends.clear();
    }

    fn captured(&self) -> usize {
        self.ends.len()
    }

    fn handle(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.arena[start..self.ends[i]]
    }
}

impl Outbox for Sink {
    fn packet(&mut self, _conn: ConnId, command: Command, args: &[&[u8]]) {
        self.packets += 1;
        if self.capture
            && matches!(
                command,
                Command::JobCreated | Command::JobAssign | Command::JobAssignUniq | Command::JobAssignAll
            )
        {
            if let Some(h) = args.first() {
                self.arena.extend_from_slice(h);
                self.ends.push(self.arena.len());
            }
        }
    }
    fn text(&mut self, _conn: ConnId, text: &[u8]) {
        self.texts += 1;
        black_box(text);
    }
    fn close(&mut self, _conn: ConnId) {}
    fn hold(&mut self, _conn: ConnId, _hold: u64) {}
    fn fill(&mut self, _conn: ConnId, _hold: u64, _command: Command, _args: &[&[u8]]) {}
    fn persist(&mut self, _job: StoredJob) {}
    fn forget(&mut self, _key: u64) {}
}

/// What the idle sessions of the `conns` axis are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Connected and silent.
    Sessions,
    /// Workers that registered `f` (CAN_DO) and are awake, e.g. busy elsewhere.
    WorkersOfF,
}

/// The state an operation is measured against.
#[derive(Clone, Copy)]
struct Shape {
    /// Background jobs queued for `f` (unique per job), from another client.
    depth: usize,
    /// Functions known, `f` included; each other one has one queued job.
    functions: usize,
    /// Idle connections besides the four the benchmark uses.
    conns: usize,
    idle: Idle,
    /// The `depth` jobs are foreground jobs of the benchmark's own client instead.
    backlog_is_client_fg: bool,
}

impl Shape {
    fn base() -> Shape {
        Shape { depth: 0, functions: 1, conns: 0, idle: Idle::Sessions, backlog_is_client_fg: false }
    }
}

struct World {
    e: Engine,
    out: Sink,
    /// The client whose submits are measured.
    client: ConnId,
    /// A worker that can do `f` only.
    worker: ConnId,
    /// Where admin lines come from.
    admin: ConnId,
    /// Another client, for untimed submits.
    feeder: ConnId,
    /// The idle sessions of the `conns` axis.
    idle: Vec<ConnId>,
    /// Source of fresh unique values.
    next_unique: u64,
    /// Per-batch packets or lines built before the timed loop.
    packets: Vec<Packet>,
    lines: Vec<Vec<u8>>,
}

fn peer(i: usize) -> PeerInfo {
    PeerInfo { label: i as i64, ip: "127.0.0.1".into() }
}

impl World {
    fn build(shape: Shape) -> World {
        let mut e = Engine::new(EngineConfig::default());
        let (admin, client, worker, feeder) =
            (e.connect(peer(0)), e.connect(peer(1)), e.connect(peer(2)), e.connect(peer(3)));
        let mut w = World {
            e,
            out: Sink::default(),
            client,
            worker,
            admin,
            feeder,
            idle: Vec::new(),
            next_unique: 0,
            packets: Vec::new(),
            lines: Vec::new(),
        };
        w.send(worker, &packet(Command::CanDo, &[F]));
        for i in 1..shape.functions {
            let name = format!("fn{i}");
            w.send(feeder, &packet(Command::SubmitJobBg, &[name.as_bytes(), b"", DATA]));
        }
        let (from, command) = if shape.backlog_is_client_fg {
            (client, Command::SubmitJob)
        } else {
            (feeder, Command::SubmitJobBg)
        };
        for _ in 0..shape.depth {
            let unique = w.fresh_unique("d");
            w.send(from, &packet(command, &[F, &unique, DATA]));
        }
        let can_do = packet(Command::CanDo, &[F]);
        for i in 0..shape.conns {
            let c = w.e.connect(peer(10 + i));
            if shape.idle == Idle::WorkersOfF {
                w.send(c, &can_do);
            }
            w.idle.push(c);
        }
        w
    }

    fn fresh_unique(&mut self, prefix: &str) -> Vec<u8> {
        self.next_unique += 1;
        format!("{prefix}{}", self.next_unique).into_bytes()
    }

    fn send(&mut self, conn: ConnId, p: &Packet) {
        self.e.handle_packet(conn, p, NOW, &mut self.out);
    }

    /// The worker grabs and completes up to `n` jobs of `f` (untimed clean-up).
    fn drain(&mut self, n: usize) {
        let grab = packet(Command::GrabJob, &[]);
        for _ in 0..n {
            self.out.start_capture();
            self.send(self.worker, &grab);
            self.out.capture = false;
            if self.out.captured() == 0 {
                break;
            }
            let done = packet(Command::WorkComplete, &[self.out.handle(0), b""]);
            self.send(self.worker, &done);
        }
    }
}

/// Runs `iters` timed calls of `op` in batches of `BATCH`, each batch between an
/// untimed `prep` and `clean` that get the batch size.
fn batched(
    w: &mut World,
    iters: u64,
    mut prep: impl FnMut(&mut World, usize),
    mut op: impl FnMut(&mut World, usize),
    mut clean: impl FnMut(&mut World, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let b = left.min(BATCH) as usize;
        prep(w, b);
        let start = Instant::now();
        for i in 0..b {
            op(w, i);
        }
        total += start.elapsed();
        clean(w, b);
        left -= b as u64;
    }
    total
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// SUBMIT_JOB_BG with an empty unique: a new job at the tail of `f`'s queue.
fn submit_bg_empty_unique(g: &mut Group, id: String, w: &mut World) {
    let submit = packet(Command::SubmitJobBg, &[F, b"", DATA]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(w, iters, |_, _| {}, |w, _| w.send(w.client, &submit), |w, n| w.drain(n))
        })
    });
    assert_eq!(w.e.job_count(), jobs, "state restored");
}

/// SUBMIT_JOB_BG with a unique never seen before: also files the job in the
/// coalescing and unique indexes.
fn submit_bg_unique(g: &mut Group, id: String, w: &mut World) {
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(
                w,
                iters,
                |w, n| {
                    w.packets.clear();
                    for _ in 0..n {
                        let unique = w.fresh_unique("u");
                        w.packets.push(packet(Command::SubmitJobBg, &[F, &unique, DATA]));
                    }
                },
                |w, i| w.e.handle_packet(w.client, &w.packets[i], NOW, &mut w.out),
                |w, n| w.drain(n),
            )
        })
    });
    assert_eq!(w.e.job_count(), jobs, "state restored");
}

/// One foreground job end to end: SUBMIT_JOB_HIGH (so it is taken before the queued
/// backlog), GRAB_JOB, WORK_COMPLETE forwarded to the client. The WORK_COMPLETE packet
/// is built inside the timed call, from the handle the worker was given.
fn fg_cycle(g: &mut Group, id: String, w: &mut World) {
    let submit = packet(Command::SubmitJobHigh, &[F, b"", DATA]);
    let grab = packet(Command::GrabJob, &[]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter(|| {
            w.out.start_capture();
            w.send(w.client, &submit);
            w.send(w.worker, &grab);
            w.out.capture = false;
            let done = packet(Command::WorkComplete, &[w.out.handle(1), DATA]);
            w.send(w.worker, &done);
        })
    });
    assert_eq!(w.e.job_count(), jobs, "state restored");
}

/// SUBMIT_JOB_BG whose unique matches a live job: joins it (JOB_CREATED with the
/// existing handle), no new job.
fn coalesce_bg(g: &mut Group, id: String, w: &mut World) {
    w.send(w.feeder, &packet(Command::SubmitJobBg, &[F, b"same", DATA]));
    let again = packet(Command::SubmitJobBg, &[F, b"same", DATA]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| b.iter(|| w.send(w.client, &again)));
    assert_eq!(w.e.job_count(), jobs, "joins create no job");
}

/// A foreground SUBMIT_JOB joining a job that every idle session already waits on
/// (the cache-stampede case coalescing is for). Each batch joins from a fresh
/// connection, which is disconnected afterwards.
fn coalesce_fg_waiters(g: &mut Group, id: String, w: &mut World) {
    let join = packet(Command::SubmitJob, &[F, b"stampede", DATA]);
    for c in w.idle.clone() {
        w.send(c, &join);
    }
    let jobs = w.e.job_count();
    let joiner = Cell::new(0);
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(
                w,
                iters,
                |w, _| joiner.set(w.e.connect(peer(1))),
                |w, _| w.send(joiner.get(), &join),
                |w, _| w.e.disconnect(joiner.get(), NOW, &mut w.out),
            )
        })
    });
    assert_eq!(w.e.job_count(), jobs, "joins create no job");
}

/// GRAB_JOB by a worker that can do `f`: takes the head of the queue. Each batch
/// queues its jobs first and completes the grabbed ones after (both untimed).
fn grab(g: &mut Group, id: String, w: &mut World) {
    let submit = packet(Command::SubmitJobBg, &[F, b"", DATA]);
    let grab = packet(Command::GrabJob, &[]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(
                w,
                iters,
                |w, n| {
                    for _ in 0..n {
                        w.send(w.feeder, &submit);
                    }
                    w.out.start_capture();
                },
                |w, _| w.send(w.worker, &grab),
                |w, n| {
                    w.out.capture = false;
                    assert_eq!(w.out.captured(), n, "every grab got a job");
                    w.packets.clear();
                    for i in 0..n {
                        w.packets.push(packet(Command::WorkComplete, &[w.out.handle(i), b""]));
                    }
                    for p in std::mem::take(&mut w.packets) {
                        w.send(w.worker, &p);
                    }
                },
            )
        })
    });
    assert_eq!(w.e.job_count(), jobs, "state restored");
}

/// The admin `status` command (one line per function, so its reply grows with the
/// function count by definition).
fn admin_status(g: &mut Group, id: String, w: &mut World) {
    g.bench_function(id, |b| b.iter(|| w.e.handle_admin(w.admin, b"status", &mut w.out)));
}

/// `cancel job <handle>` on a queued job. Each batch queues high-priority jobs to
/// cancel first; a GRAB_JOB afterwards discards them (both untimed).
fn cancel(g: &mut Group, id: String, w: &mut World) {
    let submit = packet(Command::SubmitJobHighBg, &[F, b"", DATA]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(
                w,
                iters,
                |w, n| {
                    w.out.start_capture();
                    for _ in 0..n {
                        w.send(w.feeder, &submit);
                    }
                    w.out.capture = false;
                    w.lines.clear();
                    for i in 0..n {
                        let mut line = b"cancel job ".to_vec();
                        line.extend_from_slice(w.out.handle(i));
                        w.lines.push(line);
                    }
                },
                |w, i| w.e.handle_admin(w.admin, &w.lines[i], &mut w.out),
                |w, _| {
                    // One grab discards every cancelled job at the head; if it then
                    // took a backlog job, finish it and queue a replacement.
                    w.drain(1);
                    if w.e.job_count() < jobs {
                        let unique = w.fresh_unique("r");
                        w.send(w.feeder, &packet(Command::SubmitJobBg, &[F, &unique, DATA]));
                    }
                },
            )
        })
    });
    assert_eq!(w.e.job_count(), jobs, "state restored");
}

/// GET_STATUS of queued jobs, by handle (64 jobs queued behind the backlog, queried
/// in turn).
fn get_status(g: &mut Group, id: String, w: &mut World) {
    w.out.start_capture();
    for _ in 0..64 {
        w.send(w.feeder, &packet(Command::SubmitJobBg, &[F, b"", DATA]));
    }
    w.out.capture = false;
    let queries: Vec<Packet> = (0..64).map(|i| packet(Command::GetStatus, &[w.out.handle(i)])).collect();
    let mut i = 0;
    g.bench_function(id, |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            w.send(w.client, &queries[i]);
        })
    });
}

/// PRE_SLEEP from the worker of `f` after jobs at the head of its queue were
/// cancelled: the worker must be told whether a live job is left (NOOP) or to sleep.
/// Each batch queues and cancels high-priority jobs first (untimed); the timed calls
/// discard them as they find them, so the figure is the amortised cost per call.
fn pre_sleep_after_cancel(g: &mut Group, id: String, w: &mut World) {
    let submit = packet(Command::SubmitJobHighBg, &[F, b"", DATA]);
    let pre_sleep = packet(Command::PreSleep, &[]);
    let jobs = w.e.job_count();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            batched(
                w,
                iters,
                |w, n| {
                    w.out.start_capture();
                    for _ in 0..n {
                        w.send(w.feeder, &submit);
                    }
                    w.out.capture = false;
                    for i in 0..n {
                        let mut line = b"cancel job ".to_vec();
                        line.extend_from_slice(w.out.handle(i));
                        w.e.handle_admin(w.admin, &line, &mut w.out);
                    }
                },
                |w, _| w.send(w.worker, &pre_sleep),
                |_, _| {},
            )
        })
    });
    assert_eq!(w.e.job_count(), jobs, "cancelled jobs were discarded");
}

type OpFn = fn(&mut Group, String, &mut World);

/// The operations measured on every axis.
const OPS: [(&str, OpFn); 9] = [
    ("submit_bg_empty_unique", submit_bg_empty_unique),
    ("submit_bg_unique", submit_bg_unique),
    ("fg_cycle", fg_cycle),
    ("coalesce_bg", coalesce_bg),
    ("grab", grab),
    ("admin_status", admin_status),
    ("cancel", cancel),
    ("get_status", get_status),
    ("pre_sleep_after_cancel", pre_sleep_after_cancel),
];

fn configure(g: &mut Group) {
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(700));
}

/// Whether to build and run the benchmark `id`: `GEARMAN_BENCH_ONLY=a|b` keeps ids
/// containing `a` or `b`. Criterion's own filter (`cargo bench ... -- NAME`) skips the
/// measuring but not the building of state, which is most of the time for 1M jobs.
fn selected(id: &str) -> bool {
    std::env::var("GEARMAN_BENCH_ONLY").map_or(true, |only| only.split('|').any(|part| id.contains(part)))
}

fn run(
    c: &mut Criterion,
    group: &str,
    shapes: &[(usize, Shape)],
    op: impl Fn(&mut Group, String, &mut World),
) {
    let mut g = c.benchmark_group(group);
    configure(&mut g);
    for &(param, shape) in shapes {
        if !selected(&format!("{group}/{param}")) {
            continue;
        }
        let mut w = World::build(shape);
        op(&mut g, param.to_string(), &mut w);
        black_box((w.out.packets, w.out.texts));
    }
    g.finish();
}

fn axes() -> [(&'static str, Vec<(usize, Shape)>); 3] {
    let base = Shape::base();
    [
        ("depth", DEPTHS.iter().map(|&depth| (depth, Shape { depth, ..base })).collect()),
        ("functions", FUNCTIONS.iter().map(|&functions| (functions, Shape { functions, ..base })).collect()),
        ("conns", CONNS.iter().map(|&conns| (conns, Shape { conns, ..base })).collect()),
    ]
}

fn bench_ops(c: &mut Criterion) {
    for (name, op) in OPS {
        for (axis, shapes) in axes() {
            run(c, &format!("{name}/{axis}"), &shapes, op);
        }
    }
}

/// Variants that put the state where an operation is most likely to scan it.
fn bench_variants(c: &mut Criterion) {
    let base = Shape::base();
    // Submits wake the function's workers: with thousands registered and awake.
    let workers: Vec<(usize, Shape)> =
        CONNS.iter().map(|&conns| (conns, Shape { conns, idle: Idle::WorkersOfF, ..base })).collect();
    run(c, "submit_bg_empty_unique/idle_workers_of_f", &workers, submit_bg_empty_unique);
    run(c, "fg_cycle/idle_workers_of_f", &workers, fg_cycle);
    // The backlog is the measured client's own foreground jobs (a client that queued
    // many tasks and waits for all of them).
    let backlog: Vec<(usize, Shape)> =
        DEPTHS.iter().map(|&depth| (depth, Shape { depth, backlog_is_client_fg: true, ..base })).collect();
    run(c, "fg_cycle/client_backlog", &backlog, fg_cycle);
    // Many clients already waiting on the job being joined.
    let mut g = c.benchmark_group("coalesce_fg/waiters");
    configure(&mut g);
    for conns in CONNS.into_iter().filter(|n| selected(&format!("coalesce_fg/waiters/{n}"))) {
        let mut w = World::build(Shape { conns, ..base });
        coalesce_fg_waiters(&mut g, conns.to_string(), &mut w);
    }
    g.finish();
    // A worker that registered every function, `f` first: only `f` has jobs.
    let mut g = c.benchmark_group("grab/worker_can_do_all");
    configure(&mut g);
    for functions in FUNCTIONS.into_iter().filter(|n| selected(&format!("grab/worker_can_do_all/{n}"))) {
        let mut w = World::build(base);
        for i in 1..functions {
            let name = format!("fn{i}");
            w.send(w.worker, &packet(Command::CanDo, &[name.as_bytes()]));
        }
        grab(&mut g, functions.to_string(), &mut w);
    }
    g.finish();
}

criterion_group!(benches, bench_ops, bench_variants);
criterion_main!(benches);
