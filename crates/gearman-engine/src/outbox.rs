//! Where the engine writes its replies: the server encodes them straight into each
//! connection's output buffer; tests record them.

use bytes::Bytes;
use gearman_proto::Command;

use crate::{ConnId, StoredJob};

/// Receives everything the engine wants sent or closed, in order per connection.
pub trait Outbox {
    /// Send a response packet (`\0RES` magic) with these arguments to `conn`.
    fn packet(&mut self, conn: ConnId, command: Command, args: &[&[u8]]);
    /// Send a response packet whose last argument is `data`, a payload that may be
    /// large: an outbox that can send shared bytes keeps `data` by reference instead
    /// of copying it. The bytes sent are those of `packet` with `head + [data]`.
    fn packet_data(&mut self, conn: ConnId, command: Command, head: &[&[u8]], data: &Bytes) {
        let mut args: [&[u8]; 8] = [&[]; 8];
        let n = head.len().min(args.len() - 1);
        for (slot, a) in args.iter_mut().zip(head) {
            *slot = a;
        }
        if let Some(slot) = args.get_mut(n) {
            *slot = data;
        }
        self.packet(conn, command, args.get(..=n).unwrap_or_default());
    }
    /// Send admin text to `conn`.
    fn text(&mut self, conn: ConnId, text: &[u8]);
    /// Close `conn` after what was already queued for it is written.
    fn close(&mut self, conn: ConnId);
    /// Take a place in `conn`'s reply order for a packet given later by `fill`.
    fn hold(&mut self, conn: ConnId, hold: u64);
    /// Give the place taken by `hold` its packet.
    fn fill(&mut self, conn: ConnId, hold: u64, command: Command, args: &[&[u8]]);
    /// Ask the store to save a background job; the answer comes back through
    /// [`crate::Engine::persisted`].
    fn persist(&mut self, job: StoredJob);
    /// Ask the store to forget a job (done, failed, cancelled).
    fn forget(&mut self, key: u64);
}

/// One recorded output, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A packet and its arguments.
    Packet(ConnId, Command, Vec<Vec<u8>>),
    /// Admin text.
    Text(ConnId, Vec<u8>),
    /// A close request.
    Close(ConnId),
    /// A place held in a connection's reply order.
    Hold(ConnId, u64),
    /// The packet that fills a held place.
    Fill(ConnId, u64, Command, Vec<Vec<u8>>),
    /// A job to store.
    Persist(StoredJob),
    /// A stored job to forget.
    Forget(u64),
}

impl Sent {
    /// The connection this output goes to; `None` for the store's outputs.
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Sent::Packet(c, ..)
            | Sent::Text(c, _)
            | Sent::Close(c)
            | Sent::Hold(c, _)
            | Sent::Fill(c, ..) => Some(*c),
            Sent::Persist(_) | Sent::Forget(_) => None,
        }
    }
}

/// An [`Outbox`] that records everything, for tests and tools.
#[derive(Debug, Default)]
pub struct RecordingOutbox {
    /// Everything sent so far, in order.
    pub sent: Vec<Sent>,
}

impl RecordingOutbox {
    /// Takes and clears what was recorded.
    pub fn take(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}

impl Outbox for RecordingOutbox {
    fn packet(&mut self, conn: ConnId, command: Command, args: &[&[u8]]) {
        self.sent.push(Sent::Packet(conn, command, args.iter().map(|a| a.to_vec()).collect()));
    }
    fn text(&mut self, conn: ConnId, text: &[u8]) {
        self.sent.push(Sent::Text(conn, text.to_vec()));
    }
    fn close(&mut self, conn: ConnId) {
        self.sent.push(Sent::Close(conn));
    }
    fn hold(&mut self, conn: ConnId, hold: u64) {
        self.sent.push(Sent::Hold(conn, hold));
    }
    fn fill(&mut self, conn: ConnId, hold: u64, command: Command, args: &[&[u8]]) {
        self.sent.push(Sent::Fill(conn, hold, command, args.iter().map(|a| a.to_vec()).collect()));
    }
    fn persist(&mut self, job: StoredJob) {
        self.sent.push(Sent::Persist(job));
    }
    fn forget(&mut self, key: u64) {
        self.sent.push(Sent::Forget(key));
    }
}
