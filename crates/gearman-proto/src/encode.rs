//! Packet encoding: header, then arguments joined by single NULs.

use bytes::{BufMut, BytesMut};

use crate::{Command, Magic, Packet, HEADER_BYTES};

/// Body length of `args` joined by NULs.
pub(crate) fn body_len(args: &[&[u8]]) -> usize {
    let sep = args.len().saturating_sub(1);
    args.iter().fold(sep, |n, a| n.saturating_add(a.len()))
}

/// Bytes that [`encode_parts`] writes for these arguments.
pub fn encoded_len(args: &[&[u8]]) -> usize {
    HEADER_BYTES.saturating_add(body_len(args))
}

/// Appends a packet built from `args` to `out`, without building a [`Packet`] first.
/// The caller is responsible for passing the command's argument count.
pub fn encode_parts(magic: Magic, command: Command, args: &[&[u8]], out: &mut BytesMut) {
    let body = body_len(args);
    out.reserve(HEADER_BYTES.saturating_add(body));
    match args.split_last() {
        Some((last, head)) => {
            put_header_and_head(magic, command, body, head, out);
            out.put_slice(last);
        }
        None => put_header_and_head(magic, command, 0, &[], out),
    }
}

/// Appends everything of a packet but its last argument: the header (whose length
/// counts a last argument of `last_len` bytes), then `head` with the NUL after each.
/// The caller sends the last argument (usually the payload) itself, so a large
/// payload can go out from its own buffer instead of being copied behind the header.
/// `prefix + last` is byte for byte what [`encode_parts`] writes for `head + [last]`.
pub fn encode_prefix(magic: Magic, command: Command, head: &[&[u8]], last_len: usize, out: &mut BytesMut) {
    let head_len = head.iter().fold(0usize, |n, a| n.saturating_add(a.len()).saturating_add(1));
    out.reserve(HEADER_BYTES.saturating_add(head_len));
    put_header_and_head(magic, command, head_len.saturating_add(last_len), head, out);
}

/// Writes the header of a packet whose body is `body` bytes, then `head` with the NUL
/// that follows each of them: all of the packet but its last argument.
fn put_header_and_head(magic: Magic, command: Command, body: usize, head: &[&[u8]], out: &mut BytesMut) {
    out.put_slice(magic.bytes());
    out.put_u32(command.code());
    out.put_u32(u32::try_from(body).unwrap_or(u32::MAX));
    for a in head {
        out.put_slice(a);
        out.put_u8(0);
    }
}

/// Appends `packet` to `out`. Zero-argument packets are written with an empty body.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let mut args: [&[u8]; 8] = [&[]; 8];
    let n = packet.argc().min(args.len());
    for (slot, a) in args.iter_mut().zip(packet.args()) {
        *slot = a;
    }
    encode_parts(packet.magic, packet.command, args.get(..n).unwrap_or_default(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn header_is_big_endian_and_args_are_nul_joined() {
        let mut out = BytesMut::new();
        encode_parts(Magic::Req, Command::CanDoTimeout, &[b"fn", b"1000"], &mut out);
        assert_eq!(out.as_ref(), b"\0REQ\x00\x00\x00\x17\x00\x00\x00\x07fn\x001000");
        assert_eq!(encoded_len(&[b"fn", b"1000"]), out.len());
    }

    #[test]
    fn zero_args_give_an_empty_body() {
        let mut out = BytesMut::new();
        encode_parts(Magic::Res, Command::Noop, &[], &mut out);
        assert_eq!(out.as_ref(), b"\0RES\x00\x00\x00\x06\x00\x00\x00\x00");
        assert_eq!(encoded_len(&[]), HEADER_BYTES);
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let p = Packet::new(Magic::Res, Command::JobCreated, &[b"H:a:1"]).expect("valid layout");
        let mut out = BytesMut::from(&b"xy"[..]);
        encode(&p, &mut out);
        assert_eq!(out.as_ref(), b"xy\0RES\x00\x00\x00\x08\x00\x00\x00\x05H:a:1");
    }

    #[test]
    fn unsplit_packet_is_written_with_an_empty_body() {
        let p = Packet::unsplit(Magic::Req, Command::JobAssign, Bytes::from_static(b"junk"));
        let mut out = BytesMut::new();
        encode(&p, &mut out);
        assert_eq!(out.as_ref(), b"\0REQ\x00\x00\x00\x0b\x00\x00\x00\x00");
    }

    /// `encode_prefix` followed by the last argument must equal `encode_parts`.
    fn prefix_then_last(magic: Magic, command: Command, args: &[&[u8]]) {
        let mut whole = BytesMut::new();
        encode_parts(magic, command, args, &mut whole);
        let (last, head) = args.split_last().expect("at least one argument");
        let mut split = BytesMut::from(&b"old"[..]);
        encode_prefix(magic, command, head, last.len(), &mut split);
        assert_eq!(split.len().checked_add(last.len()), encoded_len(args).checked_add(3), "{command:?}");
        split.extend_from_slice(last);
        assert_eq!(split.get(3..), Some(whole.as_ref()), "{command:?} {args:?}");
    }

    #[test]
    fn prefix_plus_last_argument_is_the_whole_packet() {
        let big = vec![0xa5u8; 70_000];
        prefix_then_last(Magic::Res, Command::EchoRes, &[b"hello"]);
        prefix_then_last(Magic::Res, Command::EchoRes, &[b""]);
        prefix_then_last(Magic::Res, Command::EchoRes, &[&big]);
        prefix_then_last(Magic::Res, Command::JobAssign, &[b"H:x:1", b"fn", b"data\0with nul"]);
        prefix_then_last(Magic::Res, Command::JobAssign, &[b"H:x:1", b"fn", b""]);
        prefix_then_last(Magic::Res, Command::JobAssign, &[b"", b"", b""]);
        prefix_then_last(Magic::Res, Command::JobAssignUniq, &[b"H:x:1", b"fn", b"u", &big]);
        prefix_then_last(Magic::Res, Command::JobAssignAll, &[b"H:x:1", b"fn", b"u", b"r", &big]);
        prefix_then_last(Magic::Res, Command::WorkComplete, &[b"H:x:1", &big]);
        prefix_then_last(Magic::Res, Command::WorkData, &[b"H:x:1", b""]);
        prefix_then_last(Magic::Req, Command::SubmitJob, &[b"f", b"u", b"d"]);
    }

    #[test]
    fn prefix_with_no_head_is_just_the_header() {
        let mut out = BytesMut::new();
        encode_prefix(Magic::Res, Command::EchoRes, &[], 5, &mut out);
        assert_eq!(out.as_ref(), b"\0RES\x00\x00\x00\x11\x00\x00\x00\x05");
        let mut out = BytesMut::new();
        encode_prefix(Magic::Res, Command::WorkData, &[b"H:a:1"], 0, &mut out);
        assert_eq!(out.as_ref(), b"\0RES\x00\x00\x00\x1c\x00\x00\x00\x06H:a:1\0");
    }

    #[test]
    fn eight_argument_command_is_fully_written() {
        let args: [&[u8]; 8] = [b"f", b"u", b"1", b"2", b"3", b"4", b"5", b"data"];
        let p = Packet::new(Magic::Req, Command::SubmitJobSched, &args).expect("valid layout");
        let mut out = BytesMut::new();
        encode(&p, &mut out);
        assert_eq!(out.get(HEADER_BYTES..), Some(&b"f\0u\x001\x002\x003\x004\x005\0data"[..]));
    }
}
