//! No single point of failure: servers dying and coming back mid-run.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use gearman_client::{Client, ClientOptions, Job, JobError, JobRequest, Worker, WorkerOptions};

const WAIT: Duration = Duration::from_secs(20);

fn fast_reconnect() -> WorkerOptions {
    WorkerOptions {
        concurrency: 4,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(300),
        ..Default::default()
    }
}

fn slow_echo_worker(addrs: &[String], served: Arc<AtomicUsize>) -> Worker {
    Worker::builder(addrs)
        .options(fast_reconnect())
        .function("echo", move |job: Job| {
            let served = served.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                served.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(job.data().clone())
            }
        })
        .spawn()
        .expect("worker")
}

/// Two servers, a worker on both, a client submitting a run of jobs; one server is
/// killed mid-run; every job still completes.
async fn failover_run(mut a: TestServer, b: TestServer) {
    let addrs = vec![a.addr.clone(), b.addr.clone()];
    let served = Arc::new(AtomicUsize::new(0));
    let worker = slow_echo_worker(&addrs, served.clone());
    assert!(worker.wait_connected(2, WAIT).await, "worker connects to both servers");
    let options = ClientOptions { retries: 5, ..Default::default() };
    let client = Client::with_options(&addrs, options).expect("client");

    let total = 200;
    let mut tasks = Vec::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        let c = client.clone();
        let done = done_tx.clone();
        // Half of the jobs carry a unique key, so both routing paths are exercised.
        let mut req = JobRequest::new("echo", format!("job-{i}")).timeout(WAIT);
        if i % 2 == 0 {
            req = req.unique(format!("key-{i}"));
        }
        tasks.push(tokio::spawn(async move {
            let out = c.run(req).await;
            let _ = done.send(());
            (i, out)
        }));
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Let part of the run finish, then kill the first server.
    for _ in 0..40 {
        done_rx.recv().await.expect("progress");
    }
    a.stop().await;
    let mut ok = HashSet::new();
    for t in tasks {
        let (i, out) = t.await.expect("task");
        let out = out.unwrap_or_else(|e| panic!("job {i} failed: {e}"));
        assert_eq!(out.as_ref(), format!("job-{i}").as_bytes());
        ok.insert(i);
    }
    assert_eq!(ok.len(), total);
    eprintln!("served {} handler runs for {total} jobs", served.load(Ordering::SeqCst));
    assert!(served.load(Ordering::SeqCst) >= total);
    // New jobs keep working with one server down.
    let out = client.run(JobRequest::new("echo", "after").unique("after").timeout(WAIT)).await.expect("run");
    assert_eq!(out.as_ref(), b"after");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_two_of_our_servers() {
    failover_run(TestServer::ours().await, TestServer::ours().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_from_gearmand_to_our_server() {
    let Some(g) = TestServer::gearmand("failover_from_gearmand_to_our_server").await else {
        return;
    };
    failover_run(g, TestServer::ours().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_two_gearmands() {
    let Some(a) = TestServer::gearmand("failover_between_two_gearmands").await else {
        return;
    };
    let Some(b) = TestServer::gearmand("failover_between_two_gearmands").await else {
        return;
    };
    failover_run(a, b).await;
}

/// A worker survives its server restarting: stop the server, start a new one on the
/// same port, and the worker reconnects and takes jobs; so does the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_client_survive_server_restart() {
    let mut server = TestServer::ours().await;
    let addr = server.addr.clone();
    let port = server.port;
    let served = Arc::new(AtomicUsize::new(0));
    let worker = slow_echo_worker(std::slice::from_ref(&addr), served.clone());
    let client = Client::with_options(
        [&addr],
        ClientOptions { reconnect_min: Duration::from_millis(50), ..Default::default() },
    )
    .expect("client");
    assert_eq!(client.run(JobRequest::new("echo", "one").timeout(WAIT)).await.expect("run").as_ref(), b"one");

    server.stop().await;
    // While the only server is down, calls fail fast with a connection error.
    let err = client.run(JobRequest::new("echo", "down").timeout(WAIT)).await.expect_err("server down");
    assert!(err.is_connection_error(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let _server = TestServer::ours_on(port).await;
    assert!(worker.wait_connected(1, WAIT).await, "worker reconnected");
    let out = client.run(JobRequest::new("echo", "two").timeout(WAIT)).await.expect("run after restart");
    assert_eq!(out.as_ref(), b"two");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    worker.shutdown().await;
}

/// Unique keys pick the server by hash, so two clients with the same server list send
/// the same key to the same server and their jobs coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_route_to_the_same_server() {
    let a = TestServer::ours().await;
    let b = TestServer::ours().await;
    let addrs = vec![a.addr.clone(), b.addr.clone()];
    let c1 = Client::new(&addrs).expect("client");
    let c2 = Client::new(&addrs).expect("client");
    for i in 0..20 {
        let key = format!("k{i}");
        let s1 = c1.submit(JobRequest::new("nobody", "x").unique(key.clone())).await.expect("submit");
        let s2 = c2.submit(JobRequest::new("nobody", "x").unique(key)).await.expect("submit");
        assert_eq!(s1.handle(), s2.handle());
    }
    // And the two servers both got some.
    let servers: HashSet<String> = {
        let mut set = HashSet::new();
        for i in 0..20 {
            let key = format!("k{i}");
            let s = c1.submit(JobRequest::new("nobody", "x").unique(key)).await.expect("submit");
            set.insert(s.handle().server().to_string());
        }
        set
    };
    assert_eq!(servers.len(), 2);
}
