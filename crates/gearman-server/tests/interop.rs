//! Interop tests with real, independently written Gearman peers: the C `gearman` and
//! `gearadmin` tools (libgearman), PHP's pecl gearman extension, Perl's
//! Gearman::Client / Gearman::Worker and Python's pygearman. The peer scripts live in
//! `tests/interop/` at the repository root and share one command line (see the
//! README.md there).
//!
//! Every case is a function of the server [`Kind`]; the `both!` macro turns it into
//! `ours_<case>` (our gearmand) and `real_<case>` (the real gearmand 1.1.20, the
//! oracle). Cases that the real server is known to get wrong exist as `ours_` only.
//! Every subprocess runs under a deadline and is killed (with its process group) when
//! it overruns, so a hang fails the test instead of stalling CI. A missing peer skips
//! the case, or fails it when `GEARMAN_REQUIRE_SERVICES=1`.
#![allow(missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{require, Kind, Server, PREFIX};

/// How long one client run or one worker's whole life may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long to wait for a condition that should be reached quickly.
const SHORT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// Peers

/// One peer implementation. `C` is the Debian gearman-tools CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    C,
    Php,
    Perl,
    Python,
}

impl Lang {
    const ALL: [Lang; 4] = [Lang::C, Lang::Php, Lang::Perl, Lang::Python];

    fn what(self) -> &'static str {
        match self {
            Lang::C => "the C gearman/gearadmin tools (Debian gearman-tools) and python3",
            Lang::Php => "php with the gearman extension (php-cli, php-gearman)",
            Lang::Perl => "perl Gearman::Client/Gearman::Worker (libgearman-client-perl)",
            Lang::Python => "python3 with pygearman (pip install pygearman)",
        }
    }

    /// Whether the peer is installed (probed once per test process).
    fn available(self) -> bool {
        static PROBED: OnceLock<[bool; 4]> = OnceLock::new();
        PROBED.get_or_init(|| Lang::ALL.map(Lang::probe))[self as usize]
    }

    fn probe(self) -> bool {
        let ok = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        match self {
            // worker.sh's `reverse` mode uses python3 to reverse bytes.
            Lang::C => ok("gearman", &["-H"]) && ok("gearadmin", &["--help"]) && ok("python3", &["-c", ""]),
            Lang::Php => ok("php", &["-r", "exit(extension_loaded('gearman') ? 0 : 1);"]),
            Lang::Perl => ok("perl", &["-MGearman::Client", "-MGearman::Worker", "-e", "1"]),
            Lang::Python => {
                ok("python3", &["-c", "import gearman.client, gearman.worker; gearman.GearmanClient"])
            }
        }
    }

    /// The command running this peer's `role` script (`client` or `worker`).
    fn command(self, role: &str) -> Command {
        let dir = interop_dir();
        let (prog, ext) = match self {
            Lang::C => ("bash", "sh"),
            Lang::Php => ("php", "php"),
            Lang::Perl => ("perl", "pl"),
            Lang::Python => ("python3", "py"),
        };
        let mut cmd = Command::new(prog);
        cmd.arg(dir.join(format!("{role}.{ext}")));
        cmd
    }

    fn supports_status_of(self) -> bool {
        self != Lang::C
    }
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// Checks (skip-or-fail) that every peer in `langs` is installed, then starts `kind`.
fn start(kind: Kind, langs: &[Lang]) -> Option<Server> {
    for lang in langs {
        if !require(lang.available(), lang.what()) {
            return None;
        }
    }
    Server::start(kind, &[])
}

// ---------------------------------------------------------------------------------
// Subprocesses with deadlines

/// A child process in its own process group, with stdout/stderr captured by threads.
/// Dropping it kills the whole group.
struct Proc {
    name: String,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn pump(src: impl Read + Send + 'static, dst: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut src = src;
        let mut buf = [0u8; 65536];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dst.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Proc {
    fn spawn(name: String, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let pumps = vec![
            pump(child.stdout.take().unwrap(), out.clone()),
            pump(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc { name, child, out, err, pumps, status: None }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }

    /// Output for failure messages, long lines shortened.
    fn describe(&self) -> String {
        let short = |s: String| {
            s.lines()
                .map(|l| {
                    if l.len() > 200 {
                        format!("{}...({} bytes)", &l[..200], l.len())
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n    ")
        };
        format!(
            "{}:\n  stdout:\n    {}\n  stderr:\n    {}",
            self.name,
            short(self.stdout()),
            short(String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned())
        )
    }

    fn kill_group(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    /// Waits for the process to exit; kills it and panics after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() > limit {
                self.kill_group();
                let _ = self.child.wait();
                panic!("timeout: {} still running after {limit:?}, killed\n{}", self.name, self.describe());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Leftover grandchildren (the C worker's per-job helper) may hold the pipes.
        self.kill_group();
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        self.status.unwrap()
    }

    /// Waits for exit and requires exit status 0; returns the stdout lines.
    fn finish(mut self) -> Vec<String> {
        let status = self.wait(DEADLINE);
        assert!(status.success(), "{} exited with {status}\n{}", self.name, self.describe());
        self.lines()
    }

    /// Waits until a stdout line satisfies `pred`; panics (and kills) after `limit`.
    fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if start.elapsed() > limit {
                self.kill_group();
                panic!(
                    "timeout: {} printed no expected line within {limit:?}\n{}",
                    self.name,
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timeout after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------
// Clients and workers

/// A job as the shared client CLI describes it.
#[derive(Clone, Default)]
struct Job {
    function: String,
    data: Vec<u8>,
    background: bool,
    priority: Option<&'static str>,
    unique: Option<String>,
    exceptions: bool,
}

fn job(function: &str, data: &[u8]) -> Job {
    Job { function: function.into(), data: data.to_vec(), ..Job::default() }
}

static FILES: AtomicUsize = AtomicUsize::new(0);

fn client(server: &Server, lang: Lang, j: &Job) -> Proc {
    let mut cmd = lang.command("client");
    cmd.args(["--host", "127.0.0.1", "--port", &server.port.to_string(), "--function", &j.function]);
    // Command-line arguments are limited to 128 KiB each: big payloads go through a file.
    if j.data.len() > 4096 {
        let path = server.dir.join(format!("data-{}", FILES.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, &j.data).unwrap();
        cmd.arg("--data-file").arg(path);
    } else {
        cmd.args(["--data-hex", &hex(&j.data)]);
    }
    if j.background {
        cmd.arg("--background");
    }
    if let Some(p) = j.priority {
        cmd.args(["--priority", p]);
    }
    if let Some(u) = &j.unique {
        cmd.args(["--unique", u]);
    }
    if j.exceptions {
        cmd.arg("--exceptions");
    }
    cmd.args(["--timeout", &DEADLINE.as_secs().to_string()]);
    Proc::spawn(format!("{lang:?} client ({})", j.function), cmd)
}

/// Runs a client to completion and returns its event lines (STDERR excluded).
fn run_client(server: &Server, lang: Lang, j: &Job) -> Vec<String> {
    events(&client(server, lang, j).finish())
}

/// `client --status-of HANDLE`: the `JOBSTATUS known running num/den` line.
fn status_of(server: &Server, lang: Lang, handle: &str) -> String {
    let mut cmd = lang.command("client");
    cmd.args(["--host", "127.0.0.1", "--port", &server.port.to_string(), "--status-of", handle]);
    let lines = Proc::spawn(format!("{lang:?} status-of {handle}"), cmd).finish();
    lines.into_iter().find(|l| l.starts_with("JOBSTATUS ")).expect("a JOBSTATUS line")
}

fn worker(server: &Server, lang: Lang, function: &str, mode: &str, count: u32) -> Proc {
    let mut cmd = lang.command("worker");
    cmd.args(["--host", "127.0.0.1", "--port", &server.port.to_string(), "--function", function]);
    cmd.args(["--mode", mode, "--count", &count.to_string()]);
    Proc::spawn(format!("{lang:?} worker ({function}, {mode})"), cmd)
}

/// The data (hex) of every `JOB <handle> <hex>` line a worker printed, in order.
fn jobs_seen(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut it = l.strip_prefix("JOB ")?.splitn(2, ' ');
            Some((it.next()?.to_owned(), it.next().unwrap_or("").to_owned()))
        })
        .collect()
}

const EVENTS: [&str; 7] = ["CREATED ", "DATA ", "WARNING ", "STATUS ", "COMPLETE ", "FAIL", "EXCEPTION "];

/// Event lines of a client, without STDERR (C tool) and other noise.
fn events(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| EVENTS.iter().any(|e| l.starts_with(e))).cloned().collect()
}

/// Expected foreground events: the C tool reports no CREATED in the foreground.
fn fg(lang: Lang, evs: &[String]) -> Vec<String> {
    evs.iter().filter(|e| lang != Lang::C || !e.starts_with("CREATED ")).cloned().collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rev(b: &[u8]) -> Vec<u8> {
    b.iter().rev().copied().collect()
}

fn handle(n: u32) -> String {
    format!("{PREFIX}:{n}")
}

fn created(n: u32) -> String {
    format!("CREATED {}", handle(n))
}

fn complete(b: &[u8]) -> String {
    format!("COMPLETE {}", hex(b))
}

/// assert_eq for event lists that may hold megabyte-long lines.
fn assert_events(got: &[String], want: &[String], ctx: &str) {
    if got == want {
        return;
    }
    let short = |v: &[String]| {
        v.iter()
            .map(|l| if l.len() > 120 { format!("{}...({} chars)", &l[..120], l.len()) } else { l.clone() })
            .collect::<Vec<_>>()
    };
    panic!("{ctx}: events differ\n got:  {:?}\n want: {:?}", short(got), short(want));
}

/// Runs `gearadmin` against the server: (exit code, stdout, stderr).
fn gearadmin(server: &Server, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("gearadmin");
    cmd.args(["-h", "127.0.0.1", "-p", &server.port.to_string()]).args(args);
    let mut p = Proc::spawn(format!("gearadmin {args:?}"), cmd);
    let status = p.wait(SHORT);
    let err = String::from_utf8_lossy(&p.err.lock().unwrap()).into_owned();
    (status.code().unwrap_or(-1), p.stdout(), err)
}

/// A `.`-terminated admin list from gearadmin, as rows of tab-separated fields, sorted.
fn admin_rows(server: &Server, option: &str) -> Vec<Vec<String>> {
    let (code, out, err) = gearadmin(server, &[option]);
    assert_eq!(code, 0, "gearadmin {option}: {err}");
    assert!(out.ends_with(".\n"), "gearadmin {option}: list must end with \".\\n\": {out:?}");
    let mut rows: Vec<Vec<String>> =
        out.lines().take_while(|l| *l != ".").map(|l| l.split('\t').map(str::to_owned).collect()).collect();
    rows.sort();
    rows
}

fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|s| (*s).to_owned()).collect()
}

/// The waiting-client count of GET_STATUS_UNIQUE (last field of STATUS_RES_UNIQUE).
fn unique_waiters(server: &Server, unique: &str) -> u32 {
    let mut c = server.connect();
    c.send(&support::req(41, &[unique.as_bytes()]));
    let r = c.read_packet();
    assert_eq!(r.command, 42, "GET_STATUS_UNIQUE answered with {r:?}");
    let args = r.args();
    String::from_utf8_lossy(args.last().unwrap()).parse().unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Test generation

/// `both! { case => ours_case, real_case; ... }`: one test per server kind.
macro_rules! both {
    ($($case:ident => $ours:ident, $real:ident;)*) => {$(
        #[test]
        fn $ours() {
            $case(Kind::Ours)
        }
        #[test]
        fn $real() {
            $case(Kind::Real)
        }
    )*};
}

/// `ours_only! { case => ours_case; ... }`: cases where the real 1.1.20 misbehaves.
macro_rules! ours_only {
    ($($case:ident => $ours:ident;)*) => {$(
        #[test]
        fn $ours() {
            $case(Kind::Ours)
        }
    )*};
}

/// `with_langs! { name = generic(Lang::A, Lang::B, ...); ... }`: fixed-argument cases.
macro_rules! with_langs {
    ($($name:ident = $generic:ident($($lang:ident),*);)*) => {$(
        fn $name(kind: Kind) {
            $generic(kind, $(Lang::$lang),*)
        }
    )*};
}

// ---------------------------------------------------------------------------------
// Round trips: client language X -> worker language Y, all 16 combinations.

fn round_trip(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let data = format!("hello from {c:?} to {w:?}").into_bytes();
    let wk = worker(&s, w, "rt", "reverse", 1);
    let got = run_client(&s, c, &job("rt", &data));
    assert_events(&got, &fg(c, &[created(1), complete(&rev(&data))]), &format!("{c:?} -> {w:?}"));
    let seen = jobs_seen(&wk.finish());
    assert_eq!(seen.len(), 1, "{w:?} worker ran {seen:?}");
    assert_eq!(seen[0].1, hex(&data));
    if w != Lang::C {
        assert_eq!(seen[0].0, handle(1));
    }
}

with_langs! {
    rt_c_c = round_trip(C, C);
    rt_c_php = round_trip(C, Php);
    rt_c_perl = round_trip(C, Perl);
    rt_c_python = round_trip(C, Python);
    rt_php_c = round_trip(Php, C);
    rt_php_php = round_trip(Php, Php);
    rt_php_perl = round_trip(Php, Perl);
    rt_php_python = round_trip(Php, Python);
    rt_perl_c = round_trip(Perl, C);
    rt_perl_php = round_trip(Perl, Php);
    rt_perl_perl = round_trip(Perl, Perl);
    rt_perl_python = round_trip(Perl, Python);
    rt_python_c = round_trip(Python, C);
    rt_python_php = round_trip(Python, Php);
    rt_python_perl = round_trip(Python, Perl);
    rt_python_python = round_trip(Python, Python);
}

both! {
    rt_c_c => ours_rt_c_c, real_rt_c_c;
    rt_c_php => ours_rt_c_php, real_rt_c_php;
    rt_c_perl => ours_rt_c_perl, real_rt_c_perl;
    rt_c_python => ours_rt_c_python, real_rt_c_python;
    rt_php_c => ours_rt_php_c, real_rt_php_c;
    rt_php_php => ours_rt_php_php, real_rt_php_php;
    rt_php_perl => ours_rt_php_perl, real_rt_php_perl;
    rt_php_python => ours_rt_php_python, real_rt_php_python;
    rt_perl_c => ours_rt_perl_c, real_rt_perl_c;
    rt_perl_php => ours_rt_perl_php, real_rt_perl_php;
    rt_perl_perl => ours_rt_perl_perl, real_rt_perl_perl;
    rt_perl_python => ours_rt_perl_python, real_rt_perl_python;
    rt_python_c => ours_rt_python_c, real_rt_python_c;
    rt_python_php => ours_rt_python_php, real_rt_python_php;
    rt_python_perl => ours_rt_python_perl, real_rt_python_perl;
    rt_python_python => ours_rt_python_python, real_rt_python_python;
}

// ---------------------------------------------------------------------------------
// Binary payloads: NULs and 0xff inside, then 1 MiB (with NULs) through a file.

fn binary(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let small = b"\0nul\0\0inside\xff\xfe\0".to_vec();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(big.contains(&0));
    let wk = worker(&s, w, "bin", "reverse", 2);
    let got = run_client(&s, c, &job("bin", &small));
    assert_events(&got, &fg(c, &[created(1), complete(&rev(&small))]), "NUL payload");
    let got = run_client(&s, c, &job("bin", &big));
    assert_events(&got, &fg(c, &[created(2), complete(&rev(&big))]), "1 MiB payload");
    let seen = jobs_seen(&wk.finish());
    assert_eq!(seen.len(), 2);
    assert!(seen[0].1 == hex(&small) && seen[1].1 == hex(&big), "worker got different payloads");
}

with_langs! {
    binary_c_perl = binary(C, Perl);
    binary_php_python = binary(Php, Python);
    binary_perl_c = binary(Perl, C);
    binary_python_php = binary(Python, Php);
}

both! {
    binary_c_perl => ours_binary_c_perl, real_binary_c_perl;
    binary_php_python => ours_binary_php_python, real_binary_php_python;
    binary_perl_c => ours_binary_perl_c, real_binary_perl_c;
    binary_python_php => ours_binary_python_php, real_binary_python_php;
}

// ---------------------------------------------------------------------------------
// Background job with no worker; GET_STATUS while queued; a worker started later runs it.

fn background(kind: Kind, c: Lang, w: Lang) {
    let st = if c.supports_status_of() { c } else { Lang::Php };
    let Some(s) = start(kind, &[c, w, st]) else { return };
    let data = format!("queued by {c:?}").into_bytes();
    let got = run_client(&s, c, &Job { background: true, ..job("bg", &data) });
    assert_events(&got, &[created(1)], "background submit");
    assert_eq!(status_of(&s, st, &handle(1)), "JOBSTATUS 1 0 0/0", "queued job status");
    assert_eq!(status_of(&s, st, &handle(2)), "JOBSTATUS 0 0 0/0", "unknown handle status");

    let seen = jobs_seen(&worker(&s, w, "bg", "reverse", 1).finish());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, hex(&data));
    if w != Lang::C {
        assert_eq!(seen[0].0, handle(1));
    }
    wait_until(SHORT, "the finished job to become unknown", || {
        status_of(&s, st, &handle(1)) == "JOBSTATUS 0 0 0/0"
    });
}

with_langs! {
    bg_c_python = background(C, Python);
    bg_php_c = background(Php, C);
    bg_perl_php = background(Perl, Php);
    bg_python_perl = background(Python, Perl);
}

both! {
    bg_c_python => ours_bg_c_python, real_bg_c_python;
    bg_php_c => ours_bg_php_c, real_bg_php_c;
    bg_perl_php => ours_bg_perl_php, real_bg_perl_php;
    bg_python_perl => ours_bg_python_perl, real_bg_python_perl;
}

// ---------------------------------------------------------------------------------
// Coalescing: two foreground clients, same unique, one job run, both get the result.

fn coalesce(kind: Kind, a: Lang, b: Lang, w: Lang) {
    let Some(s) = start(kind, &[a, b, w]) else { return };
    let data = b"coalesce me".to_vec();
    let j = Job { unique: Some("co-1".into()), ..job("co", &data) };
    let ca = client(&s, a, &j);
    let cb = client(&s, b, &j);
    wait_until(SHORT, "both clients to be attached to the job", || unique_waiters(&s, "co-1") == 2);
    let mut wk = worker(&s, w, "co", "reverse", 0);
    for (lang, c) in [(a, ca), (b, cb)] {
        let got = events(&c.finish());
        assert_events(&got, &fg(lang, &[created(1), complete(&rev(&data))]), &format!("{lang:?} client"));
    }
    // Give a (wrong) second run a moment to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    let seen = jobs_seen(&wk.lines());
    wk.kill_group();
    assert_eq!(seen.len(), 1, "the coalesced job must run once: {seen:?}");
}

with_langs! {
    co_php_perl = coalesce(Php, Perl, Python);
    co_c_python = coalesce(C, Python, Perl);
}

both! {
    co_php_perl => ours_co_php_perl, real_co_php_perl;
    co_c_python => ours_co_c_python, real_co_c_python;
}

// ---------------------------------------------------------------------------------
// Priorities: queue low/normal/high background jobs with no worker; one worker then
// runs them high, normal, low (FIFO within a priority).

fn priorities(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let order =
        [("low", "L1"), ("normal", "N1"), ("high", "H1"), ("low", "L2"), ("normal", "N2"), ("high", "H2")];
    for (n, (prio, tag)) in order.iter().enumerate() {
        let j = Job { background: true, priority: Some(*prio), ..job("prio", tag.as_bytes()) };
        assert_events(&run_client(&s, c, &j), &[created(n as u32 + 1)], tag);
    }
    let seen = jobs_seen(&worker(&s, w, "prio", "echo", 6).finish());
    let tags: Vec<String> = seen.iter().map(|(_, d)| d.clone()).collect();
    let want: Vec<String> = ["H1", "H2", "N1", "N2", "L1", "L2"].iter().map(|t| hex(t.as_bytes())).collect();
    assert_eq!(tags, want, "run order (hex of H1 H2 N1 N2 L1 L2)");
}

with_langs! {
    prio_c_php = priorities(C, Php);
    prio_php_perl = priorities(Php, Perl);
    prio_perl_python = priorities(Perl, Python);
    prio_python_c = priorities(Python, C);
}

both! {
    prio_c_php => ours_prio_c_php, real_prio_c_php;
    prio_php_perl => ours_prio_php_perl, real_prio_php_perl;
    prio_perl_python => ours_prio_perl_python, real_prio_perl_python;
    prio_python_c => ours_prio_python_c, real_prio_python_c;
}

// ---------------------------------------------------------------------------------
// WORK_STATUS / WORK_DATA / WORK_WARNING reaching the client, in order.

fn work_events(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let data = b"events".to_vec();
    let _wk = worker(&s, w, "ev", "events", 1);
    let lines = client(&s, c, &job("ev", &data)).finish();
    if c == Lang::C {
        // The CLI prints "25% Complete\n", the data and the result to one stdout
        // (stdio-buffered status text and unbuffered payloads interleave), and the
        // warning to stderr.
        let complete = lines.iter().find_map(|l| l.strip_prefix("COMPLETE ")).expect("COMPLETE");
        for part in [&b"25% Complete\n"[..], b"chunk", &rev(&data)] {
            assert!(complete.contains(&hex(part)), "C client output {complete} lacks {part:?}");
        }
        let stderr = lines.iter().find_map(|l| l.strip_prefix("STDERR ")).expect("STDERR");
        assert!(stderr.contains(&hex(b"careful")), "C client stderr {stderr}");
        return;
    }
    let want = [
        created(1),
        "STATUS 1/4".into(),
        format!("DATA {}", hex(b"chunk")),
        format!("WARNING {}", hex(b"careful")),
        complete(&rev(&data)),
    ];
    assert_events(&events(&lines), &want, &format!("{c:?} client, {w:?} worker"));
}

with_langs! {
    ev_c_python = work_events(C, Python);
    ev_php_perl = work_events(Php, Perl);
    ev_perl_python = work_events(Perl, Python);
    ev_python_php = work_events(Python, Php);
}

both! {
    ev_c_python => ours_ev_c_python, real_ev_c_python;
    ev_php_perl => ours_ev_php_perl, real_ev_php_perl;
    ev_perl_python => ours_ev_perl_python, real_ev_perl_python;
    ev_python_php => ours_ev_python_php, real_ev_python_php;
}

// ---------------------------------------------------------------------------------
// WORK_FAIL from every worker language.

fn work_fail(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let _wk = worker(&s, w, "fl", "fail", 1);
    let got = run_client(&s, c, &job("fl", b"please fail"));
    assert_events(&got, &fg(c, &[created(1), "FAIL".into()]), &format!("{c:?} client, {w:?} worker"));
}

with_langs! {
    fail_c_perl = work_fail(C, Perl);
    fail_php_python = work_fail(Php, Python);
    fail_perl_c = work_fail(Perl, C);
    fail_python_php = work_fail(Python, Php);
}

both! {
    fail_c_perl => ours_fail_c_perl, real_fail_c_perl;
    fail_php_python => ours_fail_php_python, real_fail_php_python;
    fail_perl_c => ours_fail_perl_c, real_fail_perl_c;
    fail_python_php => ours_fail_python_php, real_fail_python_php;
}

// ---------------------------------------------------------------------------------
// WORK_EXCEPTION. Clients that can set the `exceptions` option (PHP: addServer's third
// argument; Perl: `exceptions => 1`) receive the exception and its payload. The C CLI
// and pygearman cannot set the option (and the C worker cannot send exceptions).

fn exception_opt(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let _wk = worker(&s, w, "ex", "exception", 1);
    let got = run_client(&s, c, &Job { exceptions: true, ..job("ex", b"x") });
    let want = [created(1), format!("EXCEPTION {}", hex(b"boom"))];
    assert_events(&got, &want, &format!("{c:?} client, {w:?} worker"));
}

/// Without the option the listener must get a plain WORK_FAIL. Ours only: the real
/// 1.1.20 sends `WORK_FAIL handle\0` (PROTOCOL.md Q1, [bug]); libgearman clients (PHP,
/// the C CLI) ignore that packet and hang forever, Perl Gearman::Client croaks on the
/// unknown handle "H:test:1\0", and pygearman raises KeyError on it.
fn exception_noopt(kind: Kind, c: Lang, w: Lang) {
    let Some(s) = start(kind, &[c, w]) else { return };
    let _wk = worker(&s, w, "ex", "exception", 1);
    let got = run_client(&s, c, &job("ex", b"x"));
    assert_events(&got, &fg(c, &[created(1), "FAIL".into()]), &format!("{c:?} client, {w:?} worker"));
}

with_langs! {
    exc_php_perl = exception_opt(Php, Perl);
    exc_perl_python = exception_opt(Perl, Python);
    exc_perl_php = exception_opt(Perl, Php);
    exc_noopt_c_php = exception_noopt(C, Php);
    exc_noopt_php_perl = exception_noopt(Php, Perl);
    exc_noopt_perl_python = exception_noopt(Perl, Python);
    exc_noopt_python_php = exception_noopt(Python, Php);
}

both! {
    exc_php_perl => ours_exc_php_perl, real_exc_php_perl;
    exc_perl_python => ours_exc_perl_python, real_exc_perl_python;
    exc_perl_php => ours_exc_perl_php, real_exc_perl_php;
}

ours_only! {
    exc_noopt_c_php => ours_exc_noopt_c_php;
    exc_noopt_php_perl => ours_exc_noopt_php_perl;
    exc_noopt_perl_python => ours_exc_noopt_perl_python;
    exc_noopt_python_php => ours_exc_noopt_python_php;
}

// ---------------------------------------------------------------------------------
// A worker dies holding the job: the job is requeued (show jobs: retries 1), another
// worker runs it under the same handle, and the waiting client gets the result.

fn killed_worker(kind: Kind, dying: Lang, c: Lang, rescuer: Lang) {
    let Some(s) = start(kind, &[dying, c, rescuer]) else { return };
    let data = format!("survive {dying:?}").into_bytes();
    let mut cl = client(&s, c, &job("km", &data));
    let mut dead = worker(&s, dying, "km", "exit-midjob", 1);
    dead.wait(DEADLINE);
    assert_eq!(
        jobs_seen(&dead.lines()).len(),
        1,
        "the dying worker must have taken the job\n{}",
        dead.describe()
    );
    if Lang::C.available() {
        wait_until(SHORT, "show jobs to list the requeued job", || {
            admin_rows(&s, "--show-jobs") == vec![row(&[&handle(1), "1", "0", "0"])]
        });
    }
    assert!(!cl.exited(), "the client must still wait\n{}", cl.describe());
    let wk = worker(&s, rescuer, "km", "reverse", 1);
    cl.wait_line(DEADLINE, |l| l.starts_with("COMPLETE ") || l == "FAIL");
    let all = events(&cl.finish());
    assert_events(&all, &fg(c, &[created(1), complete(&rev(&data))]), &format!("{c:?} client"));
    let seen = jobs_seen(&wk.finish());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, hex(&data));
    if rescuer != Lang::C {
        assert_eq!(seen[0].0, handle(1));
    }
}

with_langs! {
    killed_c = killed_worker(C, Php, Perl);
    killed_php = killed_worker(Php, Perl, Python);
    killed_perl = killed_worker(Perl, Python, C);
    killed_python = killed_worker(Python, C, Php);
}

both! {
    killed_c => ours_killed_c, real_killed_c;
    killed_php => ours_killed_php, real_killed_php;
    killed_perl => ours_killed_perl, real_killed_perl;
    killed_python => ours_killed_python, real_killed_python;
}

// ---------------------------------------------------------------------------------
// gearadmin: --status, --priority-status, --workers, --show-jobs, --show-unique-jobs,
// --getpid, --server-version, --create-function/--drop-function, --cancel-job.

fn admin(kind: Kind) {
    let Some(s) = start(kind, &[Lang::C, Lang::Php, Lang::Python]) else { return };
    // Two queued background jobs (normal, high) for adm_q.
    for (n, (prio, uq)) in [("normal", "uq-1"), ("high", "uq-2")].iter().enumerate() {
        let j =
            Job { background: true, priority: Some(*prio), unique: Some((*uq).into()), ..job("adm_q", b"q") };
        assert_events(&run_client(&s, Lang::Python, &j), &[created(n as u32 + 1)], uq);
    }
    // An idle worker for adm_w.
    let _idle = worker(&s, Lang::Python, "adm_w", "echo", 0);
    // A foreground job for adm_r, held by a slow worker.
    let mut slow = worker(&s, Lang::Php, "adm_r", "sleep:60000", 0);
    let _cl = client(&s, Lang::Php, &Job { unique: Some("uq-3".into()), ..job("adm_r", b"r") });
    slow.wait_line(SHORT, |l| l.starts_with("JOB "));
    wait_until(SHORT, "the idle worker to register", || {
        admin_rows(&s, "--status")
            .iter()
            .any(|r| r[0] == "adm_w" && r.get(3).map(String::as_str) == Some("1"))
    });

    assert_eq!(
        admin_rows(&s, "--status"),
        vec![row(&["adm_q", "2", "0", "0"]), row(&["adm_r", "1", "1", "1"]), row(&["adm_w", "0", "0", "1"])],
        "gearadmin --status"
    );
    assert_eq!(
        admin_rows(&s, "--priority-status"),
        vec![
            row(&["adm_q", "1", "1", "0", "0"]),
            row(&["adm_r", "0", "0", "0", "1"]),
            row(&["adm_w", "0", "0", "0", "1"])
        ],
        "gearadmin --priority-status"
    );
    assert_eq!(
        admin_rows(&s, "--show-jobs"),
        vec![
            row(&[&handle(1), "0", "0", "1"]),
            row(&[&handle(2), "0", "0", "1"]),
            row(&[&handle(3), "0", "0", "0"])
        ],
        "gearadmin --show-jobs"
    );
    assert_eq!(
        admin_rows(&s, "--show-unique-jobs"),
        vec![row(&["uq-1"]), row(&["uq-2"]), row(&["uq-3"])],
        "gearadmin --show-unique-jobs"
    );

    // workers: "FD IP ID : F1 F2 ..." for every connection, the asking one included.
    let (code, out, _) = gearadmin(&s, &["--workers"]);
    assert_eq!(code, 0);
    assert!(out.ends_with("\n.\n"), "gearadmin --workers: {out:?}");
    let lines: Vec<&str> = out.lines().take_while(|l| *l != ".").collect();
    // Two workers, the adm_r client, gearadmin itself.
    assert!(lines.len() >= 4, "gearadmin --workers: {out:?}");
    let mut functions = BTreeSet::new();
    for l in &lines {
        let (head, funcs) = l.split_once(" :").unwrap_or_else(|| panic!("no \" :\" in {l:?}"));
        let f: Vec<&str> = head.splitn(3, ' ').collect();
        assert!(f.len() == 3 && f[0].parse::<u32>().is_ok() && f[1] == "127.0.0.1", "workers line {l:?}");
        assert_eq!(f[2], "-", "no peer here sets a client id: {l:?}");
        functions.extend(funcs.split_whitespace().map(str::to_owned));
    }
    assert_eq!(functions, BTreeSet::from(["adm_r".to_owned(), "adm_w".to_owned()]), "{out:?}");

    let (code, out, _) = gearadmin(&s, &["--getpid"]);
    assert_eq!((code, out.trim()), (0, s.child.id().to_string().as_str()), "gearadmin --getpid");
    let (code, out, _) = gearadmin(&s, &["--server-version"]);
    assert!(code == 0 && out.lines().count() == 1 && !out.trim().is_empty(), "--server-version: {out:?}");

    let (code, out, _) = gearadmin(&s, &["--create-function", "adm_new"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "gearadmin --create-function");
    assert!(admin_rows(&s, "--status").contains(&row(&["adm_new", "0", "0", "0"])));
    let (code, out, _) = gearadmin(&s, &["--drop-function", "adm_new"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "gearadmin --drop-function");
    assert!(!admin_rows(&s, "--status").iter().any(|r| r[0] == "adm_new"));
    let (code, _, err) = gearadmin(&s, &["--drop-function", "adm_nosuch"]);
    assert_eq!((code, err.as_str()), (0, "Error: function not found\r\n"), "drop unknown function");
    let (code, _, err) = gearadmin(&s, &["--cancel-job", &handle(99)]);
    assert_eq!((code, err.as_str()), (0, "Error: UNKNOWN_JOB\r\n"), "cancel unknown job");
}

both! {
    admin => ours_admin, real_admin;
}
