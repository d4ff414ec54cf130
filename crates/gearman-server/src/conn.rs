//! One client/worker connection: a reader that decodes frames and runs them through
//! the engine in batches, and a writer that drains the connection's outbound buffer.

use std::sync::Arc;

use bytes::BytesMut;
use gearman_engine::{ConnId, PeerInfo};
use gearman_proto::{decode, Frame, Limits, ProtoError, HEADER_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::core::{now_ms, Shared};
use crate::outbound::{Flushed, Outbound};

/// Read buffer size; reads larger than this just take several turns.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A connection's buffers shrink back once empty if they grew past this.
const MAX_IDLE_BUFFER_BYTES: usize = 1024 * 1024;

/// Bytes one connection may read in a row before the others on its thread get a turn.
const FAIR_SHARE_BYTES: usize = READ_CHUNK_BYTES;

/// Largest read buffer sized for a run of large packets (see [`read_chunk`]).
const MAX_LARGE_CHUNK_BYTES: usize = 256 * 1024;

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
            r = rd.read_buf(&mut buf) => r,
            _ = done.cancelled() => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => read_since_yield += n,
        }
        let Some(largest) = run_frames(&shared, conn, &mut buf, &limits.frames) else {
            break;
        };
        // The packet now arriving if its header is in, else the largest just run.
        match gearman_proto::pending_packet_len(&buf) {
            Some(n) => packet_len = n,
            None if largest > 0 => packet_len = largest,
            None => {}
        }
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

/// Decodes every complete frame in `buf` and runs them under one engine lock.
/// Returns the size of the largest packet run (header included; 0 when there was
/// none), or `None` when the connection must close (framing error).
fn run_frames(shared: &Shared, conn: ConnId, buf: &mut BytesMut, limits: &Limits) -> Option<usize> {
    shared.with_engine(|engine, out| {
        let now = now_ms();
        let mut largest = 0;
        loop {
            match decode(buf, limits) {
                Ok(Some(Frame::Packet(p))) => {
                    largest = largest.max(HEADER_BYTES + p.body().len());
                    engine.handle_packet(conn, &p, now, out);
                }
                Ok(Some(Frame::AdminLine(line))) => engine.handle_admin(conn, &line, out),
                Ok(None) => return Some(largest),
                Err(e) => {
                    reject(conn, &e, out);
                    return None;
                }
            }
        }
    })
}

/// Answers a framing error: an ERROR packet where gearmand-style peers can use one
/// (oversize, missing argument), silence where gearmand closes silently.
fn reject(conn: ConnId, e: &ProtoError, out: &mut crate::core::Router<'_>) {
    use gearman_engine::Outbox;
    tracing::warn!("closing connection after protocol error: {e}");
    if let Some((code, text)) = e.reply() {
        out.packet(conn, gearman_proto::Command::Error, &[code.as_bytes(), text.as_bytes()]);
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
