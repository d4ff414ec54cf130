//! Shared test harness: start a real server process (ours or the real gearmand 1.1.20)
//! on a free loopback port, and talk to it in bytes.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server binary a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This workspace's `gearmand`.
    Ours,
    /// Debian's gearmand 1.1.20 (`/usr/sbin/gearmand`), the oracle.
    Real,
}

/// Path of the real gearmand, if installed.
pub fn real_gearmand() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("REAL_GEARMAND").unwrap_or_else(|_| "/usr/sbin/gearmand".into()));
    p.exists().then_some(p)
}

/// Whether missing peers/services must fail the test instead of skipping it.
pub fn services_required() -> bool {
    std::env::var("GEARMAN_REQUIRE_SERVICES").map(|v| v == "1").unwrap_or(false)
}

/// Returns false (and prints why) when `what` is absent and tests may skip;
/// panics when `GEARMAN_REQUIRE_SERVICES=1`.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if services_required() {
        panic!("{what} is required (GEARMAN_REQUIRE_SERVICES=1) but not available");
    }
    eprintln!("SKIP: {what} is not available on this machine");
    false
}

/// A free TCP port on 127.0.0.1 (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running server process, killed on drop.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    pub child: Child,
    /// Directory for pid/log files, removed on drop.
    pub dir: PathBuf,
}

/// Handle prefix every test server uses, so handles are the same for both kinds.
pub const PREFIX: &str = "H:test";

impl Server {
    /// Starts `kind` with `-L 127.0.0.1 -p <free> --job-handle-prefix H:test` plus `args`.
    /// Returns `None` (after `require`) when the real gearmand is not installed.
    pub fn start(kind: Kind, args: &[&str]) -> Option<Server> {
        let bin = match kind {
            Kind::Ours => PathBuf::from(env!("CARGO_BIN_EXE_gearmand")),
            Kind::Real => match real_gearmand() {
                Some(p) => p,
                None => {
                    require(false, "the real gearmand (/usr/sbin/gearmand, Debian gearman-job-server)");
                    return None;
                }
            },
        };
        for _attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("gm-test-{}-{}", std::process::id(), port));
            std::fs::create_dir_all(&dir).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["-L", "127.0.0.1", "-p", &port.to_string(), "--job-handle-prefix", PREFIX]);
            cmd.arg(format!("--pid-file={}", dir.join("gearmand.pid").display()));
            cmd.arg(format!("--log-file={}", dir.join("gearmand.log").display()));
            cmd.args(args);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            let child = cmd.spawn().expect("spawn gearmand");
            let mut server = Server { kind, port, child, dir };
            if server.wait_ready(Duration::from_secs(10)) {
                return Some(server);
            }
            // Port raced with another test or the server failed: try again.
        }
        panic!("{kind:?} gearmand did not start");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                // A full round trip proves the server is serving, not just listening.
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                if s.write_all(b"version\n").is_ok() {
                    let mut b = [0u8; 64];
                    if matches!(s.read(&mut b), Ok(n) if n > 0) {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `host:port` for client tools.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new byte-level connection.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `kind` started with `args`, ours with a monitor port too (returned with it, for
/// [`metric`]); `None` when the real gearmand is not installed.
pub fn start_with_monitor(kind: Kind, args: &[&str]) -> Option<(Server, Option<u16>)> {
    match kind {
        Kind::Ours => {
            let port = free_port();
            let port_arg = port.to_string();
            let args: Vec<&str> = args.iter().copied().chain(["--monitor-port", &port_arg]).collect();
            Some((Server::start(kind, &args)?, Some(port)))
        }
        Kind::Real => Some((Server::start(kind, args)?, None)),
    }
}

/// The value of counter `name` in ours' `/metrics` on monitor port `port`.
pub fn metric(port: u16, name: &str) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let value = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
    value.unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Encodes a request packet: `\0REQ`, type, length, args joined by NUL.
pub fn req(command: u32, args: &[&[u8]]) -> Vec<u8> {
    packet(b"\0REQ", command, args)
}

/// Encodes a response packet, as the server should send it.
pub fn res(command: u32, args: &[&[u8]]) -> Vec<u8> {
    packet(b"\0RES", command, args)
}

fn packet(magic: &[u8; 4], command: u32, args: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = args.join(&0u8);
    let mut v = Vec::with_capacity(12 + body.len());
    v.extend_from_slice(magic);
    v.extend_from_slice(&command.to_be_bytes());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    v
}

/// A decoded response packet as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Res {
    pub command: u32,
    pub body: Vec<u8>,
}

impl Res {
    /// Body split on NUL.
    pub fn args(&self) -> Vec<Vec<u8>> {
        self.body.split(|&b| b == 0).map(|s| s.to_vec()).collect()
    }
}

/// One client connection with blocking, time-limited reads.
pub struct Conn {
    pub stream: TcpStream,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream.write_all(bytes).expect("send");
        self
    }

    /// Reads exactly `want.len()` bytes and asserts they equal `want`.
    pub fn expect(&mut self, want: &[u8]) -> &mut Self {
        let got = self.read_exact(want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "\n raw got:  {got:02x?}\n raw want: {want:02x?}"
        );
        self
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        self.stream.read_exact(&mut got).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        got
    }

    /// Reads one binary response packet.
    pub fn read_packet(&mut self) -> Res {
        let h = self.read_exact(12);
        assert_eq!(&h[..4], b"\0RES", "bad magic in {h:02x?}");
        let command = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let len = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
        Res { command, body: self.read_exact(len) }
    }

    /// Reads an admin text reply up to and including the first line ending in `end`.
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(end) {
            match self.stream.read(&mut b) {
                Ok(0) => break,
                Ok(_) => out.push(b[0]),
                Err(e) => panic!("read_until: {e}; have {:?}", String::from_utf8_lossy(&out)),
            }
        }
        out
    }

    /// Sends an admin command and reads a `.\n`-terminated list reply.
    pub fn admin_list(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let out = self.read_until(b"\n.\n");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends an admin command and reads a one-line reply (ending in `\n`).
    pub fn admin_line(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        String::from_utf8_lossy(&self.read_until(b"\n")).into_owned()
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1];
        let r = self.stream.read(&mut b);
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match r {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?} {:02x?}", b),
        }
    }

    /// Asserts that the server closes the connection (EOF or reset) within 5 s,
    /// after sending nothing.
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected close, got {other:?} {:02x?}", b),
        }
    }
}
