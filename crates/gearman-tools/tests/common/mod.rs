//! Test support: servers (ours in-process, the real gearmand as a subprocess), bounded
//! subprocess runs, and output normalisation for comparing our tools with the C ones.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gearman_server::{Server, ServerConfig, ServerHandle};

pub(crate) const GEARMAND: &str = "/usr/sbin/gearmand";
pub(crate) const C_GEARMAN: &str = "/usr/bin/gearman";
pub(crate) const C_GEARADMIN: &str = "/usr/bin/gearadmin";
pub(crate) const OUR_GEARMAN: &str = env!("CARGO_BIN_EXE_gearman");
pub(crate) const OUR_GEARADMIN: &str = env!("CARGO_BIN_EXE_gearadmin");

/// Limit on every subprocess.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Whether `path` is installed; otherwise prints SKIP, or panics with
/// GEARMAN_REQUIRE_SERVICES=1.
pub(crate) fn have(path: &str, test: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("GEARMAN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{path} is not installed and GEARMAN_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIP: {test}: {path} not installed");
    false
}

/// A running job server, stopped on drop.
pub(crate) struct TestServer {
    /// `ours` or `gearmand`.
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    handle: Option<ServerHandle>,
    child: Option<Child>,
    pid_file: Option<std::path::PathBuf>,
}

impl TestServer {
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `-h 127.0.0.1 -p PORT` for the tools.
    pub(crate) fn hp(&self) -> Vec<String> {
        vec!["-h".into(), "127.0.0.1".into(), "-p".into(), self.port.to_string()]
    }

    /// Our server, in-process on `rt`, on a free port.
    pub(crate) fn ours(rt: &tokio::runtime::Runtime) -> TestServer {
        let config = ServerConfig { port: 0, listen: Some("127.0.0.1".into()), ..Default::default() };
        let server = rt.block_on(Server::bind(config)).expect("bind our server");
        let port = server.local_addrs().first().expect("bound address").port();
        let handle = server.handle();
        rt.spawn(server.run());
        TestServer { name: "ours", port, handle: Some(handle), child: None, pid_file: None }
    }

    /// The real gearmand, or `None` after SKIP.
    pub(crate) fn gearmand(test: &str) -> Option<TestServer> {
        if !have(GEARMAND, test) {
            return None;
        }
        let port = free_port();
        let pid_file =
            std::env::temp_dir().join(format!("gearman-tools-test-{}-{port}.pid", std::process::id()));
        let child = Command::new(GEARMAND)
            .args(["-L", "127.0.0.1", "-p", &port.to_string(), "-l", "none"])
            .arg(format!("--pid-file={}", pid_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gearmand");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "gearmand did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(TestServer {
            name: "gearmand",
            port,
            handle: None,
            child: Some(child),
            pid_file: Some(pid_file),
        })
    }

    /// Ours, plus the real gearmand when installed.
    pub(crate) fn all(rt: &tokio::runtime::Runtime, test: &str) -> Vec<TestServer> {
        let mut v = vec![TestServer::ours(rt)];
        v.extend(TestServer::gearmand(test));
        v
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = self.pid_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// What a finished subprocess left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Out {
    /// Exit code; `None` when killed by a signal.
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A subprocess whose output is collected in the background; killed on drop.
pub(crate) struct Running {
    child: Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// Starts `prog args`, feeding `stdin` (or nothing, then closing it).
pub(crate) fn start(prog: &str, args: &[String], stdin: Option<&[u8]>) -> Running {
    let mut child = Command::new(prog)
        .args(args)
        .env_remove("GEARMAN_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {prog}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.unwrap_or_default().to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    Running { child, out: Some(out), err: Some(err) }
}

impl Running {
    /// Waits up to `limit`; kills the process (and panics) when it takes longer.
    pub(crate) fn finish(mut self, limit: Duration) -> Out {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("subprocess did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().expect("reader")).unwrap_or_default()
        };
        let stdout = join(self.out.take());
        let stderr = join(self.err.take());
        Out {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `prog args` to completion (bounded by [`RUN_LIMIT`]).
pub(crate) fn run(prog: &str, args: &[String], stdin: Option<&[u8]>) -> Out {
    start(prog, args, stdin).finish(RUN_LIMIT)
}

/// `["a", "b"]` as owned strings.
pub(crate) fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Replaces job handles (`H:host:N`) with `H:X`, which differ between runs.
pub(crate) fn normalize_handles(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find("H:") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let host_end = after.find(':').filter(|&i| !after[..i].contains(char::is_whitespace));
        match host_end {
            Some(i) if after[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let digits = after[i + 1..].chars().take_while(char::is_ascii_digit).count();
                out.push_str("H:X");
                rest = &after[i + 1 + digits..];
            }
            _ => {
                out.push_str("H:");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
