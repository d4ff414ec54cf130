//! `gearman-bench`: a load generator for Gearman job servers.
//!
//! It speaks the binary protocol directly (no client library), runs foreground,
//! background and echo scenarios with many pipelined connections, and checks what it
//! measures: every job must come back exactly once with the data it was given, and
//! the server's queue must be empty afterwards. Any mismatch fails the run.

mod admin;
mod conn;
mod cpu_time;
mod idle;
mod null_server;
mod payload;
mod report;
mod scenario;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Foreground jobs: clients keep a window of SUBMIT_JOBs, workers echo the data.
    Fg,
    /// Pipelined SUBMIT_JOB_BG with no worker; the queue is drained afterwards (untimed).
    BgSubmit,
    /// Background jobs are queued first (timed separately), then workers drain them.
    Drain,
    /// Workers registered first, clients submit background jobs; time until all ran.
    BgE2e,
    /// ECHO_REQ round trips: the loopback bound.
    Echo,
    /// Not a scenario: serve as a null server (JOB_CREATED for every background
    /// submit, ECHO_RES for every ECHO_REQ, ERROR for the rest) until stopped.
    NullServer,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Fg => "fg",
            Scenario::BgSubmit => "bg-submit",
            Scenario::Drain => "drain",
            Scenario::BgE2e => "bg-e2e",
            Scenario::Echo => "echo",
            Scenario::NullServer => "null-server",
        }
    }
}

/// How jobs' unique keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UniqueMode {
    /// Empty unique: the server never coalesces.
    None,
    /// A different unique per job (`RUNID-JOBID`): exercises the unique index.
    PerJob,
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "gearman-bench", version, about)]
pub(crate) struct Opts {
    /// Scenario to run.
    #[arg(value_enum)]
    pub(crate) scenario: Scenario,
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Server port.
    #[arg(long, short = 'p', default_value_t = 4730)]
    pub(crate) port: u16,
    /// Client connections.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub(crate) clients: usize,
    /// Worker connections.
    #[arg(long, short = 'w', default_value_t = 4)]
    pub(crate) workers: usize,
    /// Outstanding requests per client connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) window: usize,
    /// Total jobs (or echo round trips). Default 20000 unless --seconds is given.
    #[arg(long, short = 'n', conflicts_with = "seconds")]
    pub(crate) jobs: Option<u64>,
    /// Submit for this many seconds instead of a fixed job count.
    #[arg(long, short = 's')]
    pub(crate) seconds: Option<f64>,
    /// Payload bytes per job (8 or more lets workers check which job they got).
    #[arg(long, default_value_t = 0)]
    pub(crate) payload: usize,
    /// Spread jobs over this many function names.
    #[arg(long, default_value_t = 1)]
    pub(crate) functions: usize,
    /// Unique keys of submitted jobs.
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) unique: UniqueMode,
    /// Print one line of JSON instead of the human summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Runtime threads (default: number of CPUs).
    #[arg(long, short = 't')]
    pub(crate) threads: Option<usize>,
    /// Fail the run if it takes longer than this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub(crate) timeout: f64,
    /// bg-submit only: leave the submitted jobs queued instead of draining them.
    #[arg(long)]
    pub(crate) no_drain: bool,
    /// Prefix of function names (a run id is appended).
    #[arg(long, default_value = "gbench")]
    pub(crate) prefix: String,
    /// Run id used in function names and unique keys (default: random).
    #[arg(long)]
    pub(crate) run_id: Option<String>,
    /// drain only: submit nothing; drain the --jobs jobs an earlier
    /// `bg-submit --no-drain` left queued (same --run-id, --payload, --functions, --unique).
    #[arg(long, requires = "run_id")]
    pub(crate) already_queued: bool,
    /// Open this many extra connections before the timed part and keep them open,
    /// idle; each must answer an ECHO before and after the run.
    #[arg(long, default_value_t = 0)]
    pub(crate) idle_connections: usize,
    /// Queue this many background jobs before the timed part: on the run's own
    /// functions for bg-submit (same unique mode, so a per-job unique index is
    /// loaded), on a separate function `PREFIX-RUNID-prefill` otherwise. They are
    /// drained and checked after the run (except bg-submit --no-drain).
    #[arg(long, default_value_t = 0)]
    pub(crate) prefill: u64,
    /// bg-submit --no-drain only: afterwards `status` must show exactly the jobs
    /// submitted (prefilled ones included) queued over the run's functions.
    #[arg(long, requires = "no_drain")]
    pub(crate) check_queued: bool,
    /// Process id of the server (Linux): report the CPU time it spent in the timed
    /// part, in all and per operation.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// null-server only: read every background submit's data into memory and keep it
    /// until its connection closes, as a server that queues what it acknowledged must.
    #[arg(long)]
    pub(crate) keep: bool,
}

impl Opts {
    /// The job count when no duration was given.
    pub(crate) fn job_count(&self) -> Option<u64> {
        match (self.jobs, self.seconds) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(20_000),
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (many connections need it).
/// Returns the soft limit in force afterwards.
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let fd_limit = raise_fd_limit();
    if let Some(limit) = fd_limit {
        // Our own connections plus a few descriptors for the runtime and stdio.
        let wanted = opts.idle_connections + opts.clients + opts.workers + 64;
        if (wanted as u64) > limit {
            eprintln!("gearman-bench: warning: about {wanted} descriptors needed, RLIMIT_NOFILE is {limit}");
        }
    }
    let threads =
        opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gearman-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.scenario == Scenario::NullServer {
        let r = rt.block_on(null_server::serve(&opts.host, opts.port, opts.keep));
        rt.shutdown_background();
        if let Err(e) = r {
            eprintln!("gearman-bench: null-server: {e:#}");
        }
        return ExitCode::FAILURE;
    }
    let limit = Duration::from_secs_f64(opts.timeout.max(0.001));
    let outcome = rt.block_on(async {
        match tokio::time::timeout(limit, scenario::run(&opts, threads)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "run did not finish within {} s ({})",
                opts.timeout,
                scenario::COUNTERS.describe()
            )),
        }
    });
    // Tasks of a failed run may still be blocked on the server; do not wait for them.
    rt.shutdown_background();
    match outcome {
        Ok(r) => {
            if opts.json {
                println!("{}", r.json());
            } else {
                print!("{}", r.human());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if opts.json {
                println!("{}", report::failure_json(&opts, &format!("{e:#}")));
            }
            eprintln!("gearman-bench: {} FAILED: {e:#}", opts.scenario.name());
            ExitCode::FAILURE
        }
    }
}
