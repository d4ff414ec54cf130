//! Feeds arbitrary bytes through `gearman_proto::decode`, whole and in chunks, under the
//! default limits and under small ones. Checks that nothing panics, that every frame
//! consumes bytes, that "need more" consumes nothing, that chunking does not change
//! the outcome, that decoded packets survive an encode/decode round trip, and that a
//! waiting result cut as the server cuts an unwanted one decodes without its data.
#![no_main]

use bytes::BytesMut;
use gearman_proto::{cut_result_data, decode, encode, result_head, Frame, Limits, ProtoError};
use libfuzzer_sys::fuzz_target;

/// Frames decoded from a stream, then the error that stopped it, if any.
type Outcome = (Vec<Frame>, Option<ProtoError>);

/// Feeds `data` in pieces of `chunk` bytes (all at once when `chunk` is 0).
fn run(data: &[u8], chunk: usize, limits: &Limits) -> Outcome {
    let step = if chunk == 0 { data.len().max(1) } else { chunk };
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            let snapshot = buf.clone();
            match decode(&mut buf, limits) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame consumed no bytes");
                    check_frame(&frame, limits);
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf, snapshot, "Ok(None) changed the buffer");
                    check_cut_result(&buf, limits);
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn check_frame(frame: &Frame, limits: &Limits) {
    match frame {
        Frame::AdminLine(line) => {
            assert!(line.len() < limits.max_admin_line_bytes, "line over the limit");
            assert!(!line.contains(&b'\n'), "line kept its newline");
        }
        Frame::Packet(p) => {
            assert!(p.body().len() <= limits.max_packet_bytes as usize, "body over the limit");
            if p.argc() != p.command.layout().argc {
                // Kept unsplit (server-only type or response magic): nothing to re-encode.
                return;
            }
            let mut out = BytesMut::new();
            encode(p, &mut out);
            let big = Limits { max_packet_bytes: u32::MAX, ..Limits::default() };
            match decode(&mut out, &big) {
                Ok(Some(Frame::Packet(q))) => {
                    assert_eq!((q.magic, q.command), (p.magic, p.command));
                    assert!(q.args().eq(p.args()), "arguments changed in a round trip");
                    assert!(out.is_empty(), "re-encoded packet not fully consumed");
                }
                other => panic!("re-encoded packet did not decode: {other:?}"),
            }
        }
    }
}

/// A result whose head waits in `buf`, cut as the server cuts one it drops the data
/// of, must decode as the same result with empty data.
fn check_cut_result(buf: &BytesMut, limits: &Limits) {
    let Some(head) = result_head(buf) else { return };
    let mut cut = buf.clone();
    cut_result_data(&mut cut, head.head_len);
    match decode(&mut cut, limits) {
        Ok(Some(Frame::Packet(p))) => {
            assert_eq!(p.arg(0), head.handle, "the cut changed the handle");
            assert!(p.arg(1).is_empty(), "the cut kept data");
            assert!(cut.is_empty(), "the cut packet was not consumed whole");
        }
        other => panic!("a cut result did not decode: {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    // The first two bytes pick a chunk size and a pair of small limits; the rest is the stream.
    let (chunk, small_limit, data) = match input {
        [a, b, rest @ ..] => (usize::from(*a % 17), usize::from(*b), rest),
        _ => (0, 0, input),
    };
    let small = Limits {
        max_packet_bytes: u32::try_from(small_limit).unwrap_or(u32::MAX),
        max_admin_line_bytes: small_limit,
    };
    for limits in [Limits::default(), small] {
        let whole = run(data, 0, &limits);
        let chunked = run(data, chunk, &limits);
        assert_eq!(whole, chunked, "chunking changed the outcome");
    }
});
