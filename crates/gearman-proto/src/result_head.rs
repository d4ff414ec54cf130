//! A request recognised from its first bytes, before its data is in: the head of any
//! request, and a worker's result in particular.
//!
//! The data of a result nobody listens to (a background job's WORK_COMPLETE, say) is
//! thrown away by the server, and that of a final result with one client can go
//! straight from socket to socket. Knowing the packet's command, size and job handle
//! from its head lets a reader drop or forward the rest of the data as it arrives
//! instead of reading it, and then hand on the same result with the data it read.

use bytes::BytesMut;

use crate::{Command, Magic, HEADER_BYTES};

/// The head of a WORK_COMPLETE, WORK_DATA, WORK_WARNING or WORK_EXCEPTION request at
/// the front of a buffer: its header and its first argument, the job handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultHead<'a> {
    /// Which result it is.
    pub command: Command,
    /// The job handle, without its NUL.
    pub handle: &'a [u8],
    /// Size of the whole packet, header included.
    pub packet_len: usize,
    /// Bytes up to the start of the data: header, handle and its NUL.
    pub head_len: usize,
}

/// The head of a request at the front of a buffer: its header and every argument
/// before its last (the last is the data: a job's payload, a result, an echo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Which request it is.
    pub command: Command,
    /// Size of the whole packet, header included.
    pub packet_len: usize,
    /// Bytes up to the start of the last argument: the header and the arguments
    /// before it, each with its NUL.
    pub head_len: usize,
}

/// The request whose head is at the front of `buf`, if `buf` starts with a request
/// that has arguments and holds all of them but the last. Whether the packet is
/// complete is not checked: `buf` may hold any part of its last argument.
pub fn request_head(buf: &[u8]) -> Option<RequestHead> {
    let header = buf.get(..HEADER_BYTES)?;
    let word = |i: usize| header.get(i..i.checked_add(4)?).and_then(|w| <[u8; 4]>::try_from(w).ok());
    if Magic::from_bytes(&word(0)?) != Some(Magic::Req) {
        return None;
    }
    let command = Command::from_code(u32::from_be_bytes(word(4)?))?;
    let leading = command.layout().argc.checked_sub(1)?;
    let size = usize::try_from(u32::from_be_bytes(word(8)?)).ok()?;
    let packet_len = HEADER_BYTES.checked_add(size)?;
    let body = buf.get(HEADER_BYTES..packet_len.min(buf.len()))?;
    let mut at = 0usize;
    for _ in 0..leading {
        let nul = body.get(at..)?.iter().position(|&b| b == 0)?;
        at = at.checked_add(nul)?.checked_add(1)?;
    }
    Some(RequestHead { command, packet_len, head_len: HEADER_BYTES.checked_add(at)? })
}

/// The result packet whose head is at the front of `buf`, if `buf` starts with one
/// and holds its header and whole handle. Whether the packet is complete is not
/// checked: `buf` may hold any part of it past the handle.
pub fn result_head(buf: &[u8]) -> Option<ResultHead<'_>> {
    let RequestHead { command, packet_len, head_len } = request_head(buf)?;
    if !command.carries_result_data() {
        return None;
    }
    Some(ResultHead {
        command,
        handle: buf.get(HEADER_BYTES..head_len.checked_sub(1)?)?,
        packet_len,
        head_len,
    })
}

/// Turns the result packet at the front of `buf` (which holds nothing after it) into
/// the same result with its data cut at `head_len`: what it holds past that is
/// dropped, and its size says that the data ends there. The caller drops or forwards
/// the data not read yet. `head_len` from [`ResultHead`] leaves the data empty;
/// `buf.len()` keeps what was read of it.
pub fn cut_result_data(buf: &mut BytesMut, head_len: usize) {
    buf.truncate(head_len);
    let size = u32::try_from(head_len.saturating_sub(HEADER_BYTES)).unwrap_or(u32::MAX);
    if let Some(field) = buf.get_mut(8..HEADER_BYTES) {
        field.copy_from_slice(&size.to_be_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // test code: panics report failures
mod tests {
    use super::*;
    use crate::{decode, encode_parts, Frame, Limits};
    use proptest::prelude::*;

    fn packet(magic: Magic, command: Command, args: &[&[u8]]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_parts(magic, command, args, &mut b);
        b
    }

    #[test]
    fn the_head_of_each_result_with_data_is_recognised() {
        for command in
            [Command::WorkComplete, Command::WorkData, Command::WorkWarning, Command::WorkException]
        {
            let b = packet(Magic::Req, command, &[b"H:x:1", &[7u8; 100]]);
            let head = result_head(&b[..20]).expect("head");
            assert_eq!(
                head,
                ResultHead { command, handle: b"H:x:1", packet_len: b.len(), head_len: HEADER_BYTES + 6 }
            );
        }
    }

    #[test]
    fn other_packets_and_incomplete_heads_are_not_results() {
        let status = packet(Magic::Req, Command::WorkStatus, &[b"H:x:1", b"1", b"2"]);
        let submit = packet(Magic::Req, Command::SubmitJob, &[b"f", b"", b"data"]);
        let response = packet(Magic::Res, Command::WorkComplete, &[b"H:x:1", b"r"]);
        let complete = packet(Magic::Req, Command::WorkComplete, &[b"H:x:1", b"r"]);
        assert_eq!(result_head(&status), None);
        assert_eq!(result_head(&submit), None);
        assert_eq!(result_head(&response), None);
        assert_eq!(result_head(b"status\n"), None);
        // The handle's NUL has not arrived yet.
        assert_eq!(result_head(&complete[..HEADER_BYTES + 5]), None);
        assert!(result_head(&complete[..HEADER_BYTES + 6]).is_some());
        // A NUL past the packet's declared end belongs to the next packet.
        let mut short = packet(Magic::Req, Command::WorkComplete, &[b"H:x:1"]);
        short.extend_from_slice(&packet(Magic::Req, Command::GrabJob, &[]));
        assert_eq!(result_head(&short), None);
    }

    #[test]
    fn the_head_of_a_request_ends_where_its_last_argument_begins() {
        let submit = packet(Magic::Req, Command::SubmitJobBg, &[b"fn", b"u1", &[7u8; 100]]);
        let want = RequestHead {
            command: Command::SubmitJobBg,
            packet_len: submit.len(),
            head_len: HEADER_BYTES + 6,
        };
        assert_eq!(request_head(&submit[..HEADER_BYTES + 6]), Some(want));
        assert_eq!(request_head(&submit), Some(want));
        // The unique's NUL has not arrived yet.
        assert_eq!(request_head(&submit[..HEADER_BYTES + 5]), None);
        let echo = packet(Magic::Req, Command::EchoReq, &[&[1u8; 50]]);
        assert_eq!(
            request_head(&echo[..HEADER_BYTES]),
            Some(RequestHead { command: Command::EchoReq, packet_len: echo.len(), head_len: HEADER_BYTES })
        );
        let epoch = packet(Magic::Req, Command::SubmitJobEpoch, &[b"f", b"", b"1700000000", b"d"]);
        assert_eq!(request_head(&epoch).map(|h| h.head_len), Some(HEADER_BYTES + 14));
        // No arguments at all, or a response: no head.
        assert_eq!(request_head(&packet(Magic::Req, Command::GrabJob, &[])), None);
        assert_eq!(request_head(&packet(Magic::Res, Command::EchoRes, &[b"x"])), None);
    }

    proptest! {
        /// Cut anywhere past its handle, a result decodes as the same result with
        /// empty data.
        #[test]
        fn a_cut_result_is_the_same_result_without_data(
            handle in proptest::collection::vec(1u8..=255, 1..40),
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            at in any::<prop::sample::Index>(),
        ) {
            let whole = packet(Magic::Req, Command::WorkComplete, &[&handle, &data]);
            let head_len = HEADER_BYTES + handle.len() + 1;
            let cut_at = head_len + at.index(data.len() + 1);
            let mut b = BytesMut::from(&whole[..cut_at]);
            let head = result_head(&b).expect("head");
            prop_assert_eq!(head.handle, &handle[..]);
            prop_assert_eq!(head.packet_len, whole.len());
            prop_assert_eq!(head.head_len, head_len);
            cut_result_data(&mut b, head_len);
            match decode(&mut b, &Limits::default()) {
                Ok(Some(Frame::Packet(p))) => {
                    prop_assert_eq!(p.command, Command::WorkComplete);
                    prop_assert_eq!(p.arg(0), &handle[..]);
                    prop_assert_eq!(p.arg(1), b"");
                }
                other => panic!("decoded {other:?}"),
            }
            prop_assert!(b.is_empty());
        }

        /// Cut at the end of what arrived, a result decodes as the same result with
        /// the data that arrived: the rest can follow it separately.
        #[test]
        fn a_result_cut_where_it_stops_keeps_the_data_read_so_far(
            handle in proptest::collection::vec(1u8..=255, 1..40),
            data in proptest::collection::vec(any::<u8>(), 1..3000),
            at in any::<prop::sample::Index>(),
        ) {
            let whole = packet(Magic::Req, Command::WorkException, &[&handle, &data]);
            let head_len = HEADER_BYTES + handle.len() + 1;
            let read = at.index(data.len());
            let mut b = BytesMut::from(&whole[..head_len + read]);
            prop_assert_eq!(result_head(&b).map(|h| h.command), Some(Command::WorkException));
            let end = b.len();
            cut_result_data(&mut b, end);
            match decode(&mut b, &Limits::default()) {
                Ok(Some(Frame::Packet(p))) => {
                    prop_assert_eq!(p.command, Command::WorkException);
                    prop_assert_eq!(p.arg(0), &handle[..]);
                    prop_assert_eq!(p.arg(1), &data[..read]);
                }
                other => panic!("decoded {other:?}"),
            }
            prop_assert!(b.is_empty());
        }
    }
}
