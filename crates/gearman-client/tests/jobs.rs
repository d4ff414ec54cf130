//! Client and worker scenarios, each run against our server and against gearmand 1.1.20.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::eventually;
use gearman_client::{
    AdminClient, Client, ClientError, ClientOptions, Job, JobError, JobEvent, JobRequest, MaxQueue, Priority,
    Worker, WorkerOptions,
};
use tokio::sync::mpsc;

both_servers!(
    round_trip,
    background_and_status,
    priorities,
    coalescing,
    events,
    fail,
    exception_with_option,
    exception_without_option,
    many_in_flight,
    worker_concurrency,
    handler_panic,
    graceful_shutdown,
    epoch_job,
    admin_parsing,
    server_errors,
);

const WAIT: Duration = Duration::from_secs(10);

/// A plain `async fn` is a handler too.
async fn reverse(job: Job) -> Result<Vec<u8>, JobError> {
    Ok(job.data().iter().rev().copied().collect())
}

fn client(addr: &str) -> Client {
    Client::new([addr]).expect("client")
}

async fn round_trip(addr: String) {
    let worker = Worker::builder([&addr]).function("reverse", reverse).spawn().expect("worker");
    let c = client(&addr);
    let out = c.run(JobRequest::new("reverse", "Hello World!").timeout(WAIT)).await.expect("run");
    assert_eq!(out.as_ref(), b"!dlroW olleH");
    // Binary data with NULs and an empty workload survive.
    let out = c.run(JobRequest::new("reverse", &b"a\0b\0"[..]).timeout(WAIT)).await.expect("run");
    assert_eq!(out.as_ref(), b"\0b\0a");
    let out = c.run(JobRequest::new("reverse", "").timeout(WAIT)).await.expect("run");
    assert!(out.is_empty());
    assert_eq!(c.echo("ping").await.expect("echo").as_ref(), b"ping");
    worker.shutdown().await;
}

async fn background_and_status(addr: String) {
    let c = client(&addr);
    let job = c.submit_background(JobRequest::new("slow", "x").unique("bg-1")).await.expect("submit");
    assert!(!job.handle().is_empty());
    let st = c.status(&job).await.expect("status");
    assert!(st.known && !st.running, "{st:?}");
    let us = c.status_unique("bg-1").await.expect("status unique");
    assert!(us.known && !us.running && us.waiting_clients == 0, "{us:?}");

    let (release_tx, release_rx) = mpsc::channel::<()>(1);
    let release_rx = Arc::new(tokio::sync::Mutex::new(release_rx));
    let worker = Worker::builder([&addr])
        .function("slow", move |job: Job| {
            let release = release_rx.clone();
            async move {
                job.send_status(1, 2).await.map_err(|_| JobError::Fail)?;
                release.lock().await.recv().await;
                Ok::<_, JobError>("done")
            }
        })
        .spawn()
        .expect("worker");
    eventually("job running with status 1/2", || {
        let (c, job) = (c.clone(), job.clone());
        async move {
            let st = c.status(&job).await.expect("status");
            st.known && st.running && st.numerator == 1 && st.denominator == 2
        }
    })
    .await;
    release_tx.send(()).await.expect("release");
    eventually("job gone", || {
        let (c, job) = (c.clone(), job.clone());
        async move { !c.status(&job).await.expect("status").known }
    })
    .await;
    assert!(!c.status_unique("bg-1").await.expect("status unique").known);
    worker.shutdown().await;
}

async fn priorities(addr: String) {
    let c = client(&addr);
    for (p, d) in [(Priority::Low, "low"), (Priority::Normal, "normal"), (Priority::High, "high")] {
        c.submit_background(JobRequest::new("prio", d).priority(p)).await.expect("submit");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder([&addr])
        .concurrency(1)
        .function("prio", move |job: Job| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(job.data().clone());
                Ok::<_, JobError>(Bytes::new())
            }
        })
        .spawn()
        .expect("worker");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(tokio::time::timeout(WAIT, rx.recv()).await.expect("job ran").expect("data"));
    }
    assert_eq!(order, vec![Bytes::from("high"), Bytes::from("normal"), Bytes::from("low")]);
    worker.shutdown().await;
}

async fn coalescing(addr: String) {
    let c = client(&addr);
    let a =
        c.submit(JobRequest::new("coal", "payload").unique("same").timeout(WAIT)).await.expect("submit a");
    let b = c.submit(JobRequest::new("coal", "other").unique("same").timeout(WAIT)).await.expect("submit b");
    assert_eq!(a.handle(), b.handle(), "the second submit joins the first job");
    let us = c.status_unique("same").await.expect("status unique");
    assert!(us.known && us.waiting_clients == 2, "{us:?}");
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    let worker = Worker::builder([&addr])
        .function("coal", move |job: Job| {
            runs2.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, JobError>(job.data().clone()) }
        })
        .spawn()
        .expect("worker");
    let (ra, rb) = tokio::join!(a.result(), b.result());
    assert_eq!(ra.expect("a").as_ref(), b"payload");
    assert_eq!(rb.expect("b").as_ref(), b"payload");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

async fn events(addr: String) {
    let worker = Worker::builder([&addr])
        .function("chatty", |job: Job| async move {
            job.send_data("d1").await.map_err(|_| JobError::Fail)?;
            job.send_warning("w1").await.map_err(|_| JobError::Fail)?;
            job.send_status(1, 3).await.map_err(|_| JobError::Fail)?;
            job.send_data("d2").await.map_err(|_| JobError::Fail)?;
            Ok::<_, JobError>("done")
        })
        .spawn()
        .expect("worker");
    let c = client(&addr);
    let mut s = c.submit(JobRequest::new("chatty", "")).await.expect("submit");
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(WAIT, s.next()).await.expect("event in time") {
        seen.push(ev.expect("event"));
    }
    assert_eq!(
        seen,
        vec![
            JobEvent::Data(Bytes::from("d1")),
            JobEvent::Warning(Bytes::from("w1")),
            JobEvent::Status { numerator: 1, denominator: 3 },
            JobEvent::Data(Bytes::from("d2")),
            JobEvent::Complete(Bytes::from("done")),
        ]
    );
    worker.shutdown().await;
}

async fn fail(addr: String) {
    let worker = Worker::builder([&addr])
        .function("failing", |_job: Job| async move { Err::<Bytes, _>(JobError::Fail) })
        .spawn()
        .expect("worker");
    let err = client(&addr).run(JobRequest::new("failing", "x").timeout(WAIT)).await.expect_err("fails");
    assert!(matches!(err, ClientError::JobFailed), "{err:?}");
    worker.shutdown().await;
}

fn exception_worker(addr: &str) -> Worker {
    Worker::builder([addr])
        .function("throws", |_job: Job| async move { Err::<Bytes, _>(JobError::exception("boom")) })
        .spawn()
        .expect("worker")
}

async fn exception_with_option(addr: String) {
    let worker = exception_worker(&addr);
    let c = Client::with_options([&addr], ClientOptions { exceptions: true, ..Default::default() })
        .expect("client");
    let err = c.run(JobRequest::new("throws", "x").timeout(WAIT)).await.expect_err("throws");
    match err {
        ClientError::Exception(data) => assert_eq!(data.as_ref(), b"boom"),
        other => panic!("expected an exception, got {other:?}"),
    }
    worker.shutdown().await;
}

async fn exception_without_option(addr: String) {
    let worker = exception_worker(&addr);
    // Without the option the server turns the exception into WORK_FAIL (gearmand appends
    // a NUL to the handle; the client must still match it).
    let err = client(&addr).run(JobRequest::new("throws", "x").timeout(WAIT)).await.expect_err("fails");
    assert!(matches!(err, ClientError::JobFailed), "{err:?}");
    worker.shutdown().await;
}

async fn many_in_flight(addr: String) {
    let worker =
        Worker::builder([&addr]).concurrency(8).function("reverse", reverse).spawn().expect("worker");
    let c = client(&addr);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let data = format!("job-{i}");
            let out = c.run(JobRequest::new("reverse", data.clone()).timeout(WAIT)).await.expect("run");
            let expected: Vec<u8> = data.bytes().rev().collect();
            assert_eq!(out.as_ref(), &expected[..]);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    worker.shutdown().await;
}

async fn worker_concurrency(addr: String) {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let worker = Worker::builder([&addr])
        .concurrency(3)
        .function("nap", move |_job: Job| {
            let (a, p) = (a.clone(), p.clone());
            async move {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                a.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, JobError>("")
            }
        })
        .spawn()
        .expect("worker");
    let c = client(&addr);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..9 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.run(JobRequest::new("nap", "").timeout(WAIT)).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("job");
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3, "exactly 3 jobs at a time");
    // 9 jobs of 200 ms, 3 at a time: about 600 ms, clearly less than serial 1.8 s.
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    worker.shutdown().await;
}

async fn handler_panic(addr: String) {
    let worker = Worker::builder([&addr])
        .function("fragile", |job: Job| async move {
            if job.data().as_ref() == b"panic" {
                panic!("handler blew up on purpose");
            }
            Ok::<_, JobError>("fine")
        })
        .spawn()
        .expect("worker");
    let c = client(&addr);
    let err = c.run(JobRequest::new("fragile", "panic").timeout(WAIT)).await.expect_err("fails");
    assert!(matches!(err, ClientError::JobFailed), "{err:?}");
    let ok = c.run(JobRequest::new("fragile", "calm").timeout(WAIT)).await.expect("worker still alive");
    assert_eq!(ok.as_ref(), b"fine");
    worker.shutdown().await;
}

async fn graceful_shutdown(addr: String) {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let worker = Worker::builder([&addr])
        .function("long", move |_job: Job| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<_, JobError>("finished")
            }
        })
        .spawn()
        .expect("worker");
    let c = client(&addr);
    let s = c.submit(JobRequest::new("long", "").timeout(WAIT)).await.expect("submit");
    tokio::time::timeout(WAIT, started_rx.recv()).await.expect("job started");
    let t0 = Instant::now();
    worker.shutdown().await;
    assert!(t0.elapsed() >= Duration::from_millis(300), "shutdown waited for the job");
    assert_eq!(s.result().await.expect("job in hand finished").as_ref(), b"finished");
    // The worker is gone: a new job stays queued.
    let mut admin = AdminClient::connect(&addr).await.expect("admin");
    eventually("no workers left for long", || async {
        let rows = AdminClient::connect(&addr).await.expect("admin").status().await.expect("status");
        rows.iter().any(|r| r.name == "long" && r.workers == 0)
    })
    .await;
    let job = c.submit_background(JobRequest::new("long", "")).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = c.status(&job).await.expect("status");
    assert!(st.known && !st.running, "{st:?}");
    admin.cancel_job(&String::from_utf8_lossy(job.handle())).await.expect("cancel");
}

async fn epoch_job(addr: String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = WorkerOptions { poll_interval: Some(Duration::from_millis(200)), ..Default::default() };
    let worker = Worker::builder([&addr])
        .options(options)
        .function("later", move |_job: Job| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
                Ok::<_, JobError>("")
            }
        })
        .spawn()
        .expect("worker");
    assert!(worker.wait_connected(1, WAIT).await);
    let c = client(&addr);
    let submitted = Instant::now();
    let when = SystemTime::now() + Duration::from_secs(2);
    let job = c.submit_background(JobRequest::new("later", "x").run_at(when)).await.expect("submit");
    let st = c.status(&job).await.expect("status");
    assert!(st.known && !st.running, "{st:?}");
    let ran = tokio::time::timeout(WAIT, rx.recv()).await.expect("epoch job ran").expect("time");
    // The epoch has one-second resolution: at least one second must have passed.
    assert!(
        ran.duration_since(submitted) >= Duration::from_millis(900),
        "{:?}",
        ran.duration_since(submitted)
    );
    // And it did not have to wait for another submit.
    assert!(ran.duration_since(submitted) < Duration::from_secs(5));
    worker.shutdown().await;
}

async fn admin_parsing(addr: String) {
    let mut admin = AdminClient::connect(&addr).await.expect("admin");
    assert!(!admin.version().await.expect("version").is_empty());
    assert!(admin.getpid().await.expect("getpid") > 0);
    admin.create_function("adm_empty").await.expect("create");
    let status = admin.status().await.expect("status");
    let row = status.iter().find(|r| r.name == "adm_empty").expect("created function listed");
    assert_eq!((row.total, row.running, row.workers), (0, 0, 0));

    let worker = Worker::builder([&addr])
        .client_id("admin-test-worker")
        .function("adm_other", reverse)
        .function("adm_work", reverse)
        .spawn()
        .expect("worker");
    eventually("worker registered", || async {
        let rows = AdminClient::connect(&addr).await.expect("admin").workers().await.expect("workers");
        rows.iter().any(|w| w.client_id == "admin-test-worker" && w.functions.len() == 2)
    })
    .await;
    let workers = admin.workers().await.expect("workers");
    let w = workers.iter().find(|w| w.client_id == "admin-test-worker").expect("worker row");
    assert_eq!(w.ip, "127.0.0.1");
    assert_eq!(w.functions, vec!["adm_work".to_string(), "adm_other".to_string()]);
    assert!(workers.iter().any(|w| w.client_id == "-"), "the admin connection itself is listed");
    worker.shutdown().await;

    let c = client(&addr);
    let job = c
        .submit_background(JobRequest::new("adm_q", "x").unique("u-adm").priority(Priority::High))
        .await
        .expect("submit");
    c.submit_background(JobRequest::new("adm_q", "y").priority(Priority::Low)).await.expect("submit");
    let prio = admin.priority_status().await.expect("prioritystatus");
    let row = prio.iter().find(|r| r.name == "adm_q").expect("adm_q row");
    assert_eq!((row.high, row.normal, row.low, row.workers), (1, 0, 1, 0));
    let handle = String::from_utf8_lossy(job.handle()).into_owned();
    let jobs = admin.show_jobs().await.expect("show jobs");
    let info = jobs.iter().find(|j| j.handle == handle).expect("job listed");
    assert_eq!(info.retries, 0);
    assert!(!info.abandoned);
    assert!(info.persisted, "background jobs are persisted");
    let uniques = admin.show_unique_jobs().await.expect("show unique jobs");
    assert!(uniques.iter().any(|u| u == "u-adm"), "{uniques:?}");
    assert!(uniques.iter().any(|u| u.is_empty()), "{uniques:?}");

    admin.set_max_queue("adm_q", MaxQueue { high: 2, normal: 2, low: 0 }).await.expect("maxqueue");
    let err = c.submit_background(JobRequest::new("adm_q", "z")).await.expect_err("queue full");
    match err {
        ClientError::Server { code, .. } => assert_eq!(code, "QUEUE_ERROR"),
        other => panic!("expected QUEUE_ERROR, got {other:?}"),
    }
    admin.clear_max_queue("adm_q").await.expect("maxqueue reset");

    admin.cancel_job(&handle).await.expect("cancel");
    match admin.cancel_job("H:nope:1").await {
        Err(ClientError::Admin { code, .. }) => assert_eq!(code, "UNKNOWN_JOB"),
        other => panic!("expected UNKNOWN_JOB, got {other:?}"),
    }
    match admin.drop_function("adm_never_seen").await {
        Err(ClientError::Admin { text, .. }) => assert_eq!(text, "function not found"),
        other => panic!("expected an error, got {other:?}"),
    }
    admin.drop_function("adm_empty").await.expect("drop");
    assert!(!admin.status().await.expect("status").iter().any(|r| r.name == "adm_empty"));
    match admin.raw("bogus", false).await {
        Err(ClientError::Admin { code, .. }) => assert_eq!(code, "UNKNOWN_COMMAND"),
        other => panic!("expected UNKNOWN_COMMAND, got {other:?}"),
    }
    assert!(matches!(admin.create_function("has space").await, Err(ClientError::InvalidArgument(_))));
    // The connection is still in step after the errors.
    assert!(!admin.version().await.expect("version").is_empty());
}

async fn server_errors(addr: String) {
    let c = client(&addr);
    let long_unique = "u".repeat(65);
    match c.submit_background(JobRequest::new("f", "x").unique(long_unique)).await {
        Err(ClientError::Server { code, text }) => {
            assert_eq!(code, "ARGUMENT_TOO_LARGE");
            assert_eq!(text, "Unique value too large");
        }
        other => panic!("expected ARGUMENT_TOO_LARGE, got {other:?}"),
    }
    // The connection stays in step: the next request gets its own answer.
    assert_eq!(c.echo("still here").await.expect("echo").as_ref(), b"still here");
    assert!(matches!(c.status_unique("u".repeat(64)).await, Err(ClientError::InvalidArgument(_))));
    // A timeout on a job nobody serves.
    let err =
        c.run(JobRequest::new("nobody", "x").timeout(Duration::from_millis(200))).await.expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}
