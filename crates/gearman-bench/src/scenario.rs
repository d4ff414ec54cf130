//! The scenarios: client and worker connection loops, and the checks after a run.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use gearman_proto::Command;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{packet, unexpected, Conn, Event};
use crate::cpu_time::{Meter, Spent};
use crate::payload::{check_run_and_prefill, Payload, PREFILL_BASE};
use crate::report::Report;
use crate::stats::{new_histogram, record, Summary};
use crate::{admin, idle};
use crate::{Opts, Scenario, UniqueMode};

/// Live counts of the current run, reported when it times out.
pub(crate) struct Counters {
    submitted: AtomicU64,
    answered: AtomicU64,
    worker_jobs: AtomicU64,
}

/// The counts of this process's run.
pub(crate) static COUNTERS: Counters =
    Counters { submitted: AtomicU64::new(0), answered: AtomicU64::new(0), worker_jobs: AtomicU64::new(0) };

impl Counters {
    /// A one-line account of where the run got to.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} requests sent, {} answered to clients, {} jobs done by workers",
            self.submitted.load(Relaxed),
            self.answered.load(Relaxed),
            self.worker_jobs.load(Relaxed)
        )
    }
}

/// Hands out job ids `base, base + 1, ...` until the count or the deadline is reached.
struct Tickets {
    next: AtomicU64,
    base: u64,
    total: Option<u64>,
    deadline: Option<Instant>,
}

impl Tickets {
    fn new(total: Option<u64>, seconds: Option<f64>) -> Tickets {
        Tickets {
            next: AtomicU64::new(0),
            base: 0,
            total,
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs_f64(s)),
        }
    }

    /// Up to `k` consecutive ids, in one atomic step: a client refilling its window
    /// takes them all at once. Shorter than `k` (or empty) once the count or the
    /// deadline is reached.
    fn take(&self, k: usize) -> std::ops::Range<u64> {
        if k == 0 || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return self.base..self.base;
        }
        let first = self.next.fetch_add(k as u64, SeqCst);
        let end = self.total.map_or(first + k as u64, |t| (first + k as u64).min(t));
        self.base + first.min(end)..self.base + end
    }

    /// Ids handed out (every one of them was submitted).
    fn issued(&self) -> u64 {
        let n = self.next.load(SeqCst);
        self.total.map_or(n, |t| n.min(t))
    }
}

/// Jobs completed by workers, and the stop signal for them.
struct Progress {
    done: AtomicU64,
    target: AtomicU64,
    end: OnceLock<Instant>,
    stop: watch::Sender<bool>,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            done: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            end: OnceLock::new(),
            stop: watch::Sender::new(false),
        })
    }

    /// Counts `n` more jobs done; stops the run once the target is reached.
    fn jobs_done(&self, n: u64) {
        let d = self.done.fetch_add(n, SeqCst) + n;
        if d >= self.target.load(SeqCst) {
            self.finish();
        }
    }

    /// Stop once `t` jobs are done (now, if they already are).
    fn set_target(&self, t: u64) {
        self.target.store(t, SeqCst);
        if self.done.load(SeqCst) >= t {
            self.finish();
        }
    }

    fn finish(&self) {
        let _ = self.end.set(Instant::now());
        self.stop.send_replace(true);
    }

    fn end(&self) -> Instant {
        *self.end.get_or_init(Instant::now)
    }
}

/// What every connection of a run shares.
struct Setup {
    addr: SocketAddr,
    run_id: String,
    functions: Vec<Vec<u8>>,
    payload: Payload,
    unique: UniqueMode,
}

impl Setup {
    fn function_of(&self, id: u64) -> &[u8] {
        let i = (id % self.functions.len() as u64) as usize;
        &self.functions[i]
    }

    /// Whether `function` is one of the run's. Names end in their index, so this is
    /// one comparison: a scan of 10,000 names per job made the tool, not the server,
    /// the bottleneck of the `--functions 10000` runs (a third of its time in memcmp).
    fn is_ours(&self, function: &[u8]) -> bool {
        let index = function.rsplit(|&b| b == b'-').next().and_then(|s| std::str::from_utf8(s).ok());
        match index.and_then(|s| s.parse::<usize>().ok()) {
            Some(i) => self.functions.get(i).is_some_and(|f| f == function),
            None => self.functions.iter().any(|f| f == function),
        }
    }

    fn write_unique(&self, id: u64, out: &mut Vec<u8>) {
        out.clear();
        if self.unique == UniqueMode::PerJob {
            let _ = write!(out, "{}-{id}", self.run_id);
        }
    }

    /// The job id a worker can recover from what it was assigned, if any, and whether
    /// `data` is known to be that job's payload already (the id was read from it).
    fn id_from(&self, unique: &[u8], data: &[u8]) -> Option<(u64, bool)> {
        if let Some(id) = self.payload.id_of(data) {
            return Some((id, true));
        }
        if self.unique == UniqueMode::PerJob {
            let rest = unique.strip_prefix(self.run_id.as_bytes())?.strip_prefix(b"-")?;
            return Some((std::str::from_utf8(rest).ok()?.parse().ok()?, false));
        }
        None
    }

    /// Whether workers can tell every job apart (then exactly-once is checked by id).
    fn ids_recoverable(&self) -> bool {
        self.payload.carries_id() || self.unique == UniqueMode::PerJob
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientMode {
    Fg,
    Bg,
    Echo,
}

struct ClientShared {
    setup: Arc<Setup>,
    mode: ClientMode,
    window: usize,
    tickets: Tickets,
}

struct ClientResult {
    done: u64,
    hist: Histogram<u64>,
}

async fn client(mut conn: Conn, sh: Arc<ClientShared>) -> Result<ClientResult> {
    let setup = &sh.setup;
    let mut awaiting_created: VecDeque<(u64, Instant)> = VecDeque::with_capacity(sh.window);
    let mut running: HashMap<Bytes, (u64, Instant)> = HashMap::with_capacity(sh.window * 2);
    let mut outstanding = 0usize;
    let mut exhausted = false;
    let mut done = 0u64;
    let mut hist = new_histogram();
    let mut unique = Vec::new();
    let mut frames = Vec::new();
    // One clock read per batch each way, not per packet: at 0 B two reads per submit
    // were a tenth of the tool's time. A batch's requests get the time just before
    // they are written, its replies the time they were decoded.
    loop {
        let room = sh.window - outstanding;
        let ids = if exhausted { 0..0 } else { sh.tickets.take(room) };
        let batch = ids.end - ids.start;
        exhausted |= batch < room as u64;
        for id in ids.clone() {
            let (prefix, tail) = setup.payload.parts(id);
            match sh.mode {
                ClientMode::Echo => conn.push_with_data(Command::EchoReq, &[], &prefix, tail),
                ClientMode::Fg | ClientMode::Bg => {
                    let cmd =
                        if sh.mode == ClientMode::Fg { Command::SubmitJob } else { Command::SubmitJobBg };
                    setup.write_unique(id, &mut unique);
                    conn.push_with_data(cmd, &[setup.function_of(id), &unique], &prefix, tail);
                }
            }
        }
        if batch > 0 {
            let sent = Instant::now();
            awaiting_created.extend(ids.map(|id| (id, sent)));
            outstanding += batch as usize;
            COUNTERS.submitted.fetch_add(batch, Relaxed);
        }
        if outstanding == 0 {
            break;
        }
        conn.exchange(&mut frames, None).await?;
        let now = Instant::now();
        let answered_before = done;
        for f in frames.drain(..) {
            let p = packet(f)?;
            match (sh.mode, p.command) {
                (ClientMode::Bg | ClientMode::Fg, Command::JobCreated) => {
                    let (id, t) =
                        awaiting_created.pop_front().context("JOB_CREATED with no submit pending")?;
                    if sh.mode == ClientMode::Bg {
                        record(&mut hist, now - t);
                        outstanding -= 1;
                        done += 1;
                    } else {
                        let handle = Bytes::copy_from_slice(p.arg(0));
                        if running.insert(handle, (id, t)).is_some() {
                            bail!("handle {:?} given to two running jobs", p.arg_bytes(0));
                        }
                    }
                }
                (ClientMode::Fg, Command::WorkComplete) => {
                    let Some((id, t)) = running.remove(p.arg(0)) else {
                        bail!("WORK_COMPLETE for unknown or finished handle {:?}", p.arg_bytes(0));
                    };
                    record(&mut hist, now - t);
                    if !setup.payload.check(id, p.arg(1)) {
                        bail!(
                            "job {id}: WORK_COMPLETE data ({} bytes) is not the submitted payload",
                            p.arg(1).len()
                        );
                    }
                    outstanding -= 1;
                    done += 1;
                }
                (ClientMode::Echo, Command::EchoRes) => {
                    let (id, t) =
                        awaiting_created.pop_front().context("ECHO_RES with no ECHO_REQ pending")?;
                    record(&mut hist, now - t);
                    if !setup.payload.check(id, p.arg(0)) {
                        bail!("echo {id}: ECHO_RES data is not what was sent");
                    }
                    outstanding -= 1;
                    done += 1;
                }
                _ => return Err(unexpected(&p, "client")),
            }
        }
        COUNTERS.answered.fetch_add(done - answered_before, Relaxed);
    }
    Ok(ClientResult { done, hist })
}

struct WorkerResult {
    jobs: u64,
    ids: Vec<u64>,
}

/// Connects a worker, registers every function and waits until the server has
/// taken the registrations.
async fn register_worker(setup: &Setup) -> Result<Conn> {
    let mut conn = Conn::connect(setup.addr).await?;
    for f in &setup.functions {
        conn.push(Command::CanDo, &[f]);
    }
    conn.sync(|p| Err(unexpected(p, "worker"))).await?;
    Ok(conn)
}

/// The GRAB_JOB_UNIQ / PRE_SLEEP / NOOP loop, echoing each job's data in
/// WORK_COMPLETE, until `stop` fires.
async fn worker(
    mut conn: Conn,
    setup: Arc<Setup>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<WorkerResult> {
    let recover = setup.ids_recoverable();
    let mut res = WorkerResult { jobs: 0, ids: Vec::new() };
    let mut frames = Vec::new();
    conn.push(Command::GrabJobUniq, &[]);
    loop {
        if conn.exchange(&mut frames, Some(&mut stop)).await? == Event::Stopped {
            break;
        }
        let jobs_before = res.jobs;
        for f in frames.drain(..) {
            let p = packet(f)?;
            match p.command {
                Command::JobAssignUniq => {
                    let (handle, function, unique, data) = (p.arg(0), p.arg(1), p.arg(2), p.arg(3));
                    if recover {
                        let Some((id, checked)) = setup.id_from(unique, data) else {
                            bail!("worker got a job it cannot identify: {p:?}");
                        };
                        if setup.function_of(id) != function || !(checked || setup.payload.check(id, data)) {
                            bail!("worker got job {id} with wrong function or data: {p:?}");
                        }
                        res.ids.push(id);
                    } else if !setup.is_ours(function) || data.len() != setup.payload.len() {
                        bail!("worker got a job that is not ours: {p:?}");
                    }
                    conn.push_with_data(Command::WorkComplete, &[handle], &[], &p.arg_bytes(3));
                    conn.push(Command::GrabJobUniq, &[]);
                    res.jobs += 1;
                }
                Command::NoJob => conn.push(Command::PreSleep, &[]),
                Command::Noop => conn.push(Command::GrabJobUniq, &[]),
                _ => return Err(unexpected(&p, "worker")),
            }
        }
        // Once per read, like the clients' counts: the shared counters are contended.
        if res.jobs > jobs_before {
            COUNTERS.worker_jobs.fetch_add(res.jobs - jobs_before, Relaxed);
            progress.jobs_done(res.jobs - jobs_before);
        }
    }
    // Every job is done: make sure our WORK_COMPLETEs were handled, and that no
    // further job shows up.
    conn.sync(|p| match p.command {
        Command::NoJob | Command::Noop => Ok(()),
        Command::JobAssignUniq => bail!("a job was assigned after all jobs were done: {p:?}"),
        _ => Err(unexpected(p, "worker")),
    })
    .await?;
    Ok(res)
}

async fn connect_all(addr: SocketAddr, n: usize) -> Result<Vec<Conn>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Conn::connect(addr).await?);
    }
    Ok(v)
}

/// Running worker tasks, and the results of those that already ended.
struct Workers {
    set: JoinSet<Result<WorkerResult>>,
    finished: Vec<WorkerResult>,
    stop: watch::Receiver<bool>,
}

impl Workers {
    /// Connects and registers `n` workers, then starts their loops.
    async fn start(setup: &Arc<Setup>, progress: &Arc<Progress>, n: usize) -> Result<Workers> {
        let conns = register_workers(setup, n).await?;
        Ok(Workers::spawn_on(conns, setup, progress))
    }

    /// Starts a worker loop on each (registered) connection.
    fn spawn_on(conns: Vec<Conn>, setup: &Arc<Setup>, progress: &Arc<Progress>) -> Workers {
        let mut set = JoinSet::new();
        for conn in conns {
            set.spawn(worker(conn, setup.clone(), progress.clone(), progress.stop.subscribe()));
        }
        Workers { set, finished: Vec::new(), stop: progress.stop.subscribe() }
    }

    /// Fails as soon as a worker ends with an error, or ends before the stop signal;
    /// pending forever otherwise (results of workers that ended are kept).
    async fn watch(&mut self) -> Result<()> {
        loop {
            match self.set.join_next().await {
                None => std::future::pending().await,
                Some(r) => {
                    self.finished.push(r.context("worker task")??);
                    if !*self.stop.borrow() {
                        bail!("a worker stopped before the jobs were done");
                    }
                }
            }
        }
    }

    /// Waits for the stop signal, failing early if a worker fails.
    async fn until_stopped(&mut self) -> Result<()> {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => Ok(()),
            r = self.watch() => r,
        }
    }

    /// Waits for every worker and returns all results.
    async fn join(mut self) -> Result<Vec<WorkerResult>> {
        while let Some(r) = self.set.join_next().await {
            self.finished.push(r.context("worker task")??);
        }
        Ok(self.finished)
    }
}

async fn register_workers(setup: &Setup, n: usize) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(register_worker(setup).await?);
    }
    Ok(conns)
}

/// Runs clients on `conns` until their tickets run out, failing early if a worker fails.
/// Returns the merged results and the elapsed time.
async fn run_clients(
    conns: Vec<Conn>,
    sh: Arc<ClientShared>,
    workers: Option<&mut Workers>,
) -> Result<(u64, Histogram<u64>, Duration)> {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for conn in conns {
        set.spawn(client(conn, sh.clone()));
    }
    let mut done = 0u64;
    let mut hist = new_histogram();
    let mut workers = workers;
    loop {
        let next = async {
            match workers.as_deref_mut() {
                Some(w) => w.watch().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(r) => {
                    let r = r.context("client task")??;
                    done += r.done;
                    hist.add(&r.hist).context("merging histograms")?;
                }
            },
            r = next => r?,
        }
    }
    Ok((done, hist, start.elapsed()))
}

/// Checks workers' counts and ids against `expected` jobs of the run plus `prefill`
/// prefilled ones, then that the queue is empty.
async fn verify(setup: &Setup, workers: Vec<WorkerResult>, expected: u64, prefill: u64) -> Result<String> {
    let seen: u64 = workers.iter().map(|w| w.jobs).sum();
    let all = expected + prefill;
    let what = if prefill > 0 && expected > 0 {
        format!("{expected} jobs + {prefill} prefilled")
    } else if prefill > 0 {
        format!("{prefill} prefilled jobs")
    } else {
        format!("{expected} jobs")
    };
    ensure!(seen == all, "workers completed {seen} jobs, {what} were submitted");
    let how = if setup.ids_recoverable() {
        let mut ids: Vec<u64> = workers.into_iter().flat_map(|w| w.ids).collect();
        check_run_and_prefill(&mut ids, expected, prefill).map_err(anyhow::Error::msg)?;
        "each job handed to a worker exactly once (by id)"
    } else {
        "worker job count matches (payload < 8 B and no unique: ids not checked)"
    };
    admin::check_empty(setup.addr, &setup.functions).await?;
    Ok(format!("{what}; {how}; status shows no job left"))
}

/// Jobs queued by `--prefill` before the timed part.
struct Prefill {
    /// Where they are: the run's own setup (bg-submit) or one with a separate function.
    setup: Arc<Setup>,
    /// Whether they are on the run's own functions.
    same: bool,
    jobs: u64,
    seconds: f64,
}

/// Queues `n` background jobs with ids from [`PREFILL_BASE`] on `setup`'s functions.
async fn prefill(setup: Arc<Setup>, same: bool, n: u64, opts: &Opts) -> Result<Prefill> {
    let conns = connect_all(setup.addr, opts.clients).await?;
    let sh = Arc::new(ClientShared {
        setup: setup.clone(),
        mode: ClientMode::Bg,
        window: opts.window.max(16),
        tickets: Tickets { base: PREFILL_BASE, ..Tickets::new(Some(n), None) },
    });
    let (done, _, elapsed) = run_clients(conns, sh, None).await.context("prefilling the queue")?;
    ensure!(done == n, "prefill: {done} JOB_CREATED received, {n} submitted");
    Ok(Prefill { setup, same, jobs: n, seconds: elapsed.as_secs_f64() })
}

/// Drains prefilled jobs on their separate function and checks them; returns what
/// was verified.
async fn drain_prefill(p: &Prefill, workers: usize) -> Result<String> {
    let progress = Progress::new();
    progress.set_target(p.jobs);
    let conns = register_workers(&p.setup, workers).await?;
    let (secs, _, results) = timed_drain(conns, &p.setup, &progress, Meter::default())
        .await
        .context("draining the prefilled jobs")?;
    let v = verify(&p.setup, results, 0, p.jobs).await?;
    Ok(format!("prefill drained afterwards in {secs:.3} s (untimed): {v}"))
}

/// Workers on the registered `conns` grab until `progress` reaches its target.
/// Returns the seconds from their start to the last job done, the server's CPU time
/// over the same part (when `meter` watches it), and the workers' results.
async fn timed_drain(
    conns: Vec<Conn>,
    setup: &Arc<Setup>,
    progress: &Arc<Progress>,
    meter: Meter,
) -> Result<(f64, Spent, Vec<WorkerResult>)> {
    let start = Instant::now();
    let mut workers = Workers::spawn_on(conns, setup, progress);
    let ((), spent) = meter.during(workers.until_stopped()).await?;
    let secs = progress.end().duration_since(start).as_secs_f64();
    Ok((secs, spent, workers.join().await?))
}

fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:012x}", mixed >> 16)
}

/// Runs the scenario chosen by `opts`.
pub(crate) async fn run(opts: &Opts, threads: usize) -> Result<Report> {
    ensure!(opts.scenario != Scenario::NullServer, "null-server is not a scenario to measure");
    ensure!(opts.clients >= 1, "--clients must be at least 1");
    ensure!(opts.window >= 1, "--window must be at least 1");
    ensure!(opts.functions >= 1, "--functions must be at least 1");
    let needs_workers = matches!(opts.scenario, Scenario::Fg | Scenario::Drain | Scenario::BgE2e)
        || (opts.scenario == Scenario::BgSubmit && !opts.no_drain)
        || (opts.prefill > 0 && opts.scenario != Scenario::BgSubmit);
    ensure!(!needs_workers || opts.workers >= 1, "--workers must be at least 1");
    let addr = (opts.host.as_str(), opts.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}:{}", opts.host, opts.port))?
        .next()
        .context("host has no address")?;
    let id = opts.run_id.clone().unwrap_or_else(run_id);
    // FNV-1a of the run id seeds the payload pattern.
    let seed =
        id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let setup = Arc::new(Setup {
        addr,
        functions: (0..opts.functions).map(|i| format!("{}-{id}-{i}", opts.prefix).into_bytes()).collect(),
        run_id: id.clone(),
        payload: Payload::new(opts.payload, seed),
        unique: opts.unique,
    });
    let mut report = Report::new(opts, addr.to_string(), id.clone(), threads);
    let meter = Meter::new(opts.server_pid)?;

    // Untimed preparation: idle connections, then the prefilled queue.
    let mut idle_conns = idle::open(addr, opts.idle_connections).await?;
    let pre = if opts.prefill > 0 {
        // bg-submit measures submits into a loaded queue and unique index: same
        // functions. Elsewhere workers would have to get through the prefilled jobs
        // first, which is the drain scenario: a separate function no worker of the
        // run registers.
        let same = opts.scenario == Scenario::BgSubmit;
        let psetup = if same {
            setup.clone()
        } else {
            Arc::new(Setup {
                addr,
                functions: vec![format!("{}-{id}-prefill", opts.prefix).into_bytes()],
                run_id: id.clone(),
                payload: setup.payload.clone(),
                unique: opts.unique,
            })
        };
        let p = prefill(psetup, same, opts.prefill, opts).await?;
        report.prefill = Some((p.jobs, p.seconds));
        Some(p)
    } else {
        None
    };

    measure(opts, &setup, pre.as_ref(), meter, &mut report).await?;

    let mut extra = Vec::new();
    if !idle_conns.is_empty() {
        idle::check(&mut idle_conns).await?;
        extra.push(format!("{} idle connections answered an ECHO before and after", idle_conns.len()));
    }
    drop(idle_conns);
    if let Some(p) = pre.as_ref().filter(|p| !p.same) {
        extra.push(drain_prefill(p, opts.workers).await?);
    }
    for e in extra {
        report.verified.push_str("; ");
        report.verified.push_str(&e);
    }
    Ok(report)
}

/// The timed part of the scenario, with its own checks; fills in `report`, with the
/// server's CPU time over the same part when `meter` watches it.
async fn measure(
    opts: &Opts,
    setup: &Arc<Setup>,
    pre: Option<&Prefill>,
    meter: Meter,
    report: &mut Report,
) -> Result<()> {
    let addr = setup.addr;
    let client_shared = |mode| {
        Arc::new(ClientShared {
            setup: setup.clone(),
            mode,
            window: opts.window,
            tickets: Tickets::new(opts.job_count(), opts.seconds),
        })
    };
    // Prefilled jobs on the run's own functions are drained and checked with the run's.
    let same_prefill = pre.filter(|p| p.same).map_or(0, |p| p.jobs);

    match opts.scenario {
        Scenario::NullServer => bail!("null-server is not a scenario to measure"),
        Scenario::Echo => {
            let conns = connect_all(addr, opts.clients).await?;
            let sh = client_shared(ClientMode::Echo);
            let ((done, hist, elapsed), cpu) = meter.during(run_clients(conns, sh.clone(), None)).await?;
            report.cpu = cpu;
            ensure!(done == sh.tickets.issued(), "{done} echoes answered, {} sent", sh.tickets.issued());
            report.unit = "echoes";
            report.ops = done;
            report.seconds = elapsed.as_secs_f64();
            report.latency = Summary::of(&hist).map(|s| ("ECHO_REQ->ECHO_RES", s));
            report.verified = format!("{done} echoes, each returned its own data");
        }
        Scenario::Fg => {
            let progress = Progress::new();
            let mut workers = Workers::start(setup, &progress, opts.workers).await?;
            let conns = connect_all(addr, opts.clients).await?;
            let sh = client_shared(ClientMode::Fg);
            let ((done, hist, elapsed), cpu) =
                meter.during(run_clients(conns, sh.clone(), Some(&mut workers))).await?;
            report.cpu = cpu;
            progress.finish();
            let issued = sh.tickets.issued();
            ensure!(done == issued, "{done} jobs completed, {issued} submitted");
            let results = workers.join().await?;
            let v = verify(setup, results, issued, 0).await?;
            report.ops = done;
            report.seconds = elapsed.as_secs_f64();
            report.latency = Summary::of(&hist).map(|s| ("SUBMIT_JOB->WORK_COMPLETE", s));
            report.verified = format!("every client got its own data back; {v}");
        }
        Scenario::Drain if opts.already_queued => {
            // An earlier `bg-submit --no-drain` with the same run id, payload,
            // functions and unique mode queued jobs 0..N: drain and check them.
            let Some(issued) = opts.jobs else { bail!("--already-queued needs --jobs N") };
            ensure!(pre.is_none(), "--already-queued and --prefill do not go together");
            let progress = Progress::new();
            progress.set_target(issued);
            let conns = register_workers(setup, opts.workers).await?;
            let (drain_secs, drain_cpu, results) = timed_drain(conns, setup, &progress, meter).await?;
            report.ops = issued;
            report.seconds = drain_secs;
            report.cpu = drain_cpu;
            report.verified = format!("already queued: {}", verify(setup, results, issued, 0).await?);
        }
        Scenario::BgSubmit | Scenario::Drain => {
            let conns = connect_all(addr, opts.clients).await?;
            let sh = client_shared(ClientMode::Bg);
            let ((done, hist, submit_time), submit_cpu) =
                meter.during(run_clients(conns, sh.clone(), None)).await?;
            let issued = sh.tickets.issued();
            ensure!(done == issued, "{done} JOB_CREATED received, {issued} submitted");
            let submit_secs = submit_time.as_secs_f64();
            report.latency = Summary::of(&hist).map(|s| ("SUBMIT_JOB_BG->JOB_CREATED", s));
            if opts.scenario == Scenario::BgSubmit && opts.no_drain {
                report.unit = "submits";
                report.ops = done;
                report.seconds = submit_secs;
                report.cpu = submit_cpu;
                report.verified = format!("{done} JOB_CREATED; jobs left queued (--no-drain)");
                if opts.check_queued {
                    admin::check_queued(addr, &setup.functions, issued + same_prefill).await?;
                    let n = issued + same_prefill;
                    report.verified.push_str(&format!("; status shows exactly {n} job(s) queued"));
                }
                return Ok(());
            }
            let progress = Progress::new();
            progress.set_target(issued + same_prefill);
            // Register first, so the clock covers only grabbing and completing.
            let conns = register_workers(setup, opts.workers).await?;
            let (drain_secs, drain_cpu, results) = timed_drain(conns, setup, &progress, meter).await?;
            let v = verify(setup, results, issued, same_prefill).await?;
            if opts.scenario == Scenario::BgSubmit {
                report.unit = "submits";
                report.ops = done;
                report.seconds = submit_secs;
                report.cpu = submit_cpu;
                report.verified = format!("drained afterwards in {drain_secs:.3} s (untimed); {v}");
            } else {
                report.ops = issued;
                report.seconds = drain_secs;
                report.cpu = drain_cpu;
                report.submit = Some((done, submit_secs));
                report.verified = v;
            }
        }
        Scenario::BgE2e => {
            let progress = Progress::new();
            let mut workers = Workers::start(setup, &progress, opts.workers).await?;
            let conns = connect_all(addr, opts.clients).await?;
            let sh = client_shared(ClientMode::Bg);
            let start = Instant::now();
            let ((done, hist, submit_time, issued), cpu) = meter
                .during(async {
                    let (done, hist, submit_time) =
                        run_clients(conns, sh.clone(), Some(&mut workers)).await?;
                    let issued = sh.tickets.issued();
                    ensure!(done == issued, "{done} JOB_CREATED received, {issued} submitted");
                    progress.set_target(issued);
                    workers.until_stopped().await?;
                    Ok((done, hist, submit_time, issued))
                })
                .await?;
            let secs = progress.end().duration_since(start).as_secs_f64();
            report.cpu = cpu;
            let results = workers.join().await?;
            let v = verify(setup, results, issued, 0).await?;
            report.ops = issued;
            report.seconds = secs;
            report.submit = Some((done, submit_time.as_secs_f64()));
            report.latency = Summary::of(&hist).map(|s| ("SUBMIT_JOB_BG->JOB_CREATED", s));
            report.verified = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_count_from_their_base() {
        let t = Tickets { base: PREFILL_BASE, ..Tickets::new(Some(3), None) };
        assert_eq!(t.take(2), PREFILL_BASE..PREFILL_BASE + 2);
        assert_eq!(t.take(2), PREFILL_BASE + 2..PREFILL_BASE + 3);
        assert!(t.take(2).is_empty());
        assert_eq!(t.issued(), 3);
        let plain = Tickets::new(Some(2), None);
        assert_eq!((plain.take(1), plain.take(0), plain.take(1), plain.take(1)), (0..1, 0..0, 1..2, 2..2));
        assert_eq!(plain.issued(), 2);
        let past = Tickets::new(None, Some(0.0));
        assert!(past.take(4).is_empty());
        assert_eq!(past.issued(), 0);
    }
}
