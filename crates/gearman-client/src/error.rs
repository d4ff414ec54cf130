//! Error types of the client, the worker and the admin client.

use std::fmt;

use bytes::Bytes;

/// Everything a [`crate::Client`] or [`crate::AdminClient`] call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an `ERROR` packet.
    #[error("server error {code}: {text}")]
    Server {
        /// The error code, for example `QUEUE_ERROR` (libgearman's name without `GEARMAN_`).
        code: String,
        /// The human-readable text that came with it.
        text: String,
    },
    /// An admin command was answered with an `ERR` line.
    #[error("admin error {code}: {text}")]
    Admin {
        /// The first word after `ERR`, for example `UNKNOWN_JOB`.
        code: String,
        /// The rest of the line (may be empty).
        text: String,
    },
    /// The connection closed (or failed) before the answer arrived.
    #[error("connection to {addr} lost")]
    ConnectionLost {
        /// The server the connection was to.
        addr: String,
    },
    /// No configured server could be reached.
    #[error("no server available: {last}")]
    NoServerAvailable {
        /// The last error seen while trying the servers.
        last: String,
    },
    /// The call did not finish within its timeout.
    #[error("timed out")]
    Timeout,
    /// The worker reported failure (`WORK_FAIL`), or the server gave up on the job.
    #[error("job failed")]
    JobFailed,
    /// The worker reported an exception (`WORK_EXCEPTION`, needs the exceptions option).
    #[error("job raised an exception: {}", String::from_utf8_lossy(.0))]
    Exception(Bytes),
    /// The server sent something this library cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An argument cannot be sent (too long, contains a forbidden byte, no servers).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether the error means "this server is gone" (so another server may be tried).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, ClientError::ConnectionLost { .. } | ClientError::NoServerAvailable { .. })
    }
}

/// How a job handler tells the worker that the job did not succeed.
///
/// `Fail` becomes `WORK_FAIL`; `Exception` becomes `WORK_EXCEPTION` with its data. Strings
/// and I/O errors convert into `Exception`, so `?` works inside handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Plain failure, sent as `WORK_FAIL`.
    Fail,
    /// Failure with a payload, sent as `WORK_EXCEPTION`.
    Exception(Bytes),
}

impl JobError {
    /// An exception carrying `data`.
    pub fn exception(data: impl Into<Bytes>) -> JobError {
        JobError::Exception(data.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Fail => f.write_str("job failed"),
            JobError::Exception(d) => write!(f, "job exception: {}", String::from_utf8_lossy(d)),
        }
    }
}

impl std::error::Error for JobError {}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError::Exception(Bytes::from(s))
    }
}

impl From<&str> for JobError {
    fn from(s: &str) -> Self {
        JobError::Exception(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        JobError::from(e.to_string())
    }
}

/// Errors a [`crate::Job`] reports when it cannot send to its server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// The connection the job came from is gone; the server will requeue the job.
    #[error("connection to the job's server lost")]
    ConnectionLost,
    /// An argument cannot be sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
