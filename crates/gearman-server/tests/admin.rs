//! Byte-exact text admin protocol (ADMIN.md) against both servers, plus
//! `admin_same_as_real`, which runs one scripted scenario on both and compares.
#![allow(missing_docs)]

mod support;
#[macro_use]
mod wire;

use std::time::Duration;
use support::{Conn, Kind, Server};
use wire::*;

const QUIET: Duration = Duration::from_millis(250);

fn unknown(token: &str) -> String {
    format!("ERR UNKNOWN_COMMAND Unknown+server+command{token}\r\n")
}

fn invalid_args(token: &str) -> String {
    format!("ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+{token}\r\n")
}

fn case_empty_lists(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    for cmd in ["status", "prioritystatus", "show jobs", "show unique jobs"] {
        assert_eq!(a.list(cmd), ".\n", "{cmd}");
    }
    wait_connections(&mut a, 1);
    assert_eq!(worker_rows(&a.list("workers")), ["FD 127.0.0.1 - :"]);
}
both!(case_empty_lists, ours_empty_lists, real_empty_lists);

fn case_list_formats(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w = s.connect();
    w.req(SET_CLIENT_ID, &["worker-1"]);
    w.can_do("resize").can_do("thumb");
    let mut c = s.connect();
    let h1 = c.submit(SUBMIT_JOB_LOW, "thumb", "u-1", "t");
    let h2 = c.submit(SUBMIT_JOB, "resize", "", "r");
    let h3 = c.submit(SUBMIT_JOB_HIGH_BG, "resize", "u-3", "r");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "thumb", "t"]);
    let mut a = s.connect();
    wait_connections(&mut a, 3);
    assert_eq!(rows(&a.list("status")), ["resize\t2\t0\t1", "thumb\t1\t1\t1"]);
    assert_eq!(rows(&a.list("prioritystatus")), ["resize\t1\t1\t0\t1", "thumb\t0\t0\t0\t1"]);
    assert_eq!(
        worker_rows(&a.list("workers")),
        ["FD 127.0.0.1 - :", "FD 127.0.0.1 - :", "FD 127.0.0.1 worker-1 : thumb resize"]
    );
    let mut jobs = vec![format!("{h1}\t0\t0\t0"), format!("{h2}\t0\t0\t0"), format!("{h3}\t0\t0\t1")];
    jobs.sort();
    assert_eq!(rows(&a.list("show jobs")), jobs);
    assert_eq!(rows(&a.list("show unique jobs")), ["", "u-1", "u-3"]);
    // Lists end in `\n` only; every line has the right number of tabs.
    let st = a.list("status");
    assert!(!st.contains('\r'));
    assert!(st.lines().filter(|l| *l != ".").all(|l| l.matches('\t').count() == 3), "{st:?}");
    let ps = a.list("prioritystatus");
    assert!(ps.lines().filter(|l| *l != ".").all(|l| l.matches('\t').count() == 4), "{ps:?}");
    // Running jobs leave prioritystatus but stay in status; completion removes them.
    w.req(WORK_COMPLETE, &[&h1, ""]);
    c.want(WORK_COMPLETE, &[&h1, ""]);
    assert_eq!(rows(&a.list("status")), ["resize\t2\t0\t1", "thumb\t0\t0\t1"]);
    // Functions stay listed with zeros after the worker leaves.
    drop(w);
    wait_connections(&mut a, 2);
    // gearmand unregisters the functions after the connection leaves `workers`.
    let status = wait_list(&mut a, "status", |r| r.iter().all(|row| row.ends_with("\t0")));
    assert_eq!(status, ["resize\t2\t0\t0", "thumb\t0\t0\t0"]);
    assert_eq!(rows(&a.list("prioritystatus")), ["resize\t1\t1\t0\t0", "thumb\t0\t0\t0\t0"]);
}
both!(case_list_formats, ours_list_formats, real_list_formats);

fn case_workers_ids(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w1 = s.connect();
    w1.req(SET_CLIENT_ID, &[""]).can_do("other");
    let mut w2 = s.connect();
    let long = "i".repeat(200);
    w2.req(SET_CLIENT_ID, &[&long]).can_do("f").can_do("f").can_do("g");
    let mut w3 = s.connect();
    w3.req(SET_CLIENT_ID, &["with space"]).req(SET_CLIENT_ID, &["second-id"]).sync();
    let mut a = s.connect();
    wait_connections(&mut a, 4);
    let mut want = vec![
        "FD 127.0.0.1  : other".to_string(),
        format!("FD 127.0.0.1 {} : g f f", "i".repeat(127)),
        "FD 127.0.0.1 second-id :".to_string(),
        "FD 127.0.0.1 - :".to_string(),
    ];
    want.sort();
    assert_eq!(worker_rows(&a.list("workers")), want);
    // The fd column is numeric and distinct per connection.
    let fds: Vec<u32> =
        rows(&a.list("workers")).iter().map(|r| r.split(' ').next().unwrap().parse().unwrap()).collect();
    let mut d = fds.clone();
    d.dedup();
    assert_eq!(d.len(), fds.len());
    w2.req(CANT_DO, &["f"]).sync();
    w1.req(RESET_ABILITIES, &[]).sync();
    let mut want = vec![
        "FD 127.0.0.1  :".to_string(),
        format!("FD 127.0.0.1 {} : g", "i".repeat(127)),
        "FD 127.0.0.1 second-id :".to_string(),
        "FD 127.0.0.1 - :".to_string(),
    ];
    want.sort();
    assert_eq!(worker_rows(&a.list("workers")), want);
}
both!(case_workers_ids, ours_workers_ids, real_workers_ids);

fn case_version_getpid_verbose(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let v = a.admin_line("version");
    assert!(v.starts_with("OK ") && v.ends_with('\n') && !v.ends_with("\r\n") && v.len() > 4, "{v:?}");
    assert_eq!(a.admin_line("version extra args"), v);
    assert_eq!(a.admin_line("getpid"), format!("OK {}\n", s.child.id()));
    assert_eq!(a.admin_line("getpid x"), format!("OK {}\n", s.child.id()));
    assert_eq!(a.admin_line("verbose"), "OK ERROR\n");
    assert_eq!(a.admin_line("verbose DEBUG"), "OK ERROR\n");
    // Pipelined, mixed endings.
    a.send(b"version\r\ngetpid\r\nverbose\n");
    a.expect(v.as_bytes()).expect(format!("OK {}\n", s.child.id()).as_bytes()).expect(b"OK ERROR\n");
    drop(s);
    let Some(s) = start(kind, &["--verbose", "INFO"]) else {
        return;
    };
    assert_eq!(s.connect().admin_line("verbose"), "OK INFO\n");
}
both!(case_version_getpid_verbose, ours_version_getpid_verbose, real_version_getpid_verbose);

fn case_maxqueue_forms(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    assert_eq!(a.admin_line("maxqueue"), invalid_args("maxqueue"));
    assert_eq!(a.admin_line("MAXQUEUE"), invalid_args("MAXQUEUE"));
    // Unknown function: OK and nothing is created.
    assert_eq!(a.admin_line("maxqueue nosuch 1"), "OK\r\n");
    assert_eq!(a.list("status"), ".\n");
    a.text("create function mq\r\n", "\r\n");
    for l in [
        "maxqueue mq",
        "maxqueue mq 5",
        "maxqueue mq 1 2",
        "maxqueue mq 1 2 3",
        "maxqueue mq x",
        "maxqueue mq -3",
    ] {
        assert_eq!(a.admin_line(l), "OK\r\n", "{l}");
    }
    // A 6th token closes the connection without an answer.
    a.send(b"maxqueue mq 1 2 3 4\r\n");
    assert_eq!(a.closed_after(), b"");
    let mut a = s.connect();
    assert_eq!(a.list("status"), "mq\t0\t0\t0\n.\n");
}
both!(case_maxqueue_forms, ours_maxqueue_forms, real_maxqueue_forms);

fn full(c: &mut Conn, t: u32, f: &str, u: &str) {
    c.req(t, &[f, u, "x"]).want_error("QUEUE_ERROR", "Job queue is full");
}

fn case_maxqueue_enforced(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "mq", "", "seed");
    assert_eq!(a.admin_line("maxqueue mq 2"), "OK\r\n");
    c.submit(SUBMIT_JOB_BG, "mq", "u", "x");
    full(&mut c, SUBMIT_JOB_BG, "mq", "");
    full(&mut c, SUBMIT_JOB_HIGH, "mq", "v");
    full(&mut c, SUBMIT_JOB_LOW_BG, "mq", "v");
    c.req(SUBMIT_JOB_EPOCH, &["mq", "", "0", "x"]).want_error("QUEUE_ERROR", "Job queue is full");
    c.req(SUBMIT_REDUCE_JOB, &["mq", "", "r", "a", "x"]).want_error("QUEUE_ERROR", "Job queue is full");
    // Coalesced submits are never refused.
    assert_eq!(c.submit(SUBMIT_JOB, "mq", "u", "x"), h(2));
    // Running jobs count too.
    let mut w = s.connect();
    w.can_do("mq");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "mq", "seed"]);
    full(&mut c, SUBMIT_JOB_BG, "mq", "");
    // Other functions are unaffected.
    c.submit(SUBMIT_JOB_BG, "other", "", "x");
    // 0 = unlimited.
    assert_eq!(a.admin_line("maxqueue mq 0"), "OK\r\n");
    assert_eq!(c.submit(SUBMIT_JOB_BG, "mq", "", "x"), h(4));
    // Lowering below the current count removes nothing.
    assert_eq!(a.admin_line("maxqueue mq 1"), "OK\r\n");
    assert_eq!(rows(&a.list("status"))[0], "mq\t3\t1\t1");
    // `maxqueue F` resets to unlimited.
    assert_eq!(a.admin_line("maxqueue mq"), "OK\r\n");
    assert_eq!(c.submit(SUBMIT_JOB_BG, "mq", "", "x"), h(5));
}
both!(case_maxqueue_enforced, ours_maxqueue_enforced, real_maxqueue_enforced);

fn case_maxqueue_per_priority(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let mut c = s.connect();
    a.text("create function mq2\r\n", "\r\n");
    // High 1, normal 2, low 0 (unlimited).
    assert_eq!(a.admin_line("maxqueue mq2 1 2 0"), "OK\r\n");
    c.submit(SUBMIT_JOB_HIGH_BG, "mq2", "", "x");
    full(&mut c, SUBMIT_JOB_HIGH_BG, "mq2", "");
    full(&mut c, SUBMIT_JOB_HIGH, "mq2", "");
    c.submit(SUBMIT_JOB_BG, "mq2", "", "x");
    full(&mut c, SUBMIT_JOB, "mq2", "");
    for _ in 0..3 {
        c.submit(SUBMIT_JOB_LOW_BG, "mq2", "", "x");
    }
    assert_eq!(rows(&a.list("prioritystatus")), ["mq2\t1\t1\t3\t0"]);
    // Two numbers: high and normal, low unlimited.
    a.text("create function mq3\r\n", "\r\n");
    assert_eq!(a.admin_line("maxqueue mq3 1 3"), "OK\r\n");
    c.submit(SUBMIT_JOB_BG, "mq3", "", "x");
    full(&mut c, SUBMIT_JOB_HIGH_BG, "mq3", "");
    c.submit(SUBMIT_JOB_BG, "mq3", "", "x");
    c.submit(SUBMIT_JOB_LOW_BG, "mq3", "", "x");
    full(&mut c, SUBMIT_JOB_BG, "mq3", "");
    c.submit(SUBMIT_JOB_LOW_BG, "mq3", "", "x");
    // One number: all three the same.
    a.text("create function mq4\r\n", "\r\n");
    assert_eq!(a.admin_line("maxqueue mq4 1"), "OK\r\n");
    c.submit(SUBMIT_JOB_LOW_BG, "mq4", "", "x");
    full(&mut c, SUBMIT_JOB_LOW_BG, "mq4", "");
    full(&mut c, SUBMIT_JOB_HIGH, "mq4", "");
    // Names are exact bytes: `MQ4` is not `mq4`.
    assert_eq!(a.admin_line("maxqueue MQ4 0"), "OK\r\n");
    full(&mut c, SUBMIT_JOB_BG, "mq4", "");
    // A limit set before the function existed does not apply.
    assert_eq!(a.admin_line("maxqueue later 1"), "OK\r\n");
    c.submit(SUBMIT_JOB_BG, "later", "", "x");
    c.submit(SUBMIT_JOB_BG, "later", "", "x");
}
both!(case_maxqueue_per_priority, ours_maxqueue_per_priority, real_maxqueue_per_priority);

fn case_create_drop_function(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    for l in ["create", "create function", "create x y", "create function a b", "CREATE"] {
        let tok = l.split(' ').next().unwrap();
        assert_eq!(a.admin_line(l), invalid_args(tok), "{l}");
    }
    for l in ["drop", "drop function", "drop x y", "drop function a b"] {
        assert_eq!(a.admin_line(l), invalid_args("drop"), "{l}");
    }
    assert_eq!(a.admin_line("create function foo"), "OK\r\n");
    assert_eq!(a.admin_line("create function foo"), "OK\r\n");
    assert_eq!(a.admin_line("CREATE FUNCTION cbar"), "OK\r\n");
    assert_eq!(rows(&a.list("status")), ["cbar\t0\t0\t0", "foo\t0\t0\t0"]);
    assert_eq!(a.admin_line("drop function nosuch"), "ERR function not found\r\n");
    assert_eq!(a.admin_line("drop function CBAR"), "OK\r\n");
    assert_eq!(a.admin_line("drop function cbar"), "ERR function not found\r\n");
    assert_eq!(rows(&a.list("status")), ["foo\t0\t0\t0"]);
    // Refused while a worker is registered.
    let mut w = s.connect();
    w.can_do("foo");
    assert_eq!(
        a.admin_line("Drop Function foo"),
        "ERR there are still connected workers or executing clients\r\n"
    );
    w.req(CANT_DO, &["foo"]).sync();
    assert_eq!(a.admin_line("drop function FOO"), "OK\r\n");
    assert_eq!(a.list("status"), ".\n");
    // Running jobs: see case_drop_function_running_job.
}
both!(case_create_drop_function, ours_create_drop_function, real_create_drop_function);

fn case_drop_function_running_job(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "run", "", "x");
    let mut w = s.connect();
    w.can_do("run");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "run", "x"]);
    assert_eq!(
        a.admin_line("drop function run"),
        "ERR there are still connected workers or executing clients\r\n"
    );
    w.req(WORK_COMPLETE, &[&hh, "r"]);
    c.want(WORK_COMPLETE, &[&hh, "r"]);
    assert_eq!(
        a.admin_line("drop function run"),
        "ERR there are still connected workers or executing clients\r\n"
    );
    drop(w);
    wait_connections(&mut a, 2);
    // gearmand unregisters a departed worker's functions on its I/O thread, after the
    // connection has left the `workers` listing: poll briefly rather than race it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = a.admin_line("drop function RUN");
        if reply == "OK\r\n" || std::time::Instant::now() > deadline {
            assert_eq!(reply, "OK\r\n");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.list("status"), ".\n");
}
both!(case_drop_function_running_job, ours_drop_function_running_job, real_drop_function_running_job);

/// ADMIN.md §2.8 [bug]: 1.1.20 drops a function that still has queued jobs, leaving the
/// jobs dangling. Ours refuses with the existing message.
#[test]
fn fixed_drop_function_with_queued_jobs() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut a = s.connect();
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB_BG, "q", "", "x");
    assert_eq!(
        a.admin_line("drop function q"),
        "ERR there are still connected workers or executing clients\r\n"
    );
    assert_eq!(rows(&a.list("status")), ["q\t1\t0\t0"]);
    let mut w = s.connect();
    w.can_do("q");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "q", "x"]);
    w.req(WORK_COMPLETE, &[&hh, ""]).req(RESET_ABILITIES, &[]).sync();
    assert_eq!(a.admin_line("drop function q"), "OK\r\n");
    assert_eq!(a.list("status"), ".\n");
}

/// ADMIN.md §1 rule 6 [bug]: 1.1.20 turns `create function foo\n` into `fo`. Ours
/// creates `foo` whatever the line ending.
#[test]
fn fixed_create_function_bare_newline() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut a = s.connect();
    assert_eq!(a.text("create function foo\n", "\r\n"), "OK\r\n");
    assert_eq!(a.text("create function bar\r\n", "\r\n"), "OK\r\n");
    assert_eq!(rows(&a.list("status")), ["bar\t0\t0\t0", "foo\t0\t0\t0"]);
}

fn case_cancel_job_forms(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    assert_eq!(a.admin_line("cancel"), unknown("cancel"));
    assert_eq!(a.admin_line("cancel job"), unknown("cancel"));
    assert_eq!(a.admin_line("cancel foo H:test:1"), "ERR UNKNOWN_ERROR\r\n");
    assert_eq!(a.admin_line("cancel job H:test:1 x"), "ERR UNKNOWN_ERROR\r\n");
    assert_eq!(a.admin_line("cancel job H:test:1 x y"), "ERR UNKNOWN_ERROR\r\n");
    assert_eq!(a.admin_line("cancel job H:test:1"), "ERR UNKNOWN_JOB\r\n");
}
both!(case_cancel_job_forms, ours_cancel_job_forms, real_cancel_job_forms);

fn case_cancel_job_queued(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let mut c1 = s.connect();
    let mut c2 = s.connect();
    let hh = c1.submit(SUBMIT_JOB, "f", "U", "x");
    assert_eq!(c2.submit(SUBMIT_JOB, "f", "U", "x"), hh);
    let hb = c1.submit(SUBMIT_JOB_BG, "f", "", "bg");
    assert_eq!(a.admin_line(&format!("CANCEL JOB {hh}")), "OK\r\n");
    c1.want(WORK_FAIL, &[&hh]);
    c2.want(WORK_FAIL, &[&hh]);
    let mut jobs = vec![format!("{hh}\t0\t1\t0"), format!("{hb}\t0\t0\t1")];
    jobs.sort();
    assert_eq!(rows(&a.list("show jobs")), jobs);
    assert_eq!(rows(&a.list("status")), ["f\t2\t0\t0"]);
    assert_eq!(a.admin_line(&format!("cancel job {hb}")), "OK\r\n");
    // Observed (contradicts ADMIN.md §2.9): a cancelled job that is still held can be
    // cancelled again, `OK` (1.1.20 then re-sends WORK_FAIL to listeners; not pinned).
    assert_eq!(a.admin_line(&format!("cancel job {hb}")), "OK\r\n");
    let mut jobs = vec![format!("{hh}\t0\t1\t0"), format!("{hb}\t0\t1\t0")];
    jobs.sort();
    assert_eq!(rows(&a.list("show jobs")), jobs);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    // Once discarded, the handle is unknown.
    assert_eq!(a.admin_line(&format!("cancel job {hb}")), "ERR UNKNOWN_JOB\r\n");
    assert_eq!(a.admin_line(&format!("cancel job {hh}")), "ERR UNKNOWN_JOB\r\n");
    assert_eq!(a.list("status"), "f\t0\t0\t1\n.\n");
    assert_eq!(a.list("show jobs"), ".\n");
    c1.expect_silence(QUIET);
}
both!(case_cancel_job_queued, ours_cancel_job_queued, real_cancel_job_queued);

/// ADMIN.md §2.9 [bug]: 1.1.20 keeps forwarding a cancelled running job's results to
/// listeners that already got WORK_FAIL. Ours forwards nothing more after the cancel.
#[test]
fn fixed_cancel_running_job() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut a = s.connect();
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    assert_eq!(a.admin_line(&format!("cancel job {hh}")), "OK\r\n");
    c.want(WORK_FAIL, &[&hh]);
    // The worker's late packets (whatever the worker is told) never reach the client.
    w.req(WORK_DATA, &[&hh, "late"]).req(WORK_COMPLETE, &[&hh, "late"]);
    c.expect_silence(QUIET);
    w.req(GRAB_JOB, &[]);
    loop {
        let p = w.read_packet();
        if p.command == NO_JOB {
            break;
        }
        assert_eq!(p.command, ERROR, "{p:?}");
    }
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "0", "0", "0", "0"]);
}

fn case_unknown_and_malformed(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    assert_eq!(a.admin_line("bogus"), unknown("bogus"));
    assert_eq!(a.admin_line("gladiator"), unknown("gladiator"));
    assert_eq!(a.admin_line(""), unknown(""));
    assert_eq!(a.text("\n", "\r\n"), unknown(""));
    assert_eq!(a.admin_line("show"), unknown("show"));
    assert_eq!(a.admin_line("SHOW"), unknown("SHOW"));
    for l in ["show foo", "show jobs x", "show unique", "show unique x", "show unique jobs x"] {
        assert_eq!(a.admin_line(l), "ERR UNKNOWN_SHOW_ARGUMENTS\r\n", "{l}");
    }
    assert_eq!(a.admin_line("shutdown"), unknown("shutdown"));
    assert_eq!(a.admin_line("shutdown graceful"), unknown("shutdown"));
    // Leading spaces give an empty first token; tabs are not separators.
    assert_eq!(a.admin_line("  status"), unknown(""));
    assert_eq!(a.admin_line("show\tjobs"), unknown("show\tjobs"));
    // Trailing spaces are harmless; repeated separators are skipped.
    assert_eq!(a.list("status "), ".\n");
    assert_eq!(a.list("show   jobs"), ".\n");
    // Unknown tokens keep their case in the answer.
    assert_eq!(a.admin_line("BoGuS x y"), unknown("BoGuS"));
    a.sync();
}
both!(case_unknown_and_malformed, ours_unknown_and_malformed, real_unknown_and_malformed);

fn case_case_insensitive(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "F", "Uq", "x");
    assert_eq!(a.list("STATUS"), "F\t1\t0\t0\n.\n");
    assert_eq!(a.list("Status"), "F\t1\t0\t0\n.\n");
    assert_eq!(a.list("PRIORITYSTATUS"), "F\t0\t1\t0\t0\n.\n");
    assert_eq!(a.list("Show Jobs"), format!("{}\t0\t0\t1\n.\n", h(1)));
    assert_eq!(a.list("SHOW UNIQUE JOBS"), "Uq\n.\n");
    wait_connections(&mut a, 2);
    assert_eq!(rows(&a.list("WORKERS")).len(), 2);
    assert_eq!(a.admin_line("GETPID"), format!("OK {}\n", s.child.id()));
    assert_eq!(a.admin_line("Verbose"), "OK ERROR\n");
    assert!(a.admin_line("VERSION").starts_with("OK "));
}
both!(case_case_insensitive, ours_case_insensitive, real_case_insensitive);

fn case_line_endings_and_limits(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut a = s.connect();
    assert_eq!(a.text("status\n", ".\n"), ".\n");
    assert_eq!(a.text("status\r\n", ".\n"), ".\n");
    // No newline yet (or a lone CR): no answer until it comes.
    a.send(b"getpid");
    a.expect_silence(QUIET);
    a.send(b"\r");
    a.expect_silence(QUIET);
    assert_eq!(a.text("\n", "\n"), format!("OK {}\n", s.child.id()));
    // 8000-byte line is fine.
    let tok = "a".repeat(8000);
    assert_eq!(a.admin_line(&tok), unknown(&tok));
    // Five tokens are fine, six close the connection silently.
    assert_eq!(a.admin_line("a b c d e"), unknown("a"));
    a.send(b"a b c d e f\r\n");
    assert_eq!(a.closed_after(), b"");
    let mut a = s.connect();
    a.send(format!("{}\r\n", "b".repeat(9000)).as_bytes());
    assert_eq!(a.closed_after(), b"");
    let mut a = s.connect();
    a.send("c".repeat(9000).as_bytes());
    assert_eq!(a.closed_after(), b"");
    let mut a = s.connect();
    a.send(format!("status {}\n", "d ".repeat(10)).as_bytes());
    assert_eq!(a.closed_after(), b"");
    s.connect().sync();
}
both!(case_line_endings_and_limits, ours_line_endings_and_limits, real_line_endings_and_limits);

// ------------------------------------------------------------- same scenario, both servers

/// One scripted scenario; returns every admin answer in order, normalised where the
/// real server's order is hash- or thread-dependent.
fn scenario(s: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = s.connect();
    let mut w1 = s.connect();
    let mut w2 = s.connect();
    let mut c = s.connect();
    w1.req(SET_CLIENT_ID, &["w-one"]);
    w1.can_do("resize").can_do("thumb").can_do("thumb");
    w2.req(SET_CLIENT_ID, &[""]);
    w2.req(CAN_DO_TIMEOUT, &["slow", "60000"]).can_do("resize");
    c.req(SET_CLIENT_ID, &["client"]).sync();
    c.submit(SUBMIT_JOB_BG, "resize", "r1", "a");
    c.submit(SUBMIT_JOB_HIGH_BG, "resize", "r2", "b");
    c.submit(SUBMIT_JOB_LOW, "resize", "", "c");
    c.submit(SUBMIT_JOB, "thumb", "t1", "d");
    c.submit(SUBMIT_JOB_BG, "thumb", "t1", "dup");
    c.submit(SUBMIT_JOB_BG, "nobody", "-", "same");
    c.submit(SUBMIT_JOB_BG, "nobody", "-", "same");
    c.req(SUBMIT_JOB_EPOCH, &["later", "e", &(now_secs() + 3600).to_string(), "x"])
        .want(JOB_CREATED, &[&h(6)]);
    w1.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(4), "thumb", "d"]);
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(2), "resize", "b"]);
    for l in ["create function empty", "maxqueue nobody 1", "maxqueue resize 9 9 9"] {
        out.push(a.admin_line(l));
    }
    c.req(SUBMIT_JOB_BG, &["nobody", "", "over"]).want_error("QUEUE_ERROR", "Job queue is full");
    out.push(format!("{:?}", rows(&a.list("status"))));
    out.push(format!("{:?}", rows(&a.list("prioritystatus"))));
    out.push(format!("{:?}", rows(&a.list("show jobs"))));
    out.push(format!("{:?}", rows(&a.list("show unique jobs"))));
    out.push(format!("{:?}", worker_rows(&a.list("workers"))));
    out.push(a.admin_line(&format!("cancel job {}", h(3))));
    c.want(WORK_FAIL, &[&h(3)]);
    for l in [
        "cancel job H:test:999",
        "cancel job",
        "drop function resize",
        "drop function EMPTY",
        "drop function empty",
        "maxqueue",
        "bogus cmd",
        "show stuff",
        "",
        "create function",
        "verbose",
    ] {
        out.push(a.admin_line(l));
    }
    w1.req(WORK_COMPLETE, &[&h(4), "done"]);
    c.want(WORK_COMPLETE, &[&h(4), "done"]);
    drop(w2);
    wait_connections(&mut a, 3);
    // gearmand drops a closed connection from `workers` before its processing thread
    // unregisters the worker's functions, so wait for that too: w2 alone could do `slow`.
    let status = wait_list(&mut a, "status", |r| r.iter().any(|row| row == "slow\t0\t0\t0"));
    out.push(format!("{status:?}"));
    out.push(format!("{:?}", rows(&a.list("prioritystatus"))));
    out.push(format!("{:?}", rows(&a.list("show jobs"))));
    out.push(format!("{:?}", rows(&a.list("show unique jobs"))));
    out.push(format!("{:?}", worker_rows(&a.list("workers"))));
    out
}

#[test]
fn admin_same_as_real() {
    let Some(real) = start(Kind::Real, &[]) else {
        return;
    };
    let want = scenario(&real);
    drop(real);
    let ours = start(Kind::Ours, &[]).expect("our server");
    let got = scenario(&ours);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "answer #{i} differs");
    }
}

/// The normalised scenario is stable across two runs of the real server (so any
/// difference `admin_same_as_real` reports is ours, not ordering noise).
#[test]
fn real_admin_scenario_is_deterministic() {
    let Some(r1) = start(Kind::Real, &[]) else {
        return;
    };
    let a = scenario(&r1);
    drop(r1);
    let Some(r2) = start(Kind::Real, &[]) else {
        return;
    };
    assert_eq!(a, scenario(&r2));
}
