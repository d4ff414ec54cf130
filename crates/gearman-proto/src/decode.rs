//! Stream decoding: binary packets and admin text lines share one port, and the first
//! byte of each message decides which it is (NUL = binary).

use bytes::{Buf, Bytes, BytesMut};

use crate::{Command, Magic, Packet, ProtoError, HEADER_BYTES};

/// Default cap on a binary packet body. gearmand has none; 64 MiB keeps a peer from
/// making the server allocate gigabytes while leaving room for large real payloads.
pub const DEFAULT_MAX_PACKET_BYTES: u32 = 64 * 1024 * 1024;

/// Default cap on an admin line, newline included: gearmand's 8192-byte receive buffer.
pub const DEFAULT_MAX_ADMIN_LINE_BYTES: usize = 8192;

/// Size limits enforced before anything is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted binary body, in bytes.
    pub max_packet_bytes: u32,
    /// Largest accepted admin line, in bytes, newline included.
    pub max_admin_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_admin_line_bytes: DEFAULT_MAX_ADMIN_LINE_BYTES,
        }
    }
}

/// One message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A binary packet.
    Packet(Packet),
    /// One admin text line, without its `\n` or `\r\n`.
    AdminLine(Bytes),
}

/// Takes the next complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (nothing is consumed), so
/// any chunking of a stream yields the same frames. Sizes are checked against `limits`
/// as soon as the header (or the partial line) shows them, before buffering more.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtoError> {
    match buf.first() {
        None => Ok(None),
        Some(0) => decode_packet(buf, limits),
        Some(_) => decode_line(buf, limits),
    }
}

fn decode_packet(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtoError> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        // Reject a bad magic as soon as its 4 bytes are in, like gearmand does.
        if let Some(m) = buf.get(..4) {
            check_magic(m)?;
        }
        return Ok(None);
    };
    let word = |i: usize| -> [u8; 4] {
        let mut w = [0u8; 4];
        if let Some(s) = header.get(i..i.saturating_add(4)) {
            w.copy_from_slice(s);
        }
        w
    };
    let magic = check_magic(&word(0))?;
    let code = u32::from_be_bytes(word(4));
    let size = u32::from_be_bytes(word(8));
    let command = Command::from_code(code).ok_or(ProtoError::UnknownCommand(code))?;
    if size > limits.max_packet_bytes {
        return Err(ProtoError::PacketTooLarge { size, limit: limits.max_packet_bytes });
    }
    let total = HEADER_BYTES.saturating_add(size as usize);
    if buf.len() < total {
        buf.reserve(total.saturating_sub(buf.len()));
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    let body = buf.split_to(size as usize).freeze();
    match Packet::from_body(magic, command, body.clone()) {
        Ok(p) => Ok(Some(Frame::Packet(p))),
        // A response-magic or server-only packet is answered with an ERROR whatever
        // its body holds, so a short body there is not a framing error.
        Err(_) if magic == Magic::Res || !command.is_from_peer() => {
            Ok(Some(Frame::Packet(Packet::unsplit(magic, command, body))))
        }
        Err(e) => Err(e),
    }
}

fn check_magic(m: &[u8]) -> Result<Magic, ProtoError> {
    let mut w = [0u8; 4];
    if m.len() == 4 {
        w.copy_from_slice(m);
    }
    Magic::from_bytes(&w).ok_or(ProtoError::BadMagic(w))
}

fn decode_line(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtoError> {
    let max = limits.max_admin_line_bytes;
    let window = buf.get(..buf.len().min(max)).unwrap_or_default();
    match window.iter().position(|&b| b == b'\n') {
        Some(pos) => {
            let mut line = buf.split_to(pos.saturating_add(1));
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(pos.saturating_sub(1));
            }
            Ok(Some(Frame::AdminLine(line.freeze())))
        }
        None if buf.len() >= max => Err(ProtoError::AdminLineTooLong { limit: max }),
        None => Ok(None),
    }
}
