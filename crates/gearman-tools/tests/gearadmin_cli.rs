//! `gearadmin`: our tool and the C tool against the same server must print the same bytes.

mod common;

use common::*;
use gearman_client::{AdminClient, Client, JobRequest};

/// Replaces the fd (first word) of every `workers` row, which differs per connection.
fn normalize_workers(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once(' ') {
            Some((fd, rest)) if fd.bytes().all(|b| b.is_ascii_digit()) => format!("FD {rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

#[test]
fn every_option_matches_the_c_tool() {
    let rt = runtime();
    if !have(C_GEARADMIN, "every_option_matches_the_c_tool") {
        return;
    }
    for server in TestServer::all(&rt, "every_option_matches_the_c_tool") {
        // Some state to show: background jobs at every priority, a created function.
        let handles: Vec<String> = rt.block_on(async {
            let client = Client::new([server.addr()]).expect("client");
            let mut handles = Vec::new();
            for (i, p) in [
                gearman_client::Priority::High,
                gearman_client::Priority::Normal,
                gearman_client::Priority::Low,
            ]
            .into_iter()
            .enumerate()
            {
                let req = JobRequest::new("adm", "x").unique(format!("adm-{i}")).priority(p);
                let h = client.submit_background(req).await.expect("submit");
                handles.push(String::from_utf8_lossy(h.handle()).into_owned());
            }
            let mut admin = AdminClient::connect(&server.addr()).await.expect("admin");
            admin.create_function("dropme_c").await.expect("create");
            admin.create_function("dropme_ours").await.expect("create");
            handles
        });
        let cases: Vec<Vec<String>> = vec![
            s(&["--status"]),
            s(&["--priority-status"]),
            s(&["--workers"]),
            s(&["--server-version"]),
            s(&["--server-verbose"]),
            s(&["--getpid"]),
            s(&["--show-jobs"]),
            s(&["--show-unique-jobs"]),
            s(&["--create-function", "made"]),
            s(&["--drop-function", "nosuch"]),
            s(&["--cancel-job", "H:nosuch:1"]),
            s(&["--cancel-job", "a b"]),
            s(&["--create-function", "x y"]),
            s(&["--status", "--getpid", "--show-jobs", "--server-version", "--priority-status"]),
            s(&["--workers", "--show-unique-jobs", "--cancel-job", "nosuch", "--server-verbose"]),
            s(&["--port", &server.port.to_string(), "--host", "127.0.0.1", "--status"]),
        ];
        for case in cases {
            // Cases naming the server themselves get no -h/-p in front.
            let mut args = if case.contains(&"--port".to_string()) { Vec::new() } else { server.hp() };
            args.extend(case.iter().cloned());
            let ours = run(OUR_GEARADMIN, &args, None);
            let theirs = run(C_GEARADMIN, &args, None);
            let ctx = format!("{} server, gearadmin {case:?}", server.name);
            assert_eq!(normalize_workers(&ours.stdout), normalize_workers(&theirs.stdout), "{ctx}");
            assert_eq!(ours.stderr, theirs.stderr, "{ctx}");
            if theirs.stderr.starts_with("Error: ") {
                // Deliberate: an ERR answer is a failure for us; the C tool exits 0.
                assert_eq!(ours.code, Some(1), "{ctx}");
            } else {
                assert_eq!(ours.code, theirs.code, "{ctx}");
            }
        }
        // Commands with effects: each tool on its own object, same answers.
        for (tool, h, f) in
            [(OUR_GEARADMIN, &handles[0], "dropme_ours"), (C_GEARADMIN, &handles[1], "dropme_c")]
        {
            let mut args = server.hp();
            args.extend(s(&["--cancel-job", h, "--drop-function", f]));
            let out = run(tool, &args, None);
            assert_eq!(out.stdout, "OK\nOK\n", "{} server, {tool}", server.name);
            assert_eq!(out.code, Some(0));
        }
    }
}

#[test]
fn usage_and_connection_errors_match_the_c_tool() {
    let compare = have(C_GEARADMIN, "usage_and_connection_errors_match_the_c_tool (comparison)");
    let closed = free_port().to_string();
    let cases = vec![
        s(&[]),
        s(&["--bogus"]),
        s(&["--shutdown"]),
        s(&["--status", "--status"]),
        s(&["--cancel-job"]),
        s(&["-h", "127.0.0.1", "-p", &closed, "--status"]),
    ];
    for case in cases {
        let ours = run(OUR_GEARADMIN, &case, None);
        assert_eq!(ours.code, Some(1), "{case:?}: {ours:?}");
        if compare {
            let theirs = run(C_GEARADMIN, &case, None);
            let norm = |o: &Out, prog: &str| (o.stdout.replace(prog, "PROG"), o.stderr.clone(), o.code);
            assert_eq!(norm(&ours, OUR_GEARADMIN), norm(&theirs, C_GEARADMIN), "gearadmin {case:?}");
        }
    }
    let help = run(OUR_GEARADMIN, &s(&["--help"]), None);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.starts_with("Options:\n  --help "), "{help:?}");
    assert!(help.stdout.contains("Exit status"), "{help:?}");
    if compare {
        let theirs = run(C_GEARADMIN, &s(&["--help"]), None);
        assert!(help.stdout.starts_with(&theirs.stdout), "our --help extends the C tool's");
    }
}
