//! Command line, config file and process options of `gearmand`.
//!
//! The option set, defaults, error messages and exit codes follow gearmand
//! 1.1.20 (which uses boost::program_options). Parsing is done with clap's
//! builder API; clap's errors are translated into gearmand's wording.
//!
//! Behaviour kept from gearmand:
//! * `--opt=value`, `--opt value`, `-o value`, `-ovalue`, grouped short flags
//!   (`-dR`); abbreviated long options are rejected on the command line.
//! * a positional word is an error (`unrecognised option 'foo'`); an option
//!   given twice is an error (`option '--port' cannot be specified more than once`).
//! * `-v`, `-vv`, `-vvv` are all unrecognised (1.1.20 only has `--verbose LEVEL`).
//! * the config file (`--config-file`, default `/etc/gearmand.conf`) is split on
//!   space, CR and LF and parsed like command-line words, except that
//!   non-option words are ignored and unambiguous abbreviations of long options
//!   are accepted (boost's default style). Values on the command line win.
//! * order of checks: syntax, config file, `--verbose` value, hashtable
//!   buckets, then `--check-args`, `--help`, `--version`.
//!
//! Deliberate differences from gearmand (see the field docs too):
//! * `-j` and `-w` are kept as `u32`, not truncated to 8 bits.
//! * ports (`-p`, `--http-port`, `--mysql-port`) must be numbers in 0..=65535 and are
//!   checked while parsing (gearmand accepts any string and fails, or wraps
//!   the number, when it binds). An empty `-p ''` means the default.
//! * negative numbers are refused for unsigned options (gearmand wraps them).
//! * `GEARMAND_PORT` applies only when `-p` is not given (gearmand also applies
//!   it when `-p 4730` is given explicitly).
//! * `-p=4730` is read as port 4730 (boost reads the value `=4730`).

use gearman_store::StoreOptions;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Default Gear protocol port.
pub const DEFAULT_PORT: u16 = 4730;
/// Default config file path.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/gearmand.conf";
/// Default log file path.
pub const DEFAULT_LOG_FILE: &str = "/var/log/gearmand.log";
/// Default pid file path (written only if possible).
pub const DEFAULT_PID_FILE: &str = "/var/gearmand.pid";
/// Version of gearmand whose behaviour this server reproduces.
pub const COMPATIBLE_GEARMAND_VERSION: &str = "1.1.20";

/// Queue backends that gearmand 1.1.20 (Debian build) accepts for `-q`.
const KNOWN_QUEUES: &[&str] = &["builtin", "libsqlite3", "postgres", "mysql", "redis", "libmemcached"];

/// Error produced while reading options: the message (without the
/// `gearmand: ` prefix) and the exit code the binary must use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Message as gearmand prints it after `gearmand: `.
    pub message: String,
    /// Process exit code (always 1, as gearmand).
    pub exit_code: i32,
}

impl ConfigError {
    /// Builds an error with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { message: message.into(), exit_code: 1 }
    }
}

/// Result of parsing the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Start the server with this configuration.
    Run(Config),
    /// `--help`: print this text to stdout and exit 0.
    Help(String),
    /// `--version`: print this text to stdout and exit 0.
    Version(String),
    /// `--check-args`: options are valid; exit 0 without starting.
    CheckArgs(Config),
}

/// gearmand's verbosity levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verbose {
    /// FATAL
    Fatal,
    /// ALERT
    Alert,
    /// CRITICAL
    Critical,
    /// ERROR (the default)
    Error,
    /// WARNING
    Warning,
    /// NOTICE
    Notice,
    /// INFO
    Info,
    /// DEBUG
    Debug,
}

impl Verbose {
    /// All levels, most severe first.
    pub const ALL: [Verbose; 8] = [
        Verbose::Fatal,
        Verbose::Alert,
        Verbose::Critical,
        Verbose::Error,
        Verbose::Warning,
        Verbose::Notice,
        Verbose::Info,
        Verbose::Debug,
    ];

    /// The upper-case name gearmand uses (`ERROR`, `WARNING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verbose::Fatal => "FATAL",
            Verbose::Alert => "ALERT",
            Verbose::Critical => "CRITICAL",
            Verbose::Error => "ERROR",
            Verbose::Warning => "WARNING",
            Verbose::Notice => "NOTICE",
            Verbose::Info => "INFO",
            Verbose::Debug => "DEBUG",
        }
    }

    /// Parses an exact upper-case level name, as gearmand does.
    pub fn from_name(name: &str) -> Option<Verbose> {
        Verbose::ALL.into_iter().find(|v| v.as_str() == name)
    }

    /// Closest tracing level: FATAL/ALERT/CRITICAL/ERROR -> ERROR,
    /// WARNING -> WARN, NOTICE/INFO -> INFO, DEBUG -> DEBUG.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            Verbose::Fatal | Verbose::Alert | Verbose::Critical | Verbose::Error => tracing::Level::ERROR,
            Verbose::Warning => tracing::Level::WARN,
            Verbose::Notice | Verbose::Info => tracing::Level::INFO,
            Verbose::Debug => tracing::Level::DEBUG,
        }
    }
}

impl std::fmt::Display for Verbose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every gearmand 1.1.20 option, with its default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `-p/--port`: Gear port (default 4730, or `GEARMAND_PORT` when `-p` is absent).
    pub port: u16,
    /// `-L/--listen`: address to bind; `None` = every address.
    pub listen: Option<String>,
    /// `-t/--threads`: I/O threads (default 4; 0 = guess from the CPU count).
    pub threads: u32,
    /// `-b/--backlog`: listen(2) backlog (default 32).
    pub backlog: i32,
    /// `-d/--daemon`: detach and run in the background.
    pub daemon: bool,
    /// `--exceptions`: every connection starts with the `exceptions` option on.
    pub exceptions: bool,
    /// `-f/--file-descriptors`: RLIMIT_NOFILE to set; `None` = leave as is.
    pub file_descriptors: Option<u64>,
    /// `-j/--job-retries`: attempts before a job is dropped; 0 = unlimited.
    /// Kept as `u32`: gearmand stores it in 8 bits (256 -> 0), a bug we do not copy.
    pub job_retries: u32,
    /// `--job-handle-prefix`: handle prefix; `None` = `H:<host name>`.
    pub job_handle_prefix: Option<String>,
    /// `--hashtable-buckets`: accepted for compatibility (default 991, must be > 0).
    pub hashtable_buckets: u32,
    /// `--keepalive`: SO_KEEPALIVE on the listening sockets.
    pub keepalive: bool,
    /// `--keepalive-idle`: TCP_KEEPIDLE, -1 = not set.
    pub keepalive_idle: i32,
    /// `--keepalive-interval`: TCP_KEEPINTVL, -1 = not set.
    pub keepalive_interval: i32,
    /// `--keepalive-count`: TCP_KEEPCNT, -1 = not set.
    pub keepalive_count: i32,
    /// `-l/--log-file`: path, or the special values `stderr` and `none`.
    pub log_file: String,
    /// `-P/--pid-file`: `None` = default path, written only if possible;
    /// `Some` = explicit path that must be writable.
    pub pid_file: Option<PathBuf>,
    /// `-r/--protocol`: extra protocol module (`http`).
    pub protocol: Option<String>,
    /// `-R/--round-robin`: GRAB rotates over a worker's functions.
    pub round_robin: bool,
    /// `--config-file` actually used (`None` if no file was read).
    pub config_file: Option<PathBuf>,
    /// `--syslog`: also log through syslog.
    pub syslog: bool,
    /// `--coredump`: let the kernel dump core on crashes.
    pub coredump: bool,
    /// `-u/--user`: user to switch to after parsing.
    pub user: Option<String>,
    /// `--verbose`: log level (default ERROR).
    pub verbose: Verbose,
    /// `-w/--worker-wakeup`: NOOPs sent per queued job, 0 = all sleepers (default 1;
    /// gearmand's is 0: see `EngineConfig::worker_wakeup`).
    /// Kept as `u32`: gearmand stores it in 8 bits, a bug we do not copy.
    pub worker_wakeup: u32,
    /// `--grab-hold`: ms a GRAB_JOB that finds no job waits for one before NO_JOB
    /// (0 = at once, as gearmand; see `EngineConfig::grab_hold_ms`). Ours only.
    pub grab_hold_ms: u32,
    /// `--ssl`: TLS on the Gear port.
    pub ssl: bool,
    /// `--ssl-ca-file` (env `GEARMAND_CA_CERTIFICATE` wins when set).
    pub ssl_ca_file: String,
    /// `--ssl-certificate` (env `GEARMAND_SERVER_PEM` wins when set).
    pub ssl_certificate: String,
    /// `--ssl-key` (env `GEARMAND_SERVER_KEY` wins when set).
    pub ssl_key: String,
    /// `--http-port`: port of the HTTP front end (default 8080, used with `-r http`).
    pub http_port: u16,
    /// Persistent-queue plugin options.
    /// Persistent-queue options (`-q` and the plugin options, SERVER.md §5.2).
    pub queue: StoreOptions,
    /// `--store-queue-on-shutdown`.
    pub store_queue_on_shutdown: bool,
    /// `--max-packet-size`: largest packet accepted, in bytes (our extension;
    /// default `gearman_proto::DEFAULT_MAX_PACKET_BYTES`).
    pub max_packet_size: u32,
    /// `--monitor-port`: port of the monitoring HTTP endpoint (Prometheus `/metrics`,
    /// JSON `/status` and `/workers`; our extension); `None` = off.
    pub monitor_port: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: DEFAULT_PORT,
            listen: None,
            threads: 4,
            backlog: 32,
            daemon: false,
            exceptions: false,
            file_descriptors: None,
            job_retries: 0,
            job_handle_prefix: None,
            hashtable_buckets: 991,
            keepalive: false,
            keepalive_idle: -1,
            keepalive_interval: -1,
            keepalive_count: -1,
            log_file: DEFAULT_LOG_FILE.into(),
            pid_file: None,
            protocol: None,
            round_robin: false,
            config_file: None,
            syslog: false,
            coredump: false,
            user: None,
            verbose: Verbose::Error,
            worker_wakeup: 1,
            grab_hold_ms: 2,
            ssl: false,
            ssl_ca_file: "/etc/ssl/certs/gearmand-ca.pem".into(),
            ssl_certificate: "/etc/ssl/certs/gearmand.pem".into(),
            ssl_key: "/etc/ssl/certs/gearmand.key".into(),
            http_port: 8080,
            // An acknowledged job must survive power loss, not only a crash.
            queue: StoreOptions { fsync: true, ..StoreOptions::default() },
            store_queue_on_shutdown: false,
            max_packet_size: gearman_proto::DEFAULT_MAX_PACKET_BYTES,
            monitor_port: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Option table (drives clap, the help text and the config-file abbreviations).

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    Value,
}

struct Opt {
    long: &'static str,
    short: Option<char>,
    kind: Kind,
    default: Option<&'static str>,
    group: &'static str,
    help: &'static str,
    /// Hidden from help and accepted only on the real command line.
    cli_only: bool,
}

const fn flag(long: &'static str, short: Option<char>, group: &'static str, help: &'static str) -> Opt {
    Opt { long, short, kind: Kind::Flag, default: None, group, help, cli_only: false }
}

const fn value(
    long: &'static str,
    short: Option<char>,
    default: Option<&'static str>,
    group: &'static str,
    help: &'static str,
) -> Opt {
    Opt { long, short, kind: Kind::Value, default, group, help, cli_only: false }
}

const GENERAL: &str = "General options";

const OPTIONS: &[Opt] = &[
    value("backlog", Some('b'), Some("32"), GENERAL, "Length of the queue of pending connections given to listen()."),
    flag("daemon", Some('d'), GENERAL, "Detach from the terminal and run in the background."),
    flag("exceptions", None, GENERAL, "Turn the protocol 'exceptions' option on for every new connection."),
    value("file-descriptors", Some('f'), None, GENERAL, "Raise the limit of open files of the process to this number (connections use almost all of them). Default: keep the limit of the user."),
    flag("help", Some('h'), GENERAL, "Show this list of options and exit."),
    value("job-retries", Some('j'), Some("0"), GENERAL, "Drop a job after it was handed to workers this many times without a result, so that one bad job cannot take down every worker. 0 means no limit."),
    value("job-handle-prefix", None, None, GENERAL, "Prefix of the generated job handles. Default: \"H:<host name>\"."),
    value("hashtable-buckets", None, Some("991"), GENERAL, "Bucket count hint for the job tables (kept for compatibility; must be greater than 0)."),
    flag("keepalive", None, GENERAL, "Turn on TCP keepalive for the listening sockets."),
    value("keepalive-idle", None, Some("-1"), GENERAL, "With --keepalive: TCP_KEEPIDLE in seconds. -1 keeps the system value."),
    value("keepalive-interval", None, Some("-1"), GENERAL, "With --keepalive: TCP_KEEPINTVL in seconds. -1 keeps the system value."),
    value("keepalive-count", None, Some("-1"), GENERAL, "With --keepalive: TCP_KEEPCNT. -1 keeps the system value."),
    value("log-file", Some('l'), Some(DEFAULT_LOG_FILE), GENERAL, "File that receives the log. 'stderr' writes to standard error, 'none' turns the log off."),
    value("listen", Some('L'), None, GENERAL, "Host or address to listen on. Default: every address."),
    value("max-packet-size", None, Some("67108864"), GENERAL, "Largest packet accepted from a connection, in bytes (gearman-rs extension)."),
    value("monitor-port", None, None, GENERAL, "Serve Prometheus metrics (/metrics) and JSON status (/status, /workers) over HTTP on this port, on the --listen address. Off unless given (gearman-rs extension)."),
    value("pid-file", Some('P'), Some(DEFAULT_PID_FILE), GENERAL, "File that receives the process id."),
    value("protocol", Some('r'), None, GENERAL, "Load an additional protocol module ('http')."),
    flag("round-robin", Some('R'), GENERAL, "Hand out the jobs of a worker's functions in turn instead of in the order the worker registered them."),
    value("queue-type", Some('q'), Some("builtin"), GENERAL, "Persistent queue backend."),
    value("config-file", None, Some(DEFAULT_CONFIG_FILE), GENERAL, "Read further options from this file."),
    flag("syslog", None, GENERAL, "Send the log to syslog as well."),
    flag("coredump", None, GENERAL, "Let the system write a core dump on fatal signals."),
    value("threads", Some('t'), Some("4"), GENERAL, "Number of I/O threads. 0 picks a number from the CPU count."),
    value("user", Some('u'), None, GENERAL, "Switch to this user after startup."),
    value("verbose", None, Some("ERROR"), GENERAL, "Log level: FATAL, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO or DEBUG."),
    flag("version", Some('V'), GENERAL, "Show the version and exit."),
    value("worker-wakeup", Some('w'), Some("1"), GENERAL, "Number of sleeping workers woken for each new job. 0 wakes all of them (gearmand's default; ours is 1)."),
    value("grab-hold", None, Some("2"), GENERAL, "Milliseconds a GRAB_JOB that finds no job waits for one before the server answers NO_JOB. A job that comes meanwhile goes straight to that worker, saving its PRE_SLEEP, NOOP and second GRAB_JOB. 0 answers at once, as gearmand does."),
    Opt {
        long: "check-args",
        short: None,
        kind: Kind::Flag,
        default: None,
        group: GENERAL,
        help: "",
        cli_only: true,
    },
    value("http-port", None, Some("8080"), "HTTP", "Port of the HTTP front end."),
    value("port", Some('p'), Some("4730"), "Gear", "Port of the Gear protocol."),
    flag("ssl", None, "Gear", "Require TLS on the Gear port."),
    value("ssl-ca-file", None, None, "Gear", "CA certificate file."),
    value("ssl-certificate", None, None, "Gear", "Server certificate file."),
    value("ssl-key", None, None, "Gear", "Private key of the server certificate."),
    value("libmemcached-servers", None, None, "libmemcached", "Memcached servers to use."),
    value("libmemcached-prefix", None, Some("gear_"), "libmemcached", "Key prefix in memcached."),
    value("libsqlite3-db", None, None, "libsqlite3", "SQLite database file."),
    flag("store-queue-on-shutdown", None, "libsqlite3", "Save the queue only at shutdown."),
    value("libsqlite3-table", None, Some("gearman_queue"), "libsqlite3", "Table name."),
    value("libpq-conninfo", None, None, "Postgres", "PostgreSQL connection string."),
    value("libpq-table", None, Some("queue"), "Postgres", "Table name."),
    value("redis-server", None, Some("127.0.0.1"), "redis", "Redis host."),
    value("redis-port", None, Some("6379"), "redis", "Redis port or service name."),
    value("redis-password", None, None, "redis", "Redis password."),
    value("redis-prefix", None, Some("_gear_"), "redis", "Key prefix in redis."),
    value("mysql-host", None, Some("localhost"), "MySQL", "MySQL host."),
    value("mysql-port", None, Some("3306"), "MySQL", "MySQL port."),
    value("mysql-user", None, None, "MySQL", "MySQL user."),
    value("mysql-password", None, None, "MySQL", "MySQL password."),
    value("mysql-db", None, None, "MySQL", "MySQL database."),
    value("mysql-table", None, Some("gearman_queue"), "MySQL", "MySQL table name."),
];

const GROUPS: &[&str] =
    &[GENERAL, "HTTP", "Gear", "builtin", "libmemcached", "libsqlite3", "Postgres", "redis", "MySQL"];

/// Id of the hidden positional that swallows non-option words of the config file.
const IGNORED: &str = "__ignored";

fn build_command(for_file: bool) -> Command {
    let mut cmd = Command::new("gearmand")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    for opt in OPTIONS {
        if for_file && opt.cli_only {
            continue;
        }
        let mut arg = Arg::new(opt.long).long(opt.long);
        if let Some(c) = opt.short {
            arg = arg.short(c);
        }
        arg = match opt.kind {
            Kind::Flag => arg.action(ArgAction::Count),
            Kind::Value => arg
                .action(ArgAction::Append)
                .num_args(1)
                .allow_negative_numbers(true)
                .value_parser(clap::builder::OsStringValueParser::new()),
        };
        cmd = cmd.arg(arg);
    }
    if for_file {
        cmd = cmd.arg(
            Arg::new(IGNORED)
                .num_args(0..)
                .action(ArgAction::Append)
                .value_parser(clap::builder::OsStringValueParser::new()),
        );
    }
    cmd
}

// ---------------------------------------------------------------------------
// Parsing.

/// Parses `args` (including the program name as first element, like
/// `std::env::args_os()`), reading the environment of the process.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Parsed, ConfigError> {
    parse_with_env(args, |name| std::env::var(name).ok())
}

/// Like [`parse`], with the environment given as a lookup function
/// (`GEARMAND_PORT`, `GEARMAND_CA_CERTIFICATE`, `GEARMAND_SERVER_PEM`, `GEARMAND_SERVER_KEY`).
pub fn parse_with_env<I, F>(args: I, env: F) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = OsString>,
    F: Fn(&str) -> Option<String>,
{
    let words: Vec<OsString> = args.into_iter().skip(1).collect();
    let cli = parse_words(&words, false)?;

    // Config file: explicit (possibly empty = skipped) or the default.
    let (config_path, explicit) = match cli.value("config-file") {
        Some(p) => (p.to_string(), true),
        None => (DEFAULT_CONFIG_FILE.to_string(), false),
    };
    let mut file = Values::default();
    let mut used_config = None;
    if !config_path.is_empty() {
        match std::fs::read(&config_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let words = config_file_words(&text)?;
                file = parse_words(&words, true)?;
                used_config = Some(PathBuf::from(&config_path));
            }
            // A directory opens fine with gearmand's ifstream and reads as empty.
            Err(_) if Path::new(&config_path).is_dir() => {
                used_config = Some(PathBuf::from(&config_path));
            }
            Err(_) if explicit => {
                return Err(ConfigError::new("Could not open configuration file."));
            }
            Err(_) => {}
        }
    }

    let merged = Merged { cli: &cli, file: &file };
    let verbose = match merged.value("verbose") {
        None => Verbose::Error,
        Some(s) => {
            Verbose::from_name(s).ok_or_else(|| ConfigError::new("Invalid value for --verbose supplied"))?
        }
    };
    let hashtable_buckets = merged.num::<u32>("hashtable-buckets")?.unwrap_or(991);
    if hashtable_buckets == 0 {
        return Err(ConfigError::new("hashtable-buckets has to be greater than 0"));
    }

    let mut config = build_config(&merged, &env)?;
    config.verbose = verbose;
    config.hashtable_buckets = hashtable_buckets;
    config.config_file = used_config;

    if cli.flag("check-args") {
        return Ok(Parsed::CheckArgs(config));
    }
    if merged.flag("help") {
        return Ok(Parsed::Help(help_text()));
    }
    if merged.flag("version") {
        return Ok(Parsed::Version(version_text()));
    }
    Ok(Parsed::Run(config))
}

/// Parses the process arguments and handles everything that ends the
/// process before the server starts, exactly as gearmand does: `--help` and
/// `--version` print to stdout and exit 0, `--check-args` exits 0, errors and
/// [`Config::unsupported`] options print `gearmand: <message>` to stderr and exit 1.
pub fn from_args_or_exit() -> Config {
    match parse(std::env::args_os()) {
        Ok(Parsed::Run(config)) => {
            if let Some(msg) = config.unsupported() {
                eprintln!("gearmand: {msg}");
                std::process::exit(1);
            }
            config
        }
        Ok(Parsed::Help(text)) | Ok(Parsed::Version(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Ok(Parsed::CheckArgs(_)) => std::process::exit(0),
        Err(e) => {
            eprintln!("gearmand: {}", e.message);
            std::process::exit(e.exit_code);
        }
    }
}

/// Text printed by `--version` (gearmand prints an empty line, then one line).
pub fn version_text() -> String {
    format!(
        "\ngearmand {} (gearman-rs, compatible with gearmand {})\n",
        env!("CARGO_PKG_VERSION"),
        COMPATIBLE_GEARMAND_VERSION
    )
}

/// Text printed by `--help`: the option list, grouped like gearmand's.
pub fn help_text() -> String {
    const COL: usize = 40;
    const WIDTH: usize = 80;
    let mut out = String::from("Allowed options:\n\n");
    for group in GROUPS {
        let _ = writeln!(out, "{group}:");
        for opt in OPTIONS.iter().filter(|o| o.group == *group && !o.cli_only) {
            let mut left = String::from("  ");
            match opt.short {
                Some(c) => {
                    let _ = write!(left, "-{c} [ --{} ]", opt.long);
                }
                None => {
                    let _ = write!(left, "--{}", opt.long);
                }
            }
            if opt.kind == Kind::Value {
                left.push_str(" arg");
                if let Some(d) = opt.default {
                    let _ = write!(left, " (={d})");
                }
            }
            let lines = wrap(opt.help, WIDTH - COL);
            if left.len() < COL - 1 {
                let _ = write!(out, "{left:<COL$}");
            } else {
                let _ = write!(out, "{left}\n{:COL$}", "");
            }
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    let _ = write!(out, "{:COL$}", "");
                }
                out.push_str(line);
                out.push('\n');
            }
            if lines.is_empty() {
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Splits config-file text on space, CR and LF (only), and expands
/// unambiguous abbreviations of long options like boost does for files.
fn config_file_words(text: &str) -> Result<Vec<OsString>, ConfigError> {
    let mut out = Vec::new();
    for token in text.split([' ', '\r', '\n']).filter(|t| !t.is_empty()) {
        out.push(OsString::from(expand_abbreviation(token)?));
    }
    Ok(out)
}

fn expand_abbreviation(token: &str) -> Result<String, ConfigError> {
    let Some(body) = token.strip_prefix("--") else {
        return Ok(token.to_string());
    };
    let (name, rest) = match body.find('=') {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    if name.is_empty() {
        return Ok(token.to_string());
    }
    let file_opts = || OPTIONS.iter().filter(|o| !o.cli_only);
    if file_opts().any(|o| o.long == name) {
        return Ok(token.to_string());
    }
    let mut matches: Vec<&str> = file_opts().filter(|o| o.long.starts_with(name)).map(|o| o.long).collect();
    matches.sort_unstable();
    match matches.len() {
        0 => Ok(token.to_string()),
        1 => Ok(format!("--{}{rest}", matches[0])),
        _ => {
            let list: Vec<String> = matches.iter().map(|m| format!("'--{m}'")).collect();
            let (last, first) = list.split_last().expect("two or more");
            Err(ConfigError::new(format!(
                "option '{token}' is ambiguous and matches {}, and {last}",
                first.join(", ")
            )))
        }
    }
}

/// Values of one source (command line or config file).
#[derive(Default)]
struct Values {
    flags: HashMap<&'static str, bool>,
    values: HashMap<&'static str, String>,
}

impl Values {
    fn flag(&self, long: &str) -> bool {
        self.flags.get(long).copied().unwrap_or(false)
    }

    fn value(&self, long: &str) -> Option<&str> {
        self.values.get(long).map(String::as_str)
    }
}

fn parse_words(words: &[OsString], for_file: bool) -> Result<Values, ConfigError> {
    // `--opt=` with nothing after the equal sign.
    for w in words {
        if let Some(body) = w.to_str().and_then(|s| s.strip_prefix("--")) {
            if let Some(name) = body.strip_suffix('=') {
                if OPTIONS
                    .iter()
                    .any(|o| o.long == name && o.kind == Kind::Value && !(for_file && o.cli_only))
                {
                    return Err(ConfigError::new(format!(
                        "the argument for option '--{name}' should follow immediately after the equal sign"
                    )));
                }
            }
        }
    }
    let matches =
        build_command(for_file).try_get_matches_from(words).map_err(|e| translate_clap_error(&e, words))?;
    collect(&matches, for_file)
}

fn collect(matches: &ArgMatches, for_file: bool) -> Result<Values, ConfigError> {
    let mut out = Values::default();
    for opt in OPTIONS {
        if for_file && opt.cli_only {
            continue;
        }
        match opt.kind {
            Kind::Flag => {
                let n = matches.get_count(opt.long);
                if n > 1 {
                    return Err(more_than_once(opt.long));
                }
                if n == 1 {
                    out.flags.insert(opt.long, true);
                }
            }
            Kind::Value => {
                let Some(vals) = matches.get_many::<OsString>(opt.long) else {
                    continue;
                };
                let vals: Vec<&OsString> = vals.collect();
                if vals.len() > 1 {
                    return Err(more_than_once(opt.long));
                }
                let v = vals[0].to_str().ok_or_else(|| {
                    ConfigError::new(format!(
                        "the argument ('{}') for option '--{}' is invalid",
                        vals[0].to_string_lossy(),
                        opt.long
                    ))
                })?;
                out.values.insert(opt.long, v.to_string());
            }
        }
    }
    Ok(out)
}

fn more_than_once(long: &str) -> ConfigError {
    ConfigError::new(format!("option '--{long}' cannot be specified more than once"))
}

/// Name of the option a clap context refers to (`--port <port>` -> `port`).
fn clap_arg_long(err: &clap::Error) -> Option<String> {
    let s = match err.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.clone(),
        ContextValue::Strings(v) => v.first()?.clone(),
        _ => return None,
    };
    let first = s.split([' ', '=']).next()?.trim_end_matches("...").to_string();
    if let Some(long) = first.strip_prefix("--") {
        return Some(long.to_string());
    }
    if let Some(short) = first.strip_prefix('-') {
        let c = short.chars().next()?;
        return OPTIONS.iter().find(|o| o.short == Some(c)).map(|o| o.long.to_string());
    }
    None
}

/// The word of the input that clap's unknown argument came from.
fn offending_word(invalid: &str, words: &[OsString]) -> String {
    let words: Vec<String> = words.iter().map(|w| w.to_string_lossy().into_owned()).collect();
    if invalid.starts_with("--") {
        if let Some(w) = words.iter().find(|w| *w == invalid || w.starts_with(&format!("{invalid}="))) {
            return w.clone();
        }
    } else if let Some(c) = invalid.strip_prefix('-').and_then(|s| s.chars().next()) {
        if let Some(w) =
            words.iter().find(|w| w.starts_with('-') && !w.starts_with("--") && w[1..].contains(c))
        {
            return w.clone();
        }
    }
    invalid.to_string()
}

fn translate_clap_error(err: &clap::Error, words: &[OsString]) -> ConfigError {
    let invalid = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match err.kind() {
        ErrorKind::UnknownArgument => {
            let inv = invalid.unwrap_or_default();
            ConfigError::new(format!("unrecognised option '{}'", offending_word(&inv, words)))
        }
        ErrorKind::NoEquals | ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues => {
            match clap_arg_long(err) {
                Some(long) => {
                    ConfigError::new(format!("the required argument for option '--{long}' is missing"))
                }
                None => ConfigError::new(first_line(err)),
            }
        }
        ErrorKind::TooManyValues => match clap_arg_long(err) {
            Some(long) => ConfigError::new(format!("option '--{long}' does not take any arguments")),
            None => ConfigError::new(first_line(err)),
        },
        ErrorKind::ArgumentConflict => match clap_arg_long(err) {
            Some(long) => more_than_once(&long),
            None => ConfigError::new(first_line(err)),
        },
        _ => ConfigError::new(first_line(err)),
    }
}

fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").to_string()
}

/// Command-line values over config-file values.
struct Merged<'a> {
    cli: &'a Values,
    file: &'a Values,
}

impl Merged<'_> {
    fn flag(&self, long: &str) -> bool {
        self.cli.flag(long) || self.file.flag(long)
    }

    fn value(&self, long: &str) -> Option<&str> {
        self.cli.value(long).or_else(|| self.file.value(long))
    }

    fn string(&self, long: &str) -> Option<String> {
        self.value(long).map(str::to_string)
    }

    fn num<T: std::str::FromStr>(&self, long: &str) -> Result<Option<T>, ConfigError> {
        self.value(long).map(|v| parse_num(long, v)).transpose()
    }

    fn port(&self, long: &str) -> Result<Option<u16>, ConfigError> {
        match self.value(long) {
            None | Some("") => Ok(None),
            Some(v) => parse_num(long, v).map(Some),
        }
    }
}

/// Parses a number like boost's lexical_cast: optional `+`, decimal digits, no spaces.
fn parse_num<T: std::str::FromStr>(long: &str, v: &str) -> Result<T, ConfigError> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    let ok_shape =
        !digits.is_empty() && digits.strip_prefix('-').unwrap_or(digits).bytes().all(|b| b.is_ascii_digit());
    let parsed = if ok_shape { digits.parse::<T>().ok() } else { None };
    parsed.ok_or_else(|| ConfigError::new(format!("the argument ('{v}') for option '--{long}' is invalid")))
}

fn build_config<F: Fn(&str) -> Option<String>>(m: &Merged<'_>, env: &F) -> Result<Config, ConfigError> {
    let d = Config::default();
    let env_nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
    let port = match m.port("port")? {
        Some(p) => p,
        None => match env_nonempty("GEARMAND_PORT") {
            Some(v) => v
                .parse::<u16>()
                .map_err(|_| ConfigError::new(format!("GEARMAND_PORT ('{v}') is not a valid port")))?,
            None => d.port,
        },
    };
    let max_packet_size = m.num::<u32>("max-packet-size")?.unwrap_or(d.max_packet_size);
    if max_packet_size == 0 {
        return Err(ConfigError::new("max-packet-size has to be greater than 0"));
    }
    let dq = &d.queue;
    let queue = StoreOptions {
        queue_type: m
            .string("queue-type")
            .map(|q| q.to_ascii_lowercase())
            .unwrap_or_else(|| dq.queue_type.clone()),
        libsqlite3_db: m.string("libsqlite3-db"),
        libsqlite3_table: m.string("libsqlite3-table").unwrap_or_else(|| dq.libsqlite3_table.clone()),
        libpq_conninfo: m.string("libpq-conninfo").unwrap_or_default(),
        libpq_table: m.string("libpq-table").unwrap_or_else(|| dq.libpq_table.clone()),
        mysql_host: m.string("mysql-host").unwrap_or_else(|| dq.mysql_host.clone()),
        mysql_port: m.num::<u16>("mysql-port")?.unwrap_or(dq.mysql_port),
        mysql_user: m.string("mysql-user"),
        mysql_password: m.string("mysql-password"),
        mysql_db: m.string("mysql-db"),
        mysql_table: m.string("mysql-table").unwrap_or_else(|| dq.mysql_table.clone()),
        redis_server: m.string("redis-server").unwrap_or_else(|| dq.redis_server.clone()),
        redis_port: m.num::<u16>("redis-port")?.unwrap_or(dq.redis_port),
        redis_password: m.string("redis-password"),
        redis_prefix: m.string("redis-prefix").unwrap_or_else(|| dq.redis_prefix.clone()),
        libmemcached_servers: m.string("libmemcached-servers"),
        libmemcached_prefix: m
            .string("libmemcached-prefix")
            .unwrap_or_else(|| dq.libmemcached_prefix.clone()),
        fsync: dq.fsync,
    };
    Ok(Config {
        port,
        listen: m.string("listen"),
        threads: m.num("threads")?.unwrap_or(d.threads),
        backlog: m.num("backlog")?.unwrap_or(d.backlog),
        daemon: m.flag("daemon"),
        exceptions: m.flag("exceptions"),
        file_descriptors: m.num::<u64>("file-descriptors")?.filter(|&n| n > 0),
        job_retries: m.num("job-retries")?.unwrap_or(d.job_retries),
        job_handle_prefix: m.string("job-handle-prefix"),
        hashtable_buckets: d.hashtable_buckets,
        keepalive: m.flag("keepalive"),
        keepalive_idle: m.num("keepalive-idle")?.unwrap_or(d.keepalive_idle),
        keepalive_interval: m.num("keepalive-interval")?.unwrap_or(d.keepalive_interval),
        keepalive_count: m.num("keepalive-count")?.unwrap_or(d.keepalive_count),
        log_file: m.string("log-file").unwrap_or(d.log_file),
        pid_file: m.string("pid-file").map(PathBuf::from),
        protocol: m.string("protocol"),
        round_robin: m.flag("round-robin"),
        store_queue_on_shutdown: m.flag("store-queue-on-shutdown"),
        config_file: None,
        syslog: m.flag("syslog"),
        coredump: m.flag("coredump"),
        user: m.string("user"),
        verbose: d.verbose,
        worker_wakeup: m.num("worker-wakeup")?.unwrap_or(d.worker_wakeup),
        grab_hold_ms: m.num("grab-hold")?.unwrap_or(d.grab_hold_ms),
        ssl: m.flag("ssl"),
        ssl_ca_file: env_nonempty("GEARMAND_CA_CERTIFICATE")
            .or_else(|| m.string("ssl-ca-file"))
            .unwrap_or(d.ssl_ca_file),
        ssl_certificate: env_nonempty("GEARMAND_SERVER_PEM")
            .or_else(|| m.string("ssl-certificate"))
            .unwrap_or(d.ssl_certificate),
        ssl_key: env_nonempty("GEARMAND_SERVER_KEY").or_else(|| m.string("ssl-key")).unwrap_or(d.ssl_key),
        http_port: m.port("http-port")?.unwrap_or(d.http_port),
        queue,
        max_packet_size,
        monitor_port: m.port("monitor-port")?,
    })
}

// ---------------------------------------------------------------------------
// Runtime checks and process setup.

impl Config {
    /// First option that this server cannot honour yet, as the message the
    /// binary prints after `gearmand: ` before exiting 1 (`None` = all fine).
    /// Unknown `-r`/`-q` names give gearmand's own messages. Like gearmand,
    /// these are runtime errors: `--check-args` does not report them.
    pub fn unsupported(&self) -> Option<String> {
        if let Some(p) = &self.protocol {
            if p != "http" {
                return Some(format!("Unknown protocol module : {p}"));
            }
        }
        if !KNOWN_QUEUES.contains(&self.queue.queue_type.as_str()) {
            return Some(format!("Error while initializing the queue : {}", self.queue.queue_type));
        }
        if self.ssl {
            return Some("--ssl is not implemented yet".into());
        }
        if self.syslog {
            return Some("--syslog is not implemented yet".into());
        }
        None
    }

    /// The `-P` path to use: the explicit one, or the default.
    pub fn pid_file_path(&self) -> &Path {
        self.pid_file.as_deref().unwrap_or_else(|| Path::new(DEFAULT_PID_FILE))
    }

    /// Writes the pid file as gearmand does: an explicit path that cannot be
    /// written is an error; the default path is skipped silently when it
    /// cannot be written (`Ok(None)`). The returned guard removes the file on drop.
    pub fn write_pid_file(&self) -> Result<Option<PidFile>, ConfigError> {
        let path = self.pid_file_path().to_path_buf();
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => Ok(Some(PidFile { path })),
            Err(_) if self.pid_file.is_none() => Ok(None),
            Err(e) => {
                let why = strerror(&e);
                Err(ConfigError::new(format!(
                    "Could not open pid file for writing: {}({why}) ({why})",
                    path.display()
                )))
            }
        }
    }

    /// Applies the process-level options in gearmand's order: `-f` (open-file
    /// limit), `-u` (switch user), `-d` (daemonize). Call it before any thread
    /// is started (before building the tokio runtime), then write the pid file
    /// and open the log. Daemonizing uses daemon(3): the parent exits at once
    /// (gearmand's parent waits until the server is ready), the working
    /// directory becomes `/` and stdin/stdout/stderr go to /dev/null.
    pub fn prepare_process(&self) -> Result<(), ConfigError> {
        if let Some(fds) = self.file_descriptors {
            set_fd_limit(fds)?;
        }
        if let Some(user) = &self.user {
            switch_user(user)?;
        }
        if self.daemon {
            nix::unistd::daemon(false, false)
                .map_err(|e| ConfigError::new(format!("Could not daemonize ({})", e.desc())))?;
        }
        Ok(())
    }
}

/// A written pid file; removed when dropped (gearmand removes it at exit).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Path of the pid file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `strerror`-like text of an I/O error (without Rust's ` (os error N)`).
pub(crate) fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

fn set_fd_limit(fds: u64) -> Result<(), ConfigError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let fail = |e: nix::Error| {
        ConfigError::new(format!(
            "Failed to set limit for the number of file descriptors.  Try running as root or giving a smaller value to -f. ({})",
            e.desc()
        ))
    };
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(fail)?;
    let hard = hard.max(fds);
    setrlimit(Resource::RLIMIT_NOFILE, fds, hard).map_err(fail)
}

/// Switches the process to `name` (gid, supplementary groups, then uid).
/// Only root may do this, as in gearmand.
pub fn switch_user(name: &str) -> Result<(), ConfigError> {
    use nix::unistd::{getuid, initgroups, setgid, setuid, User};
    if !getuid().is_root() {
        return Err(ConfigError::new("Must be root to switch users."));
    }
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        _ => return Err(ConfigError::new(format!("Could not find user : {name}"))),
    };
    let fail = |what: &str, e: nix::Error| {
        ConfigError::new(format!("Could not {what} for user : {name} ({})", e.desc()))
    };
    let cname = std::ffi::CString::new(name)
        .map_err(|_| ConfigError::new(format!("Could not find user : {name}")))?;
    initgroups(&cname, user.gid).map_err(|e| fail("set groups", e))?;
    setgid(user.gid).map_err(|e| fail("setgid", e))?;
    setuid(user.uid).map_err(|e| fail("setuid", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses with no environment and no config file.
    fn p(args: &[&str]) -> Result<Parsed, ConfigError> {
        p_env(args, &[])
    }

    fn p_env(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
        let mut words: Vec<OsString> = vec!["gearmand".into()];
        words.extend(args.iter().map(OsString::from));
        if !args.iter().any(|a| a.starts_with("--config-file")) {
            words.push("--config-file".into());
            words.push("".into());
        }
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_with_env(words, move |k| env.get(k).cloned())
    }

    fn run(args: &[&str]) -> Config {
        match p(args) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match p(args) {
            Err(e) => {
                assert_eq!(e.exit_code, 1);
                e.message
            }
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("gearman-rs-config-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn defaults() {
        let c = run(&[]);
        assert_eq!(c, Config::default());
        assert_eq!(c.port, 4730);
        assert_eq!(c.threads, 4);
        assert_eq!(c.backlog, 32);
        assert_eq!(c.hashtable_buckets, 991);
        assert_eq!(c.log_file, "/var/log/gearmand.log");
        assert_eq!(c.pid_file_path(), Path::new("/var/gearmand.pid"));
        assert_eq!(c.verbose, Verbose::Error);
        assert_eq!(c.queue.queue_type, "builtin");
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.max_packet_size, 64 * 1024 * 1024);
        assert_eq!((c.keepalive_idle, c.keepalive_interval, c.keepalive_count), (-1, -1, -1));
        assert_eq!(c.unsupported(), None);
    }

    #[test]
    fn every_option_long_and_short() {
        type Check = fn(&Config) -> bool;
        let cases: &[(&[&str], Check)] = &[
            (&["--backlog=10"], |c| c.backlog == 10),
            (&["-b", "11"], |c| c.backlog == 11),
            (&["-b12"], |c| c.backlog == 12),
            (&["--daemon"], |c| c.daemon),
            (&["-d"], |c| c.daemon),
            (&["--exceptions"], |c| c.exceptions),
            (&["--file-descriptors", "100"], |c| c.file_descriptors == Some(100)),
            (&["-f", "0"], |c| c.file_descriptors.is_none()),
            (&["--job-retries=300"], |c| c.job_retries == 300),
            (&["-j", "6"], |c| c.job_retries == 6),
            (&["--job-handle-prefix", "X:y"], |c| c.job_handle_prefix.as_deref() == Some("X:y")),
            (&["--hashtable-buckets=2000"], |c| c.hashtable_buckets == 2000),
            (&["--keepalive"], |c| c.keepalive),
            (&["--keepalive-idle=5"], |c| c.keepalive_idle == 5),
            (&["--keepalive-interval", "6"], |c| c.keepalive_interval == 6),
            (&["--keepalive-count=-1"], |c| c.keepalive_count == -1),
            (&["--log-file=stderr"], |c| c.log_file == "stderr"),
            (&["-l", "none"], |c| c.log_file == "none"),
            (&["--listen=127.0.0.1"], |c| c.listen.as_deref() == Some("127.0.0.1")),
            (&["-L", "localhost"], |c| c.listen.as_deref() == Some("localhost")),
            (&["--max-packet-size=1024"], |c| c.max_packet_size == 1024),
            (&["--monitor-port=9100"], |c| c.monitor_port == Some(9100)),
            (&["--pid-file=/tmp/x.pid"], |c| c.pid_file.as_deref() == Some(Path::new("/tmp/x.pid"))),
            (&["-P", "/tmp/y.pid"], |c| c.pid_file_path() == Path::new("/tmp/y.pid")),
            (&["--protocol=http"], |c| c.protocol.as_deref() == Some("http")),
            (&["-r", "http"], |c| c.protocol.as_deref() == Some("http")),
            (&["--round-robin"], |c| c.round_robin),
            (&["-R"], |c| c.round_robin),
            (&["--queue-type=BuiltIn"], |c| c.queue.queue_type == "builtin"),
            (&["-q", "libsqlite3"], |c| c.queue.queue_type == "libsqlite3"),
            (&["--syslog"], |c| c.syslog),
            (&["--coredump"], |c| c.coredump),
            (&["--threads=0"], |c| c.threads == 0),
            (&["-t", "8"], |c| c.threads == 8),
            (&["--user=nobody"], |c| c.user.as_deref() == Some("nobody")),
            (&["-u", "root"], |c| c.user.as_deref() == Some("root")),
            (&["--verbose=DEBUG"], |c| c.verbose == Verbose::Debug),
            (&["--verbose", "FATAL"], |c| c.verbose == Verbose::Fatal),
            (&["--worker-wakeup=300"], |c| c.worker_wakeup == 300),
            (&["-w", "3"], |c| c.worker_wakeup == 3),
            (&["--grab-hold=0"], |c| c.grab_hold_ms == 0),
            (&["--grab-hold", "5"], |c| c.grab_hold_ms == 5),
            (&[], |c| c.grab_hold_ms == 2),
            (&["--http-port=8081"], |c| c.http_port == 8081),
            (&["--port=4731"], |c| c.port == 4731),
            (&["-p", "0"], |c| c.port == 0),
            (&["-p4732"], |c| c.port == 4732),
            (&["-p", ""], |c| c.port == 4730),
            (&["--ssl"], |c| c.ssl),
            (&["--ssl-ca-file=a"], |c| c.ssl_ca_file == "a"),
            (&["--ssl-certificate", "b"], |c| c.ssl_certificate == "b"),
            (&["--ssl-key=c"], |c| c.ssl_key == "c"),
            (&["--libsqlite3-db=/tmp/q.db"], |c| c.queue.libsqlite3_db.as_deref() == Some("/tmp/q.db")),
            (&["--libsqlite3-table=t"], |c| c.queue.libsqlite3_table == "t"),
            (&["--store-queue-on-shutdown"], |c| c.store_queue_on_shutdown),
            (&["--libpq-conninfo=host=x"], |c| c.queue.libpq_conninfo == "host=x"),
            (&["--libpq-table=t"], |c| c.queue.libpq_table == "t"),
            (&["--mysql-host=h"], |c| c.queue.mysql_host == "h"),
            (&["--mysql-port=3307"], |c| c.queue.mysql_port == 3307),
            (&["--mysql-user=u"], |c| c.queue.mysql_user.as_deref() == Some("u")),
            (&["--mysql-password=p"], |c| c.queue.mysql_password.as_deref() == Some("p")),
            (&["--mysql-db=d"], |c| c.queue.mysql_db.as_deref() == Some("d")),
            (&["--mysql-table=t"], |c| c.queue.mysql_table == "t"),
            (&["--redis-server=r"], |c| c.queue.redis_server == "r"),
            (&["--redis-port=6380"], |c| c.queue.redis_port == 6380),
            (&["--redis-password=p"], |c| c.queue.redis_password.as_deref() == Some("p")),
            (&["--redis-prefix=x"], |c| c.queue.redis_prefix == "x"),
            (&["--libmemcached-servers=a,b"], |c| c.queue.libmemcached_servers.as_deref() == Some("a,b")),
            (&["--libmemcached-prefix=x"], |c| c.queue.libmemcached_prefix == "x"),
            (&["-dR"], |c| c.daemon && c.round_robin),
            (&["-dp", "4733"], |c| c.daemon && c.port == 4733),
            (&["-j", "256"], |c| c.job_retries == 256),
        ];
        for (args, check) in cases {
            let c = run(args);
            assert!(check(&c), "{args:?} gave {c:?}");
            // The same words are also accepted by --check-args.
            let mut with_check = vec!["--check-args"];
            with_check.extend_from_slice(args);
            assert!(matches!(p(&with_check), Ok(Parsed::CheckArgs(_))), "{args:?}");
        }
    }

    /// tests/gearmand.cc (t/gearmand): `--check-args` with each option exits 0.
    #[test]
    fn t_gearmand_check_args_matrix_ok() {
        let ok: &[&[&str]] = &[
            &["--backlog=10"],
            &["-b", "10"],
            &["--daemon"],
            &["-d"],
            &["--file-descriptors=100"],
            &["-f", "100"],
            &["--help"],
            &["-h"],
            &["--job-retries=6"],
            &["-j", "6"],
            &["--log-file=/tmp/foo"],
            &["-l", "/tmp/foo"],
            &["--listen=10.0.2.1"],
            &["-L", "10.0.2.1"],
            &["--port=8080"],
            &["-p", "8080"],
            &["--pid-file=/tmp/file.pid"],
            &["-P", "/tmp/file.pid"],
            &["--protocol=http"],
            &["-r", "http"],
            &["--queue-type=builtin"],
            &["-q", "builtin"],
            &["--threads=10"],
            &["-t", "8"],
            &["--user=nobody"],
            &["-u", "nobody"],
            &["--verbose=ERROR"],
            &["--version"],
            &["-V"],
            &["--worker-wakeup=4"],
            &["-w", "4"],
            &["--round-robin"],
            &["-R"],
            &["--http-port=8090"],
            &["--job-handle-prefix=foo"],
            &["--hashtable-buckets=2000"],
            &["--keepalive"],
            &["--keepalive-idle=100"],
            &["--keepalive-interval=100"],
            &["--keepalive-count=100"],
            &["--coredump"],
            &["--syslog"],
            &["--exceptions"],
            &["--ssl"],
            &["--config-file", ""],
            // Like gearmand, unknown modules are runtime errors, not argument errors.
            &["-q", "foo"],
            &["-r", "foo"],
        ];
        for args in ok {
            let mut words = vec!["--check-args"];
            words.extend_from_slice(args);
            assert!(matches!(p(&words), Ok(Parsed::CheckArgs(_))), "{words:?}");
        }
    }

    #[test]
    fn t_gearmand_check_args_matrix_fail() {
        let cases: &[(&[&str], &str)] = &[
            (&["--verbose=BAD"], "Invalid value for --verbose supplied"),
            (&["--verbose=debug"], "Invalid value for --verbose supplied"),
            (&["--config-file"], "the required argument for option '--config-file' is missing"),
            (&["--config-file=/nonexistent/gearmand.conf"], "Could not open configuration file."),
            (&["-vvv"], "unrecognised option '-vvv'"),
            (&["-vv"], "unrecognised option '-vv'"),
            (&["-v"], "unrecognised option '-v'"),
            (&["--http-port="], "the argument for option '--http-port' should follow immediately after the equal sign"),
            (&["--job-handle-prefix="], "the argument for option '--job-handle-prefix' should follow immediately after the equal sign"),
            (&["--hashtable-buckets=0"], "hashtable-buckets has to be greater than 0"),
        ];
        for (args, msg) in cases {
            let mut words = vec!["--check-args"];
            words.extend_from_slice(args);
            assert_eq!(err(&words), *msg, "{words:?}");
        }
    }

    #[test]
    fn error_messages_match_gearmand() {
        let cases: &[(&[&str], &str)] = &[
            (&["foo"], "unrecognised option 'foo'"),
            (&["--bogus"], "unrecognised option '--bogus'"),
            (&["--bogus=1"], "unrecognised option '--bogus=1'"),
            (&["--por=4730"], "unrecognised option '--por=4730'"),
            (&["-x"], "unrecognised option '-x'"),
            (&["-dx"], "unrecognised option '-dx'"),
            (&["-v", "-v"], "unrecognised option '-v'"),
            (&["--port"], "the required argument for option '--port' is missing"),
            (&["-b"], "the required argument for option '--backlog' is missing"),
            (&["-L", "-d"], "the required argument for option '--listen' is missing"),
            (&["--verbose"], "the required argument for option '--verbose' is missing"),
            (&["--port="], "the argument for option '--port' should follow immediately after the equal sign"),
            (&["-t", "abc"], "the argument ('abc') for option '--threads' is invalid"),
            (&["-t", "1.5"], "the argument ('1.5') for option '--threads' is invalid"),
            (&["-b", "0x10"], "the argument ('0x10') for option '--backlog' is invalid"),
            (&["-b", " 5"], "the argument (' 5') for option '--backlog' is invalid"),
            (&["-b", "2147483648"], "the argument ('2147483648') for option '--backlog' is invalid"),
            (&["-j", "4294967296"], "the argument ('4294967296') for option '--job-retries' is invalid"),
            (&["-w", "abc"], "the argument ('abc') for option '--worker-wakeup' is invalid"),
            (&["-f", "abc"], "the argument ('abc') for option '--file-descriptors' is invalid"),
            (&["--keepalive-idle=abc"], "the argument ('abc') for option '--keepalive-idle' is invalid"),
            (&["--mysql-port=abc"], "the argument ('abc') for option '--mysql-port' is invalid"),
            (
                &["--hashtable-buckets=abc"],
                "the argument ('abc') for option '--hashtable-buckets' is invalid",
            ),
            (&["-p", "70000"], "the argument ('70000') for option '--port' is invalid"),
            (&["--http-port=abc"], "the argument ('abc') for option '--http-port' is invalid"),
            (&["-p", "1", "-p", "2"], "option '--port' cannot be specified more than once"),
            (&["--port", "1", "--port=2"], "option '--port' cannot be specified more than once"),
            (&["--verbose=INFO", "--verbose=DEBUG"], "option '--verbose' cannot be specified more than once"),
            (&["--daemon", "--daemon"], "option '--daemon' cannot be specified more than once"),
            (&["-d", "-d"], "option '--daemon' cannot be specified more than once"),
            (&["--daemon=1"], "option '--daemon' does not take any arguments"),
            (&["--check-args=1"], "option '--check-args' does not take any arguments"),
            (&["--help=1"], "option '--help' does not take any arguments"),
            (&["--keepalive=1"], "option '--keepalive' does not take any arguments"),
            (&["--help", "--bogus"], "unrecognised option '--bogus'"),
            (&["-V", "--verbose=BAD"], "Invalid value for --verbose supplied"),
            (&["-h", "--hashtable-buckets=0"], "hashtable-buckets has to be greater than 0"),
            (&["--hashtable-buckets=0", "--verbose=BAD"], "Invalid value for --verbose supplied"),
            (&["--max-packet-size=0"], "max-packet-size has to be greater than 0"),
        ];
        for (args, msg) in cases {
            assert_eq!(err(args), *msg, "{args:?}");
        }
    }

    #[test]
    fn help_version_check_args_precedence() {
        assert!(matches!(p(&["--check-args", "-h"]), Ok(Parsed::CheckArgs(_))));
        assert!(matches!(p(&["-V", "--check-args"]), Ok(Parsed::CheckArgs(_))));
        assert!(matches!(p(&["-V", "-h"]), Ok(Parsed::Help(_))));
        assert!(matches!(p(&["--version"]), Ok(Parsed::Version(_))));
        let Ok(Parsed::Help(help)) = p(&["--help"]) else { panic!("no help") };
        assert!(help.starts_with("Allowed options:\n\nGeneral options:\n"));
        for opt in OPTIONS.iter().filter(|o| !o.cli_only) {
            assert!(help.contains(&format!("--{} ", opt.long)), "{}", opt.long);
            if let Some(c) = opt.short {
                assert!(help.contains(&format!("-{c} [ --{} ]", opt.long)));
            }
        }
        for group in GROUPS {
            assert!(help.contains(&format!("\n{group}:\n")), "{group}");
        }
        assert!(!help.contains("check-args"));
        assert!(help.lines().all(|l| l.len() <= 80 || !l.contains(' ') || l.starts_with("  -")));
        let Ok(Parsed::Version(v)) = p(&["-V"]) else { panic!("no version") };
        assert!(v.starts_with("\ngearmand "));
        assert!(v.ends_with("compatible with gearmand 1.1.20)\n"));
        assert_eq!(v.lines().count(), 2);
    }

    #[test]
    fn env_port() {
        let port = |args: &[&str], env: &[(&str, &str)]| match p_env(args, env) {
            Ok(Parsed::Run(c)) => c.port,
            other => panic!("{other:?}"),
        };
        assert_eq!(port(&[], &[("GEARMAND_PORT", "4999")]), 4999);
        assert_eq!(port(&["-p", "4731"], &[("GEARMAND_PORT", "4999")]), 4731);
        assert_eq!(port(&["-p", ""], &[("GEARMAND_PORT", "4999")]), 4999);
        assert_eq!(port(&[], &[("GEARMAND_PORT", "")]), 4730);
        assert!(p_env(&[], &[("GEARMAND_PORT", "abc")]).is_err());
        let Ok(Parsed::Run(c)) = p_env(
            &["--ssl-key=k", "--ssl-ca-file=a"],
            &[("GEARMAND_SERVER_KEY", "/env/key"), ("GEARMAND_SERVER_PEM", "/env/pem")],
        ) else {
            panic!()
        };
        assert_eq!(c.ssl_key, "/env/key");
        assert_eq!(c.ssl_certificate, "/env/pem");
        assert_eq!(c.ssl_ca_file, "a");
    }

    #[test]
    fn config_file_merging_and_precedence() {
        let f = temp_file(
            "merge",
            "# a comment is ignored\r\n--port=47250\n-t 2 --verbose\nINFO words are ignored\n--keepalive\n--threa=3x\n",
        );
        // `--threa=3x` is an abbreviation of --threads, given twice.
        let arg = format!("--config-file={}", f.display());
        assert_eq!(err(&[&arg]), "option '--threads' cannot be specified more than once");
        std::fs::write(&f, "--threa=3x").unwrap();
        assert_eq!(err(&[&arg]), "the argument ('3x') for option '--threads' is invalid");

        std::fs::write(&f, "# comment\r\n--port=47250\n-t 2 --verbose\nINFO foo --keepalive\n--job-ret=5\n")
            .unwrap();
        let c = run(&[&arg]);
        assert_eq!(c.port, 47250);
        assert_eq!(c.threads, 2);
        assert_eq!(c.verbose, Verbose::Info);
        assert!(c.keepalive);
        assert_eq!(c.job_retries, 5);
        assert_eq!(c.config_file.as_deref(), Some(f.as_path()));

        // The command line wins, and is not a duplicate.
        let c = run(&[&arg, "-p", "47246", "--verbose=DEBUG", "--keepalive"]);
        assert_eq!(c.port, 47246);
        assert_eq!(c.verbose, Verbose::Debug);
        assert_eq!(c.threads, 2);
        // The file beats the environment for the port.
        let Ok(Parsed::Run(c)) = p_env(&[&arg], &[("GEARMAND_PORT", "4999")]) else { panic!() };
        assert_eq!(c.port, 47250);

        let cases: &[(&str, &str)] = &[
            ("--port=1 --port=2", "option '--port' cannot be specified more than once"),
            ("--por=1 --port=2", "option '--port' cannot be specified more than once"),
            ("--bogus", "unrecognised option '--bogus'"),
            ("-x", "unrecognised option '-x'"),
            ("--check-args", "unrecognised option '--check-args'"),
            ("--port\t5", "unrecognised option '--port\t5'"),
            ("--verb=BAD", "Invalid value for --verbose supplied"),
            ("--keep", "option '--keep' is ambiguous and matches '--keepalive', '--keepalive-count', '--keepalive-idle', and '--keepalive-interval'"),
            ("--ver", "option '--ver' is ambiguous and matches '--verbose', and '--version'"),
            ("--daemon=1", "option '--daemon' does not take any arguments"),
            ("-p", "the required argument for option '--port' is missing"),
            ("--port=", "the argument for option '--port' should follow immediately after the equal sign"),
        ];
        for (content, msg) in cases {
            std::fs::write(&f, content).unwrap();
            assert_eq!(err(&[&arg]), *msg, "file {content:?}");
        }
        for content in ["--vers", "-V", "--version"] {
            std::fs::write(&f, content).unwrap();
            assert!(matches!(p(&[&arg]), Ok(Parsed::Version(_))), "{content}");
        }
        std::fs::write(&f, "--help").unwrap();
        assert!(matches!(p(&[&arg]), Ok(Parsed::Help(_))));
        std::fs::write(&f, "--config-file=/nonexistent x y --daemon 5").unwrap();
        assert!(run(&[&arg]).daemon);
        let _ = std::fs::remove_file(&f);

        // A directory reads as an empty file; a missing default is ignored.
        let dir = std::env::temp_dir();
        let dir_arg = format!("--config-file={}", dir.display());
        assert_eq!(run(&[&dir_arg]).port, 4730);
        assert_eq!(err(&["--config-file=/nonexistent/x.conf", "-V"]), "Could not open configuration file.");
    }

    #[test]
    fn unsupported_options() {
        let u = |args: &[&str]| run(args).unsupported();
        assert_eq!(u(&[]), None);
        assert_eq!(u(&["-q", "BUILTIN"]), None);
        assert_eq!(u(&["-q", "foo"]).unwrap(), "Error while initializing the queue : foo");
        assert_eq!(u(&["-r", "foo"]).unwrap(), "Unknown protocol module : foo");
        assert_eq!(u(&["-r", "HTTP"]).unwrap(), "Unknown protocol module : HTTP");
        assert_eq!(u(&["-r", "http"]), None);
        assert_eq!(u(&["-q", "LibSqlite3"]), None);
        assert_eq!(u(&["-q", "Postgres"]), None);
        assert_eq!(u(&["-q", "libmemcached"]), None);
        assert_eq!(u(&["-q", "libsqlite3", "--store-queue-on-shutdown"]), None);
        assert_eq!(u(&["--ssl"]).unwrap(), "--ssl is not implemented yet");
        assert_eq!(u(&["--syslog"]).unwrap(), "--syslog is not implemented yet");
        // Implemented by prepare_process(), so not reported here.
        assert_eq!(u(&["-d", "-u", "nobody", "-f", "1024"]), None);
    }

    #[test]
    fn verbose_levels() {
        for v in Verbose::ALL {
            assert_eq!(Verbose::from_name(v.as_str()), Some(v));
            let arg = format!("--verbose={v}");
            assert_eq!(run(&[&arg]).verbose, v);
        }
        assert!(Verbose::Fatal < Verbose::Debug);
        assert_eq!(Verbose::Critical.tracing_level(), tracing::Level::ERROR);
        assert_eq!(Verbose::Warning.tracing_level(), tracing::Level::WARN);
        assert_eq!(Verbose::Notice.tracing_level(), tracing::Level::INFO);
        assert_eq!(Verbose::Debug.tracing_level(), tracing::Level::DEBUG);
    }

    #[test]
    fn pid_file() {
        let path = std::env::temp_dir().join(format!("gearman-rs-pid-{}", std::process::id()));
        let arg = format!("--pid-file={}", path.display());
        let guard = run(&[&arg]).write_pid_file().unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        assert_eq!(guard.path(), path.as_path());
        drop(guard);
        assert!(!path.exists());

        let e = run(&["-P", "/nonexistent/dir/pid"]).write_pid_file().unwrap_err();
        assert_eq!(
            e.message,
            "Could not open pid file for writing: /nonexistent/dir/pid(No such file or directory) (No such file or directory)"
        );
    }

    #[test]
    fn non_root_cannot_switch_user() {
        if nix::unistd::getuid().is_root() {
            assert_eq!(
                switch_user("no-such-user-gearman-rs").unwrap_err().message,
                "Could not find user : no-such-user-gearman-rs"
            );
        } else {
            assert_eq!(switch_user("root").unwrap_err().message, "Must be root to switch users.");
        }
    }
}
