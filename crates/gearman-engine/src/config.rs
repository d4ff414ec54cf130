//! What the engine needs to know from the command line.

/// Settings that change job semantics (a subset of gearmand's options).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Job handle prefix: handles are `<prefix>:<n>` (`--job-handle-prefix`).
    pub handle_prefix: String,
    /// Maximum assignments before a job fails; 0 = unlimited (`-j`).
    pub job_retries: u32,
    /// NOOPs sent per queued job; 0 = every sleeping worker (`-w`). The default is 1,
    /// not gearmand's 0: waking every sleeper for each job made most of them send
    /// GRAB_JOB, get NO_JOB and PRE_SLEEP again (a third of gearmand's foreground
    /// packets), and one woken worker per queued job is enough for every job to run.
    pub worker_wakeup: u32,
    /// How long a GRAB_JOB that finds no job is held before NO_JOB is sent (ms; 0 =
    /// answer at once, as gearmand). A job queued meanwhile is the answer, which saves
    /// the worker's PRE_SLEEP, the NOOP and a second GRAB_JOB: a round trip of every
    /// foreground job whose worker was idle. Deadlines are whole milliseconds, so
    /// the hold lasts between `grab_hold_ms - 1` and `grab_hold_ms`.
    pub grab_hold_ms: u32,
    /// Rotate a worker's functions after each grab (`-R`).
    pub round_robin: bool,
    /// New connections start with the `exceptions` option on (`--exceptions`).
    pub exceptions: bool,
    /// Text after `OK ` in the `version` admin reply.
    pub version: String,
    /// Process id for the `getpid` admin reply.
    pub pid: u32,
    /// Level name for the `verbose` admin reply (`--verbose`).
    pub verbose: String,
    /// Background jobs are stored before JOB_CREATED (a persistent queue is set).
    pub persistent: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            handle_prefix: "H:localhost".into(),
            job_retries: 0,
            worker_wakeup: 1,
            grab_hold_ms: 0,
            round_robin: false,
            exceptions: false,
            version: format!("1.1.20+gearman-rs.{}", env!("CARGO_PKG_VERSION")),
            pid: std::process::id(),
            verbose: "ERROR".into(),
            persistent: false,
        }
    }
}
