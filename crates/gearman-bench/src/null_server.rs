//! `gearman-bench null-server`: the loopback reference for `bg-submit` and `echo`.
//!
//! It accepts connections and answers every SUBMIT_JOB_BG / _HIGH_BG / _LOW_BG /
//! SUBMIT_JOB_EPOCH with JOB_CREATED (handle `H:null:<n>`, `n` counting up over the
//! whole process) and every ECHO_REQ with ECHO_RES. It keeps no job. Anything else
//! gets an ERROR packet (or `ERR` for an admin line), so a scenario that needs a real
//! server fails loudly against it instead of hanging. In particular it does not
//! answer `status`: `bg-submit --no-drain` and `echo`, the scenarios meant for it,
//! never ask.
//!
//! On Linux it does not read a large submit's data either ([`SKIP_MIN_BYTES`]), so
//! that it stays a bound at 64 KiB too: the data is dropped in the kernel (`recv` with
//! `MSG_TRUNC`) without being copied to user space. A null server that read it paid a
//! copy that a real server can avoid, and a real server outran it. An echo's data is
//! read and sent back as before: sending it back through a pipe (`splice`) instead
//! measured no faster, at 64 KiB and 1 to 50 clients.
//!
//! With `--keep` it is instead the bound for a server that holds what it acknowledged:
//! it reads every background submit's data into memory, all of it, and keeps it (a
//! view of the read buffer, no copy beyond the read) until the connection closes. Run it
//! with glibc told to keep freed memory for reuse (`bench/compare` does, with
//! `GLIBC_TUNABLES`), as a long-running server's allocator does: by default each 256 KiB
//! read buffer is a mapping of its own, and a run that keeps 64 KiB submits then spends
//! its time faulting in fresh, zeroed pages (measured: 34k submits/s against 51k).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use gearman_proto::{
    decode, encode_parts, request_head, Command, Frame, Limits, Magic, Packet, HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read buffer size per connection.
const READ_CHUNK: usize = 256 * 1024;

/// Whether a submit's data can be left unread here ([`discard`] is Linux only).
const SKIPS_DATA: bool = cfg!(target_os = "linux");

/// A background submit's data at least this large is not read.
const SKIP_MIN_BYTES: usize = 16 * 1024;

/// What is read at a time after a request whose data was not read: enough for the
/// head of the next one (and a few small packets), so that its data can be skipped too.
const HEAD_READ_BYTES: usize = 4 * 1024;

/// The answer to an admin line (gearmand's text for an unknown command).
const ADMIN_REFUSAL: &[u8] = b"ERR UNKNOWN_COMMAND Unknown+server+command\n";

/// The background submits the null server answers with JOB_CREATED (and `--keep` holds).
fn is_background_submit(command: Command) -> bool {
    matches!(
        command,
        Command::SubmitJobBg | Command::SubmitJobHighBg | Command::SubmitJobLowBg | Command::SubmitJobEpoch
    )
}

/// Appends to `out` the null server's answer to `p`; `next_handle` numbers handles.
pub(crate) fn answer(p: &Packet, next_handle: &AtomicU64, out: &mut BytesMut) {
    match (p.magic, p.command) {
        (Magic::Req, c) if is_background_submit(c) => job_created(next_handle, out),
        (Magic::Req, Command::EchoReq) => encode_parts(Magic::Res, Command::EchoRes, &[p.arg(0)], out),
        _ => encode_parts(
            Magic::Res,
            Command::Error,
            &[b"not_supported", b"the null server answers only SUBMIT_JOB_BG* and ECHO_REQ"],
            out,
        ),
    }
}

/// Appends a JOB_CREATED with the next handle.
fn job_created(next_handle: &AtomicU64, out: &mut BytesMut) {
    let n = next_handle.fetch_add(1, Relaxed) + 1;
    encode_parts(Magic::Res, Command::JobCreated, &[itoa_handle(n).as_bytes()], out);
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

/// The data of a background submit (its last argument), which `--keep` holds.
fn submitted_data(p: &Packet) -> Option<Bytes> {
    let last = p.argc().checked_sub(1)?;
    (p.magic == Magic::Req && is_background_submit(p.command)).then(|| p.arg_bytes(last))
}

/// Binds `host:port` and serves until the process is stopped, keeping submitted data
/// when `keep`. Prints the bound address (useful with `--port 0`) on stdout once
/// listening.
pub(crate) async fn serve(host: &str, port: u16, keep: bool) -> Result<()> {
    let listener = TcpListener::bind((host, port)).await.with_context(|| format!("binding {host}:{port}"))?;
    println!(
        "null-server listening on {}{}",
        listener.local_addr()?,
        if keep { " (keeping data)" } else { "" }
    );
    serve_counting(listener, Arc::default(), keep).await
}

/// What the null server has counted since it started.
#[derive(Debug, Default)]
struct Counters {
    /// Handles given out so far.
    handles: AtomicU64,
    /// Bytes of data answered without being read (see [`SKIP_MIN_BYTES`]).
    unread: AtomicU64,
    /// Bytes of submitted data held now (`--keep`).
    kept: AtomicU64,
}

/// Serves connections accepted on `listener`, forever, counting into `counters` and
/// keeping submitted data when `keep`.
async fn serve_counting(listener: TcpListener, counters: Arc<Counters>, keep: bool) -> Result<()> {
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
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let _ = connection(stream, &counters, keep.then_some(&mut kept)).await;
            let held: usize = kept.iter().map(Bytes::len).sum();
            counters.kept.fetch_sub(held as u64, Relaxed);
        });
    }
}

/// Serves one connection; with `kept`, pushes every background submit's data there.
async fn connection(
    mut stream: TcpStream,
    counters: &Counters,
    mut kept: Option<&mut Vec<Bytes>>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits::default();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut head_only = false;
    // Size of the latest packet (header included).
    let mut packet_len = 0;
    loop {
        let spare = rbuf.capacity() - rbuf.len();
        if kept.is_some() {
            // Kept data pins the buffer. The next is sized so that reads end where
            // packets do (as our server's reader does) and filled to the end, so that
            // no packet is cut in two and copied into the buffer after.
            if rbuf.is_empty() && spare < READ_CHUNK / 4 {
                rbuf = BytesMut::with_capacity(whole_packets(packet_len));
            } else if spare == 0 {
                rbuf.reserve(READ_CHUNK);
            }
        } else if spare < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let n = if head_only && rbuf.is_empty() {
            read_head(&mut stream, &mut rbuf, &mut wbuf).await?
        } else {
            stream.read_buf(&mut rbuf).await?
        };
        if n == 0 {
            return Ok(());
        }
        while let Some(frame) = decode(&mut rbuf, &limits)? {
            match frame {
                Frame::Packet(p) => {
                    packet_len = HEADER_BYTES + p.body().len();
                    if let (Some(kept), Some(data)) = (kept.as_deref_mut(), submitted_data(&p)) {
                        counters.kept.fetch_add(data.len() as u64, Relaxed);
                        kept.push(data);
                    }
                    answer(&p, &counters.handles, &mut wbuf)
                }
                Frame::AdminLine(_) => wbuf.extend_from_slice(ADMIN_REFUSAL),
            }
        }
        head_only = false;
        if let Some(unread) = skippable(&rbuf).filter(|_| kept.is_none()) {
            rbuf.clear();
            discard(&stream, &mut rbuf, unread).await?;
            job_created(&counters.handles, &mut wbuf);
            counters.unread.fetch_add(unread as u64, Relaxed);
            head_only = true;
        }
        // After a skipped submit its JOB_CREATED waits for the next read (see [`read_head`]).
        if !head_only && !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
    }
}

/// A read buffer size that holds a whole number of packets of `packet_len` bytes, about
/// [`READ_CHUNK`].
fn whole_packets(packet_len: usize) -> usize {
    if packet_len == 0 || packet_len > READ_CHUNK {
        return READ_CHUNK;
    }
    packet_len * (READ_CHUNK / packet_len)
}

/// Reads the head of what follows a skipped submit: at once if it is in, and if not,
/// after sending the answers in `wbuf`. A run of large pipelined submits then gets its
/// JOB_CREATEDs in one write, as a real server's reads of several at once give them.
async fn read_head(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
) -> std::io::Result<usize> {
    match stream.try_read_buf(&mut (&mut *rbuf).limit(HEAD_READ_BYTES)) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        read => return read,
    }
    stream.write_all(wbuf).await?;
    wbuf.clear();
    (&mut *stream).take(HEAD_READ_BYTES as u64).read_buf(rbuf).await
}

/// The bytes still to come of the background submit at the front of `buf` (which
/// holds nothing after it), if they can be left unread: at least [`SKIP_MIN_BYTES`].
fn skippable(buf: &[u8]) -> Option<usize> {
    if !SKIPS_DATA {
        return None;
    }
    let head = request_head(buf)?;
    let unread = head.packet_len.checked_sub(buf.len())?;
    (is_background_submit(head.command) && unread >= SKIP_MIN_BYTES).then_some(unread)
}

/// Drops the next `n` bytes from `stream` without reading them: `recv` with
/// `MSG_TRUNC` on a TCP socket discards instead of copying (Linux), as the server's
/// reader does with results nobody wants. The call wants a buffer as long as what it
/// drops but never writes it: `room`'s spare capacity serves, untouched.
#[cfg(target_os = "linux")]
async fn discard(stream: &TcpStream, room: &mut BytesMut, mut n: usize) -> std::io::Result<()> {
    room.reserve(READ_CHUNK);
    while n > 0 {
        let got = stream
            .async_io(tokio::io::Interest::READABLE, || {
                let spare = room.spare_capacity_mut();
                let len = n.min(spare.len());
                socket2::SockRef::from(stream).recv_with_flags(&mut spare[..len], nix::libc::MSG_TRUNC)
            })
            .await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n = n.saturating_sub(got);
    }
    Ok(())
}

/// Never called: elsewhere [`skippable`] finds nothing to skip.
#[cfg(not(target_os = "linux"))]
async fn discard(_: &TcpStream, _: &mut BytesMut, _: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
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

    /// A null server (keeping data if `keep`) on a free port, its counters and a
    /// connection to it.
    async fn started(keep: bool) -> (tokio::task::JoinHandle<Result<()>>, Arc<Counters>, crate::conn::Conn) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let server = tokio::spawn(serve_counting(listener, counters.clone(), keep));
        (server, counters, crate::conn::Conn::connect(addr).await.unwrap())
    }

    /// Sends what `conn` holds and reads until `n` replies are in.
    async fn replies(conn: &mut crate::conn::Conn, n: usize) -> Vec<Frame> {
        let mut got = Vec::new();
        let mut frames = Vec::new();
        while got.len() < n {
            conn.exchange(&mut frames, None).await.unwrap();
            got.append(&mut frames);
        }
        got
    }

    #[tokio::test]
    async fn serves_pipelined_requests_and_refuses_admin_lines() {
        let (server, _, mut conn) = started(false).await;
        for _ in 0..3 {
            conn.push(Command::SubmitJobBg, &[b"f", b"", b"x"]);
        }
        conn.push(Command::EchoReq, &[b"hi"]);
        conn.push_raw(b"status\n");
        let got = replies(&mut conn, 5).await;
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

    #[tokio::test]
    async fn large_submits_are_answered_in_order_without_their_data_being_read() {
        let (server, counters, mut conn) = started(false).await;
        // Larger than any read, so most of each is still to come when its head is in.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let echo_big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        // Large and small requests pipelined, so heads arrive in every position of a read.
        for round in 0..3 {
            conn.push(Command::SubmitJobBg, &[b"f", b"", &big]);
            conn.push(Command::EchoReq, &[&echo_big]);
            conn.push(Command::SubmitJobHighBg, &[b"f", b"u", b"small"]);
            conn.push(Command::EchoReq, &[format!("small {round}").as_bytes()]);
        }
        let got = replies(&mut conn, 12).await;
        let mut handle = 0;
        for (i, f) in got.iter().enumerate() {
            let Frame::Packet(p) = f else { panic!("frame {i}: {f:?}") };
            match i % 4 {
                0 | 2 => {
                    handle += 1;
                    assert_eq!(
                        (p.command, p.arg(0)),
                        (Command::JobCreated, format!("H:null:{handle}").as_bytes())
                    );
                }
                1 => assert!(p.command == Command::EchoRes && p.arg(0) == echo_big, "frame {i}: big echo"),
                _ => assert_eq!(
                    (p.command, p.arg(0)),
                    (Command::EchoRes, format!("small {}", i / 4).as_bytes())
                ),
            }
        }
        let unread = counters.unread.load(Relaxed);
        if SKIPS_DATA {
            // Most of each large submit's data; the rest came in with its head.
            assert!(unread > 3 * big.len() as u64 / 2, "only {unread} bytes left unread");
        } else {
            assert_eq!(unread, 0);
        }
        server.abort();
    }

    #[test]
    fn kept_data_gets_buffers_holding_a_whole_number_of_packets() {
        assert_eq!(whole_packets(65_564), 3 * 65_564);
        assert_eq!(whole_packets(1_052) % 1_052, 0);
        assert!(whole_packets(1_052) > READ_CHUNK - 1_052 && whole_packets(1_052) <= READ_CHUNK);
        assert_eq!(whole_packets(0), READ_CHUNK);
        assert_eq!(whole_packets(READ_CHUNK + 1), READ_CHUNK);
    }

    #[tokio::test]
    async fn keeping_reads_and_holds_every_submit_until_the_connection_closes() {
        let (server, counters, mut conn) = started(true).await;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..3 {
            conn.push(Command::SubmitJobBg, &[b"f", b"", &big]);
            conn.push(Command::SubmitJobEpoch, &[b"f", b"", b"0", b"epoch"]);
            conn.push(Command::EchoReq, &[b"not kept"]);
        }
        let got = replies(&mut conn, 9).await;
        let created =
            got.iter().filter(|f| matches!(f, Frame::Packet(p) if p.command == Command::JobCreated));
        assert_eq!(created.count(), 6);
        let submitted = 3 * (big.len() + b"epoch".len()) as u64;
        assert_eq!(counters.kept.load(Relaxed), submitted, "every submit's data held");
        assert_eq!(counters.unread.load(Relaxed), 0, "nothing dropped unread");
        drop(conn);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while counters.kept.load(Relaxed) != 0 {
            assert!(std::time::Instant::now() < deadline, "data still held after the close");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        server.abort();
    }
}
