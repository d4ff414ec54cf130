//! Golden bytes: the examples of PROTOCOL.md (sections 3 and 6), the layout of every
//! packet type (section 2), and exchanges captured from the real gearmand 1.1.20
//! (`tests/vectors/gearmand-1.1.20.txt`, recorded by `tests/vectors/capture_gearmand.py`).

use bytes::{Bytes, BytesMut};
use gearman_proto::{decode, encode, Command, Frame, Limits, Magic, Packet, HEADER_BYTES};

/// Parses hex with optional spaces and `|` separators.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex length in {s:?}");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit")
        })
        .collect()
}

/// Header (as hex) followed by a raw body.
fn wire(header_hex: &str, body: &[u8]) -> Vec<u8> {
    let mut v = hex(header_hex);
    assert_eq!(v.len(), HEADER_BYTES);
    v.extend_from_slice(body);
    v
}

/// Decodes every frame in `bytes`, failing on an error or leftover bytes. Each frame
/// comes with the exact bytes it was decoded from.
fn decode_all(bytes: &[u8]) -> Vec<(Frame, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, &Limits::default()) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                assert!(used > 0, "a frame consumed no bytes");
                let start = bytes.len() - before;
                out.push((frame, bytes[start..start + used].to_vec()));
            }
            Ok(None) => {
                assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
                return out;
            }
            Err(e) => panic!("decode error {e:?} on {bytes:02x?}"),
        }
    }
}

fn decode_one_packet(bytes: &[u8]) -> Packet {
    let mut frames = decode_all(bytes);
    assert_eq!(frames.len(), 1, "expected exactly one frame");
    match frames.remove(0).0 {
        Frame::Packet(p) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

fn encode_to_vec(p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, &mut out);
    out.to_vec()
}

fn args(p: &Packet) -> Vec<&[u8]> {
    p.args().collect()
}

/// Decodes `bytes` to one packet, checks it, and checks it encodes back byte for byte.
fn check_round_trip(bytes: &[u8], magic: Magic, command: Command, expected_args: &[&[u8]]) {
    let p = decode_one_packet(bytes);
    assert_eq!(p.magic, magic);
    assert_eq!(p.command, command);
    assert_eq!(args(&p), expected_args, "{command:?}");
    assert_eq!(encode_to_vec(&p), bytes, "{command:?} re-encodes differently");
    let built = Packet::new(magic, command, expected_args).expect("valid layout");
    assert_eq!(built, p, "{command:?} built from args differs from decoded");
}

// ---------------------------------------------------------------------------------
// PROTOCOL.md section 6 (worked byte example) and section 3 (ERROR example)
// ---------------------------------------------------------------------------------

#[test]
fn section6_submit_job_with_empty_unique() {
    let bytes = wire("00524551 00000007 0000000d", b"reverse\0\0test");
    check_round_trip(&bytes, Magic::Req, Command::SubmitJob, &[b"reverse", b"", b"test"]);
}

#[test]
fn section6_job_created() {
    let bytes = wire("00524553 00000008 00000006", b"H:vm:1");
    check_round_trip(&bytes, Magic::Res, Command::JobCreated, &[b"H:vm:1"]);
}

#[test]
fn section6_noop_and_grab_job_all() {
    check_round_trip(&hex("00524553 00000006 00000000"), Magic::Res, Command::Noop, &[]);
    check_round_trip(&hex("00524551 00000027 00000000"), Magic::Req, Command::GrabJobAll, &[]);
}

#[test]
fn section6_job_assign_uniq_with_empty_unique() {
    let bytes = wire("00524553 0000001f 00000014", b"H:vm:1\0reverse\0\0test");
    check_round_trip(&bytes, Magic::Res, Command::JobAssignUniq, &[b"H:vm:1", b"reverse", b"", b"test"]);
}

#[test]
fn section6_work_complete_both_directions() {
    let body = b"H:vm:1\0tset";
    let from_worker = wire("00524551 0000000d 0000000b", body);
    check_round_trip(&from_worker, Magic::Req, Command::WorkComplete, &[b"H:vm:1", b"tset"]);
    let forwarded = wire("00524553 0000000d 0000000b", body);
    check_round_trip(&forwarded, Magic::Res, Command::WorkComplete, &[b"H:vm:1", b"tset"]);
}

#[test]
fn section6_get_status_and_status_res() {
    // Section 6 gives these two without headers; the lengths follow from the bodies.
    let request = wire("00524551 0000000f 00000006", b"H:vm:1");
    check_round_trip(&request, Magic::Req, Command::GetStatus, &[b"H:vm:1"]);
    let reply = wire("00524553 00000014 0000000e", b"H:vm:1\x000\x000\x000\x000");
    check_round_trip(&reply, Magic::Res, Command::StatusRes, &[b"H:vm:1", b"0", b"0", b"0", b"0"]);
}

#[test]
fn section6_whole_conversation_pipelined() {
    let mut stream = Vec::new();
    stream.extend(wire("00524551 00000007 0000000d", b"reverse\0\0test"));
    stream.extend(wire("00524553 00000008 00000006", b"H:vm:1"));
    stream.extend(hex("00524553 00000006 00000000"));
    stream.extend(hex("00524551 00000027 00000000"));
    stream.extend(wire("00524553 0000001f 00000014", b"H:vm:1\0reverse\0\0test"));
    stream.extend(wire("00524551 0000000d 0000000b", b"H:vm:1\0tset"));
    let commands: Vec<Command> = decode_all(&stream)
        .into_iter()
        .map(|(f, _)| match f {
            Frame::Packet(p) => p.command,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        commands,
        [
            Command::SubmitJob,
            Command::JobCreated,
            Command::Noop,
            Command::GrabJobAll,
            Command::JobAssignUniq,
            Command::WorkComplete,
        ]
    );
}

#[test]
fn section3_error_example() {
    let bytes = wire("00524553 00000013 00000029", b"ARGUMENT_TOO_LARGE\0Unique value too large");
    check_round_trip(&bytes, Magic::Res, Command::Error, &[b"ARGUMENT_TOO_LARGE", b"Unique value too large"]);
}

// ---------------------------------------------------------------------------------
// PROTOCOL.md section 2: the layout of all 42 packet types
// ---------------------------------------------------------------------------------

/// Section 2 written out independently of `command.rs`: code, name, argument count
/// (data tail included), whether the last argument is an opaque data tail, and
/// whether a client or worker may legitimately send it (types the server always
/// rejects, like SUBMIT_JOB_SCHED, count as not).
const SECTION2: [(u32, &str, usize, bool, bool); 42] = [
    (1, "CAN_DO", 1, false, true),
    (2, "CANT_DO", 1, false, true),
    (3, "RESET_ABILITIES", 0, false, true),
    (4, "PRE_SLEEP", 0, false, true),
    (5, "UNUSED", 0, false, false),
    (6, "NOOP", 0, false, false),
    (7, "SUBMIT_JOB", 3, true, true),
    (8, "JOB_CREATED", 1, false, false),
    (9, "GRAB_JOB", 0, false, true),
    (10, "NO_JOB", 0, false, false),
    (11, "JOB_ASSIGN", 3, true, false),
    (12, "WORK_STATUS", 3, false, true),
    (13, "WORK_COMPLETE", 2, true, true),
    (14, "WORK_FAIL", 1, false, true),
    (15, "GET_STATUS", 1, false, true),
    (16, "ECHO_REQ", 1, true, true),
    (17, "ECHO_RES", 1, true, false),
    (18, "SUBMIT_JOB_BG", 3, true, true),
    (19, "ERROR", 2, false, false),
    (20, "STATUS_RES", 5, false, false),
    (21, "SUBMIT_JOB_HIGH", 3, true, true),
    (22, "SET_CLIENT_ID", 1, false, true),
    (23, "CAN_DO_TIMEOUT", 2, false, true),
    (24, "ALL_YOURS", 0, false, false),
    (25, "WORK_EXCEPTION", 2, true, true),
    (26, "OPTION_REQ", 1, false, true),
    (27, "OPTION_RES", 1, false, false),
    (28, "WORK_DATA", 2, true, true),
    (29, "WORK_WARNING", 2, true, true),
    (30, "GRAB_JOB_UNIQ", 0, false, true),
    (31, "JOB_ASSIGN_UNIQ", 4, true, false),
    (32, "SUBMIT_JOB_HIGH_BG", 3, true, true),
    (33, "SUBMIT_JOB_LOW", 3, true, true),
    (34, "SUBMIT_JOB_LOW_BG", 3, true, true),
    (35, "SUBMIT_JOB_SCHED", 8, true, false),
    (36, "SUBMIT_JOB_EPOCH", 4, true, true),
    (37, "SUBMIT_REDUCE_JOB", 5, true, true),
    (38, "SUBMIT_REDUCE_JOB_BACKGROUND", 5, true, true),
    (39, "GRAB_JOB_ALL", 0, false, true),
    (40, "JOB_ASSIGN_ALL", 5, true, false),
    (41, "GET_STATUS_UNIQUE", 1, false, true),
    (42, "STATUS_RES_UNIQUE", 6, false, false),
];

#[test]
fn command_table_matches_section2() {
    assert_eq!(Command::ALL.len(), SECTION2.len());
    for (code, name, argc, has_data, from_peer) in SECTION2 {
        let c = Command::from_code(code).unwrap_or_else(|| panic!("no command {code}"));
        assert_eq!(c.code(), code);
        assert_eq!(c.name(), name, "code {code}");
        assert_eq!(c.layout().argc, argc, "{name} argc");
        assert_eq!(c.layout().has_data, has_data, "{name} data tail");
        assert_eq!(c.is_from_peer(), from_peer, "{name} sender");
    }
}

/// Distinct, recognisable arguments for a command: `a0`, `a1`, ... and a last
/// argument that holds NULs when the layout allows it (a data tail or the rest of
/// the body), so the test shows those are kept intact.
fn sample_args(argc: usize) -> Vec<Vec<u8>> {
    (0..argc)
        .map(|i| if i + 1 == argc { b"last\0with\0nul".to_vec() } else { format!("a{i}").into_bytes() })
        .collect()
}

/// The section 1/2 layout, built by hand: magic, big-endian type, big-endian length,
/// arguments joined by single NULs, no NUL after the last one.
fn hand_built(magic: &[u8; 4], code: u32, args: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            body.push(0);
        }
        body.extend_from_slice(a);
    }
    let mut v = magic.to_vec();
    v.extend_from_slice(&[(code >> 24) as u8, (code >> 16) as u8, (code >> 8) as u8, code as u8]);
    let n = body.len() as u32;
    v.extend_from_slice(&[(n >> 24) as u8, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    v.extend(body);
    v
}

#[test]
fn every_packet_type_encodes_to_the_section2_layout_and_back() {
    for (code, name, argc, _, _) in SECTION2 {
        let command = Command::from_code(code).expect("known code");
        for (magic, magic_bytes) in [(Magic::Req, b"\0REQ"), (Magic::Res, b"\0RES")] {
            let owned = sample_args(argc);
            let arg_refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let p = Packet::new(magic, command, &arg_refs).expect("valid layout");
            let bytes = encode_to_vec(&p);
            assert_eq!(bytes, hand_built(magic_bytes, code, &owned), "{name}");

            // Spot checks on the layout, independent of the hand-built copy.
            assert_eq!(&bytes[..4], magic_bytes);
            assert_eq!(bytes[4..8], code.to_be_bytes(), "{name} type");
            let body_len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
            assert_eq!(body_len as usize, bytes.len() - HEADER_BYTES, "{name} length");
            let separators = if argc == 0 { 0 } else { argc - 1 };
            let nuls_in_args: usize = owned.iter().map(|a| a.iter().filter(|&&b| b == 0).count()).sum();
            let nuls = bytes[HEADER_BYTES..].iter().filter(|&&b| b == 0).count();
            assert_eq!(nuls, separators + nuls_in_args, "{name}: one NUL between args");
            if argc > 0 {
                assert!(bytes.ends_with(b"nul"), "{name}: last arg is not NUL-terminated");
            }

            let back = decode_one_packet(&bytes);
            assert_eq!(back, p, "{name}");
            assert_eq!(back.argc(), argc);
            assert_eq!(args(&back), arg_refs, "{name}");
        }
    }
}

#[test]
fn data_tail_may_be_empty() {
    for (code, name, argc, has_data, _) in SECTION2 {
        if !has_data {
            continue;
        }
        let command = Command::from_code(code).expect("known code");
        let mut owned = sample_args(argc);
        if let Some(last) = owned.last_mut() {
            last.clear();
        }
        let arg_refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let p = Packet::new(Magic::Req, command, &arg_refs).expect("valid layout");
        let bytes = encode_to_vec(&p);
        assert_eq!(bytes.last(), Some(&0u8), "{name}: empty tail follows a NUL");
        assert_eq!(args(&decode_one_packet(&bytes)), arg_refs, "{name}");
    }
}

// ---------------------------------------------------------------------------------
// Captures from the real gearmand 1.1.20
// ---------------------------------------------------------------------------------

const CAPTURE: &str = include_str!("vectors/gearmand-1.1.20.txt");

/// `(name, direction, bytes)` for every record of the capture file.
fn capture_records() -> Vec<(&'static str, char, Vec<u8>)> {
    CAPTURE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().expect("name");
            let dir = parts.next().expect("direction");
            let data = hex(parts.next().expect("hex"));
            assert!(parts.next().is_none(), "extra field in {l:?}");
            assert!(dir == ">" || dir == "<", "bad direction in {l:?}");
            (name, dir.chars().next().expect("direction"), data)
        })
        .collect()
}

fn capture(name: &str, dir: char) -> Vec<u8> {
    capture_records()
        .into_iter()
        .find(|(n, d, _)| *n == name && *d == dir)
        .map(|(_, _, data)| data)
        .unwrap_or_else(|| panic!("no record {name} {dir}"))
}

fn captured_packet(name: &str, dir: char) -> Packet {
    decode_one_packet(&capture(name, dir))
}

#[test]
fn every_capture_decodes_completely_and_packets_re_encode_exactly() {
    let records = capture_records();
    assert!(records.len() >= 30, "capture file looks truncated");
    for (name, dir, data) in records {
        let frames = decode_all(&data);
        assert!(!frames.is_empty(), "{name} {dir}");
        for (frame, raw) in frames {
            if let Frame::Packet(p) = frame {
                // Every packet in the capture uses the standard layout, so our encoder
                // must reproduce the server's (and our own requests') bytes exactly.
                assert_eq!(encode_to_vec(&p), raw, "{name} {dir} {p:?}");
                let expected_magic = if dir == '<' { Magic::Res } else { p.magic };
                assert_eq!(p.magic, expected_magic, "{name}: servers send \\0RES");
            }
        }
    }
}

#[test]
fn capture_echo() {
    let req = captured_packet("echo", '>');
    assert_eq!((req.magic, req.command), (Magic::Req, Command::EchoReq));
    let res = captured_packet("echo", '<');
    assert_eq!((res.magic, res.command), (Magic::Res, Command::EchoRes));
    assert_eq!(args(&res), [&b"hello\0world"[..]]);
}

#[test]
fn capture_grab_job_with_nothing_queued() {
    assert_eq!(captured_packet("grab_job_empty", '>').command, Command::GrabJob);
    let res = captured_packet("grab_job_empty", '<');
    assert_eq!(res.command, Command::NoJob);
    assert!(res.body().is_empty());
}

#[test]
fn capture_submit_job_gives_job_created_and_wakes_the_worker() {
    let req = captured_packet("submit_job", '>');
    assert_eq!(req.command, Command::SubmitJob);
    assert_eq!(args(&req), [&b"reverse"[..], b"u1", b"test"]);
    let res = captured_packet("submit_job", '<');
    assert_eq!(res.command, Command::JobCreated);
    assert_eq!(args(&res), [&b"H:test:1"[..]]);
    assert_eq!(captured_packet("submit_job_other", '<').command, Command::Noop);
}

#[test]
fn capture_grab_job_uniq_gives_job_assign_uniq() {
    let res = captured_packet("grab_job_uniq", '<');
    assert_eq!(res.command, Command::JobAssignUniq);
    assert_eq!(args(&res), [&b"H:test:1"[..], b"reverse", b"u1", b"test"]);
}

#[test]
fn capture_get_status_of_a_running_job() {
    let res = captured_packet("get_status", '<');
    assert_eq!(res.command, Command::StatusRes);
    assert_eq!(args(&res), [&b"H:test:1"[..], b"1", b"1", b"0", b"0"]);
}

#[test]
fn capture_work_status_is_forwarded_unchanged() {
    let sent = captured_packet("work_status", '>');
    let forwarded = captured_packet("work_status_other", '<');
    assert_eq!(forwarded.command, Command::WorkStatus);
    assert_eq!(args(&forwarded), [&b"H:test:1"[..], b"1", b"2"]);
    assert_eq!(args(&forwarded), args(&sent));
}

#[test]
fn capture_get_status_unique() {
    let res = captured_packet("get_status_unique", '<');
    assert_eq!(res.command, Command::StatusResUnique);
    assert_eq!(args(&res), [&b"u1"[..], b"1", b"1", b"1", b"2", b"1"]);
}

#[test]
fn capture_work_complete_is_forwarded() {
    let res = captured_packet("work_complete_other", '<');
    assert_eq!(res.command, Command::WorkComplete);
    assert_eq!(args(&res), [&b"H:test:1"[..], b"tset"]);
}

#[test]
fn capture_grab_job_all_is_answered_with_job_assign_uniq() {
    // As in PROTOCOL.md section 6, 1.1.20 answers GRAB_JOB_ALL with JOB_ASSIGN_UNIQ
    // when the job has no reducer. The data tail keeps its NULs.
    assert_eq!(captured_packet("grab_job_all", '>').command, Command::GrabJobAll);
    let res = captured_packet("grab_job_all", '<');
    assert_eq!(res.command, Command::JobAssignUniq);
    assert_eq!(args(&res), [&b"H:test:2"[..], b"reverse", b"", b"data\0with\0nuls"]);
}

#[test]
fn capture_option_req() {
    let ok = captured_packet("option_exceptions", '<');
    assert_eq!(ok.command, Command::OptionRes);
    assert_eq!(args(&ok), [&b"exceptions"[..]]);
    let err = captured_packet("option_unknown", '<');
    assert_eq!(err.command, Command::Error);
    assert_eq!(args(&err), [&b"UNKNOWN_OPTION"[..], b"Server does not recognize given option"]);
}

#[test]
fn capture_errors_for_res_magic_and_server_only_type() {
    let req = captured_packet("res_magic", '>');
    assert_eq!((req.magic, req.command), (Magic::Res, Command::EchoReq));
    let err = captured_packet("res_magic", '<');
    assert_eq!(err.command, Command::Error);
    assert_eq!(args(&err), [&b"INVALID_MAGIC"[..], b"Request magic expected"]);

    let req = captured_packet("server_only_type", '>');
    assert_eq!((req.magic, req.command), (Magic::Req, Command::Noop));
    let err = captured_packet("server_only_type", '<');
    assert_eq!(args(&err), [&b"INVALID_COMMAND"[..], b"Command not expected"]);
}

#[test]
fn capture_admin_lines_mixed_with_packets() {
    let version: Vec<Frame> =
        decode_all(&capture("admin_version", '>')).into_iter().map(|(f, _)| f).collect();
    assert_eq!(version, [Frame::AdminLine(Bytes::from_static(b"version"))]);
    let reply: Vec<Frame> = decode_all(&capture("admin_version", '<')).into_iter().map(|(f, _)| f).collect();
    assert_eq!(reply, [Frame::AdminLine(Bytes::from_static(b"OK 1.1.20+ds"))]);

    let sent = decode_all(&capture("admin_pipelined", '>'));
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].0, Frame::AdminLine(Bytes::from_static(b"version")));
    match &sent[1].0 {
        Frame::Packet(p) => assert_eq!((p.command, args(p)), (Command::EchoReq, vec![&b"mixed"[..]])),
        other => panic!("expected ECHO_REQ, got {other:?}"),
    }
    assert_eq!(sent[2].0, Frame::AdminLine(Bytes::from_static(b"getpid")));

    let got = decode_all(&capture("admin_pipelined", '<'));
    assert_eq!(got.len(), 3, "answers come back in request order");
    assert_eq!(got[0].0, Frame::AdminLine(Bytes::from_static(b"OK 1.1.20+ds")));
    match &got[1].0 {
        Frame::Packet(p) => assert_eq!((p.command, args(p)), (Command::EchoRes, vec![&b"mixed"[..]])),
        other => panic!("expected ECHO_RES, got {other:?}"),
    }
    match &got[2].0 {
        Frame::AdminLine(l) => {
            let pid = l.strip_prefix(b"OK ").expect("getpid answers OK <pid>");
            assert!(!pid.is_empty() && pid.iter().all(u8::is_ascii_digit), "{l:?}");
        }
        other => panic!("expected a getpid line, got {other:?}"),
    }
}
