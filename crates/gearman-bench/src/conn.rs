//! One TCP connection to a server, with batched writes and bulk reads.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use gearman_proto::{decode, encode_parts, Command, Frame, Limits, Magic, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Read buffer size; refilled when less than a quarter is free.
const READ_CHUNK: usize = 256 * 1024;

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
    wbuf: BytesMut,
    limits: Limits,
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
            wbuf: BytesMut::with_capacity(64 * 1024),
            limits: Limits::default(),
        })
    }

    /// Queues a request packet.
    pub(crate) fn push(&mut self, command: Command, args: &[&[u8]]) {
        encode_parts(Magic::Req, command, args, &mut self.wbuf);
    }

    /// Queues raw bytes (an admin command line).
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
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
            let pending = !self.wbuf.is_empty();
            let (mut rd, mut wr) = self.stream.split();
            tokio::select! {
                biased;
                w = wr.write(&self.wbuf), if pending => {
                    let n = w.context("writing to the server")?;
                    if n == 0 {
                        bail!("server stopped accepting data");
                    }
                    self.wbuf.advance(n);
                }
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
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
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
