//! Results: the human summary and the one-line JSON form.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu_time::Spent;
use crate::stats::Summary;
use crate::{Opts, Scenario, UniqueMode};

/// The measured outcome of a successful run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Scenario run.
    pub(crate) scenario: Scenario,
    /// Server address.
    pub(crate) server: String,
    /// Run id (part of the function names).
    pub(crate) run_id: String,
    /// Client connections.
    pub(crate) clients: usize,
    /// Worker connections.
    pub(crate) workers: usize,
    /// Window per client.
    pub(crate) window: usize,
    /// Payload bytes.
    pub(crate) payload: usize,
    /// Function names used.
    pub(crate) functions: usize,
    /// Unique-key mode.
    pub(crate) unique: UniqueMode,
    /// Runtime threads.
    pub(crate) threads: usize,
    /// Operations counted by `rate`.
    pub(crate) ops: u64,
    /// Seconds over which `ops` were done.
    pub(crate) seconds: f64,
    /// What one operation is, e.g. `jobs`.
    pub(crate) unit: &'static str,
    /// The submit phase of background scenarios: submits and seconds.
    pub(crate) submit: Option<(u64, f64)>,
    /// What the latency measures, and its percentiles.
    pub(crate) latency: Option<(&'static str, Summary)>,
    /// Extra idle connections held open during the run.
    pub(crate) idle_connections: usize,
    /// Jobs queued before the timed part, and the seconds that took.
    pub(crate) prefill: Option<(u64, f64)>,
    /// CPU time the server (with `--server-pid`) and the tool spent in the timed part.
    pub(crate) cpu: Spent,
    /// What was checked.
    pub(crate) verified: String,
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    /// A report for `opts` with nothing measured yet.
    pub(crate) fn new(opts: &Opts, server: String, run_id: String, threads: usize) -> Report {
        Report {
            scenario: opts.scenario,
            server,
            run_id,
            clients: opts.clients,
            workers: opts.workers,
            window: opts.window,
            payload: opts.payload,
            functions: opts.functions,
            unique: opts.unique,
            threads,
            ops: 0,
            seconds: 0.0,
            unit: "jobs",
            submit: None,
            latency: None,
            idle_connections: opts.idle_connections,
            prefill: None,
            cpu: Spent::default(),
            verified: String::new(),
        }
    }

    /// Operations per second.
    pub(crate) fn rate(&self) -> f64 {
        rate(self.ops, self.seconds)
    }

    /// Server CPU microseconds per operation, and the seconds in all.
    fn cpu_per_op(&self) -> Option<(f64, f64)> {
        self.per_op(self.cpu.server?)
    }

    /// The tool's own CPU microseconds per operation, and the seconds in all.
    fn tool_cpu_per_op(&self) -> Option<(f64, f64)> {
        self.per_op(self.cpu.tool?)
    }

    fn per_op(&self, spent: Duration) -> Option<(f64, f64)> {
        let secs = spent.as_secs_f64();
        (self.ops > 0).then(|| (secs * 1e6 / self.ops as f64, secs))
    }

    /// The multi-line human summary.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} {} in {:.3} s = {:.0} {}/s",
            self.scenario.name(),
            self.ops,
            self.unit,
            self.seconds,
            self.rate(),
            self.unit
        );
        let _ = writeln!(
            s,
            "  server {}, {} clients, {} workers, window {}, payload {} B, {} function(s), unique {}, {} threads",
            self.server,
            self.clients,
            self.workers,
            self.window,
            self.payload,
            self.functions,
            unique_name(self.unique),
            self.threads
        );
        if self.idle_connections > 0 {
            let _ = writeln!(s, "  {} idle connections held open", self.idle_connections);
        }
        if let Some((n, secs)) = self.prefill {
            let _ = writeln!(
                s,
                "  prefill (untimed): {n} jobs queued in {secs:.3} s = {:.0} submits/s",
                rate(n, secs)
            );
        }
        if let Some((n, secs)) = self.submit {
            let _ =
                writeln!(s, "  submit phase: {n} submits in {secs:.3} s = {:.0} submits/s", rate(n, secs));
        }
        if let Some((what, l)) = &self.latency {
            let _ = writeln!(
                s,
                "  latency {what} (us): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
                l.p50, l.p90, l.p99, l.max, l.mean
            );
        }
        let unit = match self.unit {
            "echoes" => "echo",
            u => u.strip_suffix('s').unwrap_or(u),
        };
        if let Some((us, secs)) = self.cpu_per_op() {
            let _ = writeln!(s, "  server CPU in the timed part: {secs:.3} s = {us:.2} us per {unit}");
        }
        if let Some((us, secs)) = self.tool_cpu_per_op() {
            let _ = writeln!(s, "  tool CPU in the timed part: {secs:.3} s = {us:.2} us per {unit}");
        }
        let _ = writeln!(s, "  verified: {}", self.verified);
        s
    }

    /// One line of JSON.
    pub(crate) fn json(&self) -> String {
        let mut s = String::from("{\"ok\":true");
        common_json(
            &mut s,
            self.scenario,
            &self.server,
            self.clients,
            self.workers,
            self.window,
            self.payload,
            self.functions,
            self.unique,
        );
        let _ = write!(
            s,
            ",\"run_id\":{},\"threads\":{},\"unit\":{},\"ops\":{},\"seconds\":{:.6},\"rate\":{:.1}",
            json_str(&self.run_id),
            self.threads,
            json_str(self.unit),
            self.ops,
            self.seconds,
            self.rate()
        );
        let _ = write!(s, ",\"idle_connections\":{}", self.idle_connections);
        if let Some((n, secs)) = self.prefill {
            let _ = write!(
                s,
                ",\"prefill\":{n},\"prefill_seconds\":{secs:.6},\"prefill_rate\":{:.1}",
                rate(n, secs)
            );
        }
        if let Some((n, secs)) = self.submit {
            let _ = write!(
                s,
                ",\"submits\":{n},\"submit_seconds\":{secs:.6},\"submit_rate\":{:.1}",
                rate(n, secs)
            );
        }
        if let Some((what, l)) = &self.latency {
            let _ = write!(
                s,
                ",\"latency_of\":{},\"latency_us\":{{\"count\":{},\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1},\"mean\":{:.1}}}",
                json_str(what),
                l.count,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                l.mean
            );
        }
        if let Some((us, secs)) = self.cpu_per_op() {
            let _ = write!(s, ",\"server_cpu_seconds\":{secs:.6},\"server_cpu_us_per_op\":{us:.3}");
        }
        if let Some((us, secs)) = self.tool_cpu_per_op() {
            let _ = write!(s, ",\"tool_cpu_seconds\":{secs:.6},\"tool_cpu_us_per_op\":{us:.3}");
        }
        let _ = write!(s, ",\"verified\":{}}}", json_str(&self.verified));
        s
    }
}

/// The JSON line of a failed run.
pub(crate) fn failure_json(opts: &Opts, error: &str) -> String {
    let mut s = String::from("{\"ok\":false");
    common_json(
        &mut s,
        opts.scenario,
        &format!("{}:{}", opts.host, opts.port),
        opts.clients,
        opts.workers,
        opts.window,
        opts.payload,
        opts.functions,
        opts.unique,
    );
    let _ = write!(s, ",\"error\":{}}}", json_str(error));
    s
}

#[allow(clippy::too_many_arguments)]
fn common_json(
    s: &mut String,
    scenario: Scenario,
    server: &str,
    clients: usize,
    workers: usize,
    window: usize,
    payload: usize,
    functions: usize,
    unique: UniqueMode,
) {
    let _ = write!(
        s,
        ",\"scenario\":{},\"server\":{},\"clients\":{clients},\"workers\":{workers},\"window\":{window},\"payload\":{payload},\"functions\":{functions},\"unique\":{}",
        json_str(scenario.name()),
        json_str(server),
        json_str(unique_name(unique))
    );
}

fn unique_name(u: UniqueMode) -> &'static str {
    match u {
        UniqueMode::None => "none",
        UniqueMode::PerJob => "per-job",
    }
}

/// A JSON string literal.
pub(crate) fn json_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
