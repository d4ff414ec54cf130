//! The binary's allocator, jemalloc, and when it gives freed memory back.
//!
//! jemalloc's own decay cannot be left to do this. Freed large blocks (read buffers,
//! 64 KiB job payloads) coalesce into one large dirty extent. jemalloc then purges
//! any coalesced extent past 8 MiB at once. And it will not split an extent more
//! than 64 times the request (`lg_extent_max_active_fit`), so the rest are never
//! reused either.
//! Every burst of large jobs therefore ran on freshly faulted, kernel-zeroed pages:
//! half the server's time at 64 KiB in `clear_page`, about 50,000 page faults per
//! 5,000 jobs against gearmand's 14,000, whose glibc heap simply keeps its pages.
//!
//! So automatic decay is off: freed pages stay dirty and are reused. The fit limit
//! is raised at build time (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`),
//! which also sets one arena for all threads: a buffer is often read on one tokio
//! thread and freed on another, and with an arena per thread the next burst, read
//! on the other thread, found none of the freed pages (measured: no slower with one
//! arena at -t 1 and 2; small allocations still go through per-thread caches).
//! A thread of our own purges everything dirty once allocation has been still for
//! [`QUIET`]. A burst that follows within a few seconds reuses warm pages. An idle
//! server still returns to near its idle size about [`QUIET`] after a drain.

use std::time::{Duration, Instant};

use tikv_jemalloc_ctl::{Access, AsName};

/// How long allocated bytes must stay put before dirty pages are purged: jemalloc's
/// own default decay time. Bursts up to that far apart reuse warm pages (at 5 s, a
/// burst of 1 KiB jobs that came 5-10 s after the last ran about 20% slower, on
/// freshly faulted pages), and an idle server still shrinks soon.
const QUIET: Duration = Duration::from_secs(10);

/// How often the purging thread looks at jemalloc's counters.
const TICK: Duration = Duration::from_millis(250);

/// A change in allocated bytes smaller than this does not count as activity.
const STEP_BYTES: usize = 1 << 20;

/// Resident bytes beyond allocated bytes worth a purge.
const SLACK_BYTES: usize = 8 << 20;

/// The values `.cargo/config.toml` builds jemalloc with; checked by a test.
#[cfg(test)]
const EXTENT_FIT: usize = 16;
#[cfg(test)]
const ARENAS: u32 = 1;

/// Turns jemalloc's decay off, unless settings were given in `_RJEM_MALLOC_CONF`
/// (then they are left alone, decay included, and nothing else here runs). Returns
/// whether [`spawn_purger`] should run.
pub(crate) fn tune() -> bool {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return false;
    }
    // Defaults for arenas created from now on, then the arenas that exist already.
    let _ = b"arenas.dirty_decay_ms\0".name().write(-1isize);
    let _ = b"arenas.muzzy_decay_ms\0".name().write(0isize);
    for_each_arena(|i| {
        set_arena_decay(i, "dirty_decay_ms", -1);
        set_arena_decay(i, "muzzy_decay_ms", 0);
    });
    true
}

/// Starts the thread that purges dirty pages when allocation is quiet. Called after
/// daemonizing: a fork keeps only the thread that forked.
pub(crate) fn spawn_purger() {
    let spawned = std::thread::Builder::new().name("gearmand-memory".into()).spawn(|| {
        let mut quiet = Quiet::new(Instant::now());
        loop {
            std::thread::sleep(TICK);
            let Some((allocated, resident)) = usage() else { return };
            if quiet.should_purge(Instant::now(), allocated, resident) {
                purge();
            }
        }
    });
    // Without the thread, freed memory is still reused; it is only not given back.
    drop(spawned);
}

/// jemalloc's allocated and resident bytes, refreshed.
fn usage() -> Option<(usize, usize)> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    let resident = tikv_jemalloc_ctl::stats::resident::read().ok()?;
    Some((allocated, resident))
}

/// Returns every arena's dirty pages to the system. The only safe way to do it
/// through mallctl: a decay time of 0 purges at once, then decay goes off again.
fn purge() {
    for_each_arena(|i| {
        set_arena_decay(i, "dirty_decay_ms", 0);
        set_arena_decay(i, "dirty_decay_ms", -1);
    });
}

/// Calls `f` with the index of every arena slot.
fn for_each_arena(mut f: impl FnMut(u32)) {
    let n: u32 = b"arenas.narenas\0".name().read().unwrap_or(0);
    (0..n).for_each(&mut f);
}

/// Sets arena `i`'s `dirty_decay_ms` or `muzzy_decay_ms` (-1: never; 0: at once).
/// An arena slot not in use refuses the write, which is ignored.
fn set_arena_decay(i: u32, which: &str, ms: isize) {
    let _ = format!("arena.{i}.{which}\0").as_bytes().name().write(ms);
}

/// The purge decision, apart from jemalloc so that it can be tested: purge once
/// allocated bytes have not moved by [`STEP_BYTES`] for [`QUIET`] and more than
/// [`SLACK_BYTES`] are resident beyond them; then wait another [`QUIET`].
#[derive(Debug)]
struct Quiet {
    allocated: usize,
    since: Instant,
}

impl Quiet {
    fn new(now: Instant) -> Self {
        Quiet { allocated: 0, since: now }
    }

    fn should_purge(&mut self, now: Instant, allocated: usize, resident: usize) -> bool {
        if allocated.abs_diff(self.allocated) >= STEP_BYTES {
            self.allocated = allocated;
            self.since = now;
            return false;
        }
        if now.duration_since(self.since) < QUIET || resident.saturating_sub(allocated) <= SLACK_BYTES {
            return false;
        }
        self.since = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn purges_only_after_allocation_has_been_still_for_a_while() {
        let t0 = Instant::now();
        let tick = |n: u32| t0 + TICK * n;
        let quiet_ticks = u32::try_from(QUIET.as_millis() / TICK.as_millis()).unwrap();
        let mut q = Quiet::new(t0);
        // A burst: allocation grows, nothing is purged however much is resident.
        assert!(!q.should_purge(tick(1), 300 * MIB, 310 * MIB));
        assert!(!q.should_purge(tick(2), 200 * MIB, 310 * MIB));
        // The queue drained: allocation fell, which is activity too.
        assert!(!q.should_purge(tick(3), 10 * MIB, 310 * MIB));
        // Small movements do not reset the clock.
        assert!(!q.should_purge(tick(4), 10 * MIB + 4096, 310 * MIB));
        assert!(!q.should_purge(tick(2 + quiet_ticks), 10 * MIB, 310 * MIB));
        assert!(q.should_purge(tick(3 + quiet_ticks), 10 * MIB, 310 * MIB));
        // Once purged, not again before another quiet period.
        assert!(!q.should_purge(tick(4 + quiet_ticks), 10 * MIB, 310 * MIB));
        assert!(q.should_purge(tick(3 + 2 * quiet_ticks), 10 * MIB, 310 * MIB));
    }

    #[test]
    fn nothing_worth_returning_is_not_purged() {
        let t0 = Instant::now();
        let mut q = Quiet::new(t0);
        assert!(!q.should_purge(t0, 100 * MIB, 100 * MIB));
        let later = t0 + Duration::from_secs(10);
        assert!(!q.should_purge(later, 100 * MIB, 100 * MIB + SLACK_BYTES));
        assert!(q.should_purge(later, 100 * MIB, 100 * MIB + SLACK_BYTES + 1));
    }

    #[test]
    fn jemalloc_was_built_with_the_settings_of_cargo_config() {
        let hint = "built without .cargo/config.toml's JEMALLOC_SYS_WITH_MALLOC_CONF?";
        let fit: usize = b"opt.lg_extent_max_active_fit\0".name().read().expect("mallctl");
        assert_eq!(fit, EXTENT_FIT, "{hint}");
        let arenas: u32 = b"opt.narenas\0".name().read().expect("mallctl");
        assert_eq!(arenas, ARENAS, "{hint}");
    }

    #[test]
    fn a_purge_returns_freed_large_blocks() {
        // Runs in this test binary's jemalloc, as the server's would.
        for_each_arena(|i| set_arena_decay(i, "dirty_decay_ms", -1));
        let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 256 * 1024]).collect();
        drop(std::hint::black_box(blocks));
        let (_, before) = usage().expect("stats");
        purge();
        let (_, after) = usage().expect("stats");
        assert!(after + 8 * MIB <= before, "resident {before} -> {after}");
    }
}
