//! Stream decoding: binary packets and admin text lines share one port, and the first
//! byte of each message decides which it is (NUL = binary).

use bytes::{Buf, Bytes, BytesMut};

use crate::{Command, Magic, Packet, ProtoError, HEADER_BYTES};

/// Default cap on a binary packet body. gearmand has none; 64 MiB keeps a peer from
/// making the server allocate gigabytes while leaving room for large real payloads.
pub const DEFAULT_MAX_PACKET_BYTES: u32 = 64 * 1024 * 1024;

/// Default cap on an admin line, newline included: gearmand's 8192-byte receive buffer.
pub const DEFAULT_MAX_ADMIN_LINE_BYTES: usize = 8192;

/// Most that one incomplete packet makes the decoder reserve ahead of its bytes.
const RESERVE_CHUNK_BYTES: usize = 256 * 1024;

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

/// Size of the binary packet at the front of `buf` (header included), once its header
/// is in; `None` for an admin line or an incomplete header. Lets a reader avoid
/// growing a buffer that already has room for the packet it is receiving.
pub fn pending_packet_len(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER_BYTES)?;
    if header.first() != Some(&0) {
        return None;
    }
    let size = header.get(8..12).and_then(|w| <[u8; 4]>::try_from(w).ok()).map(u32::from_be_bytes)?;
    Some(HEADER_BYTES.saturating_add(size as usize))
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
        if total <= RESERVE_CHUNK_BYTES && buf.capacity() < total {
            // Give the packet a buffer of exactly its size, holding only its bytes:
            // its body is then kept (by a queued job) without pinning a larger read
            // buffer, and the reader's next buffer starts fresh. Growing the shared
            // buffer instead doubled it and copied every byte read so far, which made
            // 64 KiB submits several times slower than gearmand's.
            let mut exact = BytesMut::with_capacity(total);
            exact.extend_from_slice(buf);
            *buf = exact;
            return Ok(None);
        }
        // Reserve room for the body as it arrives, but never more than a chunk at a
        // time: a 12-byte header alone must not make the server allocate megabytes.
        buf.reserve(total.saturating_sub(buf.len()).min(RESERVE_CHUNK_BYTES));
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

#[cfg(test)]
#[allow(clippy::panic)] // a test reports failure by panicking
mod tests {
    use super::*;

    /// Header bytes for `magic`, `code` and a declared body length.
    fn header(magic: &[u8; 4], code: u32, size: u32) -> Vec<u8> {
        let mut h = magic.to_vec();
        h.extend_from_slice(&code.to_be_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        h
    }

    fn packet_bytes(magic: &[u8; 4], code: u32, body: &[u8]) -> Vec<u8> {
        let mut p = header(magic, code, u32::try_from(body.len()).expect("small body"));
        p.extend_from_slice(body);
        p
    }

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    fn next(b: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        decode(b, &Limits::default())
    }

    #[test]
    fn a_large_packet_gets_a_buffer_of_its_exact_size() {
        let mut body = b"f\0\0".to_vec();
        body.extend(std::iter::repeat_n(7u8, 65536));
        let bytes = packet_bytes(b"\0REQ", 18, &body);
        let (head, rest) = bytes.split_at(4096);
        assert_eq!(pending_packet_len(head.get(..11).unwrap_or_default()), None);
        assert_eq!(pending_packet_len(&bytes), Some(bytes.len()));
        assert_eq!(pending_packet_len(b"status\n\0\0\0\0\0\0"), None);
        // The first 4 KiB arrive in a small buffer: the decoder moves them to a
        // buffer sized for the whole packet, which the rest then fills.
        let mut b = BytesMut::with_capacity(4096);
        b.extend_from_slice(head);
        assert_eq!(next(&mut b), Ok(None));
        assert_eq!(b.capacity(), bytes.len());
        assert_eq!(&b[..], head);
        b.extend_from_slice(rest);
        assert_eq!(b.capacity(), bytes.len(), "filling it must not grow it");
        let p = next_packet(&mut b);
        assert_eq!(p.arg(2).len(), 65536);
        assert!(b.is_empty());
    }

    fn next_packet(b: &mut BytesMut) -> Packet {
        match next(b) {
            Ok(Some(Frame::Packet(p))) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn next_line(b: &mut BytesMut) -> Bytes {
        match next(b) {
            Ok(Some(Frame::AdminLine(l))) => l,
            other => panic!("expected an admin line, got {other:?}"),
        }
    }

    #[test]
    fn empty_buffer_is_not_a_frame() {
        let mut b = BytesMut::new();
        assert_eq!(next(&mut b), Ok(None));
    }

    #[test]
    fn zero_arg_command_with_body_is_read_whole_and_next_packet_parses() {
        let mut bytes = packet_bytes(b"\0REQ", 9, b"12345");
        bytes.extend(packet_bytes(b"\0REQ", 16, b"ping"));
        let mut b = buf(&bytes);

        let grab = next_packet(&mut b);
        assert_eq!(grab.command, Command::GrabJob);
        assert_eq!(grab.argc(), 0);
        assert_eq!(grab.body().as_ref(), b"12345");
        assert_eq!(grab.args().count(), 0);

        let echo = next_packet(&mut b);
        assert_eq!(echo.command, Command::EchoReq);
        assert_eq!(echo.arg(0), b"ping");
        assert!(b.is_empty());
        assert_eq!(next(&mut b), Ok(None));
    }

    #[test]
    fn bad_magic_is_reported_once_four_bytes_are_in() {
        let mut b = buf(b"\0RE");
        assert_eq!(next(&mut b), Ok(None), "three bytes cannot tell yet");
        assert_eq!(b.len(), 3, "nothing consumed while waiting");
        b.extend_from_slice(b"X");
        assert_eq!(next(&mut b), Err(ProtoError::BadMagic(*b"\0REX")));

        let mut full = buf(&packet_bytes(b"\0ABC", 16, b"x"));
        assert_eq!(next(&mut full), Err(ProtoError::BadMagic(*b"\0ABC")));
    }

    #[test]
    fn type_zero_and_type_43_are_unknown() {
        for code in [0u32, 43, 0xFFFF_FFFF] {
            let mut b = buf(&packet_bytes(b"\0REQ", code, b""));
            assert_eq!(next(&mut b), Err(ProtoError::UnknownCommand(code)));
        }
        // The type is checked from the header alone, before the body arrives.
        let mut b = buf(&header(b"\0REQ", 43, 10));
        assert_eq!(next(&mut b), Err(ProtoError::UnknownCommand(43)));
    }

    #[test]
    fn oversize_length_fails_from_the_header_without_allocating() {
        let mut b = buf(&header(b"\0REQ", 16, 0xFFFF_FFFF));
        let cap_before = b.capacity();
        assert_eq!(
            next(&mut b),
            Err(ProtoError::PacketTooLarge { size: 0xFFFF_FFFF, limit: DEFAULT_MAX_PACKET_BYTES })
        );
        assert_eq!(b.capacity(), cap_before, "no buffer growth for a rejected length");

        let small = Limits { max_packet_bytes: 4, ..Limits::default() };
        let mut b = buf(&header(b"\0REQ", 16, 5));
        assert_eq!(decode(&mut b, &small), Err(ProtoError::PacketTooLarge { size: 5, limit: 4 }));
        // Exactly at the limit is fine.
        let mut b = buf(&packet_bytes(b"\0REQ", 16, b"abcd"));
        match decode(&mut b, &small) {
            Ok(Some(Frame::Packet(p))) => assert_eq!(p.arg(0), b"abcd"),
            other => panic!("expected a packet at the limit, got {other:?}"),
        }
    }

    #[test]
    fn truncated_packet_waits_without_consuming() {
        let whole = packet_bytes(b"\0REQ", 7, b"f\0u\0data");
        for cut in 0..whole.len() {
            let mut b = buf(whole.get(..cut).expect("cut within packet"));
            assert_eq!(next(&mut b), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut, "cut at {cut} consumed bytes");
        }
    }

    #[test]
    fn submit_job_without_nul_is_missing_argument() {
        let mut b = buf(&packet_bytes(b"\0REQ", 7, b"abc"));
        assert_eq!(
            next(&mut b),
            Err(ProtoError::MissingArgument { command: Command::SubmitJob, expected: 2, found: 0 })
        );
        let mut b = buf(&packet_bytes(b"\0REQ", 7, b"abc\0def"));
        assert_eq!(
            next(&mut b),
            Err(ProtoError::MissingArgument { command: Command::SubmitJob, expected: 2, found: 1 })
        );
        // Two NULs are enough: empty unique and empty data.
        let mut b = buf(&packet_bytes(b"\0REQ", 7, b"abc\0\0"));
        let p = next_packet(&mut b);
        assert_eq!(p.args().collect::<Vec<_>>(), vec![&b"abc"[..], b"", b""]);
    }

    #[test]
    fn res_magic_with_valid_type_decodes() {
        let mut b = buf(&packet_bytes(b"\0RES", 16, b"x"));
        let p = next_packet(&mut b);
        assert_eq!(p.magic, Magic::Res);
        assert_eq!(p.command, Command::EchoReq);
        assert_eq!(p.arg(0), b"x");

        // Even a body that would be malformed from a peer: the engine rejects it anyway.
        let mut b = buf(&packet_bytes(b"\0RES", 7, b"abc"));
        let p = next_packet(&mut b);
        assert_eq!(p.magic, Magic::Res);
        assert_eq!(p.command, Command::SubmitJob);
        assert_eq!(p.body().as_ref(), b"abc");
    }

    #[test]
    fn server_only_types_with_short_bodies_decode() {
        for command in Command::ALL.iter().copied().filter(|c| !c.is_from_peer()) {
            let mut b = buf(&packet_bytes(b"\0REQ", command.code(), b"short"));
            let p = next_packet(&mut b);
            assert_eq!(p.command, command);
            assert_eq!(p.body().as_ref(), b"short");
            assert!(b.is_empty());
        }
    }

    #[test]
    fn admin_line_endings_are_stripped() {
        let mut b = buf(b"status\nversion\r\n\n\r\nwith\rinner cr\r\n");
        assert_eq!(next_line(&mut b).as_ref(), b"status");
        assert_eq!(next_line(&mut b).as_ref(), b"version");
        assert_eq!(next_line(&mut b).as_ref(), b"");
        assert_eq!(next_line(&mut b).as_ref(), b"");
        assert_eq!(next_line(&mut b).as_ref(), b"with\rinner cr");
        assert!(b.is_empty());
    }

    #[test]
    fn line_without_newline_is_held() {
        for held in [&b"version"[..], b"version\r", b"x\r\r"] {
            let mut b = buf(held);
            assert_eq!(next(&mut b), Ok(None));
            assert_eq!(b.as_ref(), held, "nothing consumed");
        }
        let mut b = buf(b"version\r");
        b.extend_from_slice(b"\n");
        assert_eq!(next_line(&mut b).as_ref(), b"version");
    }

    #[test]
    fn text_then_binary_in_one_buffer() {
        let mut bytes = b"version\r\n".to_vec();
        bytes.extend(packet_bytes(b"\0REQ", 16, b"hi"));
        bytes.extend_from_slice(b"status\n");
        let mut b = buf(&bytes);
        assert_eq!(next_line(&mut b).as_ref(), b"version");
        assert_eq!(next_packet(&mut b).arg(0), b"hi");
        assert_eq!(next_line(&mut b).as_ref(), b"status");
        assert_eq!(next(&mut b), Ok(None));
    }

    #[test]
    fn binary_then_text_in_one_buffer() {
        let mut bytes = packet_bytes(b"\0REQ", 1, b"reverse");
        bytes.extend_from_slice(b"workers\n");
        bytes.extend(packet_bytes(b"\0REQ", 9, b""));
        let mut b = buf(&bytes);
        let can_do = next_packet(&mut b);
        assert_eq!(can_do.command, Command::CanDo);
        assert_eq!(can_do.arg(0), b"reverse");
        assert_eq!(next_line(&mut b).as_ref(), b"workers");
        assert_eq!(next_packet(&mut b).command, Command::GrabJob);
        assert!(b.is_empty());
    }

    #[test]
    fn admin_line_fills_the_limit_exactly() {
        let mut line = vec![b'a'; DEFAULT_MAX_ADMIN_LINE_BYTES - 1];
        line.push(b'\n');
        let mut b = buf(&line);
        assert_eq!(next_line(&mut b).len(), DEFAULT_MAX_ADMIN_LINE_BYTES - 1);
        assert!(b.is_empty());
    }

    #[test]
    fn admin_line_over_the_limit_fails() {
        let limit = DEFAULT_MAX_ADMIN_LINE_BYTES;
        let mut b = buf(&vec![b'a'; limit - 1]);
        assert_eq!(next(&mut b), Ok(None), "one byte short of the limit still waits");
        b.extend_from_slice(b"a");
        assert_eq!(next(&mut b), Err(ProtoError::AdminLineTooLong { limit }));

        // A newline just past the limit does not rescue it.
        let mut line = vec![b'a'; limit];
        line.push(b'\n');
        let mut b = buf(&line);
        assert_eq!(next(&mut b), Err(ProtoError::AdminLineTooLong { limit }));

        let tiny = Limits { max_admin_line_bytes: 4, ..Limits::default() };
        let mut b = buf(b"abc\n");
        assert_eq!(decode(&mut b, &tiny), Ok(Some(Frame::AdminLine(Bytes::from_static(b"abc")))));
        let mut b = buf(b"abcd\n");
        assert_eq!(decode(&mut b, &tiny), Err(ProtoError::AdminLineTooLong { limit: 4 }));
    }

    #[test]
    fn pipelined_packets_come_out_in_order() {
        let mut bytes = Vec::new();
        let names: [&[u8]; 4] = [b"a", b"bb", b"", b"dddd"];
        for n in names {
            bytes.extend(packet_bytes(b"\0REQ", 1, n));
        }
        bytes.extend(packet_bytes(b"\0REQ", 4, b""));
        let mut b = buf(&bytes);
        for n in names {
            let p = next_packet(&mut b);
            assert_eq!(p.command, Command::CanDo);
            assert_eq!(p.arg(0), n);
        }
        assert_eq!(next_packet(&mut b).command, Command::PreSleep);
        assert_eq!(next(&mut b), Ok(None));
    }
}
