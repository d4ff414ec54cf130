//! `gearman-bench null-server`: the loopback reference for `bg-submit` and `echo`.
//!
//! It accepts connections and answers every SUBMIT_JOB_BG / _HIGH_BG / _LOW_BG /
//! SUBMIT_JOB_EPOCH with JOB_CREATED (handle `H:null:<n>`, `n` counting up over the
//! whole process) and every ECHO_REQ with ECHO_RES. It keeps no job. Anything else
//! gets an ERROR packet (or `ERR` for an admin line), so a scenario that needs a real
//! server fails loudly against it instead of hanging. In particular it does not
//! answer `status`: `bg-submit --no-drain` and `echo`, the scenarios meant for it,
//! never ask.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use gearman_proto::{decode, encode_parts, Command, Frame, Limits, Magic, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read buffer size per connection.
const READ_CHUNK: usize = 256 * 1024;

/// The answer to an admin line (gearmand's text for an unknown command).
const ADMIN_REFUSAL: &[u8] = b"ERR UNKNOWN_COMMAND Unknown+server+command\n";

/// Appends to `out` the null server's answer to `p`; `next_handle` numbers handles.
pub(crate) fn answer(p: &Packet, next_handle: &AtomicU64, out: &mut BytesMut) {
    match (p.magic, p.command) {
        (
            Magic::Req,
            Command::SubmitJobBg
            | Command::SubmitJobHighBg
            | Command::SubmitJobLowBg
            | Command::SubmitJobEpoch,
        ) => {
            let n = next_handle.fetch_add(1, Relaxed) + 1;
            let handle = itoa_handle(n);
            encode_parts(Magic::Res, Command::JobCreated, &[handle.as_bytes()], out);
        }
        (Magic::Req, Command::EchoReq) => encode_parts(Magic::Res, Command::EchoRes, &[p.arg(0)], out),
        _ => encode_parts(
            Magic::Res,
            Command::Error,
            &[b"not_supported", b"the null server answers only SUBMIT_JOB_BG* and ECHO_REQ"],
            out,
        ),
    }
}

/// `H:null:<n>` as a byte buffer.
struct Handle {
    buf: [u8; 32],
    len: usize,
}

impl Handle {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn itoa_handle(n: u64) -> Handle {
    const PREFIX: &[u8] = b"H:null:";
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut buf = [0u8; 32];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let d = &digits[i..];
    buf[PREFIX.len()..PREFIX.len() + d.len()].copy_from_slice(d);
    Handle { buf, len: PREFIX.len() + d.len() }
}

/// Binds `host:port` and serves until the process is stopped. Prints the bound
/// address (useful with `--port 0`) on stdout once listening.
pub(crate) async fn serve(host: &str, port: u16) -> Result<()> {
    let listener = TcpListener::bind((host, port)).await.with_context(|| format!("binding {host}:{port}"))?;
    println!("null-server listening on {}", listener.local_addr()?);
    serve_on(listener).await
}

/// Serves connections accepted on `listener`, forever.
async fn serve_on(listener: TcpListener) -> Result<()> {
    let handles = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or similar: keep serving the connections we have.
                eprintln!("null-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let handles = handles.clone();
        tokio::spawn(async move {
            let _ = connection(stream, &handles).await;
        });
    }
}

async fn connection(mut stream: TcpStream, handles: &AtomicU64) -> Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits::default();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = decode(&mut rbuf, &limits)? {
            match frame {
                Frame::Packet(p) => answer(&p, handles, &mut wbuf),
                Frame::AdminLine(_) => wbuf.extend_from_slice(ADMIN_REFUSAL),
            }
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(p: &Packet, counter: &AtomicU64) -> Packet {
        let mut out = BytesMut::new();
        answer(p, counter, &mut out);
        match decode(&mut out, &Limits::default()) {
            Ok(Some(Frame::Packet(r))) => {
                assert!(out.is_empty(), "one reply per request");
                r
            }
            other => panic!("not a packet: {other:?}"),
        }
    }

    #[test]
    fn answers_background_submits_echoes_and_nothing_else() {
        let counter = AtomicU64::new(0);
        let submit = Packet::new(Magic::Req, Command::SubmitJobBg, &[b"f", b"", b"data"]).unwrap();
        let r = reply(&submit, &counter);
        assert_eq!((r.magic, r.command), (Magic::Res, Command::JobCreated));
        assert_eq!(r.arg(0), b"H:null:1");
        let low = Packet::new(Magic::Req, Command::SubmitJobLowBg, &[b"f", b"u", b""]).unwrap();
        assert_eq!(reply(&low, &counter).arg(0), b"H:null:2");
        counter.store(u64::MAX - 1, Relaxed);
        assert_eq!(reply(&submit, &counter).arg(0), format!("H:null:{}", u64::MAX).as_bytes());

        let echo = Packet::new(Magic::Req, Command::EchoReq, &[b"a\0b"]).unwrap();
        let r = reply(&echo, &counter);
        assert_eq!((r.command, r.arg(0)), (Command::EchoRes, &b"a\0b"[..]));

        let fg = Packet::new(Magic::Req, Command::SubmitJob, &[b"f", b"", b"x"]).unwrap();
        assert_eq!(reply(&fg, &counter).command, Command::Error);
        let can_do = Packet::new(Magic::Req, Command::CanDo, &[b"f"]).unwrap();
        assert_eq!(reply(&can_do, &counter).command, Command::Error);
    }

    #[tokio::test]
    async fn serves_pipelined_requests_and_refuses_admin_lines() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(listener));
        let mut conn = crate::conn::Conn::connect(addr).await.unwrap();
        for _ in 0..3 {
            conn.push(Command::SubmitJobBg, &[b"f", b"", b"x"]);
        }
        conn.push(Command::EchoReq, &[b"hi"]);
        conn.push_raw(b"status\n");
        let mut got = Vec::new();
        let mut frames = Vec::new();
        while got.len() < 5 {
            conn.exchange(&mut frames, None).await.unwrap();
            got.append(&mut frames);
        }
        let handles: Vec<_> = got[..3]
            .iter()
            .map(|f| match f {
                Frame::Packet(p) if p.command == Command::JobCreated => p.arg(0).to_vec(),
                other => panic!("expected JOB_CREATED, got {other:?}"),
            })
            .collect();
        assert_eq!(handles, [b"H:null:1".to_vec(), b"H:null:2".to_vec(), b"H:null:3".to_vec()]);
        assert!(matches!(&got[3], Frame::Packet(p) if p.command == Command::EchoRes && p.arg(0) == b"hi"));
        assert!(matches!(&got[4], Frame::AdminLine(l) if l.starts_with(b"ERR UNKNOWN_COMMAND")));
        server.abort();
    }
}
