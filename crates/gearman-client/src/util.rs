//! Small shared pieces: packet encoding, address handling, backoff, hashing.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gearman_proto::{encode_parts, Command, Magic};

/// Encodes one request packet.
pub(crate) fn req(command: Command, args: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    encode_parts(Magic::Req, command, args, &mut out);
    out.freeze()
}

/// Adds the default port 4730 to an address given without one.
pub(crate) fn normalize_addr(addr: &str) -> String {
    let a = addr.trim();
    // "[v6]:port", "host:port", bare v6 (several colons), bare host.
    if a.starts_with('[') {
        if a.contains("]:") {
            a.to_string()
        } else {
            format!("{a}:4730")
        }
    } else if a.matches(':').count() == 1 {
        a.to_string()
    } else if a.contains(':') {
        format!("[{a}]:4730")
    } else {
        format!("{a}:4730")
    }
}

/// FNV-1a: a stable hash, so every client process maps a unique key to the same server.
pub(crate) fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// C `atoi`-like parse: optional sign and leading digits, anything else gives 0.
pub(crate) fn parse_num(text: &[u8]) -> u64 {
    let mut n: u64 = 0;
    let mut it = text.iter().skip_while(|b| b.is_ascii_whitespace()).peekable();
    if let Some(&&b) = it.peek() {
        if b == b'+' {
            it.next();
        } else if b == b'-' {
            return 0;
        }
    }
    for &b in it {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    n
}

/// Exponential backoff between reconnect attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), current: min }
    }

    /// The next pause, doubling each time up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_default_port() {
        assert_eq!(normalize_addr("localhost"), "localhost:4730");
        assert_eq!(normalize_addr("127.0.0.1:1234"), "127.0.0.1:1234");
        assert_eq!(normalize_addr("::1"), "[::1]:4730");
        assert_eq!(normalize_addr("[::1]"), "[::1]:4730");
        assert_eq!(normalize_addr("[::1]:99"), "[::1]:99");
    }

    #[test]
    fn numbers_parse_like_atoi() {
        assert_eq!(parse_num(b"12"), 12);
        assert_eq!(parse_num(b"12abc"), 12);
        assert_eq!(parse_num(b"x"), 0);
        assert_eq!(parse_num(b"-3"), 0);
        assert_eq!(parse_num(b"99999999999999999999999999"), u64::MAX);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(35));
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(20));
        assert_eq!(b.next_delay(), Duration::from_millis(35));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }
}
