//! Job payloads that carry their own job id, so every echo can be checked.
//!
//! A payload of `size` bytes is a fixed pseudo-random pattern (one per run) whose
//! first `min(8, size)` bytes are replaced by the job id in little-endian order.
//! Payloads of 8 bytes or more therefore name their job: a worker can tell which job
//! it was handed, and a client can tell whether the data it got back is its own.

use bytes::Bytes;

/// The payload pattern of one run.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// Payload length in bytes.
    len: usize,
    /// The pattern after the id bytes: the part every job's payload shares, sent
    /// from here as it is (see [`Payload::parts`]).
    tail: Bytes,
}

/// Bytes of the job id embedded at the front of a payload.
const ID_BYTES: usize = 8;

/// The id bytes at the front of one job's payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdBytes {
    bytes: [u8; ID_BYTES],
    len: usize,
}

impl std::ops::Deref for IdBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl Payload {
    /// A pattern of `size` bytes derived from `seed`.
    pub(crate) fn new(size: usize, seed: u64) -> Payload {
        // xorshift64*: any fixed, cheap, non-trivial byte pattern will do.
        let mut state = seed | 1;
        let pattern = (0..size)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect::<Vec<u8>>();
        let tail = Bytes::copy_from_slice(&pattern[size.min(ID_BYTES)..]);
        Payload { len: size, tail }
    }

    /// Payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether payloads are long enough to carry the whole job id.
    pub(crate) fn carries_id(&self) -> bool {
        self.len >= ID_BYTES
    }

    fn prefix_len(&self) -> usize {
        self.len.min(ID_BYTES)
    }

    /// The payload of job `id` in two parts, so that it is sent without being built:
    /// its id bytes, then the tail every job shares.
    pub(crate) fn parts(&self, id: u64) -> (IdBytes, &Bytes) {
        (IdBytes { bytes: id.to_le_bytes(), len: self.prefix_len() }, &self.tail)
    }

    /// Writes the payload of job `id` into `out` (cleared first).
    #[cfg(test)]
    pub(crate) fn fill(&self, id: u64, out: &mut Vec<u8>) {
        let (prefix, tail) = self.parts(id);
        out.clear();
        out.extend_from_slice(&prefix);
        out.extend_from_slice(tail);
    }

    /// Whether `data` is exactly the payload of job `id`.
    pub(crate) fn check(&self, id: u64, data: &[u8]) -> bool {
        let k = self.prefix_len();
        data.len() == self.len && data[..k] == id.to_le_bytes()[..k] && data[k..] == self.tail[..]
    }

    /// The job id a payload names, if payloads carry ids and `data` is well formed.
    pub(crate) fn id_of(&self, data: &[u8]) -> Option<u64> {
        if !self.carries_id() || data.len() != self.len {
            return None;
        }
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&data[..ID_BYTES]);
        let id = u64::from_le_bytes(id);
        self.check(id, data).then_some(id)
    }
}

/// Id of the first `--prefill` job: prefilled jobs are `PREFILL_BASE + k`, so their
/// payloads and unique keys never collide with the run's own jobs `0, 1, ...`.
pub(crate) const PREFILL_BASE: u64 = 1 << 48;

/// Checks that sorted `ids` are exactly `start..start + expected`, each once; the
/// error names the first duplicate or missing id.
fn check_sorted_range(ids: &[u64], start: u64, expected: u64) -> Result<(), String> {
    let mut want = start;
    for &id in ids {
        if id < want {
            return Err(format!("job {id} was handed to workers more than once"));
        }
        if id > want {
            return Err(format!("job {want} was never handed to a worker"));
        }
        want += 1;
    }
    if want - start != expected {
        return Err(format!("workers saw {} distinct jobs, {expected} were submitted", want - start));
    }
    Ok(())
}

/// Checks that `ids` are exactly the run's jobs `0..run` plus the prefilled jobs
/// `PREFILL_BASE..PREFILL_BASE + prefill`, each once, in any order. Sorts `ids` in
/// place; the error names the first duplicate or missing id.
pub(crate) fn check_run_and_prefill(ids: &mut [u64], run: u64, prefill: u64) -> Result<(), String> {
    ids.sort_unstable();
    let split = ids.partition_point(|&id| id < PREFILL_BASE);
    let (own, pre) = ids.split_at(split);
    check_sorted_range(own, 0, run)?;
    check_sorted_range(pre, PREFILL_BASE, prefill).map_err(|e| format!("prefilled jobs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_mismatches() {
        for size in [0usize, 3, 8, 100] {
            let p = Payload::new(size, 42);
            let mut buf = Vec::new();
            p.fill(7, &mut buf);
            assert_eq!(buf.len(), size);
            assert!(p.check(7, &buf));
            if size > 0 {
                assert!(!p.check(8, &buf), "size {size}: other id must not match");
                let mut bad = buf.clone();
                let last = bad.len() - 1;
                bad[last] ^= 0xff;
                assert!(!p.check(7, &bad), "size {size}: corrupted byte must not match");
            }
            assert!(!p.check(7, &[buf.as_slice(), b"x"].concat()));
            assert_eq!(p.id_of(&buf), if size >= 8 { Some(7) } else { None });
        }
    }

    fn check_exactly_once(ids: &mut [u64], expected: u64) -> Result<(), String> {
        check_run_and_prefill(ids, expected, 0)
    }

    #[test]
    fn exactly_once_detects_duplicates_and_gaps() {
        assert!(check_exactly_once(&mut [2, 0, 1], 3).is_ok());
        assert!(check_exactly_once(&mut [], 0).is_ok());
        let dup = check_exactly_once(&mut [0, 1, 1, 2], 3).unwrap_err();
        assert!(dup.contains("job 1"), "{dup}");
        let gap = check_exactly_once(&mut [0, 2], 3).unwrap_err();
        assert!(gap.contains("job 1 was never"), "{gap}");
        let short = check_exactly_once(&mut [0, 1], 3).unwrap_err();
        assert!(short.contains("2 distinct"), "{short}");
    }

    #[test]
    fn run_and_prefill_ranges_are_checked_apart() {
        let b = PREFILL_BASE;
        assert!(check_run_and_prefill(&mut [b + 1, 1, b, 0, b + 2], 2, 3).is_ok());
        assert!(check_run_and_prefill(&mut [b, b + 1], 0, 2).is_ok());
        assert!(check_run_and_prefill(&mut [1, 0], 2, 0).is_ok());
        assert!(check_run_and_prefill(&mut [], 0, 0).is_ok());
        let missing = check_run_and_prefill(&mut [0, 1, b, b + 2], 2, 3).unwrap_err();
        assert!(missing.contains("prefilled") && missing.contains(&format!("job {}", b + 1)), "{missing}");
        let dup = check_run_and_prefill(&mut [0, 0, b], 1, 1).unwrap_err();
        assert!(dup.contains("job 0") && !dup.contains("prefilled"), "{dup}");
        // A prefilled job may not stand in for a run's job, nor the other way round.
        assert!(check_run_and_prefill(&mut [0, b, b + 1], 2, 1).is_err());
        assert!(check_run_and_prefill(&mut [0, 1, b], 1, 2).is_err());
        // Payloads carry prefilled ids whole.
        let p = Payload::new(16, 9);
        let mut buf = Vec::new();
        p.fill(b + 5, &mut buf);
        assert_eq!(p.id_of(&buf), Some(b + 5));
    }
}
