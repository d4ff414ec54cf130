//! One TCP connection to a server, with batched writes and bulk reads.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use gearman_proto::{decode, encode_parts, encode_prefix, Command, Frame, Limits, Magic, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Read buffer size; refilled when less than a quarter is free.
const READ_CHUNK: usize = 256 * 1024;

/// Data at least this large goes out from its own buffer (a vectored write) rather
/// than being copied behind its header: at 64 KiB the copies were a tenth of the
/// tool's time, and the tool shares the machine's two cores with the server.
const BY_REFERENCE_BYTES: usize = 8 * 1024;

/// Most buffers one vectored write takes.
const MAX_IOVECS: usize = 64;

/// What [`Conn::exchange`] returned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// At least one frame was decoded.
    Frames,
    /// The stop signal fired and no frame was pending.
    Stopped,
}

/// A connection: packets are appended to an output buffer with [`Conn::push`] and
/// go out with the next [`Conn::exchange`], which also reads and decodes everything
/// the server sent.
pub(crate) struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    out: Output,
    limits: Limits,
}

/// Output not yet written: `queued`, then `wbuf`.
struct Output {
    /// Headers and large data, in order.
    queued: VecDeque<Bytes>,
    /// Output after `queued`, still being appended to.
    wbuf: BytesMut,
}

impl Conn {
    /// Connects, retrying for a while (a full listen backlog drops SYNs).
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn> {
        let mut tries = 0u32;
        let stream = loop {
            match TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(e) if tries >= 100 => {
                    return Err(e).with_context(|| format!("connecting to {addr}"));
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out: Output { queued: VecDeque::new(), wbuf: BytesMut::with_capacity(64 * 1024) },
            limits: Limits::default(),
        })
    }

    /// Queues a request packet.
    pub(crate) fn push(&mut self, command: Command, args: &[&[u8]]) {
        encode_parts(Magic::Req, command, args, &mut self.out.wbuf);
    }

    /// Queues a packet whose last argument is `inline` followed by `data`; `data` is
    /// sent from its own buffer when large (see [`BY_REFERENCE_BYTES`]).
    pub(crate) fn push_with_data(&mut self, command: Command, head: &[&[u8]], inline: &[u8], data: &Bytes) {
        let out = &mut self.out;
        encode_prefix(Magic::Req, command, head, inline.len() + data.len(), &mut out.wbuf);
        out.wbuf.extend_from_slice(inline);
        if data.len() < BY_REFERENCE_BYTES {
            out.wbuf.extend_from_slice(data);
        } else {
            out.queued.push_back(out.wbuf.split().freeze());
            out.queued.push_back(data.clone());
        }
    }

    /// Queues raw bytes (an admin command line).
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.out.wbuf.extend_from_slice(bytes);
    }

    /// Writes queued output while reading, until at least one frame is decoded into
    /// `out` or `stop` (when given) fires. Frames already buffered are returned at
    /// once, leaving queued output for the next call, so replies to a whole batch of
    /// frames go out in one write.
    pub(crate) async fn exchange(
        &mut self,
        out: &mut Vec<Frame>,
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<Event> {
        loop {
            while let Some(frame) = decode(&mut self.rbuf, &self.limits)? {
                out.push(frame);
            }
            if !out.is_empty() {
                return Ok(Event::Frames);
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let pending = self.out.is_pending();
            let (mut rd, mut wr) = self.stream.split();
            tokio::select! {
                biased;
                w = self.out.write_some(&mut wr), if pending => w?,
                r = rd.read_buf(&mut self.rbuf) => {
                    if r.context("reading from the server")? == 0 {
                        bail!("server closed the connection");
                    }
                }
                () = stopped(&mut stop) => return Ok(Event::Stopped),
            }
        }
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        while self.out.is_pending() {
            let (_, mut wr) = self.stream.split();
            self.out.write_some(&mut wr).await?;
        }
        Ok(())
    }

    /// Sends ECHO_REQ and waits for its ECHO_RES, so every packet sent before has
    /// been handled by the server. Other packets met on the way go to `other`.
    pub(crate) async fn sync(&mut self, mut other: impl FnMut(&Packet) -> Result<()>) -> Result<()> {
        const TOKEN: &[u8] = b"gearman-bench-sync";
        self.push(Command::EchoReq, &[TOKEN]);
        let mut frames = Vec::new();
        loop {
            self.exchange(&mut frames, None).await?;
            for f in frames.drain(..) {
                let p = packet(f)?;
                if p.command == Command::EchoRes && p.arg(0) == TOKEN {
                    return Ok(());
                }
                other(&p)?;
            }
        }
    }
}

impl Output {
    /// Whether output is queued.
    fn is_pending(&self) -> bool {
        !self.wbuf.is_empty() || !self.queued.is_empty()
    }

    /// Writes what it can of the queued output, in one system call.
    async fn write_some(&mut self, wr: &mut WriteHalf<'_>) -> Result<()> {
        let n = if self.queued.is_empty() {
            wr.write(&self.wbuf).await
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let parts = self.queued.iter().map(|b| &b[..]).chain(std::iter::once(&self.wbuf[..]));
            let mut used = 0;
            for (slot, part) in slices.iter_mut().zip(parts.filter(|p| !p.is_empty())) {
                *slot = IoSlice::new(part);
                used += 1;
            }
            wr.write_vectored(&slices[..used]).await
        }
        .context("writing to the server")?;
        if n == 0 {
            bail!("server stopped accepting data");
        }
        self.advance(n);
        Ok(())
    }

    /// Drops the first `n` bytes of queued output.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                self.wbuf.advance(n);
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queued.pop_front();
        }
    }
}

async fn stopped(stop: &mut Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

/// The packet in a frame; an admin line where a packet was expected is an error.
pub(crate) fn packet(frame: Frame) -> Result<Packet> {
    match frame {
        Frame::Packet(p) => Ok(p),
        Frame::AdminLine(l) => bail!("unexpected text line from the server: {l:?}"),
    }
}

/// An error for a packet nobody expected; ERROR packets show their code and text.
pub(crate) fn unexpected(p: &Packet, role: &str) -> anyhow::Error {
    if p.command == Command::Error {
        anyhow::anyhow!(
            "{role} got ERROR {} {}",
            String::from_utf8_lossy(p.arg(0)),
            String::from_utf8_lossy(p.arg(1))
        )
    } else {
        anyhow::anyhow!("{role} got unexpected {p:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(out: &Output) -> Vec<u8> {
        out.queued.iter().flat_map(|b| b.iter().copied()).chain(out.wbuf.iter().copied()).collect()
    }

    #[test]
    fn output_drops_written_bytes_across_buffers_in_order() {
        let big = Bytes::from(vec![7u8; BY_REFERENCE_BYTES]);
        let mut out = Output { queued: VecDeque::new(), wbuf: BytesMut::new() };
        out.wbuf.extend_from_slice(b"head");
        out.queued.push_back(out.wbuf.split().freeze());
        out.queued.push_back(big.clone());
        out.wbuf.extend_from_slice(b"tail");
        let all = rest(&out);
        assert_eq!(all.len(), 4 + big.len() + 4);
        // Part of the first buffer, then across into the second, then all but the last byte.
        for (n, left) in [(2, all.len() - 2), (5, all.len() - 7), (big.len(), 1)] {
            out.advance(n);
            assert_eq!(rest(&out), all[all.len() - left..], "after {n}");
        }
        assert!(out.queued.is_empty(), "emptied buffers are dropped");
        out.advance(1);
        assert!(!out.is_pending());
    }
}
