//! Helpers shared by the whole-server conformance tests (`protocol.rs`, `admin.rs`,
//! `hostile.rs`, `lifecycle.rs`): packet type numbers, string-based packet builders,
//! and a few connection conveniences layered on `support::Conn`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use crate::support::{req, res, Conn, Kind, Server, PREFIX};
use std::io::Read;
use std::time::{Duration, Instant};

pub const CAN_DO: u32 = 1;
pub const CANT_DO: u32 = 2;
pub const RESET_ABILITIES: u32 = 3;
pub const PRE_SLEEP: u32 = 4;
pub const UNUSED_5: u32 = 5;
pub const NOOP: u32 = 6;
pub const SUBMIT_JOB: u32 = 7;
pub const JOB_CREATED: u32 = 8;
pub const GRAB_JOB: u32 = 9;
pub const NO_JOB: u32 = 10;
pub const JOB_ASSIGN: u32 = 11;
pub const WORK_STATUS: u32 = 12;
pub const WORK_COMPLETE: u32 = 13;
pub const WORK_FAIL: u32 = 14;
pub const GET_STATUS: u32 = 15;
pub const ECHO_REQ: u32 = 16;
pub const ECHO_RES: u32 = 17;
pub const SUBMIT_JOB_BG: u32 = 18;
pub const ERROR: u32 = 19;
pub const STATUS_RES: u32 = 20;
pub const SUBMIT_JOB_HIGH: u32 = 21;
pub const SET_CLIENT_ID: u32 = 22;
pub const CAN_DO_TIMEOUT: u32 = 23;
pub const ALL_YOURS: u32 = 24;
pub const WORK_EXCEPTION: u32 = 25;
pub const OPTION_REQ: u32 = 26;
pub const OPTION_RES: u32 = 27;
pub const WORK_DATA: u32 = 28;
pub const WORK_WARNING: u32 = 29;
pub const GRAB_JOB_UNIQ: u32 = 30;
pub const JOB_ASSIGN_UNIQ: u32 = 31;
pub const SUBMIT_JOB_HIGH_BG: u32 = 32;
pub const SUBMIT_JOB_LOW: u32 = 33;
pub const SUBMIT_JOB_LOW_BG: u32 = 34;
pub const SUBMIT_JOB_SCHED: u32 = 35;
pub const SUBMIT_JOB_EPOCH: u32 = 36;
pub const SUBMIT_REDUCE_JOB: u32 = 37;
pub const SUBMIT_REDUCE_JOB_BACKGROUND: u32 = 38;
pub const GRAB_JOB_ALL: u32 = 39;
pub const JOB_ASSIGN_ALL: u32 = 40;
pub const GET_STATUS_UNIQUE: u32 = 41;
pub const STATUS_RES_UNIQUE: u32 = 42;

/// Generates `#[test] fn $ours()` and `#[test] fn $real()` that run `$case(Kind)`.
macro_rules! both {
    ($case:ident, $ours:ident, $real:ident) => {
        #[test]
        fn $ours() {
            $case(Kind::Ours)
        }
        #[test]
        fn $real() {
            $case(Kind::Real)
        }
    };
}

/// A request packet from string arguments (strings may contain NULs).
pub fn rq(command: u32, args: &[&str]) -> Vec<u8> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    req(command, &a)
}

/// A response packet from string arguments.
pub fn rs(command: u32, args: &[&str]) -> Vec<u8> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    res(command, &a)
}

/// A raw 12-byte header with an arbitrary magic, type and declared length.
pub fn header(magic: &[u8; 4], command: u32, len: u32) -> Vec<u8> {
    let mut v = magic.to_vec();
    v.extend_from_slice(&command.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// The n-th job handle the test servers hand out.
pub fn h(n: u32) -> String {
    format!("{PREFIX}:{n}")
}

/// Starts a server, or returns `None` when the kind is unavailable (skip).
pub fn start(kind: Kind, args: &[&str]) -> Option<Server> {
    Server::start(kind, args)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub trait ConnExt {
    /// Sends a request built from string args.
    fn req(&mut self, command: u32, args: &[&str]) -> &mut Self;
    /// Expects a response byte-exact.
    fn want(&mut self, command: u32, args: &[&str]) -> &mut Self;
    /// Round-trips an ECHO so every earlier packet of this connection is processed.
    fn sync(&mut self) -> &mut Self;
    /// Sends a SUBMIT_* and returns the handle of the JOB_CREATED reply.
    fn submit(&mut self, command: u32, function: &str, unique: &str, data: &str) -> String;
    /// CAN_DO plus sync.
    fn can_do(&mut self, function: &str) -> &mut Self;
    /// Expects an ERROR packet with exactly this code and text.
    fn want_error(&mut self, code: &str, text: &str) -> &mut Self;
    /// Expects an ERROR packet with exactly this code and some non-empty text.
    fn want_error_code(&mut self, code: &str) -> &mut Self;
    /// Expects a packet of this type and returns its body.
    fn want_type(&mut self, command: u32) -> Vec<u8>;
    /// Sends raw admin text and reads until `end`.
    fn text(&mut self, line: &str, end: &str) -> String;
    /// Sends an admin list command (`\r\n`) and reads the reply up to the `.` line.
    /// (Unlike `Conn::admin_list`, this also ends on an empty list `.\n`.)
    fn list(&mut self, line: &str) -> String;
    /// Asserts that the server closes the connection within 5 s; bytes sent before
    /// the close are returned (callers usually assert they are empty).
    fn closed_after(&mut self) -> Vec<u8>;
}

impl ConnExt for Conn {
    fn req(&mut self, command: u32, args: &[&str]) -> &mut Self {
        self.send(&rq(command, args))
    }
    fn want(&mut self, command: u32, args: &[&str]) -> &mut Self {
        self.expect(&rs(command, args))
    }
    fn sync(&mut self) -> &mut Self {
        self.req(ECHO_REQ, &["sync"]).want(ECHO_RES, &["sync"])
    }
    fn submit(&mut self, command: u32, function: &str, unique: &str, data: &str) -> String {
        self.req(command, &[function, unique, data]);
        let p = self.read_packet();
        assert_eq!(
            p.command,
            JOB_CREATED,
            "expected JOB_CREATED, got {} {:?}",
            p.command,
            String::from_utf8_lossy(&p.body)
        );
        String::from_utf8(p.body).unwrap()
    }
    fn can_do(&mut self, function: &str) -> &mut Self {
        self.req(CAN_DO, &[function]).sync()
    }
    fn want_error(&mut self, code: &str, text: &str) -> &mut Self {
        self.want(ERROR, &[code, text])
    }
    fn want_error_code(&mut self, code: &str) -> &mut Self {
        let p = self.read_packet();
        assert_eq!(p.command, ERROR, "expected ERROR, got {p:?}");
        let a = p.args();
        assert_eq!(String::from_utf8_lossy(&a[0]), code, "error code in {p:?}");
        assert!(a.len() >= 2 && !a[1].is_empty(), "error text empty in {p:?}");
        self
    }
    fn want_type(&mut self, command: u32) -> Vec<u8> {
        let p = self.read_packet();
        assert_eq!(
            p.command,
            command,
            "unexpected packet {} {:?}",
            p.command,
            String::from_utf8_lossy(&p.body)
        );
        p.body
    }
    fn text(&mut self, line: &str, end: &str) -> String {
        self.send(line.as_bytes());
        String::from_utf8_lossy(&self.read_until(end.as_bytes())).into_owned()
    }
    fn list(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !(out == b".\n" || out.ends_with(b"\n.\n")) {
            match self.stream.read(&mut b) {
                Ok(0) => panic!("closed during list; have {:?}", String::from_utf8_lossy(&out)),
                Ok(_) => out.push(b[0]),
                Err(e) => panic!("list {line:?}: {e}; have {:?}", String::from_utf8_lossy(&out)),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    fn closed_after(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 4096];
        let start = Instant::now();
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("expected close, got {e} after {:?}", String::from_utf8_lossy(&out)),
            }
            assert!(start.elapsed() < Duration::from_secs(5), "connection not closed");
        }
    }
}

/// Sorted data rows of an admin list reply (without the final `.`).
pub fn rows(list: &str) -> Vec<String> {
    assert!(list.ends_with(".\n"), "list not terminated: {list:?}");
    let body = &list[..list.len() - 2];
    let mut v: Vec<String> = body.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// `workers` rows with the fd column replaced by `FD`, sorted.
pub fn worker_rows(list: &str) -> Vec<String> {
    let mut v: Vec<String> = rows(list)
        .into_iter()
        .map(|r| match r.split_once(' ') {
            Some((_fd, rest)) => format!("FD {rest}"),
            None => r,
        })
        .collect();
    v.sort();
    v
}

/// Polls `workers` on `admin` until it lists `n` connections (`admin` included).
/// Bounded to 5 s.
pub fn wait_connections(admin: &mut Conn, n: usize) {
    wait_list(admin, "workers", |r| r.len() == n);
}

/// Polls the admin list `what` on `admin` until `pred` holds on its sorted rows, and
/// returns them. Bounded to 5 s.
pub fn wait_list(admin: &mut Conn, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let r = rows(&admin.list(what));
        if pred(&r) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{what} never matched: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the admin list `what` on a new connection until `pred` holds. Bounded to 5 s.
pub fn wait_status(s: &Server, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    wait_list(&mut s.connect(), what, pred)
}

/// Tiny deterministic PRNG (xorshift64*) for garbage generation.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            *b = (self.next_u64() >> 32) as u8;
        }
    }
}
