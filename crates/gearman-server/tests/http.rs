//! The HTTP front end (`-r http --http-port P`): requests with `curl`, jobs worked by a
//! raw-protocol worker, and the basic cases compared with the real gearmand 1.1.20.

mod support;
#[allow(unused_macros)]
mod wire;

use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use support::{Conn, Kind, Server};
use wire::*;

/// A parsed HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// What must match between ours and the real gearmand: the status code and the
    /// `X-Gearman-*` headers.
    fn gearman_view(&self) -> (u16, Vec<(String, String)>) {
        let x = self.headers.iter().filter(|(n, _)| n.starts_with("x-gearman-")).cloned().collect();
        (self.status, x)
    }
}

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Starts a server of `kind` with the HTTP front end; `None` to skip the test.
fn start_http(kind: Kind) -> Option<(Server, u16)> {
    start_http_with(kind, &[])
}

/// [`start_http`] with extra command-line arguments.
fn start_http_with(kind: Kind, extra: &[&str]) -> Option<(Server, u16)> {
    if !support::require(have_curl(), "curl") {
        return None;
    }
    let port = support::free_port();
    let port_arg = port.to_string();
    let args = [&["-r", "http", "--http-port", &port_arg][..], extra].concat();
    let server = Server::start(kind, &args)?;
    // The HTTP port opens with the Gear port, but be safe against a slow start.
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((server, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("HTTP port {port} never opened");
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Runs curl with `args` (`-s -i` added) and parses the one answer it prints.
fn curl(args: &[&str]) -> Answer {
    let out =
        Command::new("curl").args(["-s", "-i", "--max-time", "20"]).args(args).output().expect("run curl");
    assert!(out.status.success(), "curl {args:?} failed: {:?}", out);
    parse(&out.stdout)
}

/// Parses `curl -i` output; interim 1xx answers are skipped.
fn parse(mut raw: &[u8]) -> Answer {
    loop {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
            panic!("no header end in {:?}", String::from_utf8_lossy(raw));
        });
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        if (100..200).contains(&status) {
            continue;
        }
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        return Answer { status, headers, body: raw.to_vec() };
    }
}

/// curl in a thread, for requests that wait for a worker.
fn curl_bg(args: &[&str]) -> JoinHandle<Answer> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&a)
    })
}

/// A worker for `function` on the Gear port.
fn worker(server: &Server, function: &str) -> Conn {
    let mut w = server.connect();
    w.can_do(function);
    w
}

/// Grabs the next job, sleeping (PRE_SLEEP/NOOP) while there is none.
/// Returns `(handle, function, workload)`.
fn grab(w: &mut Conn) -> (String, String, Vec<u8>) {
    for _ in 0..50 {
        w.req(GRAB_JOB, &[]);
        let p = w.read_packet();
        match p.command {
            JOB_ASSIGN => {
                let a = p.args();
                let rest = a[2..].join(&0u8);
                return (
                    String::from_utf8(a[0].clone()).unwrap(),
                    String::from_utf8(a[1].clone()).unwrap(),
                    rest,
                );
            }
            NO_JOB => {
                w.req(PRE_SLEEP, &[]);
                assert_eq!(w.read_packet().command, NOOP);
            }
            other => panic!("unexpected packet {other}"),
        }
    }
    panic!("no job arrived");
}

/// Waits until `function` has `queued` jobs in `status` (total column).
fn wait_queued(admin: &mut Conn, function: &str, queued: u32) {
    for _ in 0..500 {
        let status = admin.list("status");
        let n = status
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols.first() == Some(&function)).then(|| cols[1].parse::<u32>().unwrap())
            })
            .unwrap_or(0);
        if n >= queued {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{function} never had {queued} job(s) queued");
}

// ---------------------------------------------------------------- the basic cases

/// Foreground POST answered with WORK_COMPLETE, a background POST, and `/` (404):
/// run against either server; the answers are compared in `basic_cases_match_real`.
fn basic_cases(kind: Kind) -> Option<Vec<Answer>> {
    let (server, port) = start_http(kind)?;
    let mut w = worker(&server, "reverse");
    let fg = curl_bg(&["-X", "POST", "--data-binary", "hello", &url(port, "/reverse")]);
    let (handle, function, data) = grab(&mut w);
    assert_eq!(
        (handle.as_str(), function.as_str(), data.as_slice()),
        (h(1).as_str(), "reverse", &b"hello"[..])
    );
    w.req(WORK_COMPLETE, &[&handle, "olleh"]);
    let fg = fg.join().unwrap();

    let bg = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "later",
        "-H",
        "X-Gearman-Background: true",
        &url(port, "/bgf"),
    ]);
    let not_found = curl(&["-X", "POST", "--data-binary", "x", &url(port, "/")]);
    Some(vec![fg, bg, not_found])
}

#[test]
fn foreground_post_complete() {
    let Some(answers) = basic_cases(Kind::Ours) else { return };
    let fg = &answers[0];
    assert_eq!(fg.status, 200);
    assert_eq!(fg.header("x-gearman-job-handle"), Some(h(1).as_str()));
    assert_eq!(fg.header("x-gearman-command"), Some("WORK_COMPLETE"));
    assert_eq!(fg.header("content-length"), Some("5"));
    assert_eq!(fg.header("server"), Some(concat!("gearman-rs/", env!("CARGO_PKG_VERSION"))));
    assert_eq!(fg.body, b"olleh");
}

#[test]
fn background_answers_job_created_at_once() {
    let Some(answers) = basic_cases(Kind::Ours) else { return };
    let bg = &answers[1];
    assert_eq!(bg.status, 200);
    assert_eq!(bg.header("x-gearman-job-handle"), Some(h(2).as_str()));
    assert_eq!(bg.header("x-gearman-command"), Some("JOB_CREATED"));
    assert_eq!(bg.body, b"");
    assert_eq!(answers[2].status, 404);
}

#[test]
fn basic_cases_match_real() {
    if support::real_gearmand().is_none() && !support::services_required() {
        eprintln!("SKIP: the real gearmand is not installed");
        return;
    }
    let Some(ours) = basic_cases(Kind::Ours) else { return };
    let Some(real) = basic_cases(Kind::Real) else { return };
    for (o, r) in ours.iter().zip(&real) {
        assert_eq!(o.gearman_view(), r.gearman_view(), "\nours: {o:?}\nreal: {r:?}");
        assert_eq!(o.body, r.body);
    }
}

// ---------------------------------------------------------------- results

#[test]
fn fixed_http_data_status_warning_then_complete() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut w = worker(&server, "chunks");
    let fg = curl_bg(&["--data-binary", "in", &url(port, "/chunks")]);
    let (handle, _, _) = grab(&mut w);
    w.req(WORK_DATA, &[&handle, "ab"])
        .req(WORK_STATUS, &[&handle, "1", "3"])
        .req(WORK_WARNING, &[&handle, "careful"])
        .req(WORK_DATA, &[&handle, "c\0d"])
        .req(WORK_STATUS, &[&handle, "2", "3"])
        .req(WORK_COMPLETE, &[&handle, "-end"]);
    let a = fg.join().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-gearman-command"), Some("WORK_COMPLETE"));
    assert_eq!(a.body, b"abc\0d-end");
}

#[test]
fn fixed_http_fail_full_handle() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut w = worker(&server, "f");
    let fg = curl_bg(&["--data-binary", "x", &url(port, "/f")]);
    let (handle, _, _) = grab(&mut w);
    w.req(WORK_FAIL, &[&handle]);
    let a = fg.join().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-gearman-command"), Some("WORK_FAIL"));
    // The full handle (gearmand 1.1.20 drops its last character).
    assert_eq!(a.header("x-gearman-job-handle"), Some(handle.as_str()));
    assert_eq!(a.body, b"");
}

#[test]
fn fixed_http_exception_with_data() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut w = worker(&server, "f");
    let fg = curl_bg(&["--data-binary", "x", &url(port, "/f")]);
    let (handle, _, _) = grab(&mut w);
    w.req(WORK_DATA, &[&handle, "partial"]).req(WORK_EXCEPTION, &[&handle, "boom"]);
    let a = fg.join().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-gearman-command"), Some("WORK_EXCEPTION"));
    assert_eq!(a.header("x-gearman-job-handle"), Some(handle.as_str()));
    assert_eq!(a.body, b"boom");
}

#[test]
fn fixed_http_queue_full_503() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut admin = server.connect();
    // maxqueue applies to existing functions only.
    assert_eq!(admin.admin_line("create function full"), "OK\r\n");
    assert_eq!(admin.admin_line("maxqueue full 1"), "OK\r\n");
    let bg = ["-H", "X-Gearman-Background: true", "--data-binary"];
    let first = curl(&[&bg[..], &["one", &url(port, "/full")]].concat());
    assert_eq!(first.status, 200);
    let second = curl(&[&bg[..], &["two", &url(port, "/full")]].concat());
    assert_eq!(second.status, 503);
    assert_eq!(second.header("x-gearman-command"), Some("ERROR"));
    assert_eq!(second.header("x-gearman-error-code"), Some("QUEUE_ERROR"));
    assert_eq!(second.body, b"Job queue is full\n");
}

// ---------------------------------------------------------------- request mapping

#[test]
fn priority_headers_pick_the_queue() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    for (prio, body) in [("low", "l"), ("normal", "n"), ("HIGH", "h"), ("", "n2")] {
        let mut args = vec!["-H", "X-Gearman-Background: true", "--data-binary", body];
        let header = format!("X-Gearman-Priority: {prio}");
        if !prio.is_empty() {
            args.extend(["-H", &header]);
        }
        let u = url(port, "/prio");
        args.push(&u);
        let a = curl(&args);
        assert_eq!((a.status, a.header("x-gearman-command")), (200, Some("JOB_CREATED")));
    }
    let mut w = worker(&server, "prio");
    let order: Vec<Vec<u8>> = (0..4).map(|_| grab(&mut w).2).collect();
    assert_eq!(order, [&b"h"[..], b"n", b"n2", b"l"]);
}

#[test]
fn function_name_is_the_literal_target() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut w = worker(&server, "a/b?x=1&y=%20");
    let fg = curl_bg(&["--data-binary", "q", "--path-as-is", &url(port, "///a/b?x=1&y=%20")]);
    let (handle, function, data) = grab(&mut w);
    assert_eq!((function.as_str(), data.as_slice()), ("a/b?x=1&y=%20", &b"q"[..]));
    w.req(WORK_COMPLETE, &[&handle, "ok"]);
    assert_eq!(fg.join().unwrap().body, b"ok");
}

#[test]
fn default_unique_coalesces_identical_requests() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let u = url(port, "/co");
    let mut admin = server.connect();
    let first = curl_bg(&["--data-binary", "same", &u]);
    wait_queued(&mut admin, "co", 1);
    let second = curl_bg(&["--data-binary", "same", &u]);
    // Both requests are attached (admin + two virtual clients) before the worker runs.
    let mut attached = false;
    for _ in 0..500 {
        if admin.list("workers").lines().filter(|l| l.contains("127.0.0.1")).count() >= 3 {
            attached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(attached, "second request never arrived");
    let mut w = worker(&server, "co");
    let (handle, _, _) = grab(&mut w);
    w.req(WORK_COMPLETE, &[&handle, "shared"]);
    let (a, b) = (first.join().unwrap(), second.join().unwrap());
    for x in [&a, &b] {
        assert_eq!(x.header("x-gearman-job-handle"), Some(handle.as_str()));
        assert_eq!(x.body, b"shared");
    }
    // One job only: nothing else to grab.
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}

#[test]
fn unique_header_coalesces_and_empty_value_is_ignored() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let u = url(port, "/un");
    let bg = |body: &str, unique: &str| {
        let header = format!("X-Gearman-Unique: {unique}");
        curl(&["-H", "X-Gearman-Background: true", "-H", &header, "--data-binary", body, &u])
    };
    let a = bg("one", "k");
    let b = bg("two", "k");
    assert_eq!(a.header("x-gearman-job-handle"), b.header("x-gearman-job-handle"));
    // An empty unique is the default `-`: identical bodies coalesce, others do not.
    let c = bg("three", "");
    let d = bg("three", "");
    let e = bg("four", "");
    assert_eq!(c.header("x-gearman-job-handle"), d.header("x-gearman-job-handle"));
    assert_ne!(c.header("x-gearman-job-handle"), e.header("x-gearman-job-handle"));
    let mut w = worker(&server, "un");
    let mut got: Vec<Vec<u8>> = (0..3).map(|_| grab(&mut w).2).collect();
    got.sort();
    assert_eq!(got, [&b"four"[..], b"one", b"three"]);
    w.req(GRAB_JOB, &[]).want(NO_JOB, &[]);
}

#[test]
fn fixed_http_background_header() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let a = curl(&["-H", "X-Gearman-Background: TRUE", "--data-binary", "x", &url(port, "/bgx")]);
    assert_eq!(a.header("x-gearman-command"), Some("JOB_CREATED"));
    // Anything else is a foreground job: it waits for its worker.
    let fg = curl_bg(&["-H", "X-Gearman-Background: yes", "--data-binary", "y", &url(port, "/bgx")]);
    let mut w = worker(&server, "bgx");
    let (h1, _, d1) = grab(&mut w);
    assert_eq!(d1, b"x");
    w.req(WORK_COMPLETE, &[&h1, ""]);
    let (h2, _, d2) = grab(&mut w);
    assert_eq!(d2, b"y");
    w.req(WORK_COMPLETE, &[&h2, "done"]);
    let fg = fg.join().unwrap();
    assert_eq!((fg.header("x-gearman-command"), fg.body.as_slice()), (Some("WORK_COMPLETE"), &b"done"[..]));

    // A trailing space is optional whitespace to hyper (gearmand runs it foreground).
    let mut c = Conn::connect(port);
    c.send(b"POST /bgx HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true \r\nContent-Length: 1\r\n\r\nz");
    let head = String::from_utf8_lossy(&c.read_until(b"\r\n\r\n")).into_owned();
    assert!(head.contains("X-Gearman-Command: JOB_CREATED\r\n"), "{head}");
}

#[test]
fn get_and_head_submit_with_an_empty_workload() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut w = worker(&server, "g");
    let get = curl_bg(&[&url(port, "/g")]);
    let (handle, _, data) = grab(&mut w);
    assert_eq!(data, b"");
    w.req(WORK_COMPLETE, &[&handle, "got"]);
    let get = get.join().unwrap();
    assert_eq!((get.status, get.body.as_slice()), (200, &b"got"[..]));

    let head = curl_bg(&["-I", &url(port, "/g")]);
    let (handle, _, data) = grab(&mut w);
    assert_eq!(data, b"");
    w.req(WORK_COMPLETE, &[&handle, "four"]);
    let head = head.join().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-gearman-command"), Some("WORK_COMPLETE"));
    assert_eq!(head.header("content-length"), Some("4"));
    assert_eq!(head.body, b"");
}

#[test]
fn fixed_http_404_and_405() {
    let Some((_server, port)) = start_http(Kind::Ours) else { return };
    for args in [&["-X", "POST", "-d", "x"][..], &["-X", "GET"], &["-X", "PUT", "-d", "x"]] {
        let a = curl(&[args, &[&url(port, "///")]].concat());
        assert_eq!(a.status, 404, "{args:?}");
    }
    for method in ["DELETE", "TRACE", "OPTIONS", "PATCH"] {
        let a = curl(&["-X", method, &url(port, "/f")]);
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(a.header("allow"), Some("GET, HEAD, POST, PUT"));
    }
}

#[test]
fn fixed_http_keep_alive() {
    let Some((_server, port)) = start_http(Kind::Ours) else { return };
    let bg = "X-Gearman-Background: true";
    let out = Command::new("curl")
        .args(["-s", "-H", bg, "-d", "1", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"])
        .args([&url(port, "/ka1"), "-H", bg, "-d", "2", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{num_connects}\n", &url(port, "/ka2")])
        .output()
        .unwrap();
    // The second transfer reused the first one's connection (no new connect).
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1\n200 0\n");
}

#[test]
fn fixed_http_oversized_body_413() {
    // A small limit through --max-packet-size.
    let Some((server, port2)) = start_http_with(Kind::Ours, &["--max-packet-size", "1000"]) else { return };
    let body = "x".repeat(1001);
    let a = curl(&["-H", "X-Gearman-Background: true", "--data-binary", &body, &url(port2, "/big")]);
    assert_eq!(a.status, 413);
    // Chunked, so the size is only found out while reading.
    let a = curl(&[
        "-H",
        "X-Gearman-Background: true",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &body,
        &url(port2, "/big"),
    ]);
    assert_eq!(a.status, 413);
    let ok = curl(&["-H", "X-Gearman-Background: true", "--data-binary", &body[1..], &url(port2, "/big")]);
    assert_eq!(ok.status, 200);
    let mut admin = server.connect();
    assert!(admin.list("status").contains("big\t1\t0\t0"));
}

#[test]
fn fixed_http_malformed_400() {
    let Some((_server, port)) = start_http(Kind::Ours) else { return };
    let mut c = Conn::connect(port);
    c.send(b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
    let got = c.closed_after();
    assert!(got.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&got));
}

#[test]
fn client_disconnect_abandons_the_job() {
    let Some((server, port)) = start_http(Kind::Ours) else { return };
    let mut admin = server.connect();
    let mut c = Conn::connect(port);
    c.send(b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz");
    wait_queued(&mut admin, "gone", 1);
    drop(c);
    // The virtual client leaves with the TCP connection: the job is abandoned
    // (third column of `show jobs`), as when a Gear client disconnects.
    for _ in 0..500 {
        let jobs = admin.list("show jobs");
        if jobs.lines().any(|l| l.starts_with(&h(1)) && l.split('\t').nth(2) == Some("1")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("job never abandoned: {}", admin.list("show jobs"));
}
