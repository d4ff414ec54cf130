//! Why a byte stream could not be decoded.

use crate::Command;

/// A framing error. Every variant means the stream cannot be resynchronised, so the
/// connection must be closed; [`ProtoError::reply`] says whether gearmand-compatible
/// peers should first get an ERROR packet explaining why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A binary packet whose magic is neither `\0REQ` nor `\0RES`.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// Packet type 0 or above 42.
    #[error("unknown packet type {0}")]
    UnknownCommand(u32),
    /// The header declares a body larger than the configured maximum.
    #[error("packet body of {size} bytes exceeds the limit of {limit} bytes")]
    PacketTooLarge {
        /// Declared body length.
        size: u32,
        /// Configured maximum.
        limit: u32,
    },
    /// A NUL-terminated argument is missing from the body.
    #[error("{command:?} needs {expected} NUL-terminated arguments, found {found}")]
    MissingArgument {
        /// The command whose body was short.
        command: Command,
        /// NUL-terminated arguments the layout requires.
        expected: usize,
        /// NUL-terminated arguments present.
        found: usize,
    },
    /// An admin text line longer than the configured maximum (newline included).
    #[error("admin line longer than {limit} bytes")]
    AdminLineTooLong {
        /// Configured maximum.
        limit: usize,
    },
    /// Arguments given to [`crate::Packet::new`] do not fit the command's layout.
    #[error("{command:?} takes {expected} arguments, got {got}")]
    WrongArgCount {
        /// The command being built.
        command: Command,
        /// Arguments the layout requires.
        expected: usize,
        /// Arguments given.
        got: usize,
    },
}

impl ProtoError {
    /// The `(code, text)` of an ERROR packet to send before closing, or `None` where
    /// gearmand closes silently (bad magic, unknown type, over-long admin line).
    pub fn reply(&self) -> Option<(&'static str, String)> {
        match self {
            ProtoError::PacketTooLarge { .. } => Some(("ARGUMENT_TOO_LARGE", self.to_string())),
            ProtoError::MissingArgument { .. } => Some(("INVALID_PACKET", self.to_string())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_size_and_argument_errors_get_an_error_packet() {
        let too_large = ProtoError::PacketTooLarge { size: 10, limit: 5 };
        assert_eq!(too_large.reply().map(|(code, _)| code), Some("ARGUMENT_TOO_LARGE"));
        let missing = ProtoError::MissingArgument { command: Command::SubmitJob, expected: 2, found: 0 };
        assert_eq!(missing.reply().map(|(code, _)| code), Some("INVALID_PACKET"));
        assert_eq!(ProtoError::BadMagic(*b"\0ABC").reply(), None);
        assert_eq!(ProtoError::UnknownCommand(43).reply(), None);
        assert_eq!(ProtoError::AdminLineTooLong { limit: 8192 }.reply(), None);
    }
}
