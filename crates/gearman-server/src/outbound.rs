//! Each connection's outgoing bytes: the engine's replies are encoded straight into
//! this buffer (under the engine lock, so order is the engine's order), and the
//! connection's writer task drains it in as few writes as possible.
//!
//! Whoever produced output writes it: after the engine lock is released, the thread
//! that ran the engine tries a non-blocking write to each connection it produced for
//! ([`Outbound::flush`]), and only output the socket would not take wakes that
//! connection's writer task. A task wake per reply used to cost a context switch
//! between the runtime's threads and was the biggest item of a foreground profile.
//! Every write happens under the buffer's lock, so bytes leave in order whoever sends.
//!
//! A reply that must wait (JOB_CREATED for a background job until the store has
//! committed it) holds a place in line: later output queues behind it, so a client
//! always sees its replies in request order, while it may keep pipelining.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, BytesMut};
use gearman_proto::{encode_parts, Command, Magic};
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A buffer that grew past this for one huge reply is replaced once drained.
const MAX_IDLE_BUFFER_BYTES: usize = 1024 * 1024;

/// Output behind a held place: the place itself, or bytes queued after it.
#[derive(Debug)]
enum Held {
    /// A reply not known yet, by hold id; `Some` once filled.
    Place(u64, Option<BytesMut>),
    /// Output that arrived after an earlier place was taken.
    Bytes(BytesMut),
}

#[derive(Debug, Default)]
struct Pending {
    /// Bytes the writer may send now.
    ready: BytesMut,
    /// Output waiting for the first unfilled place to be filled.
    held: VecDeque<Held>,
    /// Bytes in `ready` and `held`, for the budget.
    bytes: usize,
}

impl Pending {
    /// Where new output goes: straight to `ready` unless something is held.
    fn tail(&mut self) -> &mut BytesMut {
        if self.held.is_empty() {
            return &mut self.ready;
        }
        if !matches!(self.held.back(), Some(Held::Bytes(_))) {
            self.held.push_back(Held::Bytes(BytesMut::new()));
        }
        match self.held.back_mut() {
            Some(Held::Bytes(b)) => b,
            // Unreachable: a Bytes entry was pushed just above.
            _ => &mut self.ready,
        }
    }

    /// Moves filled places (and the bytes after them) into `ready`.
    fn release(&mut self) {
        while let Some(front) = self.held.front_mut() {
            match front {
                Held::Place(_, None) => return,
                Held::Place(_, Some(b)) | Held::Bytes(b) => {
                    let b = std::mem::take(b);
                    self.ready.extend_from_slice(&b);
                    self.held.pop_front();
                }
            }
        }
    }
}

/// What became of a flush.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Nothing is left to send.
    All,
    /// The socket is full: wait until it is writable and flush again.
    Blocked,
    /// The socket failed (peer gone): stop writing.
    Failed,
}

/// The pending output of one connection.
#[derive(Debug)]
pub(crate) struct Outbound {
    pending: Mutex<Pending>,
    /// The socket, for writes by whoever flushes; `None` for the HTTP front's virtual
    /// connections, whose task takes the bytes instead.
    socket: Option<OwnedWriteHalf>,
    /// Wakes the writer; a permit is stored if it is busy, so no wake-up is lost.
    pub(crate) ready: Notify,
    /// Close once the buffer is drained (admin protocol error, framing error).
    closing: AtomicBool,
    /// The peer stopped reading and its backlog passed the budget: drop it.
    overflowed: AtomicBool,
    max_bytes: usize,
    /// Ends the connection's tasks at once (a writer blocked on a stalled peer too).
    kill: CancellationToken,
}

impl Outbound {
    pub(crate) fn new(max_bytes: usize, kill: CancellationToken) -> Outbound {
        Outbound::with_socket(None, max_bytes, kill)
    }

    /// An outbound buffer that [`Outbound::flush`] writes to `socket`.
    pub(crate) fn with_socket(
        socket: Option<OwnedWriteHalf>,
        max_bytes: usize,
        kill: CancellationToken,
    ) -> Outbound {
        Outbound {
            pending: Mutex::new(Pending { ready: BytesMut::with_capacity(4096), ..Default::default() }),
            socket,
            ready: Notify::new(),
            closing: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            max_bytes,
            kill,
        }
    }

    /// Appends a response packet. Past the byte budget the connection is marked
    /// overflowed instead: one stalled peer must not grow the server's memory.
    pub(crate) fn packet(&self, command: Command, args: &[&[u8]]) {
        let mut p = self.pending.lock();
        if p.bytes > self.max_bytes {
            self.overflow();
            return;
        }
        let tail = p.tail();
        let before = tail.len();
        encode_parts(Magic::Res, command, args, tail);
        let added = tail.len() - before;
        p.bytes += added;
    }

    /// Appends raw text (admin replies).
    pub(crate) fn text(&self, text: &[u8]) {
        let mut p = self.pending.lock();
        if p.bytes > self.max_bytes {
            self.overflow();
            return;
        }
        p.tail().extend_from_slice(text);
        p.bytes += text.len();
    }

    /// Takes a place in line for a reply that [`Outbound::fill`] gives later.
    pub(crate) fn hold(&self, id: u64) {
        self.pending.lock().held.push_back(Held::Place(id, None));
    }

    /// Gives the held place `id` its packet and releases what queued behind it.
    /// Returns whether bytes became ready to write.
    pub(crate) fn fill(&self, id: u64, command: Command, args: &[&[u8]]) -> bool {
        let mut p = self.pending.lock();
        let mut added = 0;
        for h in p.held.iter_mut() {
            if let Held::Place(hid, slot @ None) = h {
                if *hid == id {
                    let mut b = BytesMut::new();
                    encode_parts(Magic::Res, command, args, &mut b);
                    added = b.len();
                    *slot = Some(b);
                    break;
                }
            }
        }
        p.bytes += added;
        let before = p.ready.len();
        p.release();
        p.ready.len() > before
    }

    fn overflow(&self) {
        if !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!("closing a connection whose unread output passed {} bytes", self.max_bytes);
            self.kill.cancel();
        }
    }

    /// Asks the writer to close after flushing.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Writes what is ready without blocking. Called after the engine lock is released
    /// by the thread that produced output, and by the writer task.
    pub(crate) fn flush(&self) -> Flushed {
        let Some(socket) = &self.socket else { return Flushed::Blocked };
        let mut p = self.pending.lock();
        while !p.ready.is_empty() {
            match socket.try_write(&p.ready) {
                Ok(0) => return Flushed::Failed,
                Ok(n) => {
                    p.ready.advance(n);
                    p.bytes = p.bytes.saturating_sub(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Flushed::Failed,
            }
        }
        // One huge reply must not pin its buffer for the connection's life.
        if p.ready.capacity() > MAX_IDLE_BUFFER_BYTES {
            p.ready = BytesMut::with_capacity(4096);
        }
        Flushed::All
    }

    /// Flushes, and wakes the writer task only if something is left (or there is no
    /// socket to write to here).
    pub(crate) fn flush_or_wake(&self) {
        if self.flush() != Flushed::All {
            self.ready.notify_one();
        }
    }

    /// Ends the sending side (FIN), so the peer sees the close after the last bytes
    /// even while other references to this buffer still exist.
    pub(crate) fn shutdown(&self) {
        if let Some(socket) = &self.socket {
            let _ = socket2::SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Write);
        }
    }

    /// Waits until the socket can take more bytes (immediately without a socket).
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match &self.socket {
            Some(s) => s.writable().await,
            None => Ok(()),
        }
    }

    /// Swaps the bytes ready to send into `into` (which must be empty), keeping both
    /// allocations alive for reuse.
    pub(crate) fn take(&self, into: &mut BytesMut) {
        let mut p = self.pending.lock();
        std::mem::swap(&mut p.ready, into);
        p.bytes = p.bytes.saturating_sub(into.len());
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &Outbound) -> Vec<u8> {
        let mut b = BytesMut::new();
        o.take(&mut b);
        b.to_vec()
    }

    #[test]
    fn held_place_keeps_request_order() {
        let o = Outbound::new(1 << 20, CancellationToken::new());
        o.text(b"a");
        o.hold(7);
        o.text(b"b");
        o.hold(8);
        o.text(b"c");
        assert_eq!(drain(&o), b"a");
        // Filling the second place first releases nothing.
        assert!(!o.fill(8, Command::Noop, &[]));
        assert_eq!(drain(&o), b"");
        assert!(o.fill(7, Command::Noop, &[]));
        let noop = b"\0RES\0\0\0\x06\0\0\0\0";
        let mut want = noop.to_vec();
        want.extend_from_slice(b"b");
        want.extend_from_slice(noop);
        want.extend_from_slice(b"c");
        assert_eq!(drain(&o), want);
        assert!(o.pending.lock().held.is_empty());
    }

    #[test]
    fn budget_counts_held_bytes() {
        let kill = CancellationToken::new();
        let o = Outbound::new(10, kill.clone());
        o.hold(1);
        o.text(&[0u8; 11]);
        o.text(b"x");
        assert!(kill.is_cancelled());
    }
}
