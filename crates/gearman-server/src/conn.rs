//! One client/worker connection: a reader that decodes frames and runs them through
//! the engine in batches, and a writer that drains the connection's outbound buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use gearman_engine::{ConnId, Engine, PeerInfo};
use gearman_proto::{decode, Command, Frame, Limits, ProtoError, ResultHead, HEADER_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::core::{now_ms, Forward, Router, Shared};
use crate::outbound::{Flushed, Outbound};
use crate::pipe::{Filled, Pipe, FORWARD_MAX_BYTES, FORWARD_MIN_BYTES};

/// Whether a result's data can be left unread here: dropping it (`MSG_TRUNC`, see
/// [`discard`]) and forwarding it (splice, see [`crate::pipe`]) are Linux only.
const SKIPS_DATA: bool = cfg!(target_os = "linux");

/// Read buffer size; reads larger than this just take several turns.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A connection's buffers shrink back once empty if they grew past this.
const MAX_IDLE_BUFFER_BYTES: usize = 1024 * 1024;

/// Bytes one connection may read in a row before the others on its thread get a turn.
const FAIR_SHARE_BYTES: usize = READ_CHUNK_BYTES;

/// Largest read buffer sized for a run of large packets (see [`read_chunk`]).
const MAX_LARGE_CHUNK_BYTES: usize = 256 * 1024;

/// A result whose unread data is at least this large, and that nobody listens to, has
/// that data dropped by the kernel instead of read (see [`discard`]).
const DISCARD_MIN_BYTES: usize = 16 * 1024;

/// What a worker is read at a time while its large results go nowhere: enough for the
/// head of the next result (and a few small packets), so that its data can be dropped.
const HEAD_READ_BYTES: usize = 4 * 1024;

/// The size of the next read buffer, given the size of the latest packet (header
/// included). Packets larger than the usual chunk get a buffer that holds a whole
/// number of them, up to [`MAX_LARGE_CHUNK_BYTES`]: a run of equal-size packets then
/// ends exactly at the buffer's end, so each arrives contiguous, and its payload can
/// be kept or forwarded as a view of the buffer without another copy. A plain 64 KiB
/// buffer would cut almost every 64 KiB job in two, and the decoder would copy it.
fn read_chunk(packet_len: usize) -> usize {
    if packet_len <= READ_CHUNK_BYTES || packet_len > MAX_LARGE_CHUNK_BYTES {
        return READ_CHUNK_BYTES;
    }
    packet_len * (MAX_LARGE_CHUNK_BYTES / packet_len)
}

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) frames: Limits,
    /// Pending output beyond which a peer that does not read is disconnected.
    pub(crate) max_output_bytes: usize,
}

/// Serves one accepted connection until it closes or the server stops.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let peer = PeerInfo {
        label: fd_label(&stream),
        ip: stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "-".into()),
    };
    let _ = stream.set_nodelay(true);
    let done = stop.child_token();
    let (mut rd, wr) = stream.into_split();
    let outbound = Arc::new(Outbound::with_socket(Some(wr), limits.max_output_bytes, done.clone()));
    let conn = {
        let mut core = shared.core.lock();
        let conn = core.engine.connect(peer.clone());
        crate::core::Shared::set_route(&mut core.routes, conn, outbound.clone());
        conn
    };
    tracing::info!("Accepted connection from {}", peer.ip);

    // The writer only sends what producers could not (the socket was full), and
    // closes the connection when asked to.
    let writer = {
        let outbound = outbound.clone();
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = outbound.ready.notified() => {}
                    _ = done.cancelled() => break,
                }
                // Read the flag before flushing: whatever was queued before the
                // close request is then sure to be flushed below.
                let closing = outbound.is_closing();
                let failed = loop {
                    match outbound.flush() {
                        Flushed::All => break false,
                        Flushed::Failed => break true,
                        Flushed::Blocked => {}
                    }
                    let writable = tokio::select! {
                        r = outbound.writable() => r,
                        _ = done.cancelled() => Err(std::io::ErrorKind::Interrupted.into()),
                    };
                    if writable.is_err() {
                        break true;
                    }
                };
                if failed || closing {
                    break;
                }
            }
            outbound.shutdown();
            done.cancel();
        })
    };

    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // Size of the latest packet seen (header included), for sizing read buffers.
    let mut packet_len = 0;
    let mut read_since_yield = 0;
    // Size of the latest result (WORK_COMPLETE and the like) seen, header included.
    let mut result_len = 0;
    // Whether the next read takes only a head (see [`HEAD_READ_BYTES`]): this is a
    // worker whose latest result was large and whose running jobs nobody listens to.
    let mut head_only = false;
    loop {
        if buf.is_empty() && buf.capacity() > MAX_IDLE_BUFFER_BYTES {
            buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        }
        // A packet the decoder gave an exact-size buffer is read into it to the end;
        // growing it would copy it and pin a larger allocation.
        let fits = gearman_proto::pending_packet_len(&buf).is_some_and(|t| t <= buf.capacity());
        if !fits && buf.capacity() - buf.len() < 1024 {
            let chunk = read_chunk(packet_len);
            if !buf.is_empty() {
                buf.reserve(chunk);
            } else if !buf.try_reclaim(chunk) {
                // A fresh buffer of exactly `chunk` bytes, so large packets line up
                // with its end; `reserve` could round a reclaimed one up.
                buf = BytesMut::with_capacity(chunk);
            }
        }
        let n = tokio::select! {
            r = read_some(&mut rd, &mut buf, head_only) => r,
            _ = done.cancelled() => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => read_since_yield += n,
        }
        let Some(mut ran) = run_frames(&shared, conn, &mut buf, &limits.frames, None) else {
            break;
        };
        if let Some(unread) = ran.unread {
            let skipped = tokio::select! {
                r = skip_result_data(&shared, conn, &rd, &mut buf, &limits.frames, unread, ran) => r,
                _ = done.cancelled() => break,
            };
            let Some(skipped) = skipped else { break };
            ran = skipped;
        }
        // The packet now arriving if its header is in, else the largest just run.
        match gearman_proto::pending_packet_len(&buf) {
            Some(n) => packet_len = n,
            None if ran.largest > 0 => packet_len = ran.largest,
            None => {}
        }
        if ran.largest_result > 0 {
            result_len = ran.largest_result;
        }
        // A worker whose latest result was large may well send another: read only
        // its head, so that its data can be dropped or forwarded without being read.
        // Whether it can be is only known once the head is in (the worker may get a
        // job whose client listens meanwhile); if not, reading it costs one more read.
        head_only = SKIPS_DATA
            && ((ran.results_unwanted && result_len >= DISCARD_MIN_BYTES) || result_len >= FORWARD_MIN_BYTES);
        if outbound.is_closing() {
            break;
        }
        // A peer that keeps its socket full (large pipelined jobs) would otherwise be
        // read until tokio's budget runs out, hundreds of jobs at a time, while every
        // other connection on this thread waits: let them in after each chunk's worth.
        if read_since_yield >= FAIR_SHARE_BYTES {
            read_since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    // Let the writer flush what the last frames produced, then stop it.
    outbound.close();
    outbound.ready.notify_one();
    let _ = writer.await;
    shared.with_engine(|engine, out| {
        engine.disconnect(conn, now_ms(), out);
        if let Some(slot) = out.routes.get_mut(conn) {
            *slot = None;
        }
    });
    tracing::info!("Disconnected {}", peer.ip);
}

/// What [`run_frames`] ran.
#[derive(Debug, Clone, Copy)]
struct Ran {
    /// Size of the largest packet run (header included; 0 when there was none).
    largest: usize,
    /// The same among results: WORK_COMPLETE, WORK_DATA, WORK_WARNING, WORK_EXCEPTION.
    largest_result: usize,
    /// Afterwards, the connection runs jobs and nobody listens to their results.
    results_unwanted: bool,
    /// A result whose head ends `buf` and whose data is not to be read.
    unread: Option<UnreadResult>,
}

/// Decodes every complete frame in `buf` and runs them under one engine lock, with
/// `forward`'s data following the result it belongs to. Returns `None` when the
/// connection must close (framing error).
fn run_frames(
    shared: &Shared,
    conn: ConnId,
    buf: &mut BytesMut,
    limits: &Limits,
    forward: Option<Forward>,
) -> Option<Ran> {
    shared.with_engine_forwarding(forward, |engine, out| {
        let now = now_ms();
        let (mut largest, mut largest_result) = (0, 0);
        loop {
            match decode(buf, limits) {
                Ok(Some(Frame::Packet(p))) => {
                    let len = HEADER_BYTES + p.body().len();
                    largest = largest.max(len);
                    if p.command.carries_result_data() {
                        largest_result = largest_result.max(len);
                    }
                    engine.handle_packet(conn, &p, now, out);
                }
                Ok(Some(Frame::AdminLine(line))) => engine.handle_admin(conn, &line, out),
                Ok(None) => {
                    let results_unwanted = engine.runs_only_unwanted_results(conn);
                    // Claimed inside this critical section rather than under a lock of
                    // its own taken afterwards: one lock per read, large results included.
                    let unread = unread_result(engine, out, conn, buf);
                    return Some(Ran { largest, largest_result, results_unwanted, unread });
                }
                Err(e) => {
                    reject(conn, &e, out);
                    return None;
                }
            }
        }
    })
}

/// Reads what the socket has into `buf`; only a head's worth when `head_only` and
/// nothing is buffered, so that a large result's data is left in the socket.
async fn read_some(rd: &mut OwnedReadHalf, buf: &mut BytesMut, head_only: bool) -> std::io::Result<usize> {
    if head_only && buf.is_empty() {
        (&mut *rd).take(HEAD_READ_BYTES as u64).read_buf(buf).await
    } else {
        rd.read_buf(buf).await
    }
}

/// The result whose head `buf` holds (and nothing after it) if its data is large and
/// not in yet, and need not be read ([`SKIPS_DATA`]):
/// - dropped, when the job runs on `conn` and nobody listens to it; the engine then
///   holds the job's data as dropped ([`Engine::drop_result_data`]);
/// - forwarded, when it is a final result and exactly one client listens to it, over
///   a socket; the engine then stops other clients from joining the job
///   ([`Engine::forward_result_data`]).
fn unread_result(engine: &mut Engine, out: &Router<'_>, conn: ConnId, buf: &[u8]) -> Option<UnreadResult> {
    if !SKIPS_DATA {
        return None;
    }
    let ResultHead { command, handle, packet_len, head_len } = gearman_proto::result_head(buf)?;
    let unread = packet_len.saturating_sub(buf.len());
    if unread >= DISCARD_MIN_BYTES && engine.drop_result_data(conn, handle) {
        return Some(UnreadResult { packet_len, head_len, to: None });
    }
    if !(FORWARD_MIN_BYTES..=FORWARD_MAX_BYTES).contains(&unread) {
        return None;
    }
    let to = engine.forward_result_data(conn, handle, command, |c| out.takes_pipes(c))?;
    Some(UnreadResult { packet_len, head_len, to: Some((to, command)) })
}

/// A result found by [`unread_result`].
#[derive(Debug, Clone, Copy)]
struct UnreadResult {
    /// Size of the whole packet, header included.
    packet_len: usize,
    /// Header, handle and its NUL.
    head_len: usize,
    /// The client its data goes to, with the command it goes under; `None`: dropped.
    to: Option<(ConnId, Command)>,
}

/// Takes the data of `head`'s result that is not in `buf` yet as it arrives, without
/// reading it: drops it, or moves it into a pipe for its client. Then runs the
/// result with the data read so far (none when dropped); a forward's client gets
/// the pipe's bytes after them. If no pipe can hold the data, it is read as usual
/// instead: `ran`, what the read before found, is returned without `unread`. `None`
/// when the connection must close.
async fn skip_result_data(
    shared: &Shared,
    conn: ConnId,
    rd: &OwnedReadHalf,
    buf: &mut BytesMut,
    limits: &Limits,
    head: UnreadResult,
    ran: Ran,
) -> Option<Ran> {
    let unread = head.packet_len.saturating_sub(buf.len());
    let (cut_at, forward) = match head.to {
        None => {
            discard(rd, unread).await.ok()?;
            shared.dropped_result_bytes.fetch_add(unread as u64, Ordering::Relaxed);
            (head.head_len, None)
        }
        Some((to, command)) => match fill_pipe(rd, buf, unread).await? {
            Some(pipe) => (buf.len(), Some(Forward { to, command, pipe })),
            None => return Some(Ran { unread: None, ..ran }),
        },
    };
    gearman_proto::cut_result_data(buf, cut_at);
    let ran = run_frames(shared, conn, buf, limits, forward)?;
    // The size as sent, so that the next read is again a head only.
    Some(Ran { largest: head.packet_len, largest_result: head.packet_len, ..ran })
}

/// A pipe holding the next `n` bytes the peer sends, moved from the socket as they
/// arrive. `Some(None)` when no pipe can hold them: what one took is then back in
/// `buf`, and the rest is to be read as usual. `None` when the connection must close.
async fn fill_pipe(rd: &OwnedReadHalf, buf: &mut BytesMut, n: usize) -> Option<Option<Pipe>> {
    let Ok(mut pipe) = Pipe::with_room(n) else { return Some(None) };
    let stream: &TcpStream = rd.as_ref();
    while pipe.len() < n {
        let want = n - pipe.len();
        match stream.async_io(tokio::io::Interest::READABLE, || pipe.fill_from(stream, want)).await {
            Ok(Filled::Moved(0)) | Err(_) => return None,
            Ok(Filled::Moved(_)) => {}
            Ok(Filled::PipeFull) => {
                pipe.read_into(buf).ok()?;
                return Some(None);
            }
        }
    }
    Some(Some(pipe))
}

/// Drops the next `n` bytes the peer sends without reading them: `recv` with
/// `MSG_TRUNC` on a TCP socket discards instead of copying (Linux). The scratch
/// buffer it is given is never written, so its pages are never touched either.
#[cfg(target_os = "linux")]
async fn discard(rd: &OwnedReadHalf, mut n: usize) -> std::io::Result<()> {
    use std::cell::RefCell;
    use std::mem::MaybeUninit;
    thread_local! {
        static SCRATCH: RefCell<Box<[MaybeUninit<u8>]>> =
            RefCell::new(Box::new_uninit_slice(MAX_LARGE_CHUNK_BYTES));
    }
    let stream: &TcpStream = rd.as_ref();
    while n > 0 {
        let got = stream
            .async_io(tokio::io::Interest::READABLE, || {
                SCRATCH.with(|s| {
                    let mut s = s.borrow_mut();
                    let len = n.min(s.len());
                    let into = s.get_mut(..len).unwrap_or_default();
                    socket2::SockRef::from(stream).recv_with_flags(into, libc::MSG_TRUNC)
                })
            })
            .await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n = n.saturating_sub(got);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn discard(_rd: &OwnedReadHalf, _n: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Answers a framing error: an ERROR packet where gearmand-style peers can use one
/// (oversize, missing argument), silence where gearmand closes silently.
fn reject(conn: ConnId, e: &ProtoError, out: &mut crate::core::Router<'_>) {
    use gearman_engine::Outbox;
    tracing::warn!("closing connection after protocol error: {e}");
    if let Some((code, text)) = e.reply() {
        out.packet(conn, Command::Error, &[code.as_bytes(), text.as_bytes()]);
    }
    out.close(conn);
}

#[cfg(unix)]
pub(crate) fn fd_label(stream: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(stream.as_raw_fd())
}

#[cfg(not(unix))]
pub(crate) fn fd_label(_stream: &TcpStream) -> i64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_packets_get_buffers_holding_a_whole_number_of_them() {
        assert_eq!(read_chunk(0), READ_CHUNK_BYTES);
        assert_eq!(read_chunk(100), READ_CHUNK_BYTES);
        assert_eq!(read_chunk(READ_CHUNK_BYTES), READ_CHUNK_BYTES);
        // A 64 KiB job plus its header and names: three to a buffer.
        assert_eq!(read_chunk(65_560), 3 * 65_560);
        assert_eq!(read_chunk(100_000), 200_000);
        assert_eq!(read_chunk(MAX_LARGE_CHUNK_BYTES), MAX_LARGE_CHUNK_BYTES);
        // Larger packets are received in chunks, as before.
        assert_eq!(read_chunk(MAX_LARGE_CHUNK_BYTES + 1), READ_CHUNK_BYTES);
    }
}
