//! `gearman`: submit jobs (client mode) or run a command per job (worker mode, `-w`),
//! flag-compatible with gearmand 1.1.20's tool. Unlike the C tool, failures give a
//! non-zero exit status (see [`exit`]).

mod client;
mod worker;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

/// Exit statuses.
mod exit {
    /// Every job completed.
    pub(crate) const OK: u8 = 0;
    /// A job failed (WORK_FAIL / exception), a usage error, or the pid file could not be written.
    pub(crate) const FAILED: u8 = 1;
    /// No server could be reached, or the connection was lost or broken.
    pub(crate) const CONNECTION: u8 = 2;
    /// The `-t` timeout passed.
    pub(crate) const TIMEOUT: u8 = 3;
}

/// The usage text after the first line, as the C tool prints it (`{0}` = program name).
const USAGE: &str = "\
Client mode: {0} [options] [<data>]
Worker mode: {0} -w [options] [<command> [<args> ...]]

Common options to both client and worker modes.
\t-f <function> - Function name to use for jobs (can give many)
\t-h <host>     - Job server host
\t-H            - Print this help menu
\t-v            - Print diagnostic information to stdout(false)
\t-p <port>     - Job server port
\t-t <timeout>  - Timeout in milliseconds
\t-i <pidfile>  - Create a pidfile for the process
\t-S            - Enable SSL connections

Client options:
\t-b            - Run jobs in the background(false)
\t-I            - Run jobs as high priority
\t-L            - Run jobs as low priority
\t-n            - Run one job per line(false)
\t-N            - Same as -n, but strip off the newline(false)
\t-P            - Prefix all output lines with functions names
\t-s            - Send job without reading from standard input
\t-u <unique>   - Unique key to use for job

Worker options:
\t-c <count>    - Number of jobs for worker to run before exiting
\t-n            - Send data packet for each line(false)
\t-N            - Same as -n, but strip off the newline(false)
\t-w            - Run in worker mode(false)
";

/// Only in `-H`: where this tool deliberately differs from the C one.
const EXIT_STATUS: &str = "
Exit status (the C gearman exits 0 on most errors; this one does not):
\t0 - every job completed (client), or the worker ran its -c rounds
\t1 - a job failed, usage error, or the pid file could not be written
\t2 - no job server could be reached, or the connection was lost
\t3 - the -t timeout passed
";

#[derive(Parser, Debug)]
#[command(name = "gearman", disable_help_flag = true, disable_version_flag = true, args_override_self = true)]
struct Cli {
    #[arg(short = 'f', action = ArgAction::Append)]
    functions: Vec<String>,
    #[arg(short = 'h')]
    host: Option<String>,
    #[arg(short = 'p')]
    port: Option<u16>,
    #[arg(short = 't')]
    timeout: Option<i64>,
    #[arg(short = 'i')]
    pid_file: Option<PathBuf>,
    #[arg(short = 'S')]
    ssl: bool,
    #[arg(short = 'v')]
    verbose: bool,
    #[arg(short = 'H', long = "help")]
    help: bool,
    #[arg(short = 'd')]
    daemon: bool,
    #[arg(short = 'b')]
    background: bool,
    #[arg(short = 'I')]
    high: bool,
    #[arg(short = 'L')]
    low: bool,
    #[arg(short = 'n')]
    per_line: bool,
    #[arg(short = 'N')]
    strip_newline: bool,
    #[arg(short = 'P')]
    prefix: bool,
    #[arg(short = 's')]
    no_input: bool,
    #[arg(short = 'u')]
    unique: Option<String>,
    #[arg(short = 'w')]
    worker: bool,
    #[arg(short = 'c')]
    count: Option<u64>,
    /// Client: one job per word. Worker: the command and its arguments.
    rest: Vec<OsString>,
}

/// Priority of submitted jobs; with both `-I` and `-L`, the one given last wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prio {
    /// `-L`.
    Low,
    /// Default.
    Normal,
    /// `-I`.
    High,
}

/// The parsed command line, shared by both modes.
#[derive(Debug)]
pub(crate) struct Args {
    /// `-f`, in command line order.
    pub(crate) functions: Vec<String>,
    /// Servers as `host:port`.
    pub(crate) servers: Vec<String>,
    /// `-t`: limit on each wait for the server.
    pub(crate) timeout: Option<Duration>,
    /// `-v`.
    pub(crate) verbose: bool,
    /// `-b`.
    pub(crate) background: bool,
    /// `-I` / `-L`.
    pub(crate) priority: Prio,
    /// `-n` or `-N`.
    pub(crate) per_line: bool,
    /// `-N`.
    pub(crate) strip_newline: bool,
    /// `-P`.
    pub(crate) prefix: bool,
    /// `-s`.
    pub(crate) no_input: bool,
    /// `-u`.
    pub(crate) unique: Option<String>,
    /// `-c` (0 = forever).
    pub(crate) count: u64,
    /// Positional words.
    pub(crate) rest: Vec<OsString>,
}

fn program() -> String {
    std::env::args().next().unwrap_or_else(|| "gearman".into())
}

fn usage_text() -> String {
    USAGE.replace("{0}", &program())
}

/// The C tool's usage error: to stderr, exit 1.
fn usage_error(msg: &str) -> ExitCode {
    eprint!("\n{}\tError in usage({msg}).\n\n{}", program(), usage_text());
    ExitCode::from(exit::FAILED)
}

/// Formats `host:port`, bracketing a bare IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `GEARMAN_SERVER=host[:port][,host[:port]...]` replaces `-h`/`-p`, as in libgearman.
fn servers(cli: &Cli) -> Vec<String> {
    if let Ok(env) = std::env::var("GEARMAN_SERVER") {
        let list: Vec<String> =
            env.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        if !list.is_empty() {
            return list;
        }
    }
    vec![host_port(cli.host.as_deref().unwrap_or("localhost"), cli.port.unwrap_or(4730))]
}

fn parse() -> Result<(Cli, clap::ArgMatches), clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Writes the pid file; removed again when the guard drops.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: PathBuf) -> std::io::Result<PidFile> {
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `-d`: start this program again detached (own process group, stdio on /dev/null) and
/// exit. Re-running instead of fork() keeps the tool free of unsafe code.
fn daemonize() -> ExitCode {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(DAEMON_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gearman: could not run in the background: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Set in the re-run child of `-d`, so it does not detach again.
const DAEMON_ENV: &str = "GEARMAN_TOOLS_DAEMONIZED";

fn main() -> ExitCode {
    let (cli, matches) = match parse() {
        Ok(p) => p,
        Err(e) => {
            let msg = e.kind().to_string();
            return usage_error(&msg);
        }
    };
    if cli.help {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}{EXIT_STATUS}", usage_text());
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    if cli.functions.is_empty() {
        return usage_error("No Functions were provided");
    }
    if cli.ssl {
        eprintln!("gearman: SSL connections are not supported by this gearman");
        return ExitCode::from(exit::FAILED);
    }
    if cli.daemon && std::env::var_os(DAEMON_ENV).is_none() {
        return daemonize();
    }
    let last = |id: &str| matches.indices_of(id).and_then(|i| i.max());
    let priority = match (cli.high, cli.low) {
        (true, true) if last("high") > last("low") => Prio::High,
        (true, true) | (false, true) => Prio::Low,
        (true, false) => Prio::High,
        (false, false) => Prio::Normal,
    };
    let timeout = match cli.timeout {
        Some(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        _ => None,
    };
    let _pid_file = match cli.pid_file.clone().map(PidFile::create).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gearman: could not write the pid file: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let args = Args {
        servers: servers(&cli),
        functions: cli.functions,
        timeout,
        verbose: cli.verbose,
        background: cli.background,
        priority,
        per_line: cli.per_line || cli.strip_newline,
        strip_newline: cli.strip_newline,
        prefix: cli.prefix,
        no_input: cli.no_input,
        unique: cli.unique,
        count: cli.count.unwrap_or(0),
        rest: cli.rest,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gearman: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = if cli.worker { rt.block_on(worker::run(args)) } else { rt.block_on(client::run(args)) };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_mix_with_words_like_getopt() {
        let m =
            Cli::command().try_get_matches_from(["gearman", "-f", "a", "x", "-b", "-v", "y"]).expect("ok");
        let cli = Cli::from_arg_matches(&m).expect("cli");
        assert!(cli.background && cli.verbose);
        assert_eq!(cli.rest, [OsString::from("x"), OsString::from("y")]);
    }

    #[test]
    fn worker_command_after_double_dash() {
        let m = Cli::command()
            .try_get_matches_from(["gearman", "-w", "-f", "a", "-f", "b", "--", "ls", "-l"])
            .expect("ok");
        let cli = Cli::from_arg_matches(&m).expect("cli");
        assert_eq!(cli.functions, ["a", "b"]);
        assert_eq!(cli.rest, [OsString::from("ls"), OsString::from("-l")]);
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_port("localhost", 4730), "localhost:4730");
        assert_eq!(host_port("::1", 1), "[::1]:1");
    }
}
