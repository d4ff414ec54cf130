//! The monitor port (`--monitor-port P`, a gearman-rs extension): Prometheus metrics
//! and JSON status over HTTP/1.1, on hyper.
//!
//! `GET /metrics` is the Prometheus text exposition format (version 0.0.4), rendered
//! here from the engine's counters and a snapshot of its gauges: the format is a
//! handful of line shapes, so a client library would add a registry and a second copy
//! of every number for nothing. `GET /status` and `GET /workers` answer the facts of
//! the admin commands `status` and `workers` as JSON. Anything else is `404`.
//!
//! A scrape takes the engine lock once, copies the numbers out and renders after
//! releasing it; the job path only ever adds to plain integers.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gearman_engine::{FunctionGauges, Histogram, Stats, WorkerEntry};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::core::Shared;

/// Upper bounds, in microseconds, of the store add latency histogram.
const STORE_LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Counters of the store task (`persist.rs`), under their own small lock: they change
/// once per batch, never on the job path.
#[derive(Debug, Clone)]
pub(crate) struct StoreStats {
    /// `add` calls (transactions) that succeeded.
    pub(crate) add_batches: u64,
    /// Records in successful `add` calls.
    pub(crate) records_added: u64,
    /// `add` calls that failed.
    pub(crate) add_failures: u64,
    /// `remove` calls that succeeded.
    pub(crate) remove_batches: u64,
    /// Records in successful `remove` calls.
    pub(crate) records_removed: u64,
    /// `remove` calls that failed (they are retried).
    pub(crate) remove_failures: u64,
    /// Latency of `add` calls, in microseconds.
    pub(crate) add_latency_us: Histogram,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            add_batches: 0,
            records_added: 0,
            add_failures: 0,
            remove_batches: 0,
            records_removed: 0,
            remove_failures: 0,
            add_latency_us: Histogram::new(STORE_LATENCY_BOUNDS_US),
        }
    }
}

impl StoreStats {
    /// Records one `add` call of `records` records that took from `start` until now.
    pub(crate) fn added(&mut self, records: usize, ok: bool, start: Instant) {
        let us = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.add_latency_us.observe(us);
        if ok {
            self.add_batches += 1;
            self.records_added += records as u64;
        } else {
            self.add_failures += 1;
        }
    }

    /// Records one `remove` call of `records` records.
    pub(crate) fn removed(&mut self, records: usize, ok: bool) {
        if ok {
            self.remove_batches += 1;
            self.records_removed += records as u64;
        } else {
            self.remove_failures += 1;
        }
    }
}

/// Everything one scrape needs, copied out under the lock.
struct Snapshot {
    stats: Stats,
    functions: Vec<FunctionGauges>,
    connections: usize,
    worker_connections: usize,
    dropped_result_bytes: u64,
    forwarded_result_bytes: u64,
    store: Option<StoreStats>,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let (stats, functions, connections, worker_connections) = {
        let core = shared.core.lock();
        let e = &core.engine;
        (e.stats().clone(), e.function_gauges(), e.connection_count(), e.worker_connection_count())
    };
    let store = shared.store_tx.as_ref().map(|_| shared.store_stats.lock().clone());
    let dropped_result_bytes = shared.dropped_result_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let forwarded_result_bytes = shared.forwarded_result_bytes.load(std::sync::atomic::Ordering::Relaxed);
    Snapshot {
        stats,
        functions,
        connections,
        worker_connections,
        dropped_result_bytes,
        forwarded_result_bytes,
        store,
    }
}

/// Serves one accepted monitor connection until the peer closes it or the server stops.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, stop: CancellationToken) {
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!("monitor connection ended: {e}") },
        _ = stop.cancelled() => {}
    }
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    match req.uri().path() {
        "/metrics" => answer(StatusCode::OK, "text/plain; version=0.0.4", render_metrics(&snapshot(shared))),
        "/status" => {
            let functions = shared.core.lock().engine.function_gauges();
            answer(StatusCode::OK, "application/json", status_json(&functions))
        }
        "/workers" => {
            let workers = shared.core.lock().engine.worker_entries();
            answer(StatusCode::OK, "application/json", workers_json(&workers))
        }
        _ => answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `GET /status`: one object per function, in the admin `status` order.
fn status_json(functions: &[FunctionGauges]) -> String {
    let list: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| {
            serde_json::json!({
                "function": lossy(&f.name),
                "total": f.total,
                "running": f.running,
                "available_workers": f.workers,
                "queued": { "high": f.queued[0], "normal": f.queued[1], "low": f.queued[2] },
                "scheduled": f.scheduled,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// `GET /workers`: one object per connection, in the admin `workers` order.
fn workers_json(workers: &[WorkerEntry]) -> String {
    let list: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "fd": w.label,
                "ip": w.ip,
                "client_id": lossy(&w.client_id),
                "functions": w.functions.iter().map(|f| lossy(f)).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// Escapes a label value: backslash, double quote and newline.
fn label(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: usize) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// A histogram whose observations are in units of `1/per_second` seconds.
fn histogram(o: &mut String, name: &str, help: &str, h: &Histogram, per_second: f64) {
    header(o, name, "histogram", help);
    for (bound, n) in h.cumulative() {
        let le = bound as f64 / per_second;
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "{name}_sum {}", h.sum as f64 / per_second);
    let _ = writeln!(o, "{name}_count {}", h.count);
}

fn per_function(
    o: &mut String,
    name: &str,
    help: &str,
    fs: &[FunctionGauges],
    v: impl Fn(&FunctionGauges) -> usize,
) {
    header(o, name, "gauge", help);
    for f in fs {
        let _ = writeln!(o, "{name}{{function=\"{}\"}} {}", label(&f.name), v(f));
    }
}

fn render_metrics(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096 + 256 * s.functions.len());
    header(
        &mut o,
        "gearman_function_queued_jobs",
        "gauge",
        "Jobs waiting in the function's queue, by priority.",
    );
    for f in &s.functions {
        let name = label(&f.name);
        for (prio, n) in ["high", "normal", "low"].iter().zip(f.queued) {
            let _ =
                writeln!(o, "gearman_function_queued_jobs{{function=\"{name}\",priority=\"{prio}\"}} {n}");
        }
    }
    let fs = &s.functions;
    per_function(&mut o, "gearman_function_scheduled_jobs", "Epoch jobs not due yet.", fs, |f| f.scheduled);
    per_function(&mut o, "gearman_function_running_jobs", "Jobs assigned to a worker.", fs, |f| f.running);
    per_function(&mut o, "gearman_function_jobs", "Jobs of the function in any state.", fs, |f| f.total);
    let help = "Registered workers (CAN_DO entries).";
    per_function(&mut o, "gearman_function_available_workers", help, fs, |f| f.workers);
    let st = &s.stats;
    counter(&mut o, "gearman_jobs_submitted_total", "Submits that created a job.", st.submitted);
    counter(&mut o, "gearman_jobs_coalesced_total", "Submits that joined a live job.", st.coalesced);
    counter(&mut o, "gearman_jobs_completed_total", "WORK_COMPLETE results.", st.completed);
    let help = "WORK_FAIL results and jobs failed after --job-retries.";
    counter(&mut o, "gearman_jobs_failed_total", help, st.failed);
    counter(&mut o, "gearman_jobs_exceptions_total", "WORK_EXCEPTION results.", st.excepted);
    let help = "Running jobs requeued after their worker was lost.";
    counter(&mut o, "gearman_jobs_retried_total", help, st.retried);
    counter(&mut o, "gearman_jobs_cancelled_total", "Jobs cancelled with the admin command.", st.cancelled);
    counter(&mut o, "gearman_jobs_timed_out_total", "CAN_DO_TIMEOUT deadlines that fired.", st.timed_out);
    let help = "Result data that no client listened to, dropped without being read.";
    counter(&mut o, "gearman_result_bytes_dropped_total", help, s.dropped_result_bytes);
    let help = "Result data passed from worker to client through a pipe, without being read.";
    counter(&mut o, "gearman_result_bytes_forwarded_total", help, s.forwarded_result_bytes);
    let help = "Time from submit or requeue to assignment.";
    histogram(&mut o, "gearman_job_queue_seconds", help, &st.queue_time, 1e3);
    let help = "Time from assignment to the job's result.";
    histogram(&mut o, "gearman_job_run_seconds", help, &st.run_time, 1e3);
    let help = "Open connections (clients, workers, admin and HTTP requests).";
    gauge(&mut o, "gearman_connections", help, s.connections);
    let help = "Connections that registered at least one function.";
    gauge(&mut o, "gearman_worker_connections", help, s.worker_connections);
    if let Some(t) = &s.store {
        counter(
            &mut o,
            "gearman_store_add_batches_total",
            "Successful store add transactions.",
            t.add_batches,
        );
        counter(&mut o, "gearman_store_records_added_total", "Records stored.", t.records_added);
        counter(&mut o, "gearman_store_add_failures_total", "Failed store add transactions.", t.add_failures);
        let help = "Successful store remove calls.";
        counter(&mut o, "gearman_store_remove_batches_total", help, t.remove_batches);
        counter(&mut o, "gearman_store_records_removed_total", "Records removed.", t.records_removed);
        let help = "Failed store remove calls (retried).";
        counter(&mut o, "gearman_store_remove_failures_total", help, t.remove_failures);
        let help = "Latency of store add transactions.";
        histogram(&mut o, "gearman_store_add_seconds", help, &t.add_latency_us, 1e6);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(b"a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_render_cumulative_buckets_in_seconds() {
        let mut h = Histogram::new(&[1, 10]);
        h.observe(1);
        h.observe(5);
        h.observe(50);
        let mut o = String::new();
        histogram(&mut o, "x", "help", &h, 1e3);
        let want = "# HELP x help\n# TYPE x histogram\nx_bucket{le=\"0.001\"} 1\nx_bucket{le=\"0.01\"} 2\n\
                    x_bucket{le=\"+Inf\"} 3\nx_sum 0.056\nx_count 3\n";
        assert_eq!(o, want);
    }
}
