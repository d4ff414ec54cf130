//! Persistent queues for background jobs: the `QueueStore` trait, the record it stores,
//! and one backend per database gearmand 1.1.20 supports (`-q libsqlite3|postgres|mysql|redis|libmemcached`;
//! the memcached one is not durable: see [`memcached`]).
//!
//! Rows are keyed by job identity (`JobRecord::key`, allocated by the server), never by
//! (unique, function) as gearmand does, so background jobs with an empty unique for the
//! same function are all kept. Every backend passes [`testkit::conformance`].
//!
//! Bad data read back from a database never panics. Decoding is lenient where gearmand's
//! own rows need it (NULL data, unique or `when` read as empty / 0; an unknown priority
//! is read as `Normal` with a warning). A row that cannot be decoded at all (a Redis hash
//! under one of our keys without a function, say) is skipped with a `tracing` warning and
//! left in place, so nothing is destroyed.

use std::sync::Arc;

use bytes::Bytes;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis", feature = "memcached"))]
mod backoff;
#[cfg(feature = "memcached")]
pub mod memcached;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod testkit;

pub use gearman_proto::Priority;

/// Reads a stored priority leniently: unknown numbers become `Normal`, with a warning.
#[allow(dead_code)] // unused when every backend is compiled out
pub(crate) fn priority_from_stored(n: i64, backend: &str, key: u64) -> Priority {
    Priority::from_i64(n).unwrap_or_else(|| {
        tracing::warn!(backend, key, priority = n, "stored job has an unknown priority; using normal");
        Priority::Normal
    })
}

/// One background job as it is persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// Job identity, allocated by the server (max key seen at replay + 1, counting up).
    /// Must be at most `i64::MAX` (SQL backends store it signed).
    pub key: u64,
    /// Function name (bytes, not necessarily UTF-8).
    pub function: Bytes,
    /// Unique id given by the client; may be empty.
    pub unique: Bytes,
    /// Queue priority.
    pub priority: Priority,
    /// The job's payload; may be empty.
    pub data: Bytes,
    /// Epoch seconds when the job may run; 0 = run now.
    pub when: i64,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (connection lost, I/O error, busy):
    /// retrying later may succeed. The next call reconnects.
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
    /// The store cannot be used at all (cannot open, bad options, unknown table layout).
    #[error("queue store error: {0}")]
    Fatal(String),
    /// A record this backend cannot store (a key above `i64::MAX`, say); a caller bug.
    #[error("invalid job record: {0}")]
    InvalidRecord(String),
}

impl StoreError {
    /// True when the operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The same failure, as a store that cannot be used at all (at start-up).
    pub fn into_fatal(self) -> StoreError {
        match self {
            StoreError::Unavailable(m) | StoreError::InvalidRecord(m) => StoreError::Fatal(m),
            fatal => fatal,
        }
    }
}

/// A persistent queue. Used as `Arc<dyn QueueStore>`; every method may be called from
/// any task, concurrently.
#[async_trait::async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Stores a batch in ONE transaction; returns only when the batch would survive
    /// kill -9 (and, with `fsync` on, power loss). Adding a key that is already stored
    /// replaces that record, so retrying a batch after `Unavailable` is safe.
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError>;
    /// Removes a batch of jobs by key in one transaction (missing keys are not an error).
    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError>;
    /// Every stored job, in submission (key) order.
    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Short name for logs/metrics ("sqlite", "postgres", ...).
    fn name(&self) -> &'static str;
}

/// gearmand's queue options (`-q` and the plugin options), plus ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// `-q, --queue-type`: `builtin`/`none`, `libsqlite3`, `postgres`, `mysql`, `redis`,
    /// `libmemcached` (compared case-insensitively).
    pub queue_type: String,
    /// `--libsqlite3-db`: the database file (required for `libsqlite3`).
    pub libsqlite3_db: Option<String>,
    /// `--libsqlite3-table` (`gearman_queue`).
    pub libsqlite3_table: String,
    /// `--libpq-conninfo`: libpq-style `key=value` string or `postgresql://` URL; the
    /// libpq environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) fill gaps.
    pub libpq_conninfo: String,
    /// `--libpq-table` (`queue`).
    pub libpq_table: String,
    /// `--mysql-host` (`localhost`).
    pub mysql_host: String,
    /// `--mysql-port` (3306).
    pub mysql_port: u16,
    /// `--mysql-user`.
    pub mysql_user: Option<String>,
    /// `--mysql-password`.
    pub mysql_password: Option<String>,
    /// `--mysql-db`.
    pub mysql_db: Option<String>,
    /// `--mysql-table` (`gearman_queue`).
    pub mysql_table: String,
    /// `--redis-server` (`127.0.0.1`).
    pub redis_server: String,
    /// `--redis-port` (6379).
    pub redis_port: u16,
    /// `--redis-password`.
    pub redis_password: Option<String>,
    /// `--redis-prefix` (`_gear_`).
    pub redis_prefix: String,
    /// `--libmemcached-servers`: `host[:port]` (one server; required for `libmemcached`).
    pub libmemcached_servers: Option<String>,
    /// `--libmemcached-prefix` (`gear_`).
    pub libmemcached_prefix: String,
    /// Ours: make SQLite commits survive power loss (`synchronous=FULL`) rather than only a
    /// process crash (`synchronous=NORMAL` in WAL mode). Other backends follow their
    /// server's own durability settings.
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_type: "builtin".into(),
            libsqlite3_db: None,
            libsqlite3_table: "gearman_queue".into(),
            libpq_conninfo: String::new(),
            libpq_table: "queue".into(),
            mysql_host: "localhost".into(),
            mysql_port: 3306,
            mysql_user: None,
            mysql_password: None,
            mysql_db: None,
            mysql_table: "gearman_queue".into(),
            redis_server: "127.0.0.1".into(),
            redis_port: 6379,
            redis_password: None,
            redis_prefix: "_gear_".into(),
            libmemcached_servers: None,
            libmemcached_prefix: "gear_".into(),
            fsync: false,
        }
    }
}

/// Opens the backend named by `options.queue_type` (gearmand's `-q`, case-insensitive).
/// `builtin` and `none` mean no persistence: `Ok(None)`. An unknown name, a backend left
/// out at build time, or a store that cannot be opened is `Fatal`.
pub async fn open(options: &StoreOptions) -> Result<Option<Arc<dyn QueueStore>>, StoreError> {
    let kind = options.queue_type.to_ascii_lowercase();
    let opened: Result<Arc<dyn QueueStore>, StoreError> = match kind.as_str() {
        "builtin" | "none" | "" => return Ok(None),
        #[cfg(feature = "sqlite")]
        "libsqlite3" => sqlite::SqliteStore::open_options(options).await.map(|s| Arc::new(s) as _),
        #[cfg(feature = "postgres")]
        "postgres" => postgres::PostgresStore::open_options(options).await.map(|s| Arc::new(s) as _),
        #[cfg(feature = "mysql")]
        "mysql" => mysql::MysqlStore::open_options(options).await.map(|s| Arc::new(s) as _),
        #[cfg(feature = "redis")]
        "redis" => redis::RedisStore::open_options(options).await.map(|s| Arc::new(s) as _),
        #[cfg(feature = "memcached")]
        "libmemcached" => memcached::MemcachedStore::open_options(options).await.map(|s| Arc::new(s) as _),
        // Reached for a backend whose feature is off.
        #[allow(unreachable_patterns)]
        "libsqlite3" | "postgres" | "mysql" | "redis" | "libmemcached" => Err(StoreError::Fatal(format!(
            "queue type {} is not supported by this build",
            options.queue_type
        ))),
        _ => Err(StoreError::Fatal(format!("Error while initializing the queue : {}", options.queue_type))),
    };
    opened.map(Some)
}

/// Checks a key fits the signed 64-bit columns of the SQL backends.
#[allow(dead_code)] // unused when every SQL backend is compiled out
pub(crate) fn key_to_i64(key: u64) -> Result<i64, StoreError> {
    i64::try_from(key).map_err(|_| StoreError::InvalidRecord(format!("job key {key} exceeds i64::MAX")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_numbers_match_gearmand() {
        assert_eq!(Priority::High.as_i64(), 0);
        assert_eq!(Priority::from_i64(2), Some(Priority::Low));
        assert_eq!(Priority::from_i64(3), None);
        assert_eq!(crate::priority_from_stored(-1, "t", 1), Priority::Normal);
    }

    #[test]
    fn open_is_send() {
        fn is_send<T: Send>(_: T) {}
        is_send(open(&StoreOptions::default()));
    }

    #[tokio::test]
    async fn builtin_is_no_store_and_unknown_is_fatal() {
        let mut o = StoreOptions { queue_type: "BuiltIn".into(), ..Default::default() };
        assert!(open(&o).await.unwrap().is_none());
        o.queue_type = "bogus".into();
        let e = open(&o).await.err().unwrap();
        assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("bogus")), "{e}");
        // Without --libmemcached-servers (or without the feature) libmemcached cannot open.
        o.queue_type = "libmemcached".into();
        assert!(matches!(open(&o).await, Err(StoreError::Fatal(_))));
    }
}
