//! The CPU time the server and the tool itself spent over the timed part of a run,
//! both read the same way from Linux's /proc.
//!
//! Throughput on two shared cores is capped by the loopback and by the tool itself;
//! the CPU a server spends per job is what it costs, whatever caps the rate. The
//! tool's own share says how much of the two cores was left to the server.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};

/// Reads the CPU time of one process (every thread) by its pid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessCpu {
    pid: u32,
}

/// One reading: each live thread's run time, and the process total in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Nanoseconds each thread has run (`/proc/PID/task/TID/schedstat`).
    threads: BTreeMap<u32, u64>,
    /// utime + stime of the process, exited threads included (`/proc/PID/stat`).
    ticks: u64,
}

impl ProcessCpu {
    /// Watches `pid`; fails at once if its /proc entries cannot be read.
    pub(crate) fn new(pid: u32) -> Result<ProcessCpu> {
        let cpu = ProcessCpu { pid };
        cpu.sample()?;
        Ok(cpu)
    }

    /// The process's CPU time so far.
    pub(crate) fn sample(&self) -> Result<Sample> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let ticks = parse_stat_ticks(&stat).context("unexpected /proc/PID/stat format")?;
        let mut threads = BTreeMap::new();
        for entry in fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            // A thread that exits between listing and reading simply drops out.
            if let Ok(s) = fs::read_to_string(entry.path().join("schedstat")) {
                threads.insert(tid, parse_schedstat_ns(&s).context("unexpected schedstat format")?);
            }
        }
        Ok(Sample { threads, ticks })
    }
}

impl Sample {
    /// CPU time spent between `start` and `self`. Per-thread nanoseconds when every
    /// thread of `start` is still there; otherwise the coarser tick count, which still
    /// holds the time of threads that exited.
    pub(crate) fn since(&self, start: &Sample) -> Duration {
        if start.threads.keys().all(|t| self.threads.contains_key(t)) {
            let ns: u64 = self
                .threads
                .iter()
                .map(|(tid, now)| now.saturating_sub(start.threads.get(tid).copied().unwrap_or(0)))
                .sum();
            Duration::from_nanos(ns)
        } else {
            let ticks = self.ticks.saturating_sub(start.ticks);
            Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name in
/// parentheses may itself hold spaces and parentheses, so fields count from the last ')'.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The first field of a schedstat line: nanoseconds on a CPU.
fn parse_schedstat_ns(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

fn clock_ticks_per_second() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// CPU time spent over a part of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Spent {
    /// The server's (with `--server-pid`).
    pub(crate) server: Option<Duration>,
    /// This process's, every thread: clients and workers alike (where /proc is).
    pub(crate) tool: Option<Duration>,
}

/// Reads the tool's own CPU time, and the server's when `--server-pid` was given.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Meter {
    server: Option<ProcessCpu>,
    tool: Option<ProcessCpu>,
}

impl Meter {
    /// Watches `pid` if there is one, and this process.
    pub(crate) fn new(pid: Option<u32>) -> Result<Meter> {
        let server = pid
            .map(|p| {
                ProcessCpu::new(p)
                    .with_context(|| format!("--server-pid {p}: cannot read its CPU time from /proc"))
            })
            .transpose()?;
        // Without a /proc of its own the tool just reports no CPU time of its own.
        let tool = ProcessCpu::new(std::process::id()).ok();
        Ok(Meter { server, tool })
    }

    /// Runs `part` and returns its output with the CPU time spent over it.
    pub(crate) async fn during<T>(&self, part: impl Future<Output = Result<T>>) -> Result<(T, Spent)> {
        let server = sample(self.server, "server")?;
        let tool = sample(self.tool, "tool")?;
        let out = part.await?;
        let spent =
            Spent { server: since(self.server, server, "server")?, tool: since(self.tool, tool, "tool")? };
        Ok((out, spent))
    }
}

/// A reading of `cpu`, if there is one to read.
fn sample(cpu: Option<ProcessCpu>, whose: &str) -> Result<Option<Sample>> {
    cpu.map(|c| c.sample()).transpose().with_context(|| format!("reading the {whose}'s CPU time"))
}

/// The time `cpu` spent since `start`, if it is watched.
fn since(cpu: Option<ProcessCpu>, start: Option<Sample>, whose: &str) -> Result<Option<Duration>> {
    Ok(match start {
        Some(start) => sample(cpu, whose)?.map(|end| end.since(&start)),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_count_from_the_last_parenthesis() {
        let line = "4242 (gear (man) d) S 1 4242 4242 0 -1 4194560 900 0 0 0 170 35 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_ticks(line), Some(205));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_schedstat_ns("123456789 5000 42\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn since_uses_threads_unless_one_exited() {
        let at = |threads: &[(u32, u64)], ticks| Sample { threads: threads.iter().copied().collect(), ticks };
        let start = at(&[(1, 1_000), (2, 5_000)], 10);
        // A thread that appeared counts in full.
        let end = at(&[(1, 4_000), (2, 5_500), (3, 250)], 10);
        assert_eq!(end.since(&start), Duration::from_nanos(3_750));
        // Thread 2 exited: its time is only in the ticks.
        let end = at(&[(1, 4_000)], 12);
        let want = Duration::from_secs_f64(2.0 / clock_ticks_per_second());
        assert_eq!(end.since(&start), want);
    }

    #[test]
    fn this_process_uses_cpu() {
        let cpu = ProcessCpu::new(std::process::id()).expect("own /proc entry");
        let start = cpu.sample().unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let spent = cpu.sample().unwrap().since(&start);
        assert!(spent >= Duration::from_millis(20), "{spent:?}");
        assert!(ProcessCpu::new(u32::MAX).is_err());
    }
}
