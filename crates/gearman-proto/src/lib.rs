//! The Gearman wire format, and nothing else: no sockets, no tokio.
//!
//! Bytes go in through [`decode`], which yields [`Frame`]s (a binary [`Packet`] or one
//! admin text line); [`encode`] turns a [`Packet`] back into bytes. "Not enough bytes yet"
//! is an ordinary `Ok(None)`, so callers can feed any chunking of a stream.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic, clippy::arithmetic_side_effects)]

mod command;
mod decode;
mod encode;
mod error;
mod packet;
mod priority;
mod result_head;

pub use command::{ArgLayout, Command, Sender};
pub use decode::{
    decode, pending_packet_len, Frame, Limits, DEFAULT_MAX_ADMIN_LINE_BYTES, DEFAULT_MAX_PACKET_BYTES,
};
pub use encode::{encode, encode_parts, encode_prefix, encoded_len};
pub use error::ProtoError;
pub use packet::{Magic, Packet, HEADER_BYTES};
pub use priority::Priority;
pub use result_head::{cut_result_data, request_head, result_head, RequestHead, ResultHead};
