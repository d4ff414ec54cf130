//! Job lifecycle conformance: requeue on worker loss, `-j` retry limits, CANT_DO and
//! CAN_DO_TIMEOUT, client disconnects, epoch jobs, `-R` and `-w` options. Both servers
//! (`ours_*`, `real_*`); `fixed_*` are ours-only decisions for 1.1.20 [bug]s.
#![allow(missing_docs)]

mod support;
#[macro_use]
mod wire;

use std::time::{Duration, Instant};
use support::{Conn, Kind, Server};
use wire::*;

const QUIET: Duration = Duration::from_millis(250);

/// GRABs (GRAB_JOB) until something other than NO_JOB arrives; bounded.
fn grab_until_assigned(w: &mut Conn, limit: Duration) -> Vec<u8> {
    let start = Instant::now();
    loop {
        w.req(GRAB_JOB, &[]);
        let p = w.read_packet();
        if p.command == JOB_ASSIGN {
            return p.body;
        }
        assert_eq!(p.command, NO_JOB, "{p:?}");
        assert!(start.elapsed() < limit, "no job within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `show jobs` has the given sorted rows.
fn wait_jobs(s: &Server, want: &[String]) {
    wait_status(s, "show jobs", |r| r == want);
}

// ------------------------------------------------------ worker loss and requeue (§4.9)

fn case_worker_disconnect_requeues(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let h1 = c.submit(SUBMIT_JOB, "f", "", "one");
    let h2 = c.submit(SUBMIT_JOB, "f", "", "two");
    let mut w1 = s.connect();
    w1.can_do("f");
    w1.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h1, "f", "", "one"]);
    w1.req(WORK_STATUS, &[&h1, "1", "2"]);
    c.want(WORK_STATUS, &[&h1, "1", "2"]);
    let mut sleeper = s.connect();
    sleeper.can_do("f");
    sleeper.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "f", "two"]);
    sleeper.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    sleeper.req(PRE_SLEEP, &[]);
    sleeper.expect_silence(QUIET);
    drop(w1);
    // The sleeping worker is woken; the client hears nothing.
    sleeper.want(NOOP, &[]);
    c.expect_silence(QUIET);
    c.req(GET_STATUS, &[&h1]).want(STATUS_RES, &[&h1, "1", "0", "0", "0"]);
    wait_jobs(&s, &[format!("{h1}\t1\t0\t0"), format!("{h2}\t0\t0\t0")]);
    // The next worker gets the same handle and data; a job submitted later comes after.
    let h3 = c.submit(SUBMIT_JOB, "f", "", "three");
    sleeper.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h1, "f", "", "one"]);
    sleeper.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h3, "f", "three"]);
    sleeper.req(WORK_COMPLETE, &[&h1, "ok"]);
    c.want(WORK_COMPLETE, &[&h1, "ok"]);
}
both!(case_worker_disconnect_requeues, ours_worker_disconnect_requeues, real_worker_disconnect_requeues);

fn case_requeue_goes_to_tail(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let h1 = c.submit(SUBMIT_JOB_BG, "f", "", "one");
    let mut w1 = s.connect();
    w1.can_do("f");
    w1.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "f", "one"]);
    let h2 = c.submit(SUBMIT_JOB_BG, "f", "", "two");
    let h3 = c.submit(SUBMIT_JOB_HIGH_BG, "f", "", "three");
    drop(w1);
    wait_jobs(&s, &{
        let mut v = vec![format!("{h1}\t1\t0\t1"), format!("{h2}\t0\t0\t1"), format!("{h3}\t0\t0\t1")];
        v.sort();
        v
    });
    let mut w2 = s.connect();
    w2.can_do("f");
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h3, "f", "three"]);
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "f", "two"]);
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "f", "one"]);
}
both!(case_requeue_goes_to_tail, ours_requeue_goes_to_tail, real_requeue_goes_to_tail);

fn retries_case(kind: Kind, n: u32) {
    let Some(s) = start(kind, &["-j", &n.to_string()]) else {
        return;
    };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    for attempt in 1..=n {
        let mut w = s.connect();
        w.can_do("f");
        w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
        drop(w);
        if attempt < n {
            wait_jobs(&s, &[format!("{hh}\t{attempt}\t0\t0")]);
            c.expect_silence(Duration::from_millis(50));
        }
    }
    c.want(WORK_FAIL, &[&hh]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "0", "0", "0", "0"]);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    assert_eq!(rows(&w.list("status")), ["f\t0\t0\t1"]);
}

fn case_job_retries_1(kind: Kind) {
    retries_case(kind, 1)
}
both!(case_job_retries_1, ours_job_retries_1, real_job_retries_1);

fn case_job_retries_2(kind: Kind) {
    retries_case(kind, 2)
}
both!(case_job_retries_2, ours_job_retries_2, real_job_retries_2);

fn case_job_retries_background(kind: Kind) {
    // A background job is dropped silently (no listeners) after -j assignments.
    let Some(s) = start(kind, &["-j", "1"]) else {
        return;
    };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB_BG, "f", "", "x");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    drop(w);
    wait_jobs(&s, &[]);
    c.expect_silence(QUIET);
}
both!(case_job_retries_background, ours_job_retries_background, real_job_retries_background);

fn case_cant_do_while_holding(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    let hg = c.submit(SUBMIT_JOB, "g", "", "y");
    let mut w = s.connect();
    w.can_do("f").can_do("g");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hg, "g", "y"]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_STATUS, &[&hh, "1", "3"]);
    c.want(WORK_STATUS, &[&hh, "1", "3"]);
    w.req(CANT_DO, &["f"]).sync();
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "0", "0", "0"]);
    w.req(WORK_COMPLETE, &[&hh, "late"]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    // The job for g is still held.
    w.req(WORK_COMPLETE, &[&hg, "g-done"]);
    c.want(WORK_COMPLETE, &[&hg, "g-done"]);
    c.expect_silence(QUIET);
    let mut w2 = s.connect();
    w2.can_do("f");
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    // RESET_ABILITIES requeues too.
    w2.req(RESET_ABILITIES, &[]).sync();
    w2.req(WORK_DATA, &[&hh, "late"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
    assert_eq!(w2.list("show jobs"), format!("{hh}\t2\t0\t0\n.\n"));
    w2.can_do("f");
    w2.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w2.req(WORK_COMPLETE, &[&hh, "ok"]);
    c.want(WORK_COMPLETE, &[&hh, "ok"]);
}
both!(case_cant_do_while_holding, ours_cant_do_while_holding, real_cant_do_while_holding);

fn case_can_do_timeout_requeues(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    let mut w = s.connect();
    // 1 ms is raised to the 1000 ms minimum.
    w.req(CAN_DO_TIMEOUT, &["f", "1"]).sync();
    let mut sleeper = s.connect();
    sleeper.can_do("f");
    sleeper.req(PRE_SLEEP, &[]).want(NOOP, &[]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    let t0 = Instant::now();
    sleeper.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    sleeper.req(PRE_SLEEP, &[]);
    w.req(WORK_STATUS, &[&hh, "1", "9"]);
    c.want(WORK_STATUS, &[&hh, "1", "9"]);
    // Still running well before the deadline.
    std::thread::sleep(Duration::from_millis(500));
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "1", "9"]);
    // Requeued after about 1 s: the sleeper is woken, the client told nothing.
    sleeper.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sleeper.want(NOOP, &[]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "requeued after {took:?}");
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "0", "0", "0"]);
    w.req(WORK_COMPLETE, &[&hh, "late"]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    c.expect_silence(Duration::from_millis(50));
    sleeper.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    sleeper.req(WORK_COMPLETE, &[&hh, "ok"]);
    c.want(WORK_COMPLETE, &[&hh, "ok"]);
    assert_eq!(c.list("show jobs"), ".\n");
}
both!(case_can_do_timeout_requeues, ours_can_do_timeout_requeues, real_can_do_timeout_requeues);

fn case_can_do_timeout_non_numeric_is_none(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    let mut w = s.connect();
    w.req(CAN_DO_TIMEOUT, &["f", "abc"]).sync();
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    std::thread::sleep(Duration::from_millis(1300));
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "0", "0"]);
    w.req(WORK_COMPLETE, &[&hh, "ok"]);
    c.want(WORK_COMPLETE, &[&hh, "ok"]);
}
both!(
    case_can_do_timeout_non_numeric_is_none,
    ours_can_do_timeout_non_numeric_is_none,
    real_can_do_timeout_non_numeric_is_none
);

/// PROTOCOL.md §4.7 [bug]: 1.1.20 keeps one stale timer per connection that fires on a
/// freed job and corrupts the queues. Ours: one timer per assigned job, cancelled when
/// the job ends, so this sequence leaves everything consistent.
#[test]
fn fixed_can_do_timeout_no_stale_timer() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    let h1 = c.submit(SUBMIT_JOB_BG, "slow", "", "x");
    let mut w = s.connect();
    w.req(CAN_DO_TIMEOUT, &["slow", "1000"]).sync();
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "slow", "x"]);
    // Timer fires: requeued.
    wait_status(&s, "status", |r| r == ["slow\t1\t0\t1"]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h1, "slow", "x"]);
    w.req(WORK_COMPLETE, &[&h1, "done"]).sync();
    // A second job on the same connection completes in time.
    let h2 = c.submit(SUBMIT_JOB_BG, "slow", "", "y");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "slow", "y"]);
    w.req(WORK_COMPLETE, &[&h2, "done"]).sync();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        c.submit(SUBMIT_JOB_BG, "other", "", "o");
    }
    assert_eq!(rows(&c.list("prioritystatus")), ["other\t0\t3\t0\t0", "slow\t0\t0\t0\t1"]);
    assert_eq!(rows(&c.list("status")), ["other\t3\t0\t0", "slow\t0\t0\t1"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    w.sync();
    // A job that finishes before its deadline is not requeued later.
    let h6 = c.submit(SUBMIT_JOB_BG, "slow", "", "z");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h6, "slow", "z"]);
    w.req(WORK_COMPLETE, &[&h6, ""]).sync();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(rows(&c.list("status")), ["other\t3\t0\t0", "slow\t0\t0\t1"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}

// ----------------------------------------------------------- client disconnect (§4.10)

fn case_fg_client_gone_while_queued(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let h1 = c.submit(SUBMIT_JOB, "f", "", "lost");
    drop(c);
    // Abandoned: still counted until a worker reaches it.
    wait_jobs(&s, &[format!("{h1}\t0\t1\t0")]);
    let mut a = s.connect();
    assert_eq!(rows(&a.list("status")), ["f\t1\t0\t0"]);
    let mut c2 = s.connect();
    let h2 = c2.submit(SUBMIT_JOB_BG, "f", "", "kept");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "f", "kept"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    assert_eq!(rows(&a.list("status")), ["f\t1\t1\t1"]);
    w.req(WORK_COMPLETE, &[&h2, ""]).sync();
    assert_eq!(rows(&a.list("status")), ["f\t0\t0\t1"]);
    a.req(GET_STATUS, &[&h1]).want(STATUS_RES, &[&h1, "0", "0", "0", "0"]);
}
both!(case_fg_client_gone_while_queued, ours_fg_client_gone_while_queued, real_fg_client_gone_while_queued);

fn case_fg_client_gone_while_running(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    drop(c);
    wait_jobs(&s, &[format!("{hh}\t0\t1\t0")]);
    // Results are accepted (no ERROR) and dropped.
    w.req(WORK_DATA, &[&hh, "d"]).req(WORK_STATUS, &[&hh, "1", "2"]).req(WORK_COMPLETE, &[&hh, "r"]);
    w.sync();
    assert_eq!(w.list("show jobs"), ".\n");
    assert_eq!(rows(&w.list("status")), ["f\t0\t0\t1"]);
}
both!(
    case_fg_client_gone_while_running,
    ours_fg_client_gone_while_running,
    real_fg_client_gone_while_running
);

fn case_one_of_two_listeners_gone(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c1 = s.connect();
    let mut c2 = s.connect();
    let hh = c1.submit(SUBMIT_JOB, "f", "U", "x");
    assert_eq!(c2.submit(SUBMIT_JOB, "f", "U", "x"), hh);
    drop(c1);
    let mut a = s.connect();
    let start_t = Instant::now();
    loop {
        a.req(GET_STATUS_UNIQUE, &["U"]);
        if a.want_type(STATUS_RES_UNIQUE) == b"U\x001\x000\x000\x000\x001" {
            break;
        }
        assert!(start_t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.list("show jobs"), format!("{hh}\t0\t0\t0\n.\n"));
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_COMPLETE, &[&hh, "r"]);
    c2.want(WORK_COMPLETE, &[&hh, "r"]);
}
both!(case_one_of_two_listeners_gone, ours_one_of_two_listeners_gone, real_one_of_two_listeners_gone);

fn case_bg_submit_and_close(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    // Submit and close without reading the reply.
    c.req(SUBMIT_JOB_BG, &["f", "", "persist"]);
    drop(c);
    let mut c = s.connect();
    c.req(SUBMIT_JOB, &["f", "", "abandon"]);
    drop(c);
    // The two connections race, so the handles are read back from `show jobs`.
    let jobs = wait_status(&s, "show jobs", |r| {
        r.len() == 2 && r.iter().filter(|l| l.ends_with("\t0\t1\t0")).count() == 1
    });
    let bg = jobs.iter().find(|l| l.ends_with("\t0\t0\t1")).expect("persisted bg job");
    let hb = bg.split('\t').next().unwrap();
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[hb, "f", "persist"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}
both!(case_bg_submit_and_close, ours_bg_submit_and_close, real_bg_submit_and_close);

/// PROTOCOL.md §4.10 [bug] "background job killed by a foreground coalescer": 1.1.20
/// drops the background job when the foreground client that joined it leaves. Ours
/// keeps it queued.
#[test]
fn fixed_bg_job_survives_coalesced_fg_leaving() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut bg = s.connect();
    let hh = bg.submit(SUBMIT_JOB_BG, "f", "U", "x");
    let mut fg = s.connect();
    assert_eq!(fg.submit(SUBMIT_JOB, "f", "U", "x"), hh);
    drop(fg);
    wait_status(&s, "workers", |r| r.len() == 2);
    assert_eq!(bg.list("show jobs"), format!("{hh}\t0\t0\t1\n.\n"));
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_COMPLETE, &[&hh, ""]).sync();
    assert_eq!(w.list("show jobs"), ".\n");
}

/// PROTOCOL.md §4.10 [bug] "zombie coalesce": in 1.1.20 a client coalescing onto an
/// abandoned job hangs forever. Ours revives the job and the client gets the result.
#[test]
fn fixed_coalesce_revives_abandoned_job() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c1 = s.connect();
    let hh = c1.submit(SUBMIT_JOB, "f", "Z", "x");
    drop(c1);
    wait_status(&s, "show jobs", |r| r == [format!("{hh}\t0\t1\t0")]);
    let mut c2 = s.connect();
    assert_eq!(c2.submit(SUBMIT_JOB, "f", "Z", "x"), hh);
    assert_eq!(c2.list("show jobs"), format!("{hh}\t0\t0\t0\n.\n"));
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_COMPLETE, &[&hh, "result"]);
    c2.want(WORK_COMPLETE, &[&hh, "result"]);
}

/// Same, for a running job whose only listener left: a new coalescing client still
/// receives the later packets.
#[test]
fn fixed_coalesce_revives_abandoned_running_job() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c1 = s.connect();
    let hh = c1.submit(SUBMIT_JOB, "f", "Z", "x");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    drop(c1);
    wait_status(&s, "show jobs", |r| r == [format!("{hh}\t0\t1\t0")]);
    let mut c2 = s.connect();
    assert_eq!(c2.submit(SUBMIT_JOB, "f", "Z", "x"), hh);
    w.req(WORK_COMPLETE, &[&hh, "result"]);
    c2.want(WORK_COMPLETE, &[&hh, "result"]);
}

// ------------------------------------------------------------------ epoch jobs (§4.2)

fn case_epoch_past_and_non_numeric(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.req(SUBMIT_JOB_EPOCH, &["f", "", "1", "past"]).want(JOB_CREATED, &[&h(1)]);
    c.req(SUBMIT_JOB_EPOCH, &["f", "", "abc", "nonnum"]).want(JOB_CREATED, &[&h(2)]);
    c.req(SUBMIT_JOB_EPOCH, &["f", "", "-5", "neg"]).want(JOB_CREATED, &[&h(3)]);
    let past = (now_secs() - 10).to_string();
    c.req(SUBMIT_JOB_EPOCH, &["f", "eu", &past, "recent"]).want(JOB_CREATED, &[&h(4)]);
    // Background: known to GET_STATUS, persisted flag set, no listener.
    c.req(GET_STATUS, &[&h(1)]).want(STATUS_RES, &[&h(1), "1", "0", "0", "0"]);
    assert_eq!(rows(&c.list("show jobs")).iter().filter(|r| r.ends_with("\t0\t0\t1")).count(), 4);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "past"]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(2), "f", "nonnum"]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(3), "f", "neg"]);
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(4), "f", "eu", "recent"]);
    w.req(WORK_COMPLETE, &[&h(1), "r"]).sync();
    c.expect_silence(QUIET);
}
both!(case_epoch_past_and_non_numeric, ours_epoch_past_and_non_numeric, real_epoch_past_and_non_numeric);

fn case_epoch_future(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let due = now_secs() + 2;
    c.req(SUBMIT_JOB_EPOCH, &["f", "", &due.to_string(), "later"]).want(JOB_CREATED, &[&h(1)]);
    let hn = c.submit(SUBMIT_JOB_BG, "f", "", "now");
    assert_eq!(rows(&c.list("status")), ["f\t2\t0\t1"]);
    assert_eq!(rows(&c.list("prioritystatus")), ["f\t0\t2\t0\t1"]);
    // The due job is skipped; the runnable one behind it is handed out.
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hn, "f", "now"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    c.req(GET_STATUS, &[&h(1)]).want(STATUS_RES, &[&h(1), "1", "0", "0", "0"]);
    let body = grab_until_assigned(&mut w, Duration::from_secs(4));
    assert_eq!(body, format!("{}\0f\0later", h(1)).as_bytes());
    assert!(now_secs() >= due, "handed out before its time");
}
both!(case_epoch_future, ours_epoch_future, real_epoch_future);

/// PROTOCOL.md §4.6 [observed]/2.0.0 fix: 1.1.20 never NOOPs sleepers when an epoch job
/// becomes due. Ours wakes them.
#[test]
fn fixed_epoch_wakes_sleepers() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let due = now_secs() + 2;
    c.req(SUBMIT_JOB_EPOCH, &["f", "", &due.to_string(), "later"]).want(JOB_CREATED, &[&h(1)]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    w.req(PRE_SLEEP, &[]);
    // Whether or not a NOOP comes at submit time, one must come once the job is due.
    w.stream.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    loop {
        w.want(NOOP, &[]);
        w.req(GRAB_JOB, &[]);
        let p = w.read_packet();
        if p.command == JOB_ASSIGN {
            assert_eq!(p.body, format!("{}\0f\0later", h(1)).as_bytes());
            break;
        }
        assert_eq!(p.command, NO_JOB);
        assert!(now_secs() < due + 2, "NO_JOB long after the due time");
        w.req(PRE_SLEEP, &[]);
    }
}

/// PROTOCOL.md §4.6 [bug] epoch priority fall-through: in 1.1.20 a future epoch job in
/// the normal list hides a runnable LOW job of the same function from GRAB. Ours
/// falls through to the lower priority.
#[test]
fn fixed_epoch_priority_fallthrough() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    let due = now_secs() + 30;
    c.req(SUBMIT_JOB_EPOCH, &["f", "", &due.to_string(), "later"]).want(JOB_CREATED, &[&h(1)]);
    let hl = c.submit(SUBMIT_JOB_LOW_BG, "f", "", "low");
    let mut w = s.connect();
    w.can_do("f");
    w.req(PRE_SLEEP, &[]).want(NOOP, &[]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hl, "f", "low"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    w.req(PRE_SLEEP, &[]);
    w.expect_silence(QUIET);
}

// ------------------------------------------------------------- server options (-R, -w)

fn case_round_robin(kind: Kind) {
    let Some(s) = start(kind, &["-R"]) else {
        return;
    };
    let mut c = s.connect();
    for i in 0..10u32 {
        let q = if i % 2 == 0 { "queue1" } else { "queue2" };
        c.submit(SUBMIT_JOB_BG, q, "", &i.to_string());
    }
    let mut w = s.connect();
    w.can_do("queue1").can_do("queue2");
    let mut order = String::new();
    for _ in 0..10 {
        w.req(GRAB_JOB, &[]);
        let b = w.want_type(JOB_ASSIGN);
        order.push_str(std::str::from_utf8(b.rsplit(|&x| x == 0).next().unwrap()).unwrap());
    }
    assert_eq!(order, "1032547698");
    // Three functions: c, b, a, c, b, a.
    for f in ["a", "b", "c", "a", "b", "c"] {
        c.submit(SUBMIT_JOB_BG, f, "", f);
    }
    let mut w = s.connect();
    w.can_do("a").can_do("b").can_do("c");
    let mut got = String::new();
    for _ in 0..6 {
        w.req(GRAB_JOB, &[]);
        let b = w.want_type(JOB_ASSIGN);
        got.push_str(std::str::from_utf8(b.rsplit(|&x| x == 0).next().unwrap()).unwrap());
    }
    assert_eq!(got, "cbacba");
}
both!(case_round_robin, ours_round_robin, real_round_robin);

fn case_no_round_robin_default(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    for i in 0..10u32 {
        let q = if i % 2 == 0 { "queue1" } else { "queue2" };
        c.submit(SUBMIT_JOB_BG, q, "", &i.to_string());
    }
    let mut w = s.connect();
    w.can_do("queue1").can_do("queue2");
    let mut order = String::new();
    for _ in 0..10 {
        w.req(GRAB_JOB, &[]);
        let b = w.want_type(JOB_ASSIGN);
        order.push_str(std::str::from_utf8(b.rsplit(|&x| x == 0).next().unwrap()).unwrap());
    }
    assert_eq!(order, "1357902468");
}
both!(case_no_round_robin_default, ours_no_round_robin_default, real_no_round_robin_default);

/// Returns which of the workers got a NOOP within a short window.
fn woken(ws: &mut [Conn]) -> Vec<usize> {
    let mut v = Vec::new();
    for (i, w) in ws.iter_mut().enumerate() {
        w.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut b = [0u8; 12];
        match std::io::Read::read_exact(&mut w.stream, &mut b) {
            Ok(()) => {
                assert_eq!(b.to_vec(), rs(NOOP, &[]), "worker {i}");
                v.push(i);
            }
            Err(e) => assert!(
                matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "{e}"
            ),
        }
        w.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    v
}

fn sleepers(s: &Server, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|_| {
            let mut w = s.connect();
            w.can_do("f");
            w.req(PRE_SLEEP, &[]).sync();
            w
        })
        .collect()
}

/// `-w 0` (gearmand's default) wakes every sleeper for each job.
fn case_wakeup_all(kind: Kind) {
    let Some(s) = start(kind, &["-w", "0"]) else { return };
    let mut ws = sleepers(&s, 3);
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "f", "", "1");
    assert_eq!(woken(&mut ws), [0, 1, 2]);
    c.submit(SUBMIT_JOB_BG, "f", "", "2");
    assert_eq!(woken(&mut ws), Vec::<usize>::new());
}
both!(case_wakeup_all, ours_wakeup_all, real_wakeup_all);

/// Our default is one sleeper per job (COMPATIBILITY.md): each job still finds a
/// worker, with a third fewer packets under foreground load.
#[test]
fn ours_wakeup_one_per_job_by_default() {
    let Some(s) = start(Kind::Ours, &[]) else { return };
    let mut ws = sleepers(&s, 3);
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "f", "", "1");
    let first = woken(&mut ws);
    assert_eq!(first.len(), 1, "{first:?}");
    c.submit(SUBMIT_JOB_BG, "f", "", "2");
    let second = woken(&mut ws);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    // The woken workers take both jobs; the third slept through it all.
    for &i in first.iter().chain(&second) {
        ws[i].req(GRAB_JOB, &[]);
        assert_eq!(ws[i].read_packet().command, JOB_ASSIGN, "worker {i}");
    }
}

fn case_wakeup_one(kind: Kind) {
    let Some(s) = start(kind, &["-w", "1"]) else {
        return;
    };
    let mut ws = sleepers(&s, 3);
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "f", "", "1");
    let first = woken(&mut ws);
    assert_eq!(first.len(), 1, "{first:?}");
    c.submit(SUBMIT_JOB_BG, "f", "", "2");
    let second = woken(&mut ws);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "the wake-up must rotate");
    c.submit(SUBMIT_JOB_BG, "f", "", "3");
    let third = woken(&mut ws);
    assert_eq!(third.len(), 1, "{third:?}");
    let mut all = [first[0], second[0], third[0]];
    all.sort();
    assert_eq!(all, [0, 1, 2]);
    // Everyone has had a NOOP: a fourth job wakes no one.
    c.submit(SUBMIT_JOB_BG, "f", "", "4");
    assert_eq!(woken(&mut ws), Vec::<usize>::new());
}
both!(case_wakeup_one, ours_wakeup_one, real_wakeup_one);

/// `--grab-hold` (ours only; 2 ms by default): a GRAB_JOB that finds nothing is held;
/// a job submitted meanwhile is its answer, with no NO_JOB, PRE_SLEEP or NOOP between,
/// and otherwise NO_JOB comes when the hold is over. A packet sent behind a held grab
/// is answered after that grab's NO_JOB.
#[test]
fn ours_held_grab_is_answered_by_the_next_job_or_by_no_job_after_the_hold() {
    let Some(s) = start(Kind::Ours, &["--grab-hold", "400"]) else { return };
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]);
    w.expect_silence(Duration::from_millis(100));
    let mut c = s.connect();
    let handle = c.submit(SUBMIT_JOB_BG, "f", "", "x");
    w.want(JOB_ASSIGN, &[&handle, "f", "x"]);
    w.req(WORK_COMPLETE, &[&handle, ""]);
    let held = Instant::now();
    w.req(GRAB_JOB, &[]);
    w.want(NO_JOB, &[]);
    let waited = held.elapsed();
    assert!(waited >= Duration::from_millis(300), "NO_JOB after {waited:?}, not held");
    w.req(GRAB_JOB, &[]).req(ECHO_REQ, &["e"]);
    w.want(NO_JOB, &[]).want(ECHO_RES, &["e"]);
}
