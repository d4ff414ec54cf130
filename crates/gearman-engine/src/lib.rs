//! The Gearman job engine: every job, function and connection session, and the rules
//! that move jobs between them.
//!
//! The engine is synchronous and does no I/O. The server feeds it decoded packets and
//! admin lines with the current time, and the engine writes what must be sent (or
//! closed) into an [`Outbox`]. That keeps the whole protocol testable without sockets
//! and lets the server decide how bytes reach peers.

mod admin;
mod chunked_deque;
mod config;
mod engine;
mod function;
mod handle;
mod job;
mod job_index;
mod outbox;
mod paged_slab;
mod ready;
mod seq_index;
mod session;
mod stats;
mod steady_map;
mod steady_table;
mod store;
mod submit;
mod work;

#[cfg(test)]
mod tests;

pub use config::EngineConfig;
pub use engine::{Engine, PeerInfo};
pub use gearman_proto::Priority;
pub use outbox::{Outbox, RecordingOutbox, Sent};
pub use stats::{FunctionGauges, Histogram, Stats, WorkerEntry, JOB_TIME_BOUNDS_MS, MAX_BUCKETS};
pub use store::StoredJob;

/// Identifies one connection for the engine's lifetime (slab key; reused after close).
pub type ConnId = usize;

/// Milliseconds since the Unix epoch: the engine's only notion of time.
pub type NowMs = i64;
