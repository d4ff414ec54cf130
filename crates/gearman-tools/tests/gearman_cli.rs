//! `gearman`: our tool and the C tool, side by side against our server and the real
//! gearmand; their outputs must match (job handles normalised).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use gearman_client::{Client, Job, JobError, JobEvent, JobRequest, Worker};

/// A library worker with the functions the client cases use.
fn spawn_test_worker(rt: &tokio::runtime::Runtime, addr: &str) -> Worker {
    let _guard = rt.enter();
    let worker = Worker::builder([addr])
        .function("rt", |job: Job| async move {
            let mut v = b"R[".to_vec();
            v.extend_from_slice(job.data());
            v.push(b']');
            Ok::<_, JobError>(v)
        })
        .function("uq", |job: Job| async move { Ok::<_, JobError>(job.unique().clone()) })
        .function("prog", |job: Job| async move {
            job.send_status(1, 4).await.map_err(|_| JobError::Fail)?;
            job.send_data("dat").await.map_err(|_| JobError::Fail)?;
            job.send_warning("warn").await.map_err(|_| JobError::Fail)?;
            Ok::<_, JobError>("fin")
        })
        .function("fail", |_job: Job| async move { Err::<Bytes, _>(JobError::Fail) })
        .spawn()
        .expect("spawn worker");
    assert!(rt.block_on(worker.wait_connected(1, Duration::from_secs(10))), "test worker connected");
    worker
}

/// The client cases: arguments and stdin.
fn client_cases() -> Vec<(Vec<String>, Option<&'static [u8]>)> {
    vec![
        (s(&["-f", "rt", "hello"]), None),
        (s(&["-f", "rt", "a", "b"]), None),
        (s(&["-f", "rt"]), Some(b"line1\nline2\n")),
        (s(&["-n", "-f", "rt"]), Some(b"a\nb\n")),
        (s(&["-N", "-f", "rt"]), Some(b"a\nb\n")),
        (s(&["-s", "-f", "rt"]), Some(b"ignored")),
        (s(&["-P", "-f", "rt", "x"]), None),
        (s(&["-f", "rt", "x", "-P"]), None),
        (s(&["-u", "my-unique", "-f", "uq", "x"]), None),
        (s(&["-P", "-f", "prog", "x"]), None),
        (s(&["-f", "prog", "x"]), None),
        (s(&["-f", "fail", "x"]), None),
        (s(&["-P", "-f", "fail", "x"]), None),
        (s(&["-b", "-v", "-f", "bgjob", "x"]), None),
        (s(&["-f", "bgjob", "-v", "y", "-b"]), None),
        (s(&["-b", "-f", "bgjob", "z"]), None),
    ]
}

#[test]
fn client_mode_matches_the_c_tool() {
    let rt = runtime();
    let servers = TestServer::all(&rt, "client_mode_matches_the_c_tool");
    let compare = have(C_GEARMAN, "client_mode_matches_the_c_tool (comparison)");
    for server in &servers {
        let worker = spawn_test_worker(&rt, &server.addr());
        for (args, stdin) in client_cases() {
            let mut full = server.hp();
            full.extend(args.iter().cloned());
            let mut ours = run(OUR_GEARMAN, &full, stdin);
            ours.stdout = normalize_handles(&ours.stdout);
            if compare {
                let mut theirs = run(C_GEARMAN, &full, stdin);
                theirs.stdout = normalize_handles(&theirs.stdout);
                if args == s(&["-f", "prog", "x"]) {
                    // Deliberate difference: without -P the C tool writes data with write(2)
                    // but status lines through stdio, so on a pipe the status lines come
                    // last. We print in arrival order (what the C tool shows on a terminal).
                    assert_eq!((&ours.stderr, ours.code), (&theirs.stderr, theirs.code));
                    assert_eq!(theirs.stdout, "datfin25% Complete\n");
                } else {
                    assert_eq!(ours, theirs, "{} server, gearman {args:?}", server.name);
                }
            }
            // Independent of the C tool: a few expected outputs.
            match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["-f", "rt", "hello"] => assert_eq!(ours.stdout, "R[hello]"),
                ["-n", "-f", "rt"] => assert_eq!(ours.stdout, "R[a\n]R[b\n]"),
                ["-N", "-f", "rt"] => assert_eq!(ours.stdout, "R[a]R[b]"),
                ["-u", "my-unique", "-f", "uq", "x"] => assert_eq!(ours.stdout, "my-unique"),
                ["-P", "-f", "prog", "x"] => {
                    assert_eq!(ours.stdout, "prog: 25% Complete\nprog: datprog: fin");
                    assert_eq!(ours.stderr, "prog: warn");
                }
                ["-f", "prog", "x"] => assert_eq!(ours.stdout, "25% Complete\ndatfin"),
                ["-f", "fail", "x"] => {
                    assert_eq!(ours.stderr, "Job failed\n");
                    assert_eq!(ours.code, Some(1));
                }
                ["-b", "-v", "-f", "bgjob", "x"] => assert_eq!(ours.stdout, "Task created: H:X\n"),
                _ => {}
            }
        }
        rt.block_on(worker.shutdown());
    }
}

#[test]
fn several_functions_run_every_workload() {
    let rt = runtime();
    let servers = TestServer::all(&rt, "several_functions_run_every_workload");
    let compare = have(C_GEARMAN, "several_functions_run_every_workload (comparison)");
    for server in &servers {
        let worker = spawn_test_worker(&rt, &server.addr());
        let mut args = server.hp();
        args.extend(s(&["-P", "-f", "rt", "-f", "uq", "-u", "k", "w1"]));
        let mut outs = vec![run(OUR_GEARMAN, &args, None)];
        if compare {
            outs.push(run(C_GEARMAN, &args, None));
        }
        for out in outs {
            // The two jobs run concurrently, so their order may vary.
            assert!(
                out.stdout == "rt: R[w1]uq: k" || out.stdout == "uq: krt: R[w1]",
                "{} server: {out:?}",
                server.name
            );
            assert_eq!(out.code, Some(0));
        }
        rt.block_on(worker.shutdown());
    }
}

#[test]
fn priorities_and_unique_keys_reach_the_server() {
    let rt = runtime();
    let servers = TestServer::all(&rt, "priorities_and_unique_keys_reach_the_server");
    let compare = have(C_GEARMAN, "priorities_and_unique_keys_reach_the_server (comparison)");
    for server in &servers {
        let mut tools = vec![("ours", OUR_GEARMAN)];
        if compare {
            tools.push(("c", C_GEARMAN));
        }
        let mut rows = Vec::new();
        for (tag, tool) in &tools {
            let f = format!("prio_{tag}");
            for (flags, u) in
                [(vec!["-I"], "u1"), (vec!["-L"], "u2"), (vec![], "u3"), (vec!["-I", "-L"], "u4")]
            {
                let mut args = server.hp();
                args.extend(s(&["-b", "-f", &f, "-u", &format!("{tag}-{u}"), "x"]));
                args.extend(flags.iter().map(|a| a.to_string()));
                let out = run(tool, &args, None);
                assert_eq!(out.code, Some(0), "{tag}: {out:?}");
            }
            // Without -u, every job gets its own unique key (no coalescing).
            for _ in 0..2 {
                let mut args = server.hp();
                args.extend(s(&["-b", "-f", &f, "same"]));
                assert_eq!(run(tool, &args, None).code, Some(0));
            }
            let prio = rt.block_on(async {
                let mut admin = gearman_client::AdminClient::connect(&server.addr()).await.expect("admin");
                admin.priority_status().await.expect("prioritystatus")
            });
            let row = prio.into_iter().find(|p| p.name == f).expect("function row");
            rows.push((row.high, row.normal, row.low));
            let uniques = rt.block_on(async {
                let mut admin = gearman_client::AdminClient::connect(&server.addr()).await.expect("admin");
                admin.show_unique_jobs().await.expect("show unique jobs")
            });
            for u in ["u1", "u2", "u3", "u4"] {
                assert!(uniques.contains(&format!("{tag}-{u}")), "{tag}-{u} in {uniques:?}");
            }
        }
        for r in &rows {
            assert_eq!(*r, (1, 3, 2), "{} server: high, normal, low", server.name);
        }
    }
}

#[test]
fn our_failures_exit_non_zero() {
    let rt = runtime();
    let server = TestServer::ours(&rt);
    let closed = free_port().to_string();
    let out = run(OUR_GEARMAN, &s(&["-h", "127.0.0.1", "-p", &closed, "-f", "x", "y"]), None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("GEARMAN_COULD_NOT_CONNECT"), "{out:?}");

    let mut args = server.hp();
    args.extend(s(&["-t", "300", "-f", "nobody", "y"]));
    let out = run(OUR_GEARMAN, &args, None);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("GEARMAN_TIMEOUT"), "{out:?}");

    let out = run(OUR_GEARMAN, &s(&["x"]), None);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("\tError in usage(No Functions were provided).\n\nClient mode: "), "{out:?}");

    let out = run(OUR_GEARMAN, &s(&["-H"]), None);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("Exit status"), "{out:?}");

    if have(C_GEARMAN, "our_failures_exit_non_zero (comparison)") {
        // The C tool's usage text (after the program name) is ours too.
        let ours = run(OUR_GEARMAN, &s(&["x"]), None);
        let theirs = run(C_GEARMAN, &s(&["x"]), None);
        assert_eq!(ours.stderr.replace(OUR_GEARMAN, "PROG"), theirs.stderr.replace(C_GEARMAN, "PROG"));
        assert_eq!(ours.code, theirs.code);
    }
}

/// Starts `tool -w ARGS` and waits until it has registered `function`.
fn start_worker(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    tool: &str,
    function: &str,
    args: &[&str],
) -> Running {
    let mut full = server.hp();
    full.extend(s(&["-w", "-f", function]));
    full.extend(s(args));
    let running = start(tool, &full, None);
    let addr = server.addr();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut admin = gearman_client::AdminClient::connect(&addr).await.expect("admin");
            let st = admin.status().await.expect("status");
            if st.iter().any(|f| f.name == function && f.workers > 0) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "worker for {function} did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    running
}

/// Submits `data` to `function` and collects every event.
fn events(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    function: &str,
    data: &'static str,
) -> Vec<JobEvent> {
    rt.block_on(async {
        let client = Client::new([server.addr()]).expect("client");
        let mut stream = client.submit(JobRequest::new(function.to_string(), data)).await.expect("submit");
        let mut v = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(ev))) => v.push(ev),
                Ok(None) => break,
                Ok(Some(Err(e))) => panic!("job stream: {e}"),
                Err(_) => panic!("no job event within 10 s"),
            }
        }
        v
    })
}

#[test]
fn worker_mode_matches_the_c_tool() {
    let rt = runtime();
    let servers = TestServer::all(&rt, "worker_mode_matches_the_c_tool");
    let mut tools = vec![("ours", OUR_GEARMAN)];
    if have(C_GEARMAN, "worker_mode_matches_the_c_tool (comparison)") {
        tools.push(("c", C_GEARMAN));
    }
    for server in &servers {
        let mut results = Vec::new();
        for (tag, tool) in &tools {
            let ctx = format!("{} server, {tag} worker", server.name);
            // A command per job; -c 1 exits after one job.
            let f = format!("upper_{tag}");
            let w = start_worker(&rt, server, tool, &f, &["-c", "1", "--", "tr", "a-z", "A-Z"]);
            let ev = events(&rt, server, &f, "hello\nworld\n");
            let out = w.finish(RUN_LIMIT);
            assert_eq!(out.code, Some(0), "{ctx}: {out:?}");
            results.push(ev.clone());
            assert_eq!(ev, [JobEvent::Complete(Bytes::from_static(b"HELLO\nWORLD\n"))], "{ctx}");

            let f = format!("rev_{tag}");
            let w = start_worker(&rt, server, tool, &f, &["-c", "2", "--", "rev"]);
            let ev1 = events(&rt, server, &f, "abc\n");
            let ev2 = events(&rt, server, &f, "xyz\n");
            let out = w.finish(RUN_LIMIT);
            assert_eq!(out.code, Some(0), "{ctx}: {out:?}");
            assert_eq!(ev1, [JobEvent::Complete(Bytes::from_static(b"cba\n"))], "{ctx}");
            assert_eq!(ev2, [JobEvent::Complete(Bytes::from_static(b"zyx\n"))], "{ctx}");
            results.push(ev1);

            // A failing command: its output as WORK_DATA, then WORK_FAIL.
            let f = format!("failing_{tag}");
            let w =
                start_worker(&rt, server, tool, &f, &["-c", "1", "--", "sh", "-c", "echo partial; exit 3"]);
            let ev = events(&rt, server, &f, "");
            let _ = w.finish(RUN_LIMIT);
            assert_eq!(ev, [JobEvent::Data(Bytes::from_static(b"partial\n")), JobEvent::Fail], "{ctx}");
            results.push(ev);

            // No command: the workload goes to the worker's stdout, the result is empty.
            let f = format!("echo_{tag}");
            let w = start_worker(&rt, server, tool, &f, &["-c", "1"]);
            let ev = events(&rt, server, &f, "shown");
            let out = w.finish(RUN_LIMIT);
            assert_eq!(out.stdout, "shown", "{ctx}");
            assert_eq!(ev, [JobEvent::Complete(Bytes::new())], "{ctx}");
            results.push(ev);
        }
        if tools.len() == 2 {
            let half = results.len() / 2;
            assert_eq!(results[..half], results[half..], "{} server: ours vs C worker", server.name);
        }
    }
}

#[test]
fn worker_per_line_sends_each_line_once() {
    // Deliberate difference: the C tool (1.1.20) resends everything read so far with each line.
    let rt = runtime();
    let server = TestServer::ours(&rt);
    let w =
        start_worker(&rt, &server, OUR_GEARMAN, "lines", &["-n", "-c", "1", "--", "printf", "l1\\nl2\\nl3"]);
    let ev = events(&rt, &server, "lines", "");
    assert_eq!(w.finish(RUN_LIMIT).code, Some(0));
    let d = |s: &'static str| JobEvent::Data(Bytes::from_static(s.as_bytes()));
    assert_eq!(ev, [d("l1\n"), d("l2\n"), d("l3"), JobEvent::Complete(Bytes::new())]);

    let w =
        start_worker(&rt, &server, OUR_GEARMAN, "lines2", &["-N", "-c", "1", "--", "printf", "l1\\nl2\\n"]);
    let ev = events(&rt, &server, "lines2", "");
    assert_eq!(w.finish(RUN_LIMIT).code, Some(0));
    assert_eq!(ev, [d("l1"), d("l2"), JobEvent::Complete(Bytes::new())]);
}

#[test]
fn worker_timeout_and_pid_file() {
    let rt = runtime();
    let server = TestServer::ours(&rt);
    let pid_file = std::env::temp_dir().join(format!("gearman-tools-worker-{}.pid", std::process::id()));
    let mut args = server.hp();
    args.extend(s(&["-w", "-t", "300", "-c", "1", "-f", "idle", "-i"]));
    args.push(pid_file.display().to_string());
    let running = start(OUR_GEARMAN, &args, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let content = loop {
        if let Ok(c) = std::fs::read_to_string(&pid_file) {
            if c.ends_with('\n') {
                break c;
            }
        }
        assert!(std::time::Instant::now() < deadline, "pid file not written");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(content.trim().parse::<u32>().is_ok(), "{content:?}");
    let out = running.finish(RUN_LIMIT);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("GEARMAN_TIMEOUT"), "{out:?}");
    assert!(!pid_file.exists(), "pid file removed at exit");
}

#[test]
fn c_client_with_our_worker_and_our_client_with_c_worker() {
    let rt = runtime();
    if !have(C_GEARMAN, "c_client_with_our_worker_and_our_client_with_c_worker") {
        return;
    }
    for server in TestServer::all(&rt, "c_client_with_our_worker_and_our_client_with_c_worker") {
        for (client, worker) in [(C_GEARMAN, OUR_GEARMAN), (OUR_GEARMAN, C_GEARMAN)] {
            let w = start_worker(&rt, &server, worker, "mixed", &["-c", "1", "--", "tr", "a-z", "A-Z"]);
            let mut args = server.hp();
            args.extend(s(&["-f", "mixed", "round trip"]));
            let out = run(client, &args, None);
            assert_eq!(out.stdout, "ROUND TRIP", "{} server, client {client}", server.name);
            assert_eq!(out.code, Some(0));
            assert_eq!(w.finish(RUN_LIMIT).code, Some(0));
        }
    }
}
