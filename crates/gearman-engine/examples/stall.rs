//! Longest single submit while the queue grows: submits N background jobs with a
//! unique key each (default 2,000,000) straight into the engine and prints, per
//! 100,000, the time they took and the slowest one. A pause that grows with the queue
//! (an index rehashed at once) shows as a slowest submit of many milliseconds.
//!
//! `cargo run --release -p gearman-engine --example stall [N]`

use std::time::Instant;

use gearman_engine::{ConnId, Engine, EngineConfig, Outbox, PeerInfo, StoredJob};
use gearman_proto::{Command, Magic, Packet};

/// The server's allocator: glibc's realloc moves a large vector by remapping its
/// pages, jemalloc's copies it, so only jemalloc shows the pauses the server has.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Drops everything the engine sends.
struct Sink;

impl Outbox for Sink {
    fn packet(&mut self, _c: ConnId, _cmd: Command, _a: &[&[u8]]) {}
    fn text(&mut self, _c: ConnId, _t: &[u8]) {}
    fn close(&mut self, _c: ConnId) {}
    fn hold(&mut self, _c: ConnId, _h: u64) {}
    fn fill(&mut self, _c: ConnId, _h: u64, _cmd: Command, _a: &[&[u8]]) {}
    fn persist(&mut self, _j: StoredJob) {}
    fn forget(&mut self, _k: u64) {}
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let mut e = Engine::new(EngineConfig::default());
    let client = e.connect(PeerInfo { label: 1, ip: "127.0.0.1".into() });
    let mut out = Sink;
    let (start, mut window, mut slowest_in_window, mut slowest) =
        (Instant::now(), Instant::now(), 0u128, (0usize, 0u128));
    for i in 0..n {
        let unique = format!("u{i:012}");
        let Ok(p) = Packet::new(Magic::Req, Command::SubmitJobBg, &[b"f", unique.as_bytes(), b""]) else {
            unreachable!("a valid SUBMIT_JOB_BG layout")
        };
        let t = Instant::now();
        e.handle_packet(client, &p, 0, &mut out);
        let us = t.elapsed().as_micros();
        slowest_in_window = slowest_in_window.max(us);
        if us > slowest.1 {
            slowest = (i, us);
        }
        if (i + 1) % 100_000 == 0 {
            let ms = window.elapsed().as_secs_f64() * 1e3;
            println!("{:>9} jobs: last 100k took {ms:>7.1} ms, slowest {slowest_in_window:>7} us", i + 1);
            window = Instant::now();
            slowest_in_window = 0;
        }
    }
    let total = start.elapsed().as_secs_f64();
    println!("{n} submits in {total:.2} s; slowest {} us (submit {})", slowest.1, slowest.0 + 1);
}
