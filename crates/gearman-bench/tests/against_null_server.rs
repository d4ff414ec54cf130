//! gearman-bench run as a user runs it: the null server in one process, scenarios in
//! another, results read from the JSON line.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_gearman-bench");

/// The null server on a free port, killed on drop.
struct NullServer {
    child: Child,
    port: u16,
}

impl NullServer {
    fn start() -> NullServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(BENCH)
            .args(["null-server", "--host", "127.0.0.1", "--port", &port.to_string(), "--threads", "1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the null server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "null server not listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        NullServer { child, port }
    }

    /// Runs a scenario with `--json` and returns its line.
    fn bench(&self, args: &[&str]) -> String {
        let out = Command::new(BENCH)
            .args(args)
            .args(["--port", &self.port.to_string(), "--json", "--timeout", "60"])
            .args(["--server-pid", &self.child.id().to_string()])
            .output()
            .expect("run gearman-bench");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout.lines().find(|l| l.starts_with('{')).expect("a JSON line").to_owned()
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number of the JSON line.
fn number(json: &str, key: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {json}"))
}

#[test]
fn server_and_tool_cpu_are_reported_per_operation() {
    let server = NullServer::start();
    for (args, jobs) in [
        (&["echo", "--clients", "2", "--window", "4", "--jobs", "20000"][..], 20_000.0),
        (&["bg-submit", "--no-drain", "--clients", "2", "--window", "16", "--jobs", "50000"], 50_000.0),
        // Large data goes out by reference (vectored writes); every echo is still checked.
        (&["echo", "--clients", "2", "--window", "4", "--payload", "65536", "--jobs", "2000"], 2_000.0),
    ] {
        let json = server.bench(args);
        assert!(json.starts_with("{\"ok\":true"), "{json}");
        let ops = number(&json, "ops");
        let secs = number(&json, "server_cpu_seconds");
        let per_op = number(&json, "server_cpu_us_per_op");
        assert_eq!(ops, jobs, "{json}");
        // Every round trip costs the server a read and a write at least: never zero,
        // and far below the run's wall time per operation times the CPU count.
        assert!(secs > 0.0 && per_op > 0.0, "{json}");
        assert!((per_op - secs * 1e6 / ops).abs() <= 0.01 * per_op + 0.001, "{json}");
        assert!(secs <= number(&json, "seconds") * 8.0 + 0.05, "{json}");
        // The tool reads and writes every packet too.
        let tool_secs = number(&json, "tool_cpu_seconds");
        let tool_per_op = number(&json, "tool_cpu_us_per_op");
        assert!(tool_secs > 0.0 && tool_per_op > 0.0, "{json}");
        assert!((tool_per_op - tool_secs * 1e6 / ops).abs() <= 0.01 * tool_per_op + 0.001, "{json}");
        assert!(tool_secs <= number(&json, "seconds") * 8.0 + 0.05, "{json}");
    }
}

#[test]
fn a_pid_that_is_not_there_fails_the_run_at_once() {
    let out = Command::new(BENCH)
        .args(["echo", "--port", "1", "--server-pid", &u32::MAX.to_string()])
        .output()
        .expect("run gearman-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--server-pid") && err.contains("/proc"), "{err}");
}
