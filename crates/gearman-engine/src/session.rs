//! Per-connection state: worker abilities and sleep flags, client options, and the
//! jobs the connection holds or waits on.

use bytes::Bytes;

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
    pub(crate) exceptions: bool,
    /// Sent PRE_SLEEP and has not grabbed since.
    pub(crate) sleeping: bool,
    /// Already woken with a NOOP since it last went to sleep.
    pub(crate) noop_sent: bool,
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
            exceptions,
            sleeping: false,
            noop_sent: false,
            sleep_gen: 0,
            running: Vec::new(),
            listening: Vec::new(),
            listening_live: 0,
            created,
        }
    }

    /// The CAN_DO_TIMEOUT for `function` on this connection (first entry wins).
    pub(crate) fn timeout_for(&self, function: FunctionId) -> u32 {
        self.abilities.iter().find(|a| a.function == function).map_or(0, |a| a.timeout_ms)
    }
}
