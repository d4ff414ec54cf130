//! The one lock: the engine plus the table that routes its output to connections.
//!
//! The engine is synchronous and never waits on I/O, so a plain mutex held for the
//! length of one read batch is cheaper than an actor's channel hop per request: the
//! connection task that read the bytes runs the engine itself and writes replies
//! straight into the target connections' buffers.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gearman_engine::{ConnId, Engine, Outbox, StoredJob};
use gearman_proto::Command;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::outbound::Outbound;
use crate::pipe::Pipe;

/// Engine and routes, always locked together.
pub(crate) struct Core {
    pub(crate) engine: Engine,
    /// Indexed by `ConnId` (the engine's slab keys are small and dense).
    pub(crate) routes: Vec<Option<Arc<Outbound>>>,
    /// Store work the engine asked for, handed to the store task after the lock.
    pub(crate) store_ops: Vec<StoreOp>,
}

/// One request for the persistent store.
#[derive(Debug)]
pub(crate) enum StoreOp {
    /// Save a background job, then report back with `Engine::persisted`.
    Add(StoredJob),
    /// Forget a job.
    Remove(u64),
}

/// State shared by every task of one server.
pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    /// Wakes the timer task when a deadline earlier than the one it sleeps to appears.
    pub(crate) timer_wake: Notify,
    /// The deadline the timer task sleeps until (ms), `i64::MAX` for none.
    pub(crate) timer_due: AtomicI64,
    /// Where store work goes (none without a persistent queue).
    pub(crate) store_tx: Option<tokio::sync::mpsc::UnboundedSender<Vec<StoreOp>>>,
    /// The store task's counters, for the monitor port.
    pub(crate) store_stats: Mutex<crate::monitor::StoreStats>,
    /// Bytes of results nobody listened to that connections dropped unread.
    pub(crate) dropped_result_bytes: AtomicU64,
    /// Bytes of results passed from worker to client through pipes, unread.
    pub(crate) forwarded_result_bytes: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        engine: Engine,
        store_tx: Option<tokio::sync::mpsc::UnboundedSender<Vec<StoreOp>>>,
    ) -> Shared {
        Shared {
            core: Mutex::new(Core { engine, routes: Vec::new(), store_ops: Vec::new() }),
            timer_wake: Notify::new(),
            timer_due: AtomicI64::new(i64::MAX),
            store_tx,
            store_stats: Mutex::new(crate::monitor::StoreStats::default()),
            dropped_result_bytes: AtomicU64::new(0),
            forwarded_result_bytes: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the engine with an outbox that routes to connections, then writes
    /// what it produced (waking a writer only where the socket was full) and, if
    /// needed, wakes the timer task.
    pub(crate) fn with_engine<R>(&self, f: impl FnOnce(&mut Engine, &mut Router<'_>) -> R) -> R {
        self.with_engine_forwarding(None, f)
    }

    /// [`Shared::with_engine`], with result data waiting in a pipe for the packet
    /// the engine sends next to the forward's client with its command. If the
    /// engine sends none (the client left, the job timed out), the data is dropped.
    pub(crate) fn with_engine_forwarding<R>(
        &self,
        forward: Option<Forward>,
        f: impl FnOnce(&mut Engine, &mut Router<'_>) -> R,
    ) -> R {
        let mut touched = Vec::new();
        let forwarding = forward.as_ref().map_or(0, |f| f.pipe.len() as u64);
        let (result, next, ops, unsent) = {
            let mut core = self.core.lock();
            let Core { engine, routes, store_ops } = &mut *core;
            let mut router = Router { routes, touched: &mut touched, store_ops, forward };
            let r = f(engine, &mut router);
            let unsent = router.forward.take();
            (r, engine.next_deadline(), std::mem::take(store_ops), unsent)
        };
        // Only when there was a forward: a shared counter touched on every call
        // would bounce its cache line between the runtime's threads.
        if forwarding > 0 {
            let counter = match unsent {
                Some(_) => &self.dropped_result_bytes,
                None => &self.forwarded_result_bytes,
            };
            counter.fetch_add(forwarding, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            if let Some(tx) = &self.store_tx {
                // The store task runs until the server stops; a send after that is moot.
                let _ = tx.send(ops);
            }
        }
        for out in touched {
            out.flush_or_wake();
        }
        if let Some(due) = next {
            if due < self.timer_due.load(Ordering::Relaxed) {
                self.timer_wake.notify_one();
            }
        }
        result
    }

    /// Registers a connection's outbound buffer under its engine id.
    pub(crate) fn set_route(routes: &mut Vec<Option<Arc<Outbound>>>, conn: ConnId, out: Arc<Outbound>) {
        if routes.len() <= conn {
            routes.resize(conn + 1, None);
        }
        if let Some(slot) = routes.get_mut(conn) {
            *slot = Some(out);
        }
    }
}

/// Result data in a pipe, to follow the data of the next packet with `command`
/// that the engine sends `to` (see [`crate::pipe`]).
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) to: ConnId,
    pub(crate) command: Command,
    pub(crate) pipe: Pipe,
}

/// The [`Outbox`] the server gives the engine.
pub(crate) struct Router<'a> {
    pub(crate) routes: &'a mut Vec<Option<Arc<Outbound>>>,
    touched: &'a mut Vec<Arc<Outbound>>,
    store_ops: &'a mut Vec<StoreOp>,
    forward: Option<Forward>,
}

impl Router<'_> {
    /// Whether output for `conn` may come out of a pipe: it has a socket.
    pub(crate) fn takes_pipes(&self, conn: ConnId) -> bool {
        self.routes.get(conn).and_then(Option::as_ref).is_some_and(|o| o.has_socket())
    }

    fn route(&mut self, conn: ConnId) -> Option<&Arc<Outbound>> {
        let out = self.routes.get(conn)?.as_ref()?;
        // Usually the same few connections: a linear check beats hashing here.
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, out)) {
            self.touched.push(out.clone());
        }
        Some(out)
    }
}

impl Outbox for Router<'_> {
    fn packet(&mut self, conn: ConnId, command: Command, args: &[&[u8]]) {
        if let Some(out) = self.route(conn) {
            out.packet(command, args);
        }
    }

    fn packet_data(&mut self, conn: ConnId, command: Command, head: &[&[u8]], data: &Bytes) {
        if let Some(fwd) = self.forward.take_if(|f| f.to == conn && f.command == command) {
            if let Some(out) = self.route(conn) {
                out.packet_data_then(command, head, data, fwd.pipe);
            }
            return;
        }
        if let Some(out) = self.route(conn) {
            out.packet_data(command, head, data);
        }
    }

    fn text(&mut self, conn: ConnId, text: &[u8]) {
        if let Some(out) = self.route(conn) {
            out.text(text);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(out) = self.route(conn) {
            out.close();
        }
    }

    fn hold(&mut self, conn: ConnId, hold: u64) {
        if let Some(out) = self.routes.get(conn).and_then(Option::as_ref) {
            out.hold(hold);
        }
    }

    fn fill(&mut self, conn: ConnId, hold: u64, command: Command, args: &[&[u8]]) {
        if let Some(out) = self.route(conn) {
            out.fill(hold, command, args);
        }
    }

    fn persist(&mut self, job: StoredJob) {
        self.store_ops.push(StoreOp::Add(job));
    }

    fn forget(&mut self, key: u64) {
        self.store_ops.push(StoreOp::Remove(key));
    }
}

/// Wall-clock milliseconds since the Unix epoch (the engine's time base).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
