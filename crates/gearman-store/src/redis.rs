//! `-q redis`: one hash per job under `<prefix>-<key>` (decimal key), with the fields
//! `function`, `unique`, `priority`, `data` and `when`. Binary-safe, unlike gearmand's
//! `<prefix>-<function>-<unique>` keys, which lose NULs and `-` in names.
//!
//! A batch is one MULTI/EXEC. Replay walks the keys with SCAN (never KEYS, which blocks
//! the server) and sorts by key. Durability is Redis's own: a job survives a Redis
//! restart only with `appendonly yes` (and power loss only with `appendfsync always`).
//!
//! Keys gearmand wrote under the same prefix (`<prefix>-<function>-<unique>`, a hash
//! with `data` and `priority`, or a plain string holding the data) are converted to our
//! layout when the store opens, one MULTI/EXEC per job, with keys after the largest one
//! found; as in gearmand, the function is the part before the first `-`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::sync::Mutex;

use crate::backoff::Backoff;
use crate::{JobRecord, QueueStore, StoreError, StoreOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A command that takes longer is treated as a lost connection.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys per SCAN step and per pipelined HGETALL/DEL.
const PAGE: usize = 1000;

/// The Redis store.
pub struct RedisStore {
    client: Client,
    prefix: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
}

impl RedisStore {
    /// Connects to `host:port` (authenticating with `password` if given), converts any
    /// gearmand-written keys under `prefix`. Failure is `Fatal`.
    pub async fn open(
        host: &str,
        port: u16,
        password: Option<&str>,
        prefix: &str,
    ) -> Result<RedisStore, StoreError> {
        let fatal =
            |e: redis::RedisError| StoreError::Fatal(format!("redis: cannot connect to {host}:{port}: {e}"));
        let mut settings = RedisConnectionInfo::default();
        if let Some(pw) = password.filter(|p| !p.is_empty()) {
            settings = settings.set_password(pw);
        }
        let info = ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .map_err(fatal)?
            .set_redis_settings(settings);
        let client = Client::open(info).map_err(fatal)?;
        let store = RedisStore { client, prefix: prefix.to_owned(), state: Mutex::default() };
        let mut conn = store.connect().await.map_err(|e| StoreError::Fatal(e.to_string()))?;
        // Fail at start, as the SQL backends do, rather than at the first job.
        let _: () = redis::cmd("PING").query_async(&mut conn).await.map_err(fatal)?;
        store.state.lock().await.conn = Some(conn);
        store.convert_gearmand_keys().await?;
        Ok(store)
    }

    /// Opens the store from gearmand's `--redis-*` options.
    pub async fn open_options(options: &StoreOptions) -> Result<RedisStore, StoreError> {
        RedisStore::open(
            &options.redis_server,
            options.redis_port,
            options.redis_password.as_deref(),
            &options.redis_prefix,
        )
        .await
    }

    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: cannot connect: {e}")))
    }

    /// A connection handle (cheap to clone; commands on it are pipelined), reconnecting
    /// first, paced by the backoff, if the last one was lost.
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        state.backoff.wait().await;
        match self.connect().await {
            Ok(conn) => {
                state.backoff.succeeded();
                state.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                state.backoff.failed();
                Err(e)
            }
        }
    }

    /// Maps an error; one that lost the connection drops it so the next call reconnects.
    async fn failed(&self, e: redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
            self.state.lock().await.conn = None;
        }
        StoreError::Unavailable(format!("redis: {e}"))
    }

    fn key(&self, key: u64) -> Vec<u8> {
        format!("{}-{key}", self.prefix).into_bytes()
    }

    /// Every key under `<prefix>-`, found with SCAN (a key may come back twice).
    async fn scan(&self, conn: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, redis::RedisError> {
        let pattern = format!("{}-*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, page): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(conn)
                .await?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Our job key for a Redis key, if it is one of ours (`<prefix>-<digits>`).
    fn our_key(&self, redis_key: &[u8]) -> Option<u64> {
        let digits = redis_key.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b"-")?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// Rewrites keys gearmand wrote (`<prefix>-<function>-<unique>`) in our layout.
    async fn convert_gearmand_keys(&self) -> Result<(), StoreError> {
        let fatal = |e: redis::RedisError| StoreError::Fatal(format!("redis: cannot read the queue: {e}"));
        let mut conn = self.conn().await?;
        let keys = self.scan(&mut conn).await.map_err(fatal)?;
        let mut next = keys.iter().filter_map(|k| self.our_key(k)).max().map_or(1, |k| k.saturating_add(1));
        let theirs: Vec<&Vec<u8>> = keys.iter().filter(|k| self.our_key(k).is_none()).collect();
        let mut converted = 0usize;
        for old in theirs {
            let Some((function, unique)) = old
                .strip_prefix(self.prefix.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"-"))
                .and_then(|rest| {
                    let dash = rest.iter().position(|&b| b == b'-')?;
                    Some((rest.get(..dash)?, rest.get(dash + 1..)?))
                })
            else {
                continue;
            };
            let kind: String = redis::cmd("TYPE").arg(old).query_async(&mut conn).await.map_err(fatal)?;
            let (data, priority) = match kind.as_str() {
                "hash" => {
                    let h: HashMap<Vec<u8>, Vec<u8>> =
                        redis::cmd("HGETALL").arg(old).query_async(&mut conn).await.map_err(fatal)?;
                    let priority = h.get(&b"priority"[..]).and_then(|p| parse_int(p)).unwrap_or(1);
                    (h.get(&b"data"[..]).cloned().unwrap_or_default(), priority)
                }
                "string" => {
                    let data: Vec<u8> =
                        redis::cmd("GET").arg(old).query_async(&mut conn).await.map_err(fatal)?;
                    (data, 1)
                }
                _ => continue,
            };
            let job = JobRecord {
                key: next,
                function: Bytes::copy_from_slice(function),
                unique: Bytes::copy_from_slice(unique),
                priority: crate::priority_from_stored(priority, "redis", next),
                data: Bytes::from(data),
                when: 0,
            };
            let mut pipe = redis::pipe();
            pipe.atomic();
            self.push_add(&mut pipe, &job);
            pipe.cmd("DEL").arg(old).ignore();
            let _: () = pipe.query_async(&mut conn).await.map_err(fatal)?;
            next = next.saturating_add(1);
            converted += 1;
        }
        if converted > 0 {
            tracing::info!(converted, prefix = %self.prefix, "redis: converted gearmand's queue keys to keyed hashes");
        }
        Ok(())
    }

    fn push_add(&self, pipe: &mut redis::Pipeline, job: &JobRecord) {
        let key = self.key(job.key);
        // DEL first so a re-added key holds exactly this record.
        pipe.cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("function")
            .arg(&job.function[..])
            .arg("unique")
            .arg(&job.unique[..])
            .arg("priority")
            .arg(job.priority.as_i64())
            .arg("data")
            .arg(&job.data[..])
            .arg("when")
            .arg(job.when)
            .ignore();
    }
}

#[async_trait::async_trait]
impl QueueStore for RedisStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for job in jobs {
            self.push_add(&mut pipe, job);
        }
        let mut conn = self.conn().await?;
        let result: Result<(), _> = pipe.query_async(&mut conn).await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for part in keys.chunks(PAGE) {
            let names: Vec<Vec<u8>> = part.iter().map(|&k| self.key(k)).collect();
            pipe.cmd("DEL").arg(names).ignore();
        }
        let mut conn = self.conn().await?;
        let result: Result<(), _> = pipe.query_async(&mut conn).await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let keys = match self.scan(&mut conn).await {
            Ok(keys) => keys,
            Err(e) => return Err(self.failed(e).await),
        };
        let ours: BTreeMap<u64, Vec<u8>> =
            keys.into_iter().filter_map(|k| Some((self.our_key(&k)?, k))).collect();
        let ours: Vec<(u64, Vec<u8>)> = ours.into_iter().collect();
        let mut jobs = Vec::with_capacity(ours.len());
        for page in ours.chunks(PAGE) {
            let mut pipe = redis::pipe();
            // Per-command results: a key that is not a hash is skipped, not fatal.
            pipe.ignore_errors();
            for (_, name) in page {
                pipe.cmd("HGETALL").arg(name);
            }
            let result: Result<Vec<redis::RedisResult<HashMap<Vec<u8>, Vec<u8>>>>, _> =
                pipe.query_async(&mut conn).await;
            let hashes = match result {
                Ok(h) => h,
                Err(e) => return Err(self.failed(e).await),
            };
            for ((key, _), hash) in page.iter().zip(hashes) {
                match hash.map_err(|e| e.to_string()).and_then(|h| decode(*key, h)) {
                    Ok(Some(job)) => jobs.push(job),
                    // Removed between SCAN and HGETALL.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(key, error = %e, "redis: skipping a queue entry that cannot be decoded")
                    }
                }
            }
        }
        Ok(jobs)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// A job from its hash; `None` for an empty hash (the key is gone).
fn decode(key: u64, mut h: HashMap<Vec<u8>, Vec<u8>>) -> Result<Option<JobRecord>, String> {
    if h.is_empty() {
        return Ok(None);
    }
    let mut take = |field: &[u8]| h.remove(field);
    let function = take(b"function").ok_or("no function field")?;
    let priority = take(b"priority").and_then(|p| parse_int(&p)).unwrap_or(1);
    Ok(Some(JobRecord {
        key,
        function: Bytes::from(function),
        unique: take(b"unique").map(Bytes::from).unwrap_or_default(),
        priority: crate::priority_from_stored(priority, "redis", key),
        data: take(b"data").map(Bytes::from).unwrap_or_default(),
        when: take(b"when").and_then(|w| parse_int(&w)).unwrap_or(0),
    }))
}

fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// Escapes glob characters so the prefix matches itself in SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Priority;

    #[test]
    fn glob_and_decode() {
        assert_eq!(glob_escape("a*b[1]"), "a\\*b\\[1\\]");
        let mut h = HashMap::new();
        assert_eq!(decode(1, h.clone()), Ok(None));
        h.insert(b"data".to_vec(), b"x".to_vec());
        assert!(decode(1, h.clone()).is_err());
        h.insert(b"function".to_vec(), b"f".to_vec());
        h.insert(b"priority".to_vec(), b"9".to_vec());
        let job = decode(7, h).unwrap().unwrap();
        assert_eq!((job.key, job.priority, job.when), (7, Priority::Normal, 0));
    }
}
