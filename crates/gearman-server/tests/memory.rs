//! The gearmand binary's memory, read from /proc: a burst of large jobs reuses the
//! pages the previous burst freed instead of faulting in fresh ones, and the pages go
//! back to the system once the server has been still for a few seconds.
#![cfg(target_os = "linux")]
#![allow(missing_docs)]

mod support;

use std::time::{Duration, Instant};

use support::{req, Conn, Kind, Server};

const CAN_DO: u32 = 1;
const JOB_CREATED: u32 = 8;
const GRAB_JOB: u32 = 9;
const JOB_ASSIGN: u32 = 11;
const WORK_COMPLETE: u32 = 13;
const SUBMIT_JOB_BG: u32 = 18;

const JOBS: usize = 1500;
const PAYLOAD: usize = 64 * 1024;
const MIB: u64 = 1 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().expect("number") * 1024
}

fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after "(comm)": state is the first, minflt the eighth.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ').nth(7).expect("minflt").parse().expect("number")
}

/// Queues `JOBS` background jobs of `PAYLOAD` bytes, all before any is taken, then
/// has one worker take and complete each. Returns the server's minor page faults.
fn burst(s: &Server, client: &mut Conn, worker: &mut Conn) -> u64 {
    let pid = s.child.id();
    let before = minor_faults(pid);
    let data = vec![b'x'; PAYLOAD];
    let submits: Vec<u8> = (0..JOBS).flat_map(|_| req(SUBMIT_JOB_BG, &[b"mem", b"", &data])).collect();
    client.send(&submits);
    for _ in 0..JOBS {
        assert_eq!(client.read_packet().command, JOB_CREATED);
    }
    for _ in 0..JOBS {
        worker.send(&req(GRAB_JOB, &[]));
        let assigned = worker.read_packet();
        assert_eq!(assigned.command, JOB_ASSIGN);
        let args = assigned.args();
        assert_eq!(args[2].len(), PAYLOAD, "the job's data came back whole");
        worker.send(&req(WORK_COMPLETE, &[&args[0], b""]));
    }
    minor_faults(pid) - before
}

#[test]
fn large_job_bursts_reuse_memory_and_an_idle_server_gives_it_back() {
    let Some(s) = Server::start(Kind::Ours, &["-t", "2"]) else { return };
    let pid = s.child.id();
    let mut client = s.connect();
    let mut worker = s.connect();
    worker.send(&req(CAN_DO, &[b"mem"]));
    let idle = rss_bytes(pid);

    let first = burst(&s, &mut client, &mut worker);
    // On another thread, as likely as not: one arena, so its freed pages are found.
    let second = burst(&s, &mut client, &mut worker);
    // ~94 MiB of jobs were queued at once: the first burst had to fault them in.
    assert!(first > 10_000, "first burst: only {first} page faults");
    assert!(
        second * 4 < first,
        "second burst faulted {second} pages, the first {first}: freed pages not reused"
    );

    let held = rss_bytes(pid);
    let start = Instant::now();
    let mut now = held;
    while now > idle + 24 * MIB && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        now = rss_bytes(pid);
    }
    assert!(
        now <= idle + 24 * MIB,
        "still {} MiB resident 20 s after the bursts (idle {} MiB, after them {} MiB)",
        now / MIB,
        idle / MIB,
        held / MIB
    );
}
