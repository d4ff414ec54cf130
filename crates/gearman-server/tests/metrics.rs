//! The monitor port (`--monitor-port`): a known workload, then `/metrics` parsed with
//! a Prometheus text parser and `/status` and `/workers` compared with the admin
//! commands. Fetched with `curl`.

mod support;
#[allow(unused_macros)]
mod wire;

use std::collections::HashMap;
use std::process::Command;

use prometheus_parse::{Scrape, Value};
use support::{Conn, Kind, Server};
use wire::*;

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `GET http://127.0.0.1:port/path`: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let o =
        Command::new("curl").args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", &url]).output().unwrap();
    assert!(o.status.success(), "curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// Scraped samples by `metric{sorted labels}`; histograms by their name with `_count`.
struct Metrics {
    values: HashMap<String, f64>,
}

impl Metrics {
    fn scrape(port: u16) -> Metrics {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200);
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let mut values = HashMap::new();
        for s in scrape.samples {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = if labels.is_empty() {
                s.metric.clone()
            } else {
                format!("{}{{{}}}", s.metric, labels.join(","))
            };
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(buckets) => {
                    // The +Inf bucket is the count; buckets must be cumulative.
                    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "{key}: {buckets:?}");
                    buckets.last().map_or(0.0, |b| b.count)
                }
                Value::Summary(_) => panic!("unexpected summary {key}"),
            };
            values.insert(key, v);
        }
        Metrics { values }
    }

    fn get(&self, key: &str) -> f64 {
        *self.values.get(key).unwrap_or_else(|| panic!("no metric {key} in {:?}", self.values.keys()))
    }

    fn f(&self, metric: &str, function: &str) -> f64 {
        self.get(&format!("{metric}{{function={function}}}"))
    }

    fn queued(&self, function: &str, priority: &str) -> f64 {
        self.get(&format!("gearman_function_queued_jobs{{function={function},priority={priority}}}"))
    }
}

fn start() -> Option<(Server, u16)> {
    if !support::require(have_curl(), "curl") {
        return None;
    }
    let port = support::free_port();
    // Bound in `Server::bind`, before the Gear port answers.
    let s = Server::start(Kind::Ours, &["--monitor-port", &port.to_string()])?;
    Some((s, port))
}

fn submit_bg(c: &mut Conn, command: u32, unique: &str, data: &str) -> String {
    c.send(&rq(command, &["f", unique, data]));
    let r = c.read_packet();
    assert_eq!(r.command, JOB_CREATED, "{r:?}");
    String::from_utf8(r.body).unwrap()
}

/// Grabs the next job on `w` and returns its handle.
fn grab(w: &mut Conn) -> String {
    w.send(&rq(GRAB_JOB, &[]));
    let r = w.read_packet();
    assert_eq!(r.command, JOB_ASSIGN, "{r:?}");
    String::from_utf8(r.args()[0].clone()).unwrap()
}

/// `status` rows as the JSON of `/status` must reproduce them.
fn status_rows_from_json(port: u16) -> Vec<String> {
    let (code, body) = get(port, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut rows: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}\t{}\t{}\t{}",
                f["function"].as_str().unwrap(),
                f["total"],
                f["running"],
                f["available_workers"]
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn metrics_count_a_known_workload() {
    let Some((s, mport)) = start() else { return };
    let mut admin = s.connect();
    let mut c = s.connect();
    // 6 jobs: 4 normal, 1 low, 1 high; 2 more submits coalesce.
    let mut handles = Vec::new();
    for i in 1..=4 {
        handles.push(submit_bg(&mut c, SUBMIT_JOB_BG, &format!("u{i}"), "x"));
    }
    handles.push(submit_bg(&mut c, SUBMIT_JOB_LOW_BG, "u5", "x"));
    handles.push(submit_bg(&mut c, SUBMIT_JOB_HIGH_BG, "u6", "x"));
    assert_eq!(submit_bg(&mut c, SUBMIT_JOB_BG, "u1", "x"), handles[0]);
    assert_eq!(submit_bg(&mut c, SUBMIT_JOB_BG, "u2", "x"), handles[1]);
    assert_eq!(admin.admin_line(&format!("cancel job {}", handles[3])), "OK\r\n");

    let m = Metrics::scrape(mport);
    assert_eq!((m.queued("f", "high"), m.queued("f", "normal"), m.queued("f", "low")), (1.0, 4.0, 1.0));
    assert_eq!(m.f("gearman_function_jobs", "f"), 6.0);
    assert_eq!(m.f("gearman_function_running_jobs", "f"), 0.0);
    assert_eq!(m.f("gearman_function_available_workers", "f"), 0.0);
    assert_eq!(m.get("gearman_jobs_submitted_total"), 6.0);
    assert_eq!(m.get("gearman_jobs_coalesced_total"), 2.0);
    assert_eq!(m.get("gearman_jobs_cancelled_total"), 1.0);
    assert_eq!(status_rows_from_json(mport), rows(&admin.list("status")));

    // A worker takes the high job and dies with it: one retry.
    let mut w1 = s.connect();
    w1.send(&rq(CAN_DO, &["f"]));
    assert_eq!(grab(&mut w1), handles[5]);
    let m = Metrics::scrape(mport);
    assert_eq!(m.f("gearman_function_running_jobs", "f"), 1.0);
    assert_eq!(m.f("gearman_function_available_workers", "f"), 1.0);
    assert_eq!(m.get("gearman_worker_connections"), 1.0);
    assert_eq!(status_rows_from_json(mport), rows(&admin.list("status")));
    drop(w1);
    wait_status(&s, "status", |r| r == ["f\t6\t0\t0"]);

    // Another worker: 3 complete, 1 fails, the cancelled one is discarded, 1 exception.
    let mut w2 = s.connect();
    w2.send(&rq(SET_CLIENT_ID, &["w2"]));
    w2.send(&rq(CAN_DO, &["f"]));
    for (want, result) in
        [(5, WORK_COMPLETE), (0, WORK_COMPLETE), (1, WORK_COMPLETE), (2, WORK_FAIL), (4, WORK_EXCEPTION)]
    {
        let h = grab(&mut w2);
        assert_eq!(h, handles[want]);
        match result {
            WORK_FAIL => w2.send(&rq(WORK_FAIL, &[&h])),
            _ => w2.send(&rq(result, &[&h, "r"])),
        };
    }
    w2.send(&rq(GRAB_JOB, &[]));
    assert_eq!(w2.read_packet().command, NO_JOB);
    wait_connections(&mut admin, 3);

    let m = Metrics::scrape(mport);
    let counters = [
        ("gearman_jobs_submitted_total", 6.0),
        ("gearman_jobs_coalesced_total", 2.0),
        ("gearman_jobs_completed_total", 3.0),
        ("gearman_jobs_failed_total", 1.0),
        ("gearman_jobs_exceptions_total", 1.0),
        ("gearman_jobs_retried_total", 1.0),
        ("gearman_jobs_cancelled_total", 1.0),
        ("gearman_jobs_timed_out_total", 0.0),
        // Six assignments (one lost), five results.
        ("gearman_job_queue_seconds", 6.0),
        ("gearman_job_queue_seconds_count", 6.0),
        ("gearman_job_run_seconds", 5.0),
        ("gearman_job_run_seconds_count", 5.0),
        ("gearman_connections", 3.0),
        ("gearman_worker_connections", 1.0),
    ];
    for (name, want) in counters {
        assert_eq!(m.get(name), want, "{name}");
    }
    for p in ["high", "normal", "low"] {
        assert_eq!(m.queued("f", p), 0.0, "{p}");
    }
    assert_eq!(m.f("gearman_function_jobs", "f"), 0.0);
    assert_eq!(m.f("gearman_function_available_workers", "f"), 1.0);
    // No store configured: no store metrics.
    assert!(!m.values.keys().any(|k| k.starts_with("gearman_store_")));

    assert_eq!(status_rows_from_json(mport), rows(&admin.list("status")));
    let (code, body) = get(mport, "/workers");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut json_rows: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let fns: Vec<&str> =
                w["functions"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
            let fns: String = fns.iter().map(|f| format!(" {f}")).collect();
            format!("{} {} {} :{fns}", w["fd"], w["ip"].as_str().unwrap(), w["client_id"].as_str().unwrap())
        })
        .collect();
    json_rows.sort();
    assert_eq!(json_rows, rows(&admin.list("workers")));
    assert!(json_rows.iter().any(|r| r.ends_with(" w2 : f")), "{json_rows:?}");
}

#[test]
fn monitor_answers_404_elsewhere_and_store_metrics_with_a_store() {
    if !support::require(have_curl(), "curl") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gm-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("q.sqlite");
    let mport = support::free_port();
    let db_arg = format!("--libsqlite3-db={}", db.display());
    let args = ["--monitor-port", &mport.to_string(), "-q", "libsqlite3", &db_arg];
    let Some(s) = Server::start(Kind::Ours, &args) else { return };
    assert_eq!(get(mport, "/nope").0, 404);
    assert_eq!(get(mport, "/").0, 404);
    let mut c = s.connect();
    submit_bg(&mut c, SUBMIT_JOB_BG, "", "a");
    submit_bg(&mut c, SUBMIT_JOB_BG, "", "b");
    let mut w = s.connect();
    w.send(&rq(CAN_DO, &["f"]));
    let h = grab(&mut w);
    w.send(&rq(WORK_COMPLETE, &[&h, "r"]));
    wait_status(&s, "status", |r| r == ["f\t1\t0\t1"]);
    // The removal happens on the store task, after the engine forgot the job.
    let start = std::time::Instant::now();
    let m = loop {
        let m = Metrics::scrape(mport);
        if m.get("gearman_store_records_removed_total") >= 1.0 || start.elapsed().as_secs() > 5 {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(m.get("gearman_store_records_added_total"), 2.0);
    assert_eq!(m.get("gearman_store_records_removed_total"), 1.0);
    assert_eq!(m.get("gearman_store_add_failures_total"), 0.0);
    assert_eq!(m.get("gearman_store_remove_failures_total"), 0.0);
    let batches = m.get("gearman_store_add_batches_total");
    assert!((1.0..=2.0).contains(&batches), "{batches}");
    assert_eq!(m.get("gearman_store_add_seconds_count"), batches);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
