//! The generic binary frame: magic, command and a body split into arguments.

use bytes::Bytes;

use crate::{Command, ProtoError};

/// Size of the fixed packet header: magic, type, body length.
pub const HEADER_BYTES: usize = 12;

/// Largest argument count of any command (SUBMIT_JOB_SCHED).
const MAX_ARGS: usize = 8;

/// The 4-byte magic that opens a binary packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `\0REQ`: from a client or worker.
    Req,
    /// `\0RES`: from a server.
    Res,
}

impl Magic {
    /// The wire bytes.
    pub fn bytes(self) -> &'static [u8; 4] {
        match self {
            Magic::Req => b"\0REQ",
            Magic::Res => b"\0RES",
        }
    }

    /// The magic for wire bytes, if they are one.
    pub fn from_bytes(b: &[u8; 4]) -> Option<Magic> {
        match b {
            b"\0REQ" => Some(Magic::Req),
            b"\0RES" => Some(Magic::Res),
            _ => None,
        }
    }
}

/// One binary packet. The body is kept whole (one allocation shared with the read
/// buffer) and arguments are ranges into it, so decoding copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// Request or response magic.
    pub magic: Magic,
    /// Packet type.
    pub command: Command,
    body: Bytes,
    /// `(start, end)` of each argument within `body`.
    bounds: [(u32, u32); MAX_ARGS],
    argc: u8,
}

impl Packet {
    /// Builds a packet from its arguments, joined with NULs as the layout requires.
    /// Fails if the count does not match the command's layout.
    pub fn new(magic: Magic, command: Command, args: &[&[u8]]) -> Result<Packet, ProtoError> {
        let expected = command.layout().argc;
        if args.len() != expected {
            return Err(ProtoError::WrongArgCount { command, expected, got: args.len() });
        }
        let mut body = Vec::with_capacity(crate::encode::body_len(args));
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                body.push(0);
            }
            body.extend_from_slice(a);
        }
        Packet::from_body(magic, command, Bytes::from(body))
    }

    /// Splits a body by the command's layout: the first `argc - 1` arguments end in a
    /// NUL, the last is the rest of the body. Zero-argument commands ignore the body.
    /// Fails when NUL-terminated arguments are missing.
    pub fn from_body(magic: Magic, command: Command, body: Bytes) -> Result<Packet, ProtoError> {
        let layout = command.layout();
        let mut bounds = [(0u32, 0u32); MAX_ARGS];
        if layout.argc == 0 {
            return Ok(Packet { magic, command, body, bounds, argc: 0 });
        }
        let needed = layout.argc.saturating_sub(1);
        let mut start = 0usize;
        let mut found = 0usize;
        for slot in bounds.iter_mut().take(needed) {
            let rest = body.get(start..).unwrap_or_default();
            match rest.iter().position(|&b| b == 0) {
                Some(pos) => {
                    let end = start.saturating_add(pos);
                    *slot = (to_u32(start), to_u32(end));
                    start = end.saturating_add(1);
                    found = found.saturating_add(1);
                }
                None => {
                    return Err(ProtoError::MissingArgument { command, expected: needed, found });
                }
            }
        }
        if let Some(slot) = bounds.get_mut(needed) {
            *slot = (to_u32(start), to_u32(body.len()));
        }
        Ok(Packet { magic, command, body, bounds, argc: layout.argc as u8 })
    }

    /// A packet whose body is kept but not split (no arguments), for packets that
    /// are only ever rejected.
    pub fn unsplit(magic: Magic, command: Command, body: Bytes) -> Packet {
        Packet { magic, command, body, bounds: [(0, 0); MAX_ARGS], argc: 0 }
    }

    /// Number of arguments (the command's layout count, 0 for zero-argument commands).
    pub fn argc(&self) -> usize {
        usize::from(self.argc)
    }

    /// Argument `i` as a slice; empty when out of range.
    pub fn arg(&self, i: usize) -> &[u8] {
        match self.range(i) {
            Some((s, e)) => self.body.get(s..e).unwrap_or_default(),
            None => &[],
        }
    }

    /// Argument `i` as shared bytes (no copy); empty when out of range.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        match self.range(i) {
            Some((s, e)) if e <= self.body.len() && s <= e => self.body.slice(s..e),
            _ => Bytes::new(),
        }
    }

    /// Iterates over the arguments in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.argc()).map(move |i| self.arg(i))
    }

    /// The whole body as received (for zero-argument commands too).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn range(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.argc() {
            return None;
        }
        self.bounds.get(i).map(|&(s, e)| (s as usize, e as usize))
    }
}

fn to_u32(n: usize) -> u32 {
    // Bodies are capped far below 4 GiB by the decoder's limit and by the 32-bit
    // length field, so this never saturates in practice.
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_tuple(self.command.name());
        if self.magic == Magic::Res {
            list.field(&"RES");
        }
        for a in self.args() {
            list.field(&bytes::Bytes::copy_from_slice(a));
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_argument_count() {
        assert_eq!(
            Packet::new(Magic::Req, Command::SubmitJob, &[b"f", b"u"]),
            Err(ProtoError::WrongArgCount { command: Command::SubmitJob, expected: 3, got: 2 })
        );
        assert_eq!(
            Packet::new(Magic::Req, Command::GrabJob, &[b"x"]),
            Err(ProtoError::WrongArgCount { command: Command::GrabJob, expected: 0, got: 1 })
        );
    }

    #[test]
    fn new_joins_args_with_single_nuls() {
        let p = Packet::new(Magic::Req, Command::SubmitJob, &[b"fn", b"", b"da\0ta"]).expect("valid layout");
        assert_eq!(p.body().as_ref(), b"fn\0\0da\0ta");
        assert_eq!(p.argc(), 3);
        assert_eq!(p.arg(0), b"fn");
        assert_eq!(p.arg(1), b"");
        assert_eq!(p.arg(2), b"da\0ta");
        assert_eq!(p.arg_bytes(2).as_ref(), b"da\0ta");
    }

    #[test]
    fn out_of_range_args_are_empty() {
        let p = Packet::new(Magic::Res, Command::JobCreated, &[b"H:x:1"]).expect("valid layout");
        assert_eq!(p.arg(0), b"H:x:1");
        assert_eq!(p.arg(1), b"");
        assert!(p.arg_bytes(7).is_empty());
        assert!(p.arg_bytes(usize::MAX).is_empty());
    }

    #[test]
    fn last_non_data_arg_keeps_extra_nuls() {
        // WORK_FAIL's handle is the whole body, so a trailing NUL stays in it (quirk Q2).
        let p = Packet::from_body(Magic::Req, Command::WorkFail, Bytes::from_static(b"H:x:1\0"))
            .expect("one-argument body");
        assert_eq!(p.arg(0), b"H:x:1\0");
    }

    #[test]
    fn unsplit_keeps_the_body_but_has_no_args() {
        let p = Packet::unsplit(Magic::Req, Command::JobAssign, Bytes::from_static(b"ab"));
        assert_eq!(p.argc(), 0);
        assert_eq!(p.body().as_ref(), b"ab");
        assert_eq!(p.arg(0), b"");
    }

    #[test]
    fn debug_names_the_command_and_marks_responses() {
        let p = Packet::new(Magic::Res, Command::EchoRes, &[b"hi"]).expect("valid layout");
        let text = format!("{p:?}");
        assert!(text.starts_with("ECHO_RES("), "{text}");
        assert!(text.contains("RES"), "{text}");
        assert!(text.contains("hi"), "{text}");
    }
}
