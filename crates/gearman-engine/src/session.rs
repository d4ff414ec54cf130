//! Per-connection state: worker abilities and sleep flags, client options, and the
//! jobs the connection holds or waits on.

use bytes::Bytes;

use std::cmp::Reverse;
use std::collections::BTreeSet;

use gearman_proto::Command;

use crate::engine::HashMap;
use crate::function::FunctionId;
use crate::job::JobId;

/// Default `SET_CLIENT_ID` value shown by the `workers` admin command.
pub(crate) const DEFAULT_CLIENT_ID: &[u8] = b"-";

/// Longest client id kept; longer ids are truncated, as gearmand does.
pub(crate) const MAX_CLIENT_ID_BYTES: usize = 127;

/// One registered function of a worker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ability {
    pub(crate) function: FunctionId,
    /// CAN_DO_TIMEOUT in milliseconds; 0 = none.
    pub(crate) timeout_ms: u32,
}

/// One connection as the engine sees it.
#[derive(Debug)]
pub(crate) struct Session {
    /// Label shown first in `workers` lines (the socket fd in gearmand).
    pub(crate) label: i64,
    pub(crate) ip: String,
    pub(crate) client_id: Bytes,
    /// Most recently registered first.
    pub(crate) abilities: Vec<Ability>,
    /// The same functions by id: how this connection prefers each (higher first: the
    /// order of `abilities`) and its CAN_DO_TIMEOUT, so that a worker registered for
    /// thousands of functions is served without walking `abilities`.
    pub(crate) ranks: HashMap<FunctionId, Rank>,
    /// Registered for more than `Engine::wide_after` functions at some point: it
    /// sleeps in `Engine::wide_sleepers` and is served from `ready_ranked`.
    pub(crate) wide: bool,
    /// For a wide worker, its functions that have queued jobs, best first, kept up to
    /// date by the engine as functions gain or lose queued jobs.
    pub(crate) ready_ranked: BTreeSet<(Reverse<i64>, FunctionId)>,
    /// Source of ranks for new registrations (counts up).
    next_rank_up: i64,
    /// Source of ranks for functions sent to the back by `--round-robin` (counts down).
    next_rank_down: i64,
    pub(crate) exceptions: bool,
    /// Sent PRE_SLEEP and has not grabbed since.
    pub(crate) sleeping: bool,
    /// Already woken with a NOOP since it last went to sleep (or, held, picked to
    /// be answered with a job).
    pub(crate) noop_sent: bool,
    /// Sent a GRAB_JOB (of this kind) that is being held, unanswered, until a job
    /// comes or the hold ends (see `Engine::hold_grab`); filed as a sleeper meanwhile.
    pub(crate) held_grab: Option<Command>,
    /// Changes each time the connection goes to sleep (engine-wide counter), so a
    /// function's sleeper entries from an earlier sleep are recognised as stale.
    pub(crate) sleep_gen: u64,
    /// Jobs assigned to this connection as a worker: (job, seq).
    pub(crate) running: Vec<(JobId, u64)>,
    /// Jobs this connection listens to as a foreground client: (job, seq).
    pub(crate) listening: Vec<(JobId, u64)>,
    /// Entries of `listening` still live (the rest are stale: see `Engine::unlisten`).
    pub(crate) listening_live: usize,
    /// Order of connection, for stable admin listings.
    pub(crate) created: u64,
}

impl Session {
    pub(crate) fn new(label: i64, ip: String, exceptions: bool, created: u64) -> Session {
        Session {
            label,
            ip,
            client_id: Bytes::from_static(DEFAULT_CLIENT_ID),
            abilities: Vec::new(),
            ranks: HashMap::default(),
            wide: false,
            ready_ranked: BTreeSet::new(),
            next_rank_up: 0,
            next_rank_down: -1,
            exceptions,
            sleeping: false,
            noop_sent: false,
            held_grab: None,
            sleep_gen: 0,
            running: Vec::new(),
            listening: Vec::new(),
            listening_live: 0,
            created,
        }
    }

    /// The CAN_DO_TIMEOUT for `function` on this connection (the latest CAN_DO wins).
    /// Ends a held GRAB_JOB, if there is one: returns its kind, the connection awake.
    pub(crate) fn take_held_grab(&mut self) -> Option<Command> {
        let kind = self.held_grab.take()?;
        self.sleeping = false;
        self.noop_sent = false;
        Some(kind)
    }

    /// Whether the GRAB_JOB held under sleep `generation` is still unanswered.
    pub(crate) fn holds(&self, generation: u64) -> bool {
        self.held_grab.is_some() && self.sleep_gen == generation
    }

    pub(crate) fn timeout_for(&self, function: FunctionId) -> u32 {
        self.ranks.get(&function).map_or(0, |r| r.timeout_ms)
    }

    /// Whether this connection registered `function`.
    pub(crate) fn can(&self, function: FunctionId) -> bool {
        self.ranks.contains_key(&function)
    }

    /// Registers `function` in front of the others; `ready`: it has queued jobs.
    pub(crate) fn register(&mut self, function: FunctionId, timeout_ms: u32, ready: bool) {
        self.abilities.insert(0, Ability { function, timeout_ms });
        self.next_rank_up += 1;
        let rank = self.next_rank_up;
        let old = self.ranks.insert(function, Rank { rank, timeout_ms });
        if self.wide {
            if let Some(old) = old {
                self.ready_ranked.remove(&(Reverse(old.rank), function));
            }
            if ready {
                self.ready_ranked.insert((Reverse(rank), function));
            }
        }
    }

    /// Makes this a wide worker; returns its functions (once each). `ready` tells
    /// which have queued jobs.
    pub(crate) fn widen(&mut self, ready: impl Fn(FunctionId) -> bool) -> Vec<FunctionId> {
        self.wide = true;
        self.ready_ranked = self
            .ranks
            .iter()
            .filter(|(&fid, _)| ready(fid))
            .map(|(&fid, r)| (Reverse(r.rank), fid))
            .collect();
        self.ranks.keys().copied().collect()
    }

    /// A function of this wide worker gained (`true`) or lost its queued jobs.
    pub(crate) fn set_ready(&mut self, function: FunctionId, ready: bool) {
        let Some(r) = self.ranks.get(&function).filter(|_| self.wide) else { return };
        let entry = (Reverse(r.rank), function);
        if ready {
            self.ready_ranked.insert(entry);
        } else {
            self.ready_ranked.remove(&entry);
        }
    }

    /// A wide worker's best function with queued jobs.
    pub(crate) fn best_ready(&self) -> Option<FunctionId> {
        self.ready_ranked.first().map(|&(_, fid)| fid)
    }

    /// Unregisters every function `matches` selects, returning them.
    pub(crate) fn unregister(&mut self, matches: impl Fn(FunctionId) -> bool) -> Vec<FunctionId> {
        let mut dropped = Vec::new();
        self.abilities.retain(|a| {
            let m = matches(a.function);
            if m {
                dropped.push(a.function);
            }
            !m
        });
        for &fid in &dropped {
            if let Some(r) = self.ranks.remove(&fid) {
                self.ready_ranked.remove(&(Reverse(r.rank), fid));
            }
        }
        dropped
    }

    /// `--round-robin`: `function` just gave a job, so it goes behind all others.
    /// Every entry of it moves (a function registered twice is listed twice), so the
    /// list order and the ranks agree; gearmand moves only the one entry.
    pub(crate) fn send_to_back(&mut self, function: FunctionId) {
        let before = self.abilities.len();
        let mut moved: Vec<Ability> = Vec::new();
        self.abilities.retain(|a| {
            let m = a.function == function;
            if m {
                moved.push(*a);
            }
            !m
        });
        self.abilities.extend(moved);
        debug_assert_eq!(before, self.abilities.len());
        if let Some(r) = self.ranks.get_mut(&function) {
            let old = std::mem::replace(&mut r.rank, self.next_rank_down);
            self.next_rank_down -= 1;
            if self.ready_ranked.remove(&(Reverse(old), function)) {
                self.ready_ranked.insert((Reverse(r.rank), function));
            }
        }
    }
}

/// How a connection ranks one of its functions when several have work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rank {
    /// Higher is served first: the latest CAN_DO ranks highest, and `--round-robin`
    /// moves a function that just gave a job below all others.
    pub(crate) rank: i64,
    /// CAN_DO_TIMEOUT in milliseconds; 0 = none.
    pub(crate) timeout_ms: u32,
}
