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
//! Large payloads are not copied: an argument of [`SHARE_ARG_BYTES`] or more (job
//! data, results, echoes) is queued as its own segment, a shared view of the buffer
//! it arrived in, and the queue goes out with vectored writes. Everything else is
//! copied into one contiguous buffer, which is cheaper for small packets than
//! keeping a reference to each.
//!
//! A reply that must wait (JOB_CREATED for a background job until the store has
//! committed it) holds a place in line: later output queues behind it, so a client
//! always sees its replies in request order, while it may keep pipelining.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use gearman_proto::{encode_parts, encode_prefix, Command, Magic};
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pipe::Pipe;

/// A buffer that grew past this for one huge reply is replaced once drained.
const MAX_IDLE_BUFFER_BYTES: usize = 1024 * 1024;

/// An argument this large is queued by reference (a segment of its own) rather than
/// copied. Below it, a copy costs less than the extra segment in every write.
pub(crate) const SHARE_ARG_BYTES: usize = 16 * 1024;

/// Most buffers handed to one vectored write.
const MAX_WRITE_SLICES: usize = 64;

/// Bytes waiting to be sent, in order: segments first, then `tail`, where small
/// output is copied. A segment closes the tail off into a segment of its own, so
/// order is kept.
#[derive(Debug, Default)]
struct Queue {
    segs: VecDeque<Seg>,
    tail: BytesMut,
}

/// Output queued by reference rather than copied.
#[derive(Debug)]
enum Seg {
    /// A shared view of the buffer a large argument arrived in.
    Shared(Bytes),
    /// Result data still in a pipe, spliced to the socket (see [`crate::pipe`]).
    Pipe(Pipe),
}

impl Queue {
    fn with_capacity(n: usize) -> Queue {
        Queue { segs: VecDeque::new(), tail: BytesMut::with_capacity(n) }
    }

    fn is_empty(&self) -> bool {
        // No segment is ever empty: only non-empty tails, large arguments and filled
        // pipes become segments, and a segment is dropped once it is sent.
        self.segs.is_empty() && self.tail.is_empty()
    }

    /// Appends a packet, copying every argument. Returns the bytes added.
    fn packet(&mut self, command: Command, args: &[&[u8]]) -> usize {
        let before = self.tail.len();
        encode_parts(Magic::Res, command, args, &mut self.tail);
        self.tail.len() - before
    }

    /// Appends `head + [data]` as one packet, `data` by reference when it is large.
    /// Returns the bytes added.
    fn packet_data(&mut self, command: Command, head: &[&[u8]], data: &Bytes) -> usize {
        self.packet_data_then(command, head, data, None)
    }

    /// Appends `head + [data + what pipe holds]` as one packet: `data` (by reference
    /// when it is large), then the pipe's bytes. Returns the bytes added.
    fn packet_data_then(
        &mut self,
        command: Command,
        head: &[&[u8]],
        data: &Bytes,
        pipe: Option<Pipe>,
    ) -> usize {
        let piped = pipe.as_ref().map_or(0, Pipe::len);
        let before = self.tail.len();
        encode_prefix(Magic::Res, command, head, data.len() + piped, &mut self.tail);
        let prefix = self.tail.len() - before;
        if data.len() >= SHARE_ARG_BYTES {
            self.push_seg(Seg::Shared(data.clone()));
        } else {
            self.tail.extend_from_slice(data);
        }
        if let Some(pipe) = pipe.filter(|p| p.len() > 0) {
            self.push_seg(Seg::Pipe(pipe));
        }
        prefix + data.len() + piped
    }

    /// Appends a segment, after everything queued so far.
    fn push_seg(&mut self, seg: Seg) {
        if !self.tail.is_empty() {
            // `split` keeps the rest of the allocation in `tail` for what comes next.
            self.segs.push_back(Seg::Shared(self.tail.split().freeze()));
        }
        self.segs.push_back(seg);
    }

    /// Moves all of `other` to the end of this queue.
    fn append(&mut self, mut other: Queue) {
        for seg in other.segs.drain(..) {
            self.push_seg(seg);
        }
        self.tail.extend_from_slice(&other.tail);
    }

    /// The pipe at the front of the queue, if the next bytes to send are in one.
    fn front_pipe(&mut self) -> Option<&mut Pipe> {
        match self.segs.front_mut() {
            Some(Seg::Pipe(p)) => Some(p),
            _ => None,
        }
    }

    /// Drops the front segment if it is an emptied pipe.
    fn pop_empty_pipe(&mut self) {
        if matches!(self.segs.front(), Some(Seg::Pipe(p)) if p.len() == 0) {
            self.segs.pop_front();
        }
    }

    /// Fills `slices` with the front of the queue, in order, up to the first pipe;
    /// returns how many.
    fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let piped = self.segs.iter().any(|s| matches!(s, Seg::Pipe(_)));
        let shared = self.segs.iter().map_while(|s| match s {
            Seg::Shared(b) => Some(&b[..]),
            Seg::Pipe(_) => None,
        });
        let tail = (!piped).then_some(&self.tail[..]);
        let mut n = 0;
        for (slot, b) in slices.iter_mut().zip(shared.chain(tail).filter(|b| !b.is_empty())) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, all of them before the first pipe (a write may end
    /// inside any segment).
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(Seg::Shared(front)) = self.segs.front_mut() else { break };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.segs.pop_front();
        }
        if self.segs.is_empty() {
            self.tail.advance(n.min(self.tail.len()));
        }
    }

    /// Appends every queued byte to `into`, in order, and empties the queue.
    fn drain_into(&mut self, into: &mut BytesMut) {
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Shared(b) => into.extend_from_slice(&b),
                Seg::Pipe(mut p) => {
                    if let Err(e) = p.read_into(into) {
                        tracing::warn!("lost result data held in a pipe: {e}");
                    }
                }
            }
        }
        into.extend_from_slice(&self.tail);
        self.tail.clear();
    }
}

/// Output behind a held place: the place itself, or output queued after it.
#[derive(Debug)]
enum Held {
    /// A reply not known yet, by hold id; `Some` once filled.
    Place(u64, Option<BytesMut>),
    /// Output that arrived after an earlier place was taken.
    Queued(Queue),
}

#[derive(Debug, Default)]
struct Pending {
    /// Output the writer may send now.
    ready: Queue,
    /// Output waiting for the first unfilled place to be filled.
    held: VecDeque<Held>,
    /// Bytes in `ready` and `held` (shared segments included), for the budget.
    bytes: usize,
}

impl Pending {
    /// Where new output goes: straight to `ready` unless something is held.
    fn tail(&mut self) -> &mut Queue {
        if self.held.is_empty() {
            return &mut self.ready;
        }
        if !matches!(self.held.back(), Some(Held::Queued(_))) {
            self.held.push_back(Held::Queued(Queue::default()));
        }
        match self.held.back_mut() {
            Some(Held::Queued(q)) => q,
            // Unreachable: a Queued entry was pushed just above.
            _ => &mut self.ready,
        }
    }

    /// Moves filled places (and the output after them) into `ready`. Returns whether
    /// any bytes became ready.
    fn release(&mut self) -> bool {
        let mut moved = false;
        while let Some(front) = self.held.front_mut() {
            match front {
                Held::Place(_, None) => break,
                Held::Place(_, Some(b)) => {
                    moved |= !b.is_empty();
                    self.ready.tail.extend_from_slice(b);
                }
                Held::Queued(q) => {
                    let q = std::mem::take(q);
                    moved |= !q.is_empty();
                    self.ready.append(q);
                }
            }
            self.held.pop_front();
        }
        moved
    }

    /// Writes `ready` through `write` (one vectored write per call) and its pipes
    /// through `splice`, until it is empty or the socket stops taking bytes.
    fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> std::io::Result<usize>,
        mut splice: impl FnMut(&mut Pipe) -> std::io::Result<usize>,
    ) -> Flushed {
        while !self.ready.is_empty() {
            let written = if let Some(pipe) = self.ready.front_pipe() {
                let r = splice(pipe);
                self.ready.pop_empty_pipe();
                r
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
                let n = self.ready.io_slices(&mut slices);
                let r = write(slices.get(..n).unwrap_or_default());
                if let Ok(n) = r {
                    self.ready.advance(n);
                }
                r
            };
            match written {
                Ok(0) => return Flushed::Failed,
                Ok(n) => self.bytes = self.bytes.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Flushed::Failed,
            }
        }
        // One huge reply must not pin its buffer for the connection's life.
        if self.ready.tail.capacity() > MAX_IDLE_BUFFER_BYTES {
            self.ready.tail = BytesMut::with_capacity(4096);
        }
        Flushed::All
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
            pending: Mutex::new(Pending { ready: Queue::with_capacity(4096), ..Default::default() }),
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
        self.append(|q| q.packet(command, args));
    }

    /// Appends a response packet whose last argument is `data`, queued by reference
    /// when it is large (see [`SHARE_ARG_BYTES`]).
    pub(crate) fn packet_data(&self, command: Command, head: &[&[u8]], data: &Bytes) {
        self.append(|q| q.packet_data(command, head, data));
    }

    /// Appends a response packet whose last argument is `data` followed by what
    /// `pipe` holds (a result whose data is forwarded without being read, see
    /// [`crate::pipe`]).
    pub(crate) fn packet_data_then(&self, command: Command, head: &[&[u8]], data: &Bytes, pipe: Pipe) {
        self.append(|q| q.packet_data_then(command, head, data, Some(pipe)));
    }

    /// Whether output can go out of a pipe straight to a socket here; the HTTP
    /// front's virtual connections have no socket.
    pub(crate) fn has_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// Appends raw text (admin replies).
    pub(crate) fn text(&self, text: &[u8]) {
        self.append(|q| {
            q.tail.extend_from_slice(text);
            text.len()
        });
    }

    /// Runs `add` on the queue new output goes to, within the byte budget.
    fn append(&self, add: impl FnOnce(&mut Queue) -> usize) {
        let mut p = self.pending.lock();
        if p.bytes > self.max_bytes {
            self.overflow();
            return;
        }
        let added = add(p.tail());
        p.bytes += added;
    }

    /// Takes a place in line for a reply that [`Outbound::fill`] gives later.
    pub(crate) fn hold(&self, id: u64) {
        self.pending.lock().held.push_back(Held::Place(id, None));
    }

    /// Gives the held place `id` its packet and releases what queued behind it.
    /// Returns whether bytes became ready to write.
    pub(crate) fn fill(&self, id: u64, command: Command, args: &[&[u8]]) -> bool {
        let mut p = self.pending.lock();
        let Some(i) = p.held.iter().position(|h| matches!(h, Held::Place(hid, None) if *hid == id)) else {
            return p.release();
        };
        if i == 0 {
            // First in line (stores commit in order, so nearly always): everything
            // before it is in `ready` already, so the reply is encoded straight there
            // instead of into a buffer of its own that `release` would copy over.
            p.held.pop_front();
            let added = p.ready.packet(command, args);
            p.bytes += added;
            p.release();
            return true;
        }
        let mut b = BytesMut::new();
        encode_parts(Magic::Res, command, args, &mut b);
        p.bytes += b.len();
        if let Some(Held::Place(_, slot)) = p.held.get_mut(i) {
            *slot = Some(b);
        }
        p.release()
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
        // Small output is one contiguous buffer: a plain write, as before segments.
        let stream: &tokio::net::TcpStream = socket.as_ref();
        self.pending.lock().write_with(
            |slices| match slices {
                [one] => socket.try_write(one),
                _ => socket.try_write_vectored(slices),
            },
            // Through tokio, so that a full socket clears its write readiness and
            // the writer task waits for it like after any other short write.
            |pipe| stream.try_io(tokio::io::Interest::WRITABLE, || pipe.drain_to(stream)),
        )
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

    /// Appends the bytes ready to send to `into`, in order, and forgets them here.
    pub(crate) fn take(&self, into: &mut BytesMut) {
        let mut p = self.pending.lock();
        let before = into.len();
        p.ready.drain_into(into);
        let taken = into.len() - before;
        p.bytes = p.bytes.saturating_sub(taken);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
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

    /// A large payload (shared when queued through `packet_data`).
    fn payload(len: usize, seed: u8) -> Bytes {
        Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
    }

    /// What `packet` with all arguments copied would have written.
    fn wire(command: Command, args: &[&[u8]]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_parts(Magic::Res, command, args, &mut b);
        b.to_vec()
    }

    /// Queues a mix of small and large packets and text; returns the bytes expected.
    fn queue_mixed(o: &Outbound, big: &[Bytes]) -> Vec<u8> {
        let mut want = Vec::new();
        for (i, data) in big.iter().enumerate() {
            let h = format!("H:x:{i}");
            o.text(b"OK\n");
            want.extend_from_slice(b"OK\n");
            o.packet(Command::JobCreated, &[h.as_bytes()]);
            want.extend(wire(Command::JobCreated, &[h.as_bytes()]));
            o.packet_data(Command::JobAssign, &[h.as_bytes(), b"fn"], data);
            want.extend(wire(Command::JobAssign, &[h.as_bytes(), b"fn", data]));
            let small = payload(100 + i, 1);
            o.packet_data(Command::WorkComplete, &[h.as_bytes()], &small);
            want.extend(wire(Command::WorkComplete, &[h.as_bytes(), &small]));
            o.packet_data(Command::EchoRes, &[], data);
            want.extend(wire(Command::EchoRes, &[data]));
            if cfg!(target_os = "linux") {
                // A result whose data arrived partly read and partly in a pipe.
                let (read, rest) = data.split_at(data.len() / 3);
                o.packet_data_then(
                    Command::WorkComplete,
                    &[h.as_bytes()],
                    &Bytes::copy_from_slice(read),
                    crate::pipe::holding(rest),
                );
                want.extend(wire(Command::WorkComplete, &[h.as_bytes(), data]));
            }
            o.packet(Command::Noop, &[]);
            want.extend(wire(Command::Noop, &[]));
        }
        want
    }

    #[test]
    fn mixed_small_and_large_packets_keep_their_order() {
        let o = Outbound::new(1 << 24, CancellationToken::new());
        let big = [payload(SHARE_ARG_BYTES, 0), payload(65536, 1), payload(SHARE_ARG_BYTES - 1, 2)];
        let want = queue_mixed(&o, &big);
        {
            let p = o.pending.lock();
            assert_eq!(p.bytes, want.len());
            // The two large payloads are queued by reference, twice each; the one
            // just under the threshold is copied.
            for (data, refs) in big.iter().zip([2, 2, 0]) {
                let shared = p
                    .ready
                    .segs
                    .iter()
                    .filter(|s| matches!(s, Seg::Shared(b) if b.as_ptr() == data.as_ptr()))
                    .count();
                assert_eq!(shared, refs, "{} bytes", data.len());
            }
        }
        let mut got = BytesMut::from(&b"before"[..]);
        o.take(&mut got);
        assert_eq!(got.get(..6), Some(&b"before"[..]));
        assert_eq!(got.get(6..), Some(&want[..]));
        assert_eq!(o.pending.lock().bytes, 0);
        assert!(o.pending.lock().ready.is_empty());
    }

    #[test]
    fn held_place_keeps_order_with_shared_segments() {
        let o = Outbound::new(1 << 24, CancellationToken::new());
        let big = payload(40_000, 3);
        o.packet_data(Command::WorkData, &[b"H:x:1"], &big);
        o.hold(5);
        o.packet_data(Command::WorkComplete, &[b"H:x:2"], &big);
        o.text(b"after");
        let mut want = wire(Command::WorkData, &[b"H:x:1", &big]);
        assert_eq!(drain(&o), want);
        assert!(o.fill(5, Command::JobCreated, &[b"H:x:3"]));
        want = wire(Command::JobCreated, &[b"H:x:3"]);
        want.extend(wire(Command::WorkComplete, &[b"H:x:2", &big]));
        want.extend_from_slice(b"after");
        assert_eq!(drain(&o), want);
        assert_eq!(o.pending.lock().bytes, 0);
    }

    #[test]
    fn partial_writes_may_end_anywhere_in_a_segment() {
        let big: Vec<Bytes> = (0..40).map(|i| payload(SHARE_ARG_BYTES + i * 997, i as u8)).collect();
        // Write sizes that end inside headers, payloads and copied runs alike; the
        // larger runs queue more segments than one vectored write takes.
        for (step, packets) in [(1usize, 2), (7, 3), (4093, 40), (16_385, 40), (1 << 20, 40)] {
            let o = Outbound::new(1 << 26, CancellationToken::new());
            let want = queue_mixed(&o, big.get(..packets).unwrap_or_default());
            assert!(packets < 40 || o.pending.lock().ready.segs.len() > MAX_WRITE_SLICES);
            let got = std::cell::RefCell::new(Vec::new());
            let mut calls = 0usize;
            let mut p = o.pending.lock();
            loop {
                let r = p.write_with(
                    |slices| {
                        calls += 1;
                        assert!(slices.len() <= MAX_WRITE_SLICES);
                        assert!(slices.iter().all(|s| !s.is_empty()));
                        if calls.is_multiple_of(3) {
                            return Err(std::io::ErrorKind::WouldBlock.into());
                        }
                        let mut left = step;
                        for s in slices {
                            let n = s.len().min(left);
                            got.borrow_mut().extend_from_slice(s.get(..n).unwrap_or_default());
                            left -= n;
                            if left == 0 {
                                break;
                            }
                        }
                        Ok(step - left)
                    },
                    |pipe| {
                        let mut b = BytesMut::new();
                        pipe.read_into(&mut b)?;
                        got.borrow_mut().extend_from_slice(&b);
                        Ok(b.len())
                    },
                );
                match r {
                    Flushed::All => break,
                    Flushed::Blocked => {}
                    Flushed::Failed => panic!("the mock writer never fails"),
                }
                // The budget drops by exactly what was written.
                assert_eq!(p.bytes, want.len() - got.borrow().len());
            }
            let got = got.into_inner();
            assert_eq!(got.len(), want.len(), "step {step}");
            assert!(got == want, "step {step}: bytes differ");
            assert_eq!(p.bytes, 0);
        }
    }

    #[tokio::test]
    async fn a_small_send_buffer_splits_segments_on_a_real_socket() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let sock = socket2::SockRef::from(&client);
        sock.set_send_buffer_size(4096).expect("SO_SNDBUF");
        let (_rd, wr) = client.into_split();
        let o = std::sync::Arc::new(Outbound::with_socket(Some(wr), 1 << 26, CancellationToken::new()));
        let big: Vec<Bytes> = (0..12).map(|i| payload(65536 + i * 13, i as u8)).collect();
        let want = queue_mixed(&o, &big);
        let len = want.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; len];
            server.read_exact(&mut got).await.expect("all bytes arrive");
            got
        });
        let mut blocked = 0;
        loop {
            match o.flush() {
                Flushed::All => break,
                Flushed::Blocked => blocked += 1,
                Flushed::Failed => panic!("socket failed"),
            }
            o.writable().await.expect("writable");
        }
        assert!(blocked > 0, "the small send buffer must have forced partial writes");
        let got = reader.await.expect("reader");
        assert!(got == want, "bytes differ");
        assert_eq!(o.pending.lock().bytes, 0);
    }

    #[test]
    fn budget_counts_shared_bytes() {
        let kill = CancellationToken::new();
        let o = Outbound::new(100_000, kill.clone());
        let big = payload(65536, 9);
        o.packet_data(Command::WorkComplete, &[b"H:x:1"], &big);
        let one = wire(Command::WorkComplete, &[b"H:x:1", &big]).len();
        assert_eq!(o.pending.lock().bytes, one);
        o.packet_data(Command::WorkComplete, &[b"H:x:1"], &big);
        assert_eq!(o.pending.lock().bytes, 2 * one);
        assert!(!kill.is_cancelled());
        // Past the budget: the next packet is refused and the connection dropped.
        o.packet_data(Command::WorkComplete, &[b"H:x:1"], &big);
        assert!(kill.is_cancelled());
        assert_eq!(o.pending.lock().bytes, 2 * one);
        assert_eq!(drain(&o).len(), 2 * one);
        assert_eq!(o.pending.lock().bytes, 0);
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
