//! Byte-exact binary-protocol conformance, run against our server (`ours_*`) and the
//! real gearmand 1.1.20 (`real_*`). `fixed_*` tests are ours-only: they pin behaviour
//! where 1.1.20 has a bug we deliberately do not copy (PROTOCOL.md [bug] notes).
#![allow(missing_docs)]

mod support;
#[macro_use]
mod wire;

use std::io::Write;
use std::time::Duration;
use support::{req, res, Kind};
use wire::*;

const QUIET: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------- framing (§1)

fn case_echo_empty(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.send(&req(ECHO_REQ, &[])).expect(&res(ECHO_RES, &[]));
}
both!(case_echo_empty, ours_echo_empty, real_echo_empty);

fn case_echo_2k(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let data: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    c.send(&req(ECHO_REQ, &[&data])).expect(&res(ECHO_RES, &[&data]));
}
both!(case_echo_2k, ours_echo_2k, real_echo_2k);

fn case_echo_20mib(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let packet = req(ECHO_REQ, &[&data]);
    let writer = std::thread::spawn(move || w.write_all(&packet).unwrap());
    c.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let p = c.read_packet();
    writer.join().unwrap();
    assert_eq!(p.command, ECHO_RES);
    assert!(p.body == data, "20 MiB echo body differs (len {})", p.body.len());
    c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.sync();
}
both!(case_echo_20mib, ours_echo_20mib, real_echo_20mib);

fn case_echo_pipelined_1000(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut all = Vec::new();
    for i in 0..1000u32 {
        let mut body = format!("{i:06}").into_bytes();
        body.resize(2048, b'a' + (i % 26) as u8);
        all.extend_from_slice(&req(ECHO_REQ, &[&body]));
    }
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
    for i in 0..1000u32 {
        let mut body = format!("{i:06}").into_bytes();
        body.resize(2048, b'a' + (i % 26) as u8);
        let p = c.read_packet();
        assert_eq!(p.command, ECHO_RES, "answer {i}");
        assert!(p.body == body, "answer {i} out of order or corrupt");
    }
    writer.join().unwrap();
}
both!(case_echo_pipelined_1000, ours_echo_pipelined_1000, real_echo_pipelined_1000);

fn case_byte_by_byte(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut bytes = rq(ECHO_REQ, &["split\0across segments"]);
    bytes.extend_from_slice(b"status\r\n");
    bytes.extend_from_slice(&rq(SUBMIT_JOB_BG, &["fbb", "u", "data"]));
    for b in &bytes {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    c.want(ECHO_RES, &["split\0across segments"]);
    c.expect(b".\n");
    c.want(JOB_CREATED, &[&h(1)]);
}
both!(case_byte_by_byte, ours_byte_by_byte, real_byte_by_byte);

fn case_zero_arg_command_with_body(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    // GRAB_JOB takes no argument: the 5 body bytes are discarded.
    c.send(&req(GRAB_JOB, &[b"hello"])).want(NO_JOB, &[]);
    c.send(&req(GRAB_JOB_UNIQ, &[b"x\0y"])).want(NO_JOB, &[]);
    c.sync();
}
both!(case_zero_arg_command_with_body, ours_zero_arg_command_with_body, real_zero_arg_command_with_body);

fn case_bad_magic_closes(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    for magic in [b"\0REX", b"\0req", b"\0\0\0\0"] {
        let mut c = s.connect();
        c.send(&header(magic, ECHO_REQ, 0));
        assert_eq!(c.closed_after(), b"", "magic {magic:?}");
    }
    s.connect().sync();
}
both!(case_bad_magic_closes, ours_bad_magic_closes, real_bad_magic_closes);

fn case_bad_type_closes(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    // (Types with the top bit set crash 1.1.20: see fixed_type_high_bit_closes.)
    for t in [0u32, 43, 44, 1000, 0x7fff_ffff] {
        let mut c = s.connect();
        c.send(&header(b"\0REQ", t, 0));
        assert_eq!(c.closed_after(), b"", "type {t}");
    }
    s.connect().sync();
}
both!(case_bad_type_closes, ours_bad_type_closes, real_bad_type_closes);

/// Observed, not in the reference: 1.1.20 crashes (segfault handler, exit 1) on a
/// packet type >= 0x80000000. Ours treats it like any other invalid type: close.
#[test]
fn fixed_type_high_bit_closes() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    for t in [0x8000_0000u32, u32::MAX] {
        let mut c = s.connect();
        c.send(&header(b"\0REQ", t, 0));
        assert_eq!(c.closed_after(), b"", "type {t}");
    }
    s.connect().sync();
}

fn case_res_magic_invalid(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.send(&res(ECHO_REQ, &[b"x"])).want_error("INVALID_MAGIC", "Request magic expected");
    c.send(&res(SUBMIT_JOB, &[b"f", b"", b"x"])).want_error("INVALID_MAGIC", "Request magic expected");
    c.sync();
    c.send(&res(ECHO_RES, &[])).want_error("INVALID_MAGIC", "Request magic expected");
    c.sync();
}
both!(case_res_magic_invalid, ours_res_magic_invalid, real_res_magic_invalid);

fn case_server_only_types_invalid(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    for t in [UNUSED_5, NOOP, JOB_CREATED, NO_JOB, ECHO_RES, OPTION_RES, ALL_YOURS] {
        c.send(&req(t, &[])).want_error("INVALID_COMMAND", "Command not expected");
    }
    // ERROR has two arguments; an empty body would hit the missing-NUL bug.
    c.req(ERROR, &["CODE", "text"]).want_error("INVALID_COMMAND", "Command not expected");
    for t in [JOB_ASSIGN, JOB_ASSIGN_UNIQ] {
        c.req(t, &["H:x:1", "f", "u", "d"]).want_error("INVALID_COMMAND", "Command not expected");
    }
    c.req(JOB_ASSIGN_ALL, &["H:x:1", "f", "u", "r", "d"])
        .want_error("INVALID_COMMAND", "Command not expected");
    c.req(STATUS_RES, &["H:x:1", "1", "0", "0", "0"]).want_error("INVALID_COMMAND", "Command not expected");
    c.req(STATUS_RES_UNIQUE, &["u", "1", "0", "0", "0", "0"])
        .want_error("INVALID_COMMAND", "Command not expected");
    c.req(SUBMIT_JOB_SCHED, &["f", "u", "1", "2", "3", "4", "5", "data"])
        .want_error("INVALID_COMMAND", "Command not expected");
    c.sync();
    // Nothing was created by the SCHED submit.
    assert_eq!(c.list("status"), ".\n");
}
both!(case_server_only_types_invalid, ours_server_only_types_invalid, real_server_only_types_invalid);

fn case_text_binary_interleaved(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut b = b"status\n".to_vec();
    b.extend_from_slice(&rq(ECHO_REQ, &["one"]));
    b.extend_from_slice(b"status\r\n");
    b.extend_from_slice(&rq(ECHO_REQ, &["two"]));
    b.extend_from_slice(&rq(ECHO_REQ, &["three"]));
    b.extend_from_slice(b"show jobs\n");
    c.send(&b);
    c.expect(b".\n").want(ECHO_RES, &["one"]).expect(b".\n");
    c.want(ECHO_RES, &["two"]).want(ECHO_RES, &["three"]).expect(b".\n");
}
both!(case_text_binary_interleaved, ours_text_binary_interleaved, real_text_binary_interleaved);

// ------------------------------------------------------ submission and handles (§4.2)

fn case_handles_count_up(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f1", "", "x"), h(1));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f2", "", "x"), h(2));
    assert_eq!(c.submit(SUBMIT_JOB, "f1", "", "x"), h(3));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f1", "u", "x"), h(4));
    // Coalesced: same handle, counter not advanced.
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f1", "u", "other data"), h(4));
    assert_eq!(c.submit(SUBMIT_JOB, "f1", "u", "x"), h(4));
    // Same unique, other function: a new job.
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f2", "u", "x"), h(5));
    assert_eq!(c.submit(SUBMIT_JOB_LOW_BG, "", "", ""), h(6));
    // Refused submits do not advance it either.
    let long = "u".repeat(65);
    c.req(SUBMIT_JOB_BG, &["f1", &long, "x"]).want_error("ARGUMENT_TOO_LARGE", "Unique value too large");
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f1", "", "x"), h(7));
}
both!(case_handles_count_up, ours_handles_count_up, real_handles_count_up);

fn case_all_submit_types(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut n = 0;
    for t in
        [SUBMIT_JOB, SUBMIT_JOB_BG, SUBMIT_JOB_HIGH, SUBMIT_JOB_HIGH_BG, SUBMIT_JOB_LOW, SUBMIT_JOB_LOW_BG]
    {
        n += 1;
        assert_eq!(c.submit(t, "f", "", "d"), h(n));
    }
    c.req(SUBMIT_JOB_EPOCH, &["f", "", "0", "d"]).want(JOB_CREATED, &[&h(7)]);
    c.req(SUBMIT_REDUCE_JOB, &["f", "", "red", "agg", "d"]).want(JOB_CREATED, &[&h(8)]);
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["f", "", "red", "agg", "d"]).want(JOB_CREATED, &[&h(9)]);
    assert_eq!(c.list("status"), "f\t9\t0\t0\n.\n");
    assert_eq!(c.list("prioritystatus"), "f\t2\t5\t2\t0\n.\n");
    // Persisted flag: 1 exactly for the background kinds.
    let jobs = rows(&c.list("show jobs"));
    let mut want: Vec<String> =
        (1..=9).map(|i| format!("{}\t0\t0\t{}", h(i), u8::from([2, 4, 6, 7, 9].contains(&i)))).collect();
    want.sort();
    assert_eq!(jobs, want);
}
both!(case_all_submit_types, ours_all_submit_types, real_all_submit_types);

fn case_unique_sizes(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let u63 = "a".repeat(63);
    let u64 = "b".repeat(64);
    let u65 = "c".repeat(65);
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", &u63, "x"), h(1));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", &u63, "x"), h(1), "63-byte unique coalesces");
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", &u64, "x"), h(2), "64 bytes accepted");
    for t in [SUBMIT_JOB, SUBMIT_JOB_BG, SUBMIT_JOB_HIGH, SUBMIT_JOB_LOW_BG] {
        c.req(t, &["f", &u65, "x"]).want_error("ARGUMENT_TOO_LARGE", "Unique value too large");
    }
    c.req(SUBMIT_JOB_EPOCH, &["f", &u65, "0", "x"])
        .want_error("ARGUMENT_TOO_LARGE", "Unique value too large");
    // REDUCE submits: the reducer is length-checked (Q4).
    let r65 = "r".repeat(65);
    c.req(SUBMIT_REDUCE_JOB, &["f", "u", &r65, "agg", "x"])
        .want_error("ARGUMENT_TOO_LARGE", "Unique value too large");
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["f", "u", &r65, "agg", "x"])
        .want_error("ARGUMENT_TOO_LARGE", "Unique value too large");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(1), "f", &u63, "x"]);
    assert_eq!(rows(&c.list("status")), ["f\t2\t1\t1"]);
}
both!(case_unique_sizes, ours_unique_sizes, real_unique_sizes);

/// Q3 [bug]: 1.1.20 stores only 63 bytes of a 64-byte unique, so two such submits do
/// not coalesce and JOB_ASSIGN_UNIQ carries a stray NUL. Ours stores all 64 bytes.
#[test]
fn fixed_unique_64_stored_whole() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    let u64 = "b".repeat(64);
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", &u64, "data"), h(1));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", &u64, "data"), h(1));
    assert_eq!(c.list("show unique jobs"), format!("{u64}\n.\n"));
    c.req(GET_STATUS_UNIQUE, &[&u64]).want(STATUS_RES_UNIQUE, &[&u64, "1", "0", "0", "0", "0"]);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(1), "f", &u64, "data"]);
    // The same for REDUCE submits, whose unique 1.1.20 never checks.
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["g", &u64, "r", "a", "d"]).want(JOB_CREATED, &[&h(2)]);
    let u65 = "c".repeat(65);
    c.req(SUBMIT_REDUCE_JOB, &["g", &u65, "r", "a", "d"]).want_error_code("ARGUMENT_TOO_LARGE");
}

fn case_coalesce_two_fg_one_bg(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c1 = s.connect();
    let mut c2 = s.connect();
    let mut bg = s.connect();
    assert_eq!(c1.submit(SUBMIT_JOB, "f", "U", "first"), h(1));
    assert_eq!(c2.submit(SUBMIT_JOB_HIGH, "f", "U", "second"), h(1));
    assert_eq!(bg.submit(SUBMIT_JOB_BG, "f", "U", "third"), h(1));
    c1.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "2"]);
    assert_eq!(c1.list("prioritystatus"), "f\t0\t1\t0\t0\n.\n");
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(1), "f", "U", "first"]);
    w.req(WORK_DATA, &[&h(1), "d1"]);
    w.req(WORK_WARNING, &[&h(1), "w1"]);
    w.req(WORK_STATUS, &[&h(1), "1", "2"]);
    w.req(WORK_DATA, &[&h(1), "d\0two"]);
    w.req(WORK_COMPLETE, &[&h(1), "done"]);
    for c in [&mut c1, &mut c2] {
        c.want(WORK_DATA, &[&h(1), "d1"]);
        c.want(WORK_WARNING, &[&h(1), "w1"]);
        c.want(WORK_STATUS, &[&h(1), "1", "2"]);
        c.want(WORK_DATA, &[&h(1), "d\0two"]);
        c.want(WORK_COMPLETE, &[&h(1), "done"]);
    }
    bg.expect_silence(QUIET);
    // The job ran once.
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    c1.req(GET_STATUS, &[&h(1)]).want(STATUS_RES, &[&h(1), "0", "0", "0", "0"]);
    assert_eq!(c1.list("status"), "f\t0\t0\t1\n.\n");
}
both!(case_coalesce_two_fg_one_bg, ours_coalesce_two_fg_one_bg, real_coalesce_two_fg_one_bg);

fn case_coalesce_rules(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    // Empty unique never coalesces.
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "", "same"), h(1));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "", "same"), h(2));
    // `-` coalesces on identical data only, and never on empty data.
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "-", "abc"), h(3));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "-", "abc"), h(3));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "-", "abd"), h(4));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "g", "-", "abc"), h(5));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "-", ""), h(6));
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "-", ""), h(7));
    // A regular unique coalesces whatever the priority or type.
    assert_eq!(c.submit(SUBMIT_JOB_LOW_BG, "f", "k", "1"), h(8));
    assert_eq!(c.submit(SUBMIT_JOB_HIGH, "f", "k", "2"), h(8));
    c.req(SUBMIT_JOB_EPOCH, &["f", "k", "0", "3"]).want(JOB_CREATED, &[&h(8)]);
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["f", "k", "r", "a", "4"]).want(JOB_CREATED, &[&h(8)]);
    // Uniques are compared as exact bytes.
    assert_eq!(c.submit(SUBMIT_JOB_BG, "f", "K", "1"), h(9));
    // `-` jobs are not found by GET_STATUS_UNIQUE "-".
    c.req(GET_STATUS_UNIQUE, &["-"]).want(STATUS_RES_UNIQUE, &["-", "0", "0", "0", "0", "0"]);
    let mut u = rows(&c.list("show unique jobs"));
    u.sort();
    let mut want = vec!["", "", "-", "-", "-", "-", "-", "k", "K"];
    want.sort();
    assert_eq!(u, want);
    assert_eq!(rows(&c.list("prioritystatus")), ["f\t0\t7\t1\t0", "g\t0\t1\t0\t0"]);
}
both!(case_coalesce_rules, ours_coalesce_rules, real_coalesce_rules);

fn case_coalesce_onto_running(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c1 = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    assert_eq!(c1.submit(SUBMIT_JOB, "f", "R", "data"), h(1));
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "data"]);
    w.req(WORK_DATA, &[&h(1), "early"]);
    c1.want(WORK_DATA, &[&h(1), "early"]);
    let mut c2 = s.connect();
    assert_eq!(c2.submit(SUBMIT_JOB, "f", "R", "ignored"), h(1));
    c2.req(GET_STATUS_UNIQUE, &["R"]).want(STATUS_RES_UNIQUE, &["R", "1", "1", "0", "0", "2"]);
    w.req(WORK_DATA, &[&h(1), "late"]).req(WORK_COMPLETE, &[&h(1), "r"]);
    for c in [&mut c1, &mut c2] {
        c.want(WORK_DATA, &[&h(1), "late"]).want(WORK_COMPLETE, &[&h(1), "r"]);
    }
    c2.expect_silence(QUIET);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}
both!(case_coalesce_onto_running, ours_coalesce_onto_running, real_coalesce_onto_running);

// ------------------------------------------------------------ worker protocol (§4.6)

fn case_no_job(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w = s.connect();
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    w.can_do("f");
    for t in [GRAB_JOB, GRAB_JOB_UNIQ, GRAB_JOB_ALL] {
        w.req(t, &[]).want(NO_JOB, &[]);
    }
    // Jobs of functions the worker does not have are not handed out.
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "g", "", "x");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    // A trailing NUL is part of the function name.
    w.req(CAN_DO, &["g\0"]).sync();
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}
both!(case_no_job, ours_no_job, real_no_job);

fn case_pre_sleep_wakeup(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w = s.connect();
    let mut c = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    w.req(PRE_SLEEP, &[]);
    w.expect_silence(QUIET);
    // A job for another function does not wake it.
    c.submit(SUBMIT_JOB_BG, "other", "", "x");
    w.expect_silence(QUIET);
    c.submit(SUBMIT_JOB_BG, "f", "", "1");
    w.want(NOOP, &[]);
    c.submit(SUBMIT_JOB_BG, "f", "", "2");
    w.expect_silence(QUIET);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(2), "f", "1"]);
    // Work still available: PRE_SLEEP answers NOOP at once.
    w.req(PRE_SLEEP, &[]).want(NOOP, &[]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(3), "f", "2"]);
    w.req(PRE_SLEEP, &[]);
    w.expect_silence(QUIET);
    // CAN_DO for a function that has work does not wake a sleeper.
    w.req(CAN_DO, &["other"]);
    w.expect_silence(QUIET);
    c.submit(SUBMIT_JOB_BG, "f", "", "3");
    w.want(NOOP, &[]);
}
both!(case_pre_sleep_wakeup, ours_pre_sleep_wakeup, real_pre_sleep_wakeup);

fn case_pre_sleep_with_work(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_LOW_BG, "f", "", "x");
    let mut w = s.connect();
    w.can_do("f");
    w.req(PRE_SLEEP, &[]).want(NOOP, &[]);
    w.expect_silence(QUIET);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "x"]);
}
both!(case_pre_sleep_with_work, ours_pre_sleep_with_work, real_pre_sleep_with_work);

fn case_assign_bodies(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("fn");
    let data = "bin\0ary\0";
    c.submit(SUBMIT_JOB_BG, "fn", "u1", data);
    c.submit(SUBMIT_JOB_BG, "fn", "u2", data);
    c.submit(SUBMIT_JOB_BG, "fn", "", "");
    c.submit(SUBMIT_JOB_BG, "fn", "u4", "plain");
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["fn", "u5", "reducer", "agg", "rdata"]).want(JOB_CREATED, &[&h(5)]);
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["fn", "u6", "reducer", "agg", "rdata"]).want(JOB_CREATED, &[&h(6)]);
    c.req(SUBMIT_REDUCE_JOB, &["fn", "u7", "r7", "", ""]).want(JOB_CREATED, &[&h(7)]);
    c.req(SUBMIT_REDUCE_JOB_BACKGROUND, &["fn", "u8", "", "agg", "d8"]).want(JOB_CREATED, &[&h(8)]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "fn", data]);
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(2), "fn", "u2", data]);
    w.req(GRAB_JOB_ALL, &[]).want(JOB_ASSIGN_UNIQ, &[&h(3), "fn", "", ""]);
    w.req(GRAB_JOB_ALL, &[]).want(JOB_ASSIGN_UNIQ, &[&h(4), "fn", "u4", "plain"]);
    w.req(GRAB_JOB_ALL, &[]).want(JOB_ASSIGN_ALL, &[&h(5), "fn", "u5", "reducer", "rdata"]);
    w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(6), "fn", "u6", "rdata"]);
    w.req(GRAB_JOB_ALL, &[]).want(JOB_ASSIGN_ALL, &[&h(7), "fn", "u7", "r7", ""]);
    // An empty reducer is a plain job.
    w.req(GRAB_JOB_ALL, &[]).want(JOB_ASSIGN_UNIQ, &[&h(8), "fn", "u8", "d8"]);
    w.req(GRAB_JOB_ALL, &[]).want(NO_JOB, &[]);
    assert_eq!(c.list("status"), "fn\t8\t8\t1\n.\n");
}
both!(case_assign_bodies, ours_assign_bodies, real_assign_bodies);

fn case_priority_and_fifo(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut n = 0;
    let mut sub = |c: &mut support::Conn, t: u32, d: &str| {
        n += 1;
        assert_eq!(c.submit(t, "f", "", d), h(n));
    };
    sub(&mut c, SUBMIT_JOB_LOW_BG, "L1");
    sub(&mut c, SUBMIT_JOB_BG, "N1");
    sub(&mut c, SUBMIT_JOB_HIGH_BG, "H1");
    sub(&mut c, SUBMIT_JOB_LOW, "L2");
    sub(&mut c, SUBMIT_JOB, "N2");
    sub(&mut c, SUBMIT_JOB_HIGH, "H2");
    sub(&mut c, SUBMIT_JOB_BG, "N3");
    assert_eq!(c.list("prioritystatus"), "f\t2\t3\t2\t0\n.\n");
    let mut w = s.connect();
    w.can_do("f");
    for (i, d) in [(3, "H1"), (6, "H2"), (2, "N1"), (5, "N2"), (7, "N3"), (1, "L1"), (4, "L2")] {
        w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(i), "f", d]);
    }
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}
both!(case_priority_and_fifo, ours_priority_and_fifo, real_priority_and_fifo);

fn case_fifo_10_fg_10_bg(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    for i in 1..=20u32 {
        let t = if i <= 10 { SUBMIT_JOB } else { SUBMIT_JOB_BG };
        assert_eq!(c.submit(t, "f", "", &format!("job{i}")), h(i));
    }
    let mut w = s.connect();
    w.can_do("f");
    for i in 1..=20u32 {
        w.req(GRAB_JOB_UNIQ, &[]).want(JOB_ASSIGN_UNIQ, &[&h(i), "f", "", &format!("job{i}")]);
    }
    // A worker may hold all of them at once; complete in reverse order.
    for i in (1..=20u32).rev() {
        w.req(WORK_COMPLETE, &[&h(i), ""]);
    }
    for i in 1..=10u32 {
        c.want(WORK_COMPLETE, &[&h(11 - i), ""]);
    }
    assert_eq!(c.list("status"), "f\t0\t0\t1\n.\n");
}
both!(case_fifo_10_fg_10_bg, ours_fifo_10_fg_10_bg, real_fifo_10_fg_10_bg);

fn case_function_order(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    for f in ["a", "b", "c", "a", "b", "c"] {
        c.submit(SUBMIT_JOB_BG, f, "", f);
    }
    let mut w = s.connect();
    w.can_do("a").can_do("b").can_do("c");
    for (i, f) in [(3, "c"), (6, "c"), (2, "b"), (5, "b"), (1, "a"), (4, "a")] {
        w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(i), f, f]);
    }
    // Priority applies only within a function: the newest function's LOW job wins.
    c.submit(SUBMIT_JOB_HIGH_BG, "a", "", "hi");
    c.submit(SUBMIT_JOB_LOW_BG, "c", "", "lo");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(8), "c", "lo"]);
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(7), "a", "hi"]);
}
both!(case_function_order, ours_function_order, real_function_order);

fn case_can_do_counting(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w = s.connect();
    let mut a = s.connect();
    w.can_do("f").can_do("f").can_do("g");
    assert_eq!(rows(&a.list("status")), ["f\t0\t0\t2", "g\t0\t0\t1"]);
    w.req(CANT_DO, &["f"]).req(CANT_DO, &["unknown"]).sync();
    assert_eq!(rows(&a.list("status")), ["f\t0\t0\t0", "g\t0\t0\t1"]);
    w.can_do("h").can_do("f");
    assert_eq!(rows(&a.list("status")), ["f\t0\t0\t1", "g\t0\t0\t1", "h\t0\t0\t1"]);
    w.req(RESET_ABILITIES, &[]).sync();
    assert_eq!(rows(&a.list("status")), ["f\t0\t0\t0", "g\t0\t0\t0", "h\t0\t0\t0"]);
    let mut c = s.connect();
    c.submit(SUBMIT_JOB_BG, "f", "", "x");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    // CAN_DO_TIMEOUT registers the function too.
    w.req(CAN_DO_TIMEOUT, &["f", "5000"]).sync();
    assert_eq!(rows(&a.list("status"))[0], "f\t1\t0\t1");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "x"]);
    w.req(WORK_COMPLETE, &[&h(1), ""]).sync();
}
both!(case_can_do_counting, ours_can_do_counting, real_can_do_counting);

fn case_work_not_found_errors(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut w = s.connect();
    let unknown = "H:test:99";
    w.req(WORK_DATA, &[unknown, "d"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
    w.req(WORK_WARNING, &[unknown, "d"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
    w.req(WORK_STATUS, &[unknown, "1", "2"])
        .want_error("JOB_NOT_FOUND", "Job given in work result not found");
    w.req(WORK_COMPLETE, &[unknown, "d"]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    w.req(WORK_FAIL, &[unknown]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    w.req(WORK_EXCEPTION, &[unknown, "d"])
        .want_error("JOB_NOT_FOUND", "An exception was received for a job that does not exist");
    // Another connection's job, and a queued (unassigned) job.
    let mut c = s.connect();
    let mut other = s.connect();
    c.submit(SUBMIT_JOB, "f", "", "x");
    c.submit(SUBMIT_JOB, "f", "", "y");
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "x"]);
    let h1 = h(1);
    let h2 = h(2);
    for hh in [&h1, &h2] {
        other.req(WORK_DATA, &[hh, "d"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
        other.req(WORK_WARNING, &[hh, "d"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
        other
            .req(WORK_STATUS, &[hh, "1", "2"])
            .want_error("JOB_NOT_FOUND", "Job given in work result not found");
        other
            .req(WORK_COMPLETE, &[hh, "d"])
            .want_error("JOB_NOT_FOUND", "Job given in work result not found");
        other.req(WORK_FAIL, &[hh]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
        other
            .req(WORK_EXCEPTION, &[hh, "d"])
            .want_error("JOB_NOT_FOUND", "An exception was received for a job that does not exist");
    }
    // The client that submitted it cannot cancel it with WORK_FAIL either.
    c.req(WORK_FAIL, &[&h1]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    c.expect_silence(QUIET);
    // The owner completes it; a second completion is an error.
    w.req(WORK_COMPLETE, &[&h1, "ok"]);
    c.want(WORK_COMPLETE, &[&h1, "ok"]);
    w.req(WORK_COMPLETE, &[&h1, "again"]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
    w.req(WORK_DATA, &[&h1, "again"]).want_error("JOB_NOT_FOUND", "Job does not exist on server");
    c.expect_silence(QUIET);
    // WORK_FAIL with a handle of 64+ bytes.
    let long = format!("H:test:{}", "9".repeat(60));
    w.req(WORK_FAIL, &[&long]).want_error(
        "ARGUMENT_TOO_LARGE",
        "Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
    );
    w.sync();
}
both!(case_work_not_found_errors, ours_work_not_found_errors, real_work_not_found_errors);

fn case_work_forwarding(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "0", "0"]);
    w.req(WORK_STATUS, &[&hh, "3", "10"]);
    c.want(WORK_STATUS, &[&hh, "3", "10"]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "3", "10"]);
    // Values go through atoi: forwarded as sent, stored as numbers.
    w.req(WORK_STATUS, &[&hh, "07", "12abc"]);
    c.want(WORK_STATUS, &[&hh, "07", "12abc"]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "7", "12"]);
    w.req(WORK_STATUS, &[&hh, "x", "-1"]);
    c.want(WORK_STATUS, &[&hh, "x", "-1"]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "0", "4294967295"]);
    w.req(WORK_DATA, &[&hh, ""]).req(WORK_WARNING, &[&hh, "w\0w"]);
    c.want(WORK_DATA, &[&hh, ""]).want(WORK_WARNING, &[&hh, "w\0w"]);
    // WORK_FAIL is forwarded with the worker's bytes.
    w.req(WORK_FAIL, &[&hh]);
    c.want(WORK_FAIL, &[&hh]);
    c.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "0", "0", "0", "0"]);
    let h2 = c.submit(SUBMIT_JOB, "f", "", "y");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h2, "f", "y"]);
    w.req(WORK_COMPLETE, &[&h2, "res\0ult"]);
    c.want(WORK_COMPLETE, &[&h2, "res\0ult"]);
    c.expect_silence(QUIET);
}
both!(case_work_forwarding, ours_work_forwarding, real_work_forwarding);

fn case_exceptions_option(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c1 = s.connect();
    let mut c2 = s.connect();
    c1.req(OPTION_REQ, &["exceptions"]).want(OPTION_RES, &["exceptions"]);
    c2.req(OPTION_REQ, &["EXCEPTIONS"]).want(OPTION_RES, &["EXCEPTIONS"]);
    c2.req(OPTION_REQ, &["ExCePtIoNs"]).want(OPTION_RES, &["ExCePtIoNs"]);
    for bad in ["bad", "exception", "exceptions ", ""] {
        c2.req(OPTION_REQ, &[bad]).want_error("UNKNOWN_OPTION", "Server does not recognize given option");
    }
    c2.sync();
    let mut w = s.connect();
    w.can_do("f");
    let mut plain = s.connect();
    assert_eq!(plain.submit(SUBMIT_JOB, "f", "E", "x"), h(1));
    assert_eq!(c1.submit(SUBMIT_JOB, "f", "E", "x"), h(1));
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "x"]);
    w.req(WORK_EXCEPTION, &[&h(1), "boom"]);
    c1.want(WORK_EXCEPTION, &[&h(1), "boom"]);
    // Without the option the listener gets a WORK_FAIL (1.1.20 appends a NUL, Q1;
    // fixed_exception_plain_work_fail pins ours).
    let body = plain.want_type(WORK_FAIL);
    assert!(body.starts_with(h(1).as_bytes()), "{body:?}");
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
    // The exception ended the job.
    w.req(WORK_COMPLETE, &[&h(1), ""]).want_error("JOB_NOT_FOUND", "Job given in work result not found");
}
both!(case_exceptions_option, ours_exceptions_option, real_exceptions_option);

fn case_exceptions_flag(kind: Kind) {
    let Some(s) = start(kind, &["--exceptions"]) else {
        return;
    };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_EXCEPTION, &[&hh, "trace\0back"]);
    c.want(WORK_EXCEPTION, &[&hh, "trace\0back"]);
    c.req(OPTION_REQ, &["nope"]).want_error("UNKNOWN_OPTION", "Server does not recognize given option");
}
both!(case_exceptions_flag, ours_exceptions_flag, real_exceptions_flag);

/// PROTOCOL.md Q1 / §4.8 [bug]: 1.1.20 sends `WORK_FAIL handle\0` to listeners without
/// the exceptions option, which libgearman clients reject. Ours sends the plain handle.
#[test]
fn fixed_exception_plain_work_fail() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    let mut w = s.connect();
    w.can_do("f");
    let hh = c.submit(SUBMIT_JOB, "f", "", "x");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    w.req(WORK_EXCEPTION, &[&hh, "boom"]);
    c.want(WORK_FAIL, &[&hh]);
    c.expect_silence(QUIET);
}

// -------------------------------------------------------- status queries (§4.3, §4.4)

fn case_get_status(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.req(GET_STATUS, &["H:test:1"]).want(STATUS_RES, &["H:test:1", "0", "0", "0", "0"]);
    c.req(GET_STATUS, &["nonsense"]).want(STATUS_RES, &["nonsense", "0", "0", "0", "0"]);
    c.req(GET_STATUS, &[""]).want(STATUS_RES, &["", "0", "0", "0", "0"]);
    let hh = c.submit(SUBMIT_JOB_BG, "f", "", "x");
    let mut other = s.connect();
    other.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "0", "0", "0"]);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&hh, "f", "x"]);
    other.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "0", "0"]);
    w.req(WORK_STATUS, &[&hh, "5", "6"]).sync();
    other.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "1", "1", "5", "6"]);
    w.req(WORK_COMPLETE, &[&hh, "done"]).sync();
    other.req(GET_STATUS, &[&hh]).want(STATUS_RES, &[&hh, "0", "0", "0", "0"]);
    // The background submitter heard nothing.
    c.expect_silence(QUIET);
}
both!(case_get_status, ours_get_status, real_get_status);

fn case_get_status_unique(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.req(GET_STATUS_UNIQUE, &["nope"]).want(STATUS_RES_UNIQUE, &["nope", "0", "0", "0", "0", "0"]);
    c.req(GET_STATUS_UNIQUE, &[""]).want(STATUS_RES_UNIQUE, &["", "0", "0", "0", "0", "0"]);
    c.submit(SUBMIT_JOB_BG, "f", "U", "x");
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "0"]);
    // Empty uniques are never found.
    c.submit(SUBMIT_JOB_BG, "f", "", "x");
    c.req(GET_STATUS_UNIQUE, &[""]).want(STATUS_RES_UNIQUE, &["", "0", "0", "0", "0", "0"]);
    let mut f1 = s.connect();
    let mut f2 = s.connect();
    f1.submit(SUBMIT_JOB, "f", "U", "x");
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "1"]);
    f2.submit(SUBMIT_JOB_LOW, "f", "U", "x");
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "2"]);
    let mut w = s.connect();
    w.can_do("f");
    w.req(GRAB_JOB, &[]).want(JOB_ASSIGN, &[&h(1), "f", "x"]);
    w.req(WORK_STATUS, &[&h(1), "1", "4"]);
    f1.want(WORK_STATUS, &[&h(1), "1", "4"]);
    f2.want(WORK_STATUS, &[&h(1), "1", "4"]);
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "1", "1", "4", "2"]);
    // A listener leaving lowers the count.
    drop(f2);
    let start_t = std::time::Instant::now();
    loop {
        c.req(GET_STATUS_UNIQUE, &["U"]);
        let p = c.want_type(STATUS_RES_UNIQUE);
        if p == b"U\x001\x001\x001\x004\x001" {
            break;
        }
        assert_eq!(p, b"U\x001\x001\x001\x004\x002");
        assert!(start_t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Q6: the function is ignored; the newest live job with that unique answers.
    c.submit(SUBMIT_JOB_BG, "g", "U", "x");
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "0"]);
    w.req(WORK_COMPLETE, &[&h(1), ""]);
    f1.want(WORK_COMPLETE, &[&h(1), ""]);
    c.req(GET_STATUS_UNIQUE, &["U"]).want(STATUS_RES_UNIQUE, &["U", "1", "0", "0", "0", "0"]);
}
both!(case_get_status_unique, ours_get_status_unique, real_get_status_unique);

fn case_set_client_id_no_reply(kind: Kind) {
    let Some(s) = start(kind, &[]) else { return };
    let mut c = s.connect();
    c.req(SET_CLIENT_ID, &["client-7"]);
    c.expect_silence(QUIET);
    c.sync();
    wait_connections(&mut c, 1);
    let w = rows(&c.list("workers"));
    assert_eq!(w.len(), 1);
    assert!(w[0].ends_with(" 127.0.0.1 client-7 :"), "{w:?}");
}
both!(case_set_client_id_no_reply, ours_set_client_id_no_reply, real_set_client_id_no_reply);

// ------------------------------------------------------- ours-only parse/size decisions

/// PROTOCOL.md §1 [bug] "a NUL-terminated argument is missing": 1.1.20 reads past the
/// packet. Ours answers ERROR INVALID_PACKET and closes the connection.
#[test]
fn fixed_missing_nul_invalid_packet() {
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    for body in [&b"abc"[..], b"f\0uniq-no-nul", b""] {
        let mut c = s.connect();
        c.send(&req(SUBMIT_JOB, &[body]));
        c.want_error_code("INVALID_PACKET");
        assert_eq!(c.closed_after(), b"", "after missing NUL in {body:?}");
    }
    // REDUCE needs 4 NUL-terminated args.
    let mut c = s.connect();
    c.req(SUBMIT_REDUCE_JOB, &["f", "u", "r"]);
    c.want_error_code("INVALID_PACKET");
    assert_eq!(c.closed_after(), b"");
    let mut c = s.connect();
    c.sync();
    assert_eq!(c.list("status"), ".\n");
}

/// Our server limits packet bodies (`--max-packet-size`, default 64 MiB); 1.1.20 has
/// no limit (PROTOCOL.md §5). Over the limit: ERROR ARGUMENT_TOO_LARGE, then close.
#[test]
fn fixed_max_packet_size() {
    let Some(s) = start(Kind::Ours, &["--max-packet-size", "1024"]) else {
        return;
    };
    let mut c = s.connect();
    let ok = vec![b'x'; 1024];
    c.send(&req(ECHO_REQ, &[&ok])).expect(&res(ECHO_RES, &[&ok]));
    c.send(&header(b"\0REQ", ECHO_REQ, 1025));
    c.want_error_code("ARGUMENT_TOO_LARGE");
    assert_eq!(c.closed_after(), b"");
    s.connect().sync();
    drop(s);
    let Some(s) = start(Kind::Ours, &[]) else {
        return;
    };
    let mut c = s.connect();
    c.send(&header(b"\0REQ", SUBMIT_JOB, (64 << 20) + 1));
    c.want_error_code("ARGUMENT_TOO_LARGE");
    assert_eq!(c.closed_after(), b"");
    s.connect().sync();
}
