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
    out.put_slice(magic.bytes());
    out.put_u32(command.code());
    out.put_u32(u32::try_from(body).unwrap_or(u32::MAX));
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.put_u8(0);
        }
        out.put_slice(a);
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

    #[test]
    fn eight_argument_command_is_fully_written() {
        let args: [&[u8]; 8] = [b"f", b"u", b"1", b"2", b"3", b"4", b"5", b"data"];
        let p = Packet::new(Magic::Req, Command::SubmitJobSched, &args).expect("valid layout");
        let mut out = BytesMut::new();
        encode(&p, &mut out);
        assert_eq!(out.get(HEADER_BYTES..), Some(&b"f\0u\x001\x002\x003\x004\x005\0data"[..]));
    }
}
