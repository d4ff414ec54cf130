//! Job handles, `<prefix>:<seq>`, computed from the job's sequence number when sent
//! rather than stored: a queued job then holds no handle allocation, and the handle
//! index is keyed by the number instead of hashing and comparing the bytes.

/// Bytes kept inline; longer handles (a long `--job-handle-prefix`) go to the heap.
const INLINE_BYTES: usize = 96;

/// One job handle's bytes, built on the stack in the common case.
pub(crate) struct Handle {
    inline: [u8; INLINE_BYTES],
    len: usize,
    heap: Vec<u8>,
}

impl Handle {
    /// `prefix:seq`. Built by hand rather than with `write!`: this runs for every
    /// JOB_CREATED and JOB_ASSIGN, and the formatting machinery cost more than the
    /// rest of a background submit's engine work.
    pub(crate) fn new(prefix: &str, seq: u64) -> Handle {
        let mut digits = itoa::Buffer::new();
        let parts = [prefix.as_bytes(), b":", digits.format(seq).as_bytes()];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut h = Handle { inline: [0; INLINE_BYTES], len, heap: Vec::new() };
        if len > INLINE_BYTES {
            h.heap = parts.concat();
            return h;
        }
        let mut rest = &mut h.inline[..];
        for part in parts {
            let (head, tail) = rest.split_at_mut(part.len());
            head.copy_from_slice(part);
            rest = tail;
        }
        h
    }
}

impl std::ops::Deref for Handle {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }
}

/// The sequence number of `handle` if it is exactly `prefix:<seq>` as this engine
/// writes it (decimal, no sign, no leading zero), so a lookup by number finds the
/// same jobs a lookup by bytes would.
pub(crate) fn parse(prefix: &str, handle: &[u8]) -> Option<u64> {
    let rest = handle.strip_prefix(prefix.as_bytes())?.strip_prefix(b":")?;
    if rest.is_empty() || rest.len() > 20 || rest.first() == Some(&b'0') {
        return None;
    }
    rest.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_only_the_canonical_form_parses() {
        assert_eq!(&*Handle::new("H:host", 42), b"H:host:42");
        assert_eq!(parse("H:host", b"H:host:42"), Some(42));
        assert_eq!(parse("H:host", b"H:host:18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"H:host:042"[..],
            b"H:host:",
            b"H:host:4x",
            b"H:host:+4",
            b"H:host:18446744073709551616",
            b"H:other:42",
            b"H:host42",
            b"H:host:42\0",
        ] {
            assert_eq!(parse("H:host", bad), None, "{bad:?}");
        }
        // Around the inline limit: `prefix:` + 2 digits of 96 and 97 bytes.
        for n in [93, 94, 95] {
            let prefix = "p".repeat(n);
            let h = Handle::new(&prefix, 42);
            assert_eq!(&*h, format!("{prefix}:42").as_bytes());
            assert_eq!(parse(&prefix, &h), Some(42));
        }
        assert_eq!(&*Handle::new("H", u64::MAX), format!("H:{}", u64::MAX).as_bytes());
        assert_eq!(&*Handle::new("", 0), b":0");
        let long = "p".repeat(200);
        let h = Handle::new(&long, 7);
        assert_eq!(h.len(), 202);
        assert_eq!(parse(&long, &h), Some(7));
    }
}
