//! Drives the job engine with operation sequences decoded from the fuzz input: typed
//! operations over a few function names and uniques, plus raw packets and admin lines
//! with fuzzed bytes. After every step the engine's own invariants must hold and no
//! output may go to a closed connection; at the end every client leaves and one fresh
//! worker must be able to drain every remaining job (nothing leaks, nothing is stuck).
#![no_main]

use std::collections::HashSet;

use bytes::Bytes;
use gearman_engine::{ConnId, Engine, EngineConfig, PeerInfo, RecordingOutbox, Sent};
use gearman_proto::{Command, Magic, Packet};
use libfuzzer_sys::fuzz_target;

const ADMIN: ConnId = usize::MAX;
const FUNCTIONS: [&[u8]; 3] = [b"a", b"b", b"c"];
const UNIQUES: [&[u8]; 5] = [b"", b"-", b"u1", b"u2", b"u3"];
const DATA: [&[u8]; 3] = [b"", b"x", b"y"];
const SUBMITS: [Command; 9] = [
    Command::SubmitJob,
    Command::SubmitJobBg,
    Command::SubmitJobHigh,
    Command::SubmitJobHighBg,
    Command::SubmitJobLow,
    Command::SubmitJobLowBg,
    Command::SubmitJobEpoch,
    Command::SubmitReduceJob,
    Command::SubmitReduceJobBackground,
];
const WORK: [Command; 6] = [
    Command::WorkData,
    Command::WorkWarning,
    Command::WorkStatus,
    Command::WorkComplete,
    Command::WorkFail,
    Command::WorkException,
];
const ADMIN_LINES: [&str; 6] =
    ["status", "prioritystatus", "workers", "show jobs", "show unique jobs", "version"];

/// The fuzz input, read a byte or a slice at a time (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn slice(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()).min(max).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
}

struct World {
    e: Engine,
    out: RecordingOutbox,
    now: i64,
    live: Vec<ConnId>,
    /// Handles seen in JOB_CREATED or JOB_ASSIGN*, for WORK_* and cancel targets.
    handles: Vec<Vec<u8>>,
    /// Function names that may have jobs, for the final drain.
    functions: HashSet<Vec<u8>>,
}

impl World {
    fn conn(&self, b: u8) -> Option<ConnId> {
        if self.live.is_empty() {
            None
        } else {
            Some(self.live[usize::from(b) % self.live.len()])
        }
    }

    fn packet(&mut self, c: ConnId, magic: Magic, command: Command, args: &[&[u8]]) {
        if let Ok(p) = Packet::new(magic, command, args) {
            self.run(c, &p);
        }
    }

    fn run(&mut self, c: ConnId, p: &Packet) {
        trace(format_args!("{c} <- {p:?}"));
        if matches!(
            p.command,
            Command::SubmitJob
                | Command::SubmitJobBg
                | Command::SubmitJobHigh
                | Command::SubmitJobHighBg
                | Command::SubmitJobLow
                | Command::SubmitJobLowBg
                | Command::SubmitJobEpoch
                | Command::SubmitReduceJob
                | Command::SubmitReduceJobBackground
        ) {
            self.functions.insert(p.arg(0).to_vec());
        }
        self.e.handle_packet(c, p, self.now, &mut self.out);
        self.settle();
    }

    /// Checks the step's outputs and the engine's invariants.
    fn settle(&mut self) {
        for s in self.out.take() {
            trace(format_args!("   -> {s:?}"));
            if let Some(c) = s.conn() {
                assert!(c == ADMIN || self.live.contains(&c), "output to a closed connection: {s:?}");
            }
            // A filled place carries its packet as a sent one does.
            if let Sent::Packet(_, command, args) | Sent::Fill(_, _, command, args) = &s {
                let names_a_job = matches!(
                    command,
                    Command::JobCreated | Command::JobAssign | Command::JobAssignUniq | Command::JobAssignAll
                );
                if let Some(h) = args.first().filter(|_| names_a_job) {
                    if !self.handles.contains(h) && self.handles.len() < 64 {
                        self.handles.push(h.clone());
                    }
                }
            }
        }
        if let Err(e) = self.e.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    fn handle(&mut self, input: &mut Input<'_>) -> Vec<u8> {
        let b = input.byte();
        if self.handles.is_empty() || b & 0x80 != 0 {
            format!("H:f:{}", b % 32).into_bytes()
        } else {
            self.handles[usize::from(b) % self.handles.len()].clone()
        }
    }

    fn admin(&mut self, line: &[u8]) {
        trace(format_args!("admin <- {:?}", String::from_utf8_lossy(line)));
        self.e.handle_admin(ADMIN, line, &mut self.out);
        self.settle();
    }
}

/// Prints each step when `ENGINE_OPS_TRACE` is set (for reproducing a crash).
fn trace(what: std::fmt::Arguments<'_>) {
    if std::env::var_os("ENGINE_OPS_TRACE").is_some() {
        eprintln!("{what}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let config = EngineConfig {
        handle_prefix: "H:f".into(),
        job_retries: u32::from(flags & 3),
        worker_wakeup: u32::from((flags >> 2) & 1),
        round_robin: flags & 8 != 0,
        exceptions: flags & 16 != 0,
        ..EngineConfig::default()
    };
    let mut w = World {
        e: Engine::new(config),
        out: RecordingOutbox::default(),
        now: 1_700_000_000_000,
        live: Vec::new(),
        handles: Vec::new(),
        functions: HashSet::new(),
    };
    let mut steps = 0;
    while !input.0.is_empty() && steps < 400 {
        steps += 1;
        let op = input.byte() % 18;
        if op == 0 || w.live.is_empty() {
            let c = w.e.connect(PeerInfo { label: i64::from(op), ip: "127.0.0.1".into() });
            trace(format_args!("connect {c}"));
            w.live.push(c);
            w.settle();
            continue;
        }
        let Some(c) = w.conn(input.byte()) else { continue };
        match op {
            1 => {
                trace(format_args!("disconnect {c}"));
                w.live.retain(|&x| x != c);
                w.e.disconnect(c, w.now, &mut w.out);
                w.settle();
            }
            2..=4 => {
                let command = input.pick(&SUBMITS);
                let (f, u, d) = (input.pick(&FUNCTIONS), input.pick(&UNIQUES), input.pick(&DATA));
                match command {
                    Command::SubmitJobEpoch => {
                        let when = (w.now / 1000 + i64::from(input.byte() % 8) - 2).to_string();
                        w.packet(c, Magic::Req, command, &[f, u, when.as_bytes(), d]);
                    }
                    Command::SubmitReduceJob | Command::SubmitReduceJobBackground => {
                        let r: &[u8] = if input.byte() & 1 == 0 { b"" } else { b"r" };
                        w.packet(c, Magic::Req, command, &[f, u, r, b"agg", d]);
                    }
                    _ => w.packet(c, Magic::Req, command, &[f, u, d]),
                }
            }
            5 => {
                let f = input.pick(&FUNCTIONS);
                if input.byte() & 1 == 0 {
                    w.packet(c, Magic::Req, Command::CanDo, &[f]);
                } else {
                    let ms = (u32::from(input.byte()) * 10).to_string();
                    w.packet(c, Magic::Req, Command::CanDoTimeout, &[f, ms.as_bytes()]);
                }
            }
            6 => {
                let f = input.pick(&FUNCTIONS);
                w.packet(c, Magic::Req, Command::CantDo, &[f]);
            }
            7 => w.packet(c, Magic::Req, Command::ResetAbilities, &[]),
            8 | 9 => {
                let g = input.pick(&[Command::GrabJob, Command::GrabJobUniq, Command::GrabJobAll]);
                w.packet(c, Magic::Req, g, &[]);
            }
            10 => w.packet(c, Magic::Req, Command::PreSleep, &[]),
            11 | 12 => {
                let command = input.pick(&WORK);
                let h = w.handle(&mut input);
                match command {
                    Command::WorkStatus => w.packet(c, Magic::Req, command, &[&h, b"1", b"2"]),
                    Command::WorkFail => w.packet(c, Magic::Req, command, &[&h]),
                    _ => w.packet(c, Magic::Req, command, &[&h, b"r"]),
                }
            }
            13 => {
                let h = w.handle(&mut input);
                let mut line = b"cancel job ".to_vec();
                line.extend_from_slice(&h);
                w.admin(&line);
            }
            14 => {
                let f = input.pick(&FUNCTIONS);
                let verb = input.pick(&["drop function ", "create function ", "maxqueue "]);
                let mut line = verb.as_bytes().to_vec();
                line.extend_from_slice(f);
                if verb == "maxqueue " {
                    line.extend_from_slice(format!(" {}", input.byte() % 4).as_bytes());
                }
                w.admin(&line);
                let line = input.pick(&ADMIN_LINES);
                w.admin(line.as_bytes());
            }
            15 => {
                // A raw packet of any type with a fuzzed body (either magic).
                let command = Command::from_code(u32::from(input.byte() % 43));
                let magic = if input.byte() & 7 == 0 { Magic::Res } else { Magic::Req };
                let body = Bytes::copy_from_slice(input.slice(96));
                if let Some(command) = command {
                    if let Ok(p) = Packet::from_body(magic, command, body) {
                        w.run(c, &p);
                    }
                }
            }
            16 => {
                // A raw admin line.
                let line = input.slice(64).to_vec();
                w.admin(&line);
            }
            _ => {
                w.now += i64::from(input.byte()) * 20;
                if input.byte() & 3 != 0 {
                    trace(format_args!("tick {}", w.now));
                    w.e.tick(w.now, &mut w.out);
                    w.settle();
                    if let Some(d) = w.e.next_deadline() {
                        assert!(d > w.now, "deadline {d} left after tick at {}", w.now);
                    }
                }
            }
        }
    }

    // Everyone leaves; far in the future one worker for every function drains the rest.
    for c in w.live.clone() {
        trace(format_args!("disconnect {c} (drain)"));
        w.live.retain(|&x| x != c);
        w.e.disconnect(c, w.now, &mut w.out);
        w.settle();
    }
    // i64::MAX: even a raw SUBMIT_JOB_EPOCH with a huge time is due now.
    w.now = i64::MAX;
    w.e.tick(w.now, &mut w.out);
    w.settle();
    let worker = w.e.connect(PeerInfo { label: 0, ip: "127.0.0.1".into() });
    w.live.push(worker);
    let mut functions: Vec<Vec<u8>> = w.functions.iter().cloned().collect();
    functions.sort();
    for f in &functions {
        w.packet(worker, Magic::Req, Command::CanDo, &[f]);
    }
    for _ in 0..10_000 {
        w.e.handle_packet(
            worker,
            &Packet::new(Magic::Req, Command::GrabJobAll, &[]).expect("valid"),
            w.now,
            &mut w.out,
        );
        let sent = w.out.take();
        match sent.as_slice() {
            [Sent::Packet(_, Command::NoJob, _)] => break,
            [Sent::Packet(_, Command::JobAssignUniq | Command::JobAssignAll, args)] => {
                let h = args[0].clone();
                w.packet(worker, Magic::Req, Command::WorkComplete, &[&h, b""]);
            }
            other => panic!("bad drain reply {other:?}"),
        }
    }
    assert_eq!(w.e.job_count(), 0, "jobs left after the drain");
});
