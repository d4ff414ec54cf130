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
