//! Properties of the codec (STYLE.md section 5): encode/decode round-trips, chunking
//! does not change the frames, arbitrary bytes never panic, and an oversize length is
//! rejected before its body is buffered.

use bytes::{Bytes, BytesMut};
use gearman_proto::{decode, encode, Command, Frame, Limits, Magic, Packet, ProtoError, HEADER_BYTES};
use proptest::prelude::*;

fn any_magic() -> impl Strategy<Value = Magic> {
    prop_oneof![Just(Magic::Req), Just(Magic::Res)]
}

fn any_command() -> impl Strategy<Value = Command> {
    proptest::sample::select(Command::ALL)
}

/// Arguments valid for `command`: NUL-free non-final arguments, any final argument.
fn args_for(command: Command) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let argc = command.layout().argc;
    let leading =
        proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..12), argc.saturating_sub(1));
    let last = proptest::collection::vec(any::<u8>(), 0..40);
    (leading, last).prop_map(move |(mut v, last)| {
        if argc > 0 {
            v.push(last);
        }
        v
    })
}

fn any_packet() -> impl Strategy<Value = Packet> {
    (any_magic(), any_command()).prop_flat_map(|(magic, command)| {
        args_for(command).prop_map(move |args| {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            Packet::new(magic, command, &refs).expect("arguments fit the layout")
        })
    })
}

/// One message of a mixed stream, with the frame the decoder should produce for it.
#[derive(Debug, Clone)]
enum Item {
    Packet(Packet),
    /// Line text (no CR/LF, first byte not NUL) and whether it ends in `\r\n`.
    Line(Vec<u8>, bool),
}

impl Item {
    fn write(&self, out: &mut BytesMut) {
        match self {
            Item::Packet(p) => encode(p, out),
            Item::Line(text, crlf) => {
                out.extend_from_slice(text);
                out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
        }
    }

    fn frame(&self) -> Frame {
        match self {
            Item::Packet(p) => Frame::Packet(p.clone()),
            Item::Line(text, _) => Frame::AdminLine(Bytes::copy_from_slice(text)),
        }
    }
}

fn any_line() -> impl Strategy<Value = Item> {
    let byte = any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n');
    let first = byte.clone().prop_filter("text starts with a non-NUL byte", |b| *b != 0);
    (first, proptest::collection::vec(byte, 0..30), any::<bool>()).prop_map(|(f, rest, crlf)| {
        let mut text = vec![f];
        text.extend(rest);
        Item::Line(text, crlf)
    })
}

fn any_item() -> impl Strategy<Value = Item> {
    prop_oneof![3 => any_packet().prop_map(Item::Packet), 1 => any_line()]
}

fn any_limits() -> impl Strategy<Value = Limits> {
    (0u32..64, 0usize..64).prop_map(|(max_packet_bytes, max_admin_line_bytes)| Limits {
        max_packet_bytes,
        max_admin_line_bytes,
    })
}

/// What feeding a stream produced: its frames, then the error that stopped it (if any).
type Outcome = (Vec<Frame>, Option<ProtoError>);

/// Feeds `bytes` in chunks of the given sizes (cycled; the rest in one piece when
/// `sizes` is empty), decoding after each chunk until the decoder wants more. Checks
/// that every frame consumed bytes and that `Ok(None)` consumed nothing.
fn feed(bytes: &[u8], sizes: &[usize], limits: &Limits) -> Result<Outcome, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes_iter = sizes.iter().cycle();
    loop {
        let take = sizes_iter.next().copied().unwrap_or(rest.len()).max(1).min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        buf.extend_from_slice(chunk);
        rest = tail;
        loop {
            let before = buf.clone();
            match decode(&mut buf, limits) {
                Ok(Some(f)) => {
                    prop_assert!(buf.len() < before.len(), "a frame consumed nothing");
                    prop_assert_eq!(&before[before.len() - buf.len()..], &buf[..]);
                    frames.push(f);
                }
                Ok(None) => {
                    prop_assert_eq!(&buf, &before, "Ok(None) changed the buffer");
                    break;
                }
                Err(e) => return Ok((frames, Some(e))),
            }
        }
        if rest.is_empty() {
            return Ok((frames, None));
        }
    }
}

proptest! {
    /// (a) Any packet valid for its layout survives encode then decode unchanged.
    #[test]
    fn decode_inverts_encode(p in any_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, &mut buf);
        let expected_len = HEADER_BYTES
            + p.args().map(<[u8]>::len).sum::<usize>()
            + p.argc().saturating_sub(1);
        prop_assert_eq!(buf.len(), expected_len);
        let decoded = decode(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(Frame::Packet(p))));
        prop_assert!(buf.is_empty());
    }

    /// (b) Any chunking of a stream of packets and admin lines gives the same frames
    /// as feeding it whole, and those are exactly the frames the stream was built from.
    #[test]
    fn chunking_does_not_change_frames(
        items in proptest::collection::vec(any_item(), 1..8),
        sizes in proptest::collection::vec(1usize..40, 0..20),
    ) {
        let mut stream = BytesMut::new();
        for item in &items {
            item.write(&mut stream);
        }
        let expected: Vec<Frame> = items.iter().map(Item::frame).collect();
        let whole = feed(&stream, &[], &Limits::default())?;
        prop_assert_eq!(&whole, &(expected, None));
        let chunked = feed(&stream, &sizes, &Limits::default())?;
        prop_assert_eq!(chunked, whole);
    }

    /// (c) Arbitrary bytes, under any limits and any chunking, never panic; frames
    /// always consume bytes, `Ok(None)` never does, and chunking changes nothing,
    /// errors included.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..20, 0..10),
        limits in any_limits(),
    ) {
        let whole = feed(&bytes, &[], &limits)?;
        let chunked = feed(&bytes, &sizes, &limits)?;
        prop_assert_eq!(chunked, whole);
        let default_whole = feed(&bytes, &[], &Limits::default())?;
        let default_chunked = feed(&bytes, &sizes, &Limits::default())?;
        prop_assert_eq!(default_chunked, default_whole);
    }

    /// (c, biased) Bytes that start like real packets (valid magic, any type, random
    /// length) reach the deeper decoding paths more often than uniform noise does.
    #[test]
    fn packet_like_bytes_never_panic(
        magic in any_magic(),
        code in 0u32..45,
        size in prop_oneof![0u32..40, any::<u32>()],
        tail in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..80),
        sizes in proptest::collection::vec(1usize..16, 0..8),
        limits in any_limits(),
    ) {
        let mut bytes = magic.bytes().to_vec();
        bytes.extend_from_slice(&code.to_be_bytes());
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes.extend(tail);
        for l in [limits, Limits::default()] {
            let whole = feed(&bytes, &[], &l)?;
            let chunked = feed(&bytes, &sizes, &l)?;
            prop_assert_eq!(chunked, whole);
        }
    }

    /// (d) A declared length above the limit fails as soon as the header is in, with
    /// any part of the body present or not, and the buffer does not grow for it.
    #[test]
    fn oversize_length_fails_before_the_body(
        limit in 0u32..4096,
        excess in 1u32..=u32::MAX,
        magic in any_magic(),
        command in any_command(),
        body_prefix in proptest::collection::vec(any::<u8>(), 0..64),
        before in proptest::option::of(any_packet()),
    ) {
        let size = limit.saturating_add(excess);
        prop_assume!(size > limit);
        let limits = Limits { max_packet_bytes: limit, ..Limits::default() };
        let mut buf = BytesMut::new();
        let mut expected_first = None;
        if let Some(p) = before {
            // A small packet ahead of the oversize one still comes out first.
            let fits = p.body().len() <= limit as usize;
            if fits {
                encode(&p, &mut buf);
                expected_first = Some(Frame::Packet(p));
            }
        }
        buf.extend_from_slice(magic.bytes());
        buf.extend_from_slice(&command.code().to_be_bytes());
        buf.extend_from_slice(&size.to_be_bytes());
        let body_len = body_prefix.len().min(size as usize);
        buf.extend_from_slice(&body_prefix[..body_len]);
        let capacity = buf.capacity();

        if let Some(first) = expected_first {
            prop_assert_eq!(decode(&mut buf, &limits), Ok(Some(first)));
        }
        prop_assert_eq!(
            decode(&mut buf, &limits),
            Err(ProtoError::PacketTooLarge { size, limit })
        );
        prop_assert!(buf.capacity() <= capacity, "buffer grew for a rejected packet");
    }

    /// (d, other side) A length within the limit waits for the body, and reserves
    /// no more than about the declared packet.
    #[test]
    fn in_limit_length_waits_and_reserves_little(
        limit in 1u32..4096,
        size_fraction in 0.0f64..1.0,
        command in any_command(),
        body_prefix in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let size = ((f64::from(limit) * size_fraction) as u32).clamp(1, limit);
        let limits = Limits { max_packet_bytes: limit, ..Limits::default() };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(Magic::Req.bytes());
        buf.extend_from_slice(&command.code().to_be_bytes());
        buf.extend_from_slice(&size.to_be_bytes());
        let body_len = body_prefix.len().min(size as usize - 1);
        buf.extend_from_slice(&body_prefix[..body_len]);
        let snapshot = buf.clone();
        let capacity = buf.capacity();
        prop_assert_eq!(decode(&mut buf, &limits), Ok(None));
        prop_assert_eq!(&buf, &snapshot);
        let bound = (2 * capacity).max(HEADER_BYTES + size as usize);
        prop_assert!(buf.capacity() <= bound, "capacity {} > {}", buf.capacity(), bound);
    }
}
