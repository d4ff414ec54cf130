//! The Rust side of bench/clientlib: foreground round trips through `gearman-client`.
//!
//! ```text
//! clientlib-bench client HOST PORT FUNCTION CLIENTS JOBS_PER_CLIENT PAYLOAD
//!                        [--warmup N] [--timeout-ms MS] [--threads T] [--shared]
//! clientlib-bench worker HOST PORT FUNCTION [--workers K] [--threads T]
//! ```
//!
//! `client` runs CLIENTS tasks, each with its own `Client` (so its own connection; with
//! `--shared` all tasks share one `Client` and so one connection), each doing
//! JOBS_PER_CLIENT sequential `client.run(JobRequest::new(FUNCTION, payload))` and checking
//! that the answer is the payload reversed. Timing starts once every task has connected
//! and done its warm-up jobs and ends when the last one finishes; one JSON line is printed.
//! `--threads 0` uses a current-thread runtime, otherwise a multi-thread one with T workers.
//!
//! `worker` runs K `Worker`s (concurrency 1 each, so K connections) answering FUNCTION with
//! the workload reversed, until killed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gearman_client::{Bytes, Client, Job, JobError, JobRequest, Worker};

struct Opts {
    pos: Vec<String>,
    warmup: u64,
    timeout_ms: u64,
    threads: usize,
    shared: bool,
    workers: usize,
}

fn parse(args: Vec<String>) -> Result<Opts, String> {
    let mut o = Opts { pos: Vec::new(), warmup: 100, timeout_ms: 30_000, threads: 2, shared: false, workers: 1 };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--warmup" => o.warmup = val("--warmup")?,
            "--timeout-ms" => o.timeout_ms = val("--timeout-ms")?,
            "--threads" => o.threads = val("--threads")? as usize,
            "--workers" => o.workers = val("--workers")? as usize,
            "--shared" => o.shared = true,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => o.pos.push(a),
        }
    }
    Ok(o)
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: clientlib-bench client|worker ... (see src/main.rs)");
        return ExitCode::from(2);
    }
    let mode = args.remove(0);
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("clientlib-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match mode.as_str() {
        "client" if o.pos.len() == 6 => client(o),
        "worker" if o.pos.len() == 3 => worker(o),
        _ => {
            eprintln!("usage: clientlib-bench client HOST PORT FUNCTION CLIENTS JOBS PAYLOAD | worker HOST PORT FUNCTION");
            ExitCode::from(2)
        }
    }
}

fn worker(o: Opts) -> ExitCode {
    let addr = format!("{}:{}", o.pos[0], o.pos[1]);
    let function = o.pos[2].clone();
    runtime(o.threads).block_on(async move {
        let mut workers = Vec::new();
        for _ in 0..o.workers.max(1) {
            let w = Worker::builder([addr.as_str()])
                .function(function.clone(), |job: Job| async move {
                    Ok::<_, JobError>(job.data().iter().rev().copied().collect::<Vec<u8>>())
                })
                .concurrency(1)
                .spawn();
            match w {
                Ok(w) => workers.push(w),
                Err(e) => {
                    eprintln!("worker: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        // Serve until killed.
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}

fn client(o: Opts) -> ExitCode {
    let addr = format!("{}:{}", o.pos[0], o.pos[1]);
    let function = Bytes::from(o.pos[2].clone());
    let clients: usize = o.pos[3].parse().unwrap_or(1).max(1);
    let jobs: u64 = o.pos[4].parse().unwrap_or(0);
    let payload: usize = o.pos[5].parse().unwrap_or(0);
    let (warmup, timeout, shared) = (o.warmup, Duration::from_millis(o.timeout_ms), o.shared);
    runtime(o.threads).block_on(async move {
        let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let shared_client = if shared { Some(Client::new([addr.as_str()]).expect("client")) } else { None };
        let mut tasks = Vec::new();
        for id in 0..clients {
            let client = match &shared_client {
                Some(c) => c.clone(),
                None => Client::new([addr.as_str()]).expect("client"),
            };
            let (barrier, function) = (barrier.clone(), function.clone());
            tasks.push(tokio::spawn(async move {
                let data: Bytes = (0..payload).map(|i| b'a' + ((id * 7 + i) % 26) as u8).collect::<Vec<u8>>().into();
                let want: Vec<u8> = data.iter().rev().copied().collect();
                let one = |client: &Client| {
                    let req = JobRequest::new(function.clone(), data.clone()).timeout(timeout);
                    let client = client.clone();
                    let want = &want;
                    async move {
                        match client.run(req).await {
                            Ok(r) if r.as_ref() == want.as_slice() => Ok(()),
                            Ok(r) => Err(format!("wrong answer ({} bytes)", r.len())),
                            Err(e) => Err(format!("run: {e}")),
                        }
                    }
                };
                let mut err = client.echo("x").await.err().map(|e| format!("echo: {e}"));
                for _ in 0..warmup {
                    if err.is_some() {
                        break;
                    }
                    err = one(&client).await.err();
                }
                barrier.wait().await;
                if err.is_none() {
                    for _ in 0..jobs {
                        if let Err(e) = one(&client).await {
                            err = Some(e);
                            break;
                        }
                    }
                }
                err
            }));
        }
        barrier.wait().await;
        let t0 = Instant::now();
        let mut errors = 0u64;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(None) => {}
                Ok(Some(e)) => {
                    errors += 1;
                    eprintln!("client {i}: {e}");
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("client {i}: task failed: {e}");
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let total = jobs * clients as u64;
        let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
        println!("{{\"lib\":\"rust\",\"jobs\":{total},\"secs\":{secs:.6},\"rate\":{rate:.1},\"errors\":{errors}}}");
        if errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}
