//! The store task: background jobs reach the persistent queue here, off the path
//! that serves connections, in batches (group commit): while one transaction is in
//! flight, new work piles up and goes into the next one.

use std::sync::Arc;
use std::time::Duration;

use gearman_engine::StoredJob;
use gearman_store::{JobRecord, QueueStore};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::core::{now_ms, Shared, StoreOp};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 4096;

/// Pause before retrying removals the store refused.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Converts between the engine's and the store's view of a job.
pub(crate) fn to_record(job: StoredJob) -> JobRecord {
    JobRecord {
        key: job.key,
        function: job.function,
        unique: job.unique,
        priority: job.priority,
        data: job.data,
        when: job.when,
    }
}

/// The engine's view of a stored record.
pub(crate) fn from_record(r: JobRecord) -> StoredJob {
    StoredJob {
        key: r.key,
        function: r.function,
        unique: r.unique,
        priority: r.priority,
        data: r.data,
        when: r.when,
    }
}

/// Runs until `stop` is cancelled, then writes what is still queued and returns.
pub(crate) async fn run(
    shared: Arc<Shared>,
    store: Arc<dyn QueueStore>,
    mut rx: UnboundedReceiver<Vec<StoreOp>>,
    stop: CancellationToken,
) {
    let mut adds: Vec<JobRecord> = Vec::new();
    // Removals that failed are kept and retried: a job that was done should not come
    // back at the next start if it can be helped.
    let mut removes: Vec<u64> = Vec::new();
    let mut stopping = false;
    loop {
        if adds.is_empty() && removes.is_empty() {
            if stopping {
                return;
            }
            tokio::select! {
                ops = rx.recv() => match ops {
                    Some(ops) => split(ops, &mut adds, &mut removes),
                    None => return,
                },
                _ = stop.cancelled() => stopping = true,
            }
        }
        // Take everything already waiting: that is the group in group commit.
        while adds.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ops) => split(ops, &mut adds, &mut removes),
                Err(_) => break,
            }
        }
        if !adds.is_empty() {
            let batch: Vec<JobRecord> = adds.drain(..adds.len().min(MAX_BATCH)).collect();
            let keys: Vec<u64> = batch.iter().map(|r| r.key).collect();
            let start = std::time::Instant::now();
            let result = store.add(&batch).await;
            shared.store_stats.lock().added(batch.len(), result.is_ok(), start);
            let result = result.map_err(|e| {
                tracing::error!("{} store: could not save {} job(s): {e}", store.name(), batch.len());
                "QUEUE_ERROR".to_string()
            });
            shared.with_engine(|engine, out| engine.persisted(&keys, result, now_ms(), out));
        }
        if !removes.is_empty() {
            let result = store.remove(&removes).await;
            shared.store_stats.lock().removed(removes.len(), result.is_ok());
            match result {
                Ok(()) => removes.clear(),
                Err(e) => {
                    tracing::warn!("{} store: could not remove {} job(s): {e}", store.name(), removes.len());
                    if stopping {
                        // They run again after the restart: at least once, never lost.
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

fn split(ops: Vec<StoreOp>, adds: &mut Vec<JobRecord>, removes: &mut Vec<u64>) {
    for op in ops {
        match op {
            StoreOp::Add(job) => adds.push(to_record(job)),
            StoreOp::Remove(key) => removes.push(key),
        }
    }
}
