//! The server as a process: signals (SIGTERM, SIGINT, SIGUSR1 drain, SIGHUP log
//! reopen) and the pid file, on both our gearmand and the real one where it agrees.
#![allow(missing_docs)]

mod support;
#[macro_use]
mod wire;

use std::time::Duration;

use support::{Kind, Server};
use wire::*;

fn pid_file(s: &Server) -> std::path::PathBuf {
    s.dir.join("gearmand.pid")
}

fn case_sigterm_exits_zero(kind: Kind) {
    let Some(mut s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.sync();
    assert!(pid_file(&s).exists(), "pid file written");
    let pid: u32 = std::fs::read_to_string(pid_file(&s)).unwrap().trim().parse().unwrap();
    assert_eq!(pid, s.child.id());
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(!pid_file(&s).exists(), "pid file removed at exit");
}
both!(case_sigterm_exits_zero, ours_sigterm_exits_zero, real_sigterm_exits_zero);

fn case_sigint_exits_zero(kind: Kind) {
    let Some(mut s) = start(kind, &[]) else { return };
    s.connect().sync();
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
}
both!(case_sigint_exits_zero, ours_sigint_exits_zero, real_sigint_exits_zero);

/// SIGUSR1: new connections are refused at once, existing ones keep being served
/// (new submits included), and the process exits once no job is left.
fn case_sigusr1_drains(kind: Kind) {
    let Some(mut s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut w = s.connect();
    let h1 = c.submit(SUBMIT_JOB_BG, "drain", "", "one");
    w.can_do("drain").sync();
    s.signal("USR1");
    // Listening sockets close right away.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting after SIGUSR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Existing connections still work, and may add work.
    let h2 = c.submit(SUBMIT_JOB_BG, "drain", "", "two");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "drain", "one"]);
    w.req(WORK_COMPLETE, &[&h1, ""]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "drain", "two"]);
    assert_eq!(s.wait_exit(Duration::from_millis(500)), None, "exited with a job left");
    w.req(WORK_COMPLETE, &[&h2, ""]);
    if matches!(kind, Kind::Real) {
        // gearmand notices the empty queue only on a later event of its main loop,
        // which sometimes never comes while the connections idle: closing them gives
        // it one. Ours must exit with them still open.
        w.sync();
        drop((c, w));
    }
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
}
both!(case_sigusr1_drains, ours_sigusr1_drains, real_sigusr1_drains);

/// SIGHUP reopens the log file: after the file is moved away, a new one appears and
/// the old one gets the notice line.
fn case_sighup_reopens_log(kind: Kind) {
    let Some(s) = start(kind, &["--verbose", "INFO"]) else { return };
    s.connect().sync();
    let log = s.dir.join("gearmand.log");
    let moved = s.dir.join("gearmand.log.1");
    std::fs::rename(&log, &moved).unwrap();
    s.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(std::time::Instant::now() < deadline, "log not reopened after SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Something logged after the reopen goes to the new file.
    s.connect().sync();
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.contains("NOTICE SIGHUP, reopening log file"), "old log: {old}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let new = std::fs::read_to_string(&log).unwrap();
        if new.contains("Accepted connection") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new log stays empty: {new:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
both!(case_sighup_reopens_log, ours_sighup_reopens_log, real_sighup_reopens_log);

/// `-t` threads: a server with 1 thread (tokio's single-threaded scheduler), 3, and
/// one per CPU serves many connections at once, and stops on SIGTERM.
#[test]
fn ours_thread_counts_serve_concurrently() {
    for t in ["1", "3", "0"] {
        let Some(mut s) = start(Kind::Ours, &["-t", t]) else { return };
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let port = s.port;
                std::thread::spawn(move || {
                    let mut c = support::Conn::connect(port);
                    for j in 0..50 {
                        let d = format!("{i}-{j}");
                        c.req(ECHO_REQ, &[&d]).want(ECHO_RES, &[&d]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        s.signal("TERM");
        assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "-t {t} exits on SIGTERM");
    }
}
