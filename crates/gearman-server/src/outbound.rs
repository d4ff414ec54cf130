//! Each connection's outgoing bytes: the engine's replies are encoded straight into
//! this buffer (under the engine lock, so order is the engine's order), and the
//! connection's writer task drains it in as few writes as possible.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use gearman_proto::{encode_parts, Command, Magic};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The pending output of one connection.
#[derive(Debug)]
pub(crate) struct Outbound {
    buf: Mutex<BytesMut>,
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
        Outbound {
            buf: Mutex::new(BytesMut::with_capacity(4096)),
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
        let mut buf = self.buf.lock();
        if buf.len() > self.max_bytes {
            self.overflow();
            return;
        }
        encode_parts(Magic::Res, command, args, &mut buf);
    }

    /// Appends raw text (admin replies).
    pub(crate) fn text(&self, text: &[u8]) {
        let mut buf = self.buf.lock();
        if buf.len() > self.max_bytes {
            self.overflow();
            return;
        }
        buf.extend_from_slice(text);
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

    /// Swaps the pending bytes into `into` (which must be empty), keeping both
    /// allocations alive for reuse.
    pub(crate) fn take(&self, into: &mut BytesMut) {
        std::mem::swap(&mut *self.buf.lock(), into);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}
