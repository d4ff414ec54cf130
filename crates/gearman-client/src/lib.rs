//! An async (tokio) Gearman client, worker and admin client.
//!
//! * [`Client`] submits foreground, background and scheduled (epoch) jobs at three
//!   priorities, follows them as a stream of [`JobEvent`]s or just awaits the result, and
//!   asks for job status. Any number of jobs share one connection per server.
//! * [`Worker`] registers functions with async handlers and runs up to N jobs at a time,
//!   sleeping with `PRE_SLEEP`/`NOOP` when idle.
//! * [`AdminClient`] speaks the text admin protocol (`status`, `workers`, `show jobs`, ...).
//!
//! Clients and workers take a list of servers, so no single server is a point of failure:
//! a worker serves every server and reconnects with backoff to those that go away; a
//! client spreads jobs over the servers (hashing the unique key when there is one, so
//! coalescing still works) and fails over to the next server when one is down.
//!
//! ```no_run
//! use gearman_client::{Client, Job, JobError, JobRequest, Worker};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = Worker::builder(["127.0.0.1:4730"])
//!     .function("reverse", |job: Job| async move {
//!         Ok::<_, JobError>(job.data().iter().rev().copied().collect::<Vec<u8>>())
//!     })
//!     .spawn()?;
//!
//! let client = Client::new(["127.0.0.1:4730"])?;
//! let answer = client.run(JobRequest::new("reverse", "Hello World!")).await?;
//! assert_eq!(answer.as_ref(), b"!dlroW olleH");
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
mod client;
mod conn;
mod error;
mod util;
mod worker;

pub use admin::{AdminClient, FunctionStatus, JobInfo, MaxQueue, PriorityStatus, WorkerInfo};
pub use bytes::Bytes;
pub use client::{
    Client, ClientOptions, JobEvent, JobHandle, JobRequest, JobStatus, JobStream, Priority, UniqueStatus,
};
pub use error::{ClientError, JobError, WorkerError};
pub use worker::{Handler, HandlerFuture, Job, Worker, WorkerBuilder, WorkerOptions};
