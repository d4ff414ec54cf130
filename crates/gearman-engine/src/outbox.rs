//! Where the engine writes its replies: the server encodes them straight into each
//! connection's output buffer; tests record them.

use gearman_proto::Command;

use crate::ConnId;

/// Receives everything the engine wants sent or closed, in order per connection.
pub trait Outbox {
    /// Send a response packet (`\0RES` magic) with these arguments to `conn`.
    fn packet(&mut self, conn: ConnId, command: Command, args: &[&[u8]]);
    /// Send admin text to `conn`.
    fn text(&mut self, conn: ConnId, text: &[u8]);
    /// Close `conn` after what was already queued for it is written.
    fn close(&mut self, conn: ConnId);
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
}
