//! `-q postgres`: PostgreSQL through tokio-postgres, one connection, reconnected on demand.
//!
//! Layout: `(job_key BIGINT PRIMARY KEY, unique_key BYTEA, function_name BYTEA,
//! priority INTEGER, data BYTEA, when_to_run BIGINT)`, all NOT NULL. Names are BYTEA
//! because gearman names are bytes; `when_to_run` is 64-bit (gearmand's is 32-bit).
//! A batch is one transaction of `INSERT .. SELECT FROM UNNEST(arrays)` statements (one
//! per ≤1,000 rows), so a large batch costs a few round trips, not one per row.
//!
//! gearmand's table (`unique_key VARCHAR(64), function_name VARCHAR(255), priority,
//! data BYTEA[, when_to_run]`) is migrated at open in one transaction, keys 1..n in
//! physical (ctid) order, which is insertion order for a table gearmand only appended to.
//!
//! The table name is folded to lower case when it is a plain identifier, as gearmand's
//! unquoted SQL is, so `--libpq-table` finds the table gearmand created.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::timeout;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::backoff::Backoff;
use crate::{key_to_i64, JobRecord, QueueStore, StoreError, StoreOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A statement that takes longer is treated as a lost connection.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows per INSERT statement, and payload bytes per statement (a Bind message is capped at 1 GiB).
const CHUNK_ROWS: usize = 1000;
const CHUNK_BYTES: usize = 32 << 20;

/// The PostgreSQL store.
pub struct PostgresStore {
    config: Config,
    table: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("table", &self.table).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    backoff: Backoff,
}

/// A connection with its prepared statements.
struct Live {
    client: Client,
    insert: Statement,
    delete: Statement,
    select: Statement,
}

impl PostgresStore {
    /// Connects with a libpq-style conninfo (`host=.. port=.. dbname=.. user=..` or a URL),
    /// creates or migrates `table`. Failure is `Fatal`.
    pub async fn open(conninfo: &str, table: &str) -> Result<PostgresStore, StoreError> {
        let config = config_from(conninfo)?;
        let table = fold_identifier(table);
        let store = PostgresStore { config, table, state: Mutex::default() };
        let client = store.connect().await.map_err(StoreError::into_fatal)?;
        store.prepare_table(&client).await?;
        let live = store.prepare(client).await.map_err(|e| StoreError::Fatal(pg("prepare", &e)))?;
        store.state.lock().await.live = Some(live);
        Ok(store)
    }

    /// Opens the store from gearmand's `--libpq-conninfo` and `--libpq-table` options.
    pub async fn open_options(options: &StoreOptions) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(&options.libpq_conninfo, &options.libpq_table).await
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable(pg("cannot connect", &e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres: queue connection closed");
            }
        });
        Ok(client)
    }

    async fn prepare(&self, client: Client) -> Result<Live, tokio_postgres::Error> {
        let q = quote(&self.table);
        let insert = client
            .prepare(&format!(
                "INSERT INTO {q} (job_key, unique_key, function_name, priority, data, when_to_run) \
                 SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::bytea[], $4::int4[], $5::bytea[], $6::int8[]) \
                 ON CONFLICT (job_key) DO UPDATE SET unique_key = EXCLUDED.unique_key, \
                 function_name = EXCLUDED.function_name, priority = EXCLUDED.priority, \
                 data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run"
            ))
            .await?;
        let delete = client.prepare(&format!("DELETE FROM {q} WHERE job_key = ANY($1::int8[])")).await?;
        let select = client
            .prepare(&format!(
                "SELECT job_key, unique_key, function_name, priority, data, when_to_run FROM {q} ORDER BY job_key"
            ))
            .await?;
        Ok(Live { client, insert, delete, select })
    }

    /// Creates the table, accepts ours, or migrates gearmand's.
    async fn prepare_table(&self, client: &Client) -> Result<(), StoreError> {
        let fatal = |e: tokio_postgres::Error| StoreError::Fatal(pg("cannot prepare the queue table", &e));
        let table = &self.table;
        let q = quote(table);
        let columns: Vec<String> = client
            .query(
                "SELECT lower(column_name::text) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[table],
            )
            .await
            .map_err(fatal)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let has = |c: &str| columns.iter().any(|x| x == c);
        let gearmand = ["unique_key", "function_name", "priority", "data"];
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {q} (job_key BIGINT PRIMARY KEY, unique_key BYTEA NOT NULL, \
             function_name BYTEA NOT NULL, priority INTEGER NOT NULL, data BYTEA NOT NULL, \
             when_to_run BIGINT NOT NULL)"
        );
        if columns.is_empty() {
            client.batch_execute(&create).await.map_err(fatal)?;
        } else if has("job_key") {
            if let Some(missing) = gearmand.iter().chain(&["when_to_run"]).find(|c| !has(c)) {
                return Err(StoreError::Fatal(format!(
                    "postgres: table {table} has job_key but no {missing} column"
                )));
            }
        } else if gearmand.iter().all(|c| has(c)) {
            let old = quote(&format!("{table}__gearmand_migration"));
            let when = if has("when_to_run") { "coalesce(when_to_run, 0)" } else { "0" };
            let enc = "current_setting('server_encoding')::name";
            client
                .batch_execute(&format!(
                    "BEGIN;
                     DROP TABLE IF EXISTS {old};
                     ALTER TABLE {q} RENAME TO {old};
                     {create};
                     INSERT INTO {q} (job_key, unique_key, function_name, priority, data, when_to_run)
                         SELECT row_number() OVER (ORDER BY ctid),
                                convert_to(coalesce(unique_key::text, ''), {enc}),
                                convert_to(coalesce(function_name::text, ''), {enc}),
                                coalesce(priority, 1), coalesce(data, ''::bytea), {when}
                         FROM {old};
                     DROP TABLE {old};
                     COMMIT;"
                ))
                .await
                .map_err(fatal)?;
            tracing::info!(table, "postgres: migrated gearmand's queue table to keyed rows");
        } else {
            return Err(StoreError::Fatal(format!(
                "postgres: table {table} exists but is not a gearman queue (columns: {})",
                columns.join(", ")
            )));
        }
        Ok(())
    }

    /// Locks the connection, reconnecting first (paced by the backoff) if it was lost.
    async fn connected(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.state.lock().await;
        if state.live.is_none() {
            state.backoff.wait().await;
            let connected = match self.connect().await {
                Ok(client) => {
                    self.prepare(client).await.map_err(|e| StoreError::Unavailable(pg("prepare", &e)))
                }
                Err(e) => Err(e),
            };
            match connected {
                Ok(live) => {
                    state.backoff.succeeded();
                    state.live = Some(live);
                }
                Err(e) => {
                    state.backoff.failed();
                    return Err(e);
                }
            }
        }
        Ok(state)
    }
}

/// The live connection of a state `connected` returned.
fn live(state: &mut State) -> Result<&mut Live, StoreError> {
    state.live.as_mut().ok_or_else(|| StoreError::Unavailable("postgres: not connected".into()))
}

/// Maps the result of one operation run under `OP_TIMEOUT`. Any error drops the
/// connection, so the next call starts on a fresh one: a terminated backend reports its
/// FATAL error before the socket closes, and errors are too rare for a reconnect to matter.
fn finish<T>(
    state: &mut State,
    result: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            state.live = None;
            Err(StoreError::Unavailable(pg("query failed", &e)))
        }
        Err(_) => {
            state.live = None;
            Err(StoreError::Unavailable("postgres: query timed out; reconnecting".into()))
        }
    }
}

async fn insert_chunks(live: &mut Live, chunks: Vec<Vec<&JobRecord>>) -> Result<(), tokio_postgres::Error> {
    let tx = live.client.transaction().await?;
    for part in chunks {
        let keys: Vec<i64> = part.iter().map(|j| i64::try_from(j.key).unwrap_or(i64::MAX)).collect();
        let uniques: Vec<&[u8]> = part.iter().map(|j| &j.unique[..]).collect();
        let functions: Vec<&[u8]> = part.iter().map(|j| &j.function[..]).collect();
        let priorities: Vec<i32> = part.iter().map(|j| j.priority as i32).collect();
        let data: Vec<&[u8]> = part.iter().map(|j| &j.data[..]).collect();
        let whens: Vec<i64> = part.iter().map(|j| j.when).collect();
        tx.execute(&live.insert, &[&keys, &uniques, &functions, &priorities, &data, &whens]).await?;
    }
    tx.commit().await
}

#[async_trait::async_trait]
impl QueueStore for PostgresStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        for job in jobs {
            key_to_i64(job.key)?;
        }
        // ON CONFLICT cannot touch one row twice in a statement: keep the last of each key.
        let mut last = HashMap::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            last.insert(job.key, i);
        }
        let unique: Vec<&JobRecord> =
            jobs.iter().enumerate().filter(|(i, j)| last.get(&j.key) == Some(i)).map(|(_, j)| j).collect();
        let chunks = chunk(&unique);
        let mut state = self.connected().await?;
        let result = timeout(OP_TIMEOUT, insert_chunks(live(&mut state)?, chunks)).await;
        finish(&mut state, result)
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<i64> = keys.iter().filter_map(|&k| i64::try_from(k).ok()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut state = self.connected().await?;
        let l = live(&mut state)?;
        let result = timeout(OP_TIMEOUT, l.client.execute(&l.delete, &[&keys])).await;
        finish(&mut state, result).map(drop)
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut state = self.connected().await?;
        let l = live(&mut state)?;
        let result = timeout(OP_TIMEOUT, l.client.query(&l.select, &[])).await;
        let rows = finish(&mut state, result)?;
        drop(state);
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let decoded = (|| -> Result<JobRecord, tokio_postgres::Error> {
                let key: i64 = row.try_get(0)?;
                let key = u64::try_from(key).unwrap_or(0);
                let bytes = |i: usize| -> Result<Bytes, tokio_postgres::Error> {
                    Ok(row.try_get::<_, Option<Vec<u8>>>(i)?.map(Bytes::from).unwrap_or_default())
                };
                Ok(JobRecord {
                    key,
                    unique: bytes(1)?,
                    function: bytes(2)?,
                    priority: crate::priority_from_stored(
                        i64::from(row.try_get::<_, i32>(3)?),
                        "postgres",
                        key,
                    ),
                    data: bytes(4)?,
                    when: row.try_get(5)?,
                })
            })();
            match decoded {
                Ok(job) => jobs.push(job),
                Err(e) => tracing::warn!(error = %e, "postgres: skipping a queue row that cannot be decoded"),
            }
        }
        Ok(jobs)
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

/// Splits a batch into statements of at most `CHUNK_ROWS` rows and about `CHUNK_BYTES` of payload.
fn chunk<'a>(jobs: &[&'a JobRecord]) -> Vec<Vec<&'a JobRecord>> {
    let mut out = Vec::new();
    let mut current: Vec<&JobRecord> = Vec::new();
    let mut bytes = 0usize;
    for &job in jobs {
        let size = job.data.len() + job.unique.len() + job.function.len();
        if !current.is_empty() && (current.len() >= CHUNK_ROWS || bytes + size > CHUNK_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(job);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn pg(what: &str, e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgres: {what}: {} ({})", db.message(), db.code().code()),
        None => {
            // tokio-postgres keeps the reason ("Connection refused", a bad password)
            // in the source chain, not in its own message.
            let mut msg = format!("postgres: {what}: {e}");
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cause = c.source();
            }
            msg
        }
    }
}

/// Parses the conninfo and fills gaps from libpq's environment variables and defaults.
fn config_from(conninfo: &str) -> Result<Config, StoreError> {
    let mut config: Config = conninfo
        .parse()
        .map_err(|e| StoreError::Fatal(format!("postgres: bad --libpq-conninfo {conninfo:?}: {e}")))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(host) => {
                config.host(host);
            }
            // libpq's default is the Unix socket directory, when the server has one.
            None if std::path::Path::new("/var/run/postgresql/.s.PGSQL.5432").exists() => {
                config.host("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER").or_else(|| env("USER")).or_else(|| env("LOGNAME"));
        config.user(user.unwrap_or_else(|| "postgres".into()));
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(db);
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("gearmand");
    }
    Ok(config)
}

/// Folds a plain identifier to lower case, as PostgreSQL does with gearmand's unquoted name.
fn fold_identifier(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_fold_like_unquoted_sql() {
        assert_eq!(fold_identifier("Queue"), "queue");
        assert_eq!(fold_identifier("my-queue"), "my-queue");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn chunks_by_rows_and_bytes() {
        let small = crate::testkit::record(1, b"f", b"", b"x");
        let jobs: Vec<&JobRecord> = std::iter::repeat_n(&small, 2500).collect();
        let sizes: Vec<usize> = chunk(&jobs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let big = crate::testkit::record(2, b"f", b"", &vec![0; 20 << 20]);
        let jobs = vec![&big, &big, &big];
        assert_eq!(chunk(&jobs).len(), 3);
    }

    #[test]
    fn conninfo_parses() {
        let c = config_from("host=127.0.0.1 port=5432 dbname=test user=postgres").unwrap();
        assert_eq!(c.get_ports(), &[5432]);
        assert_eq!(c.get_user(), Some("postgres"));
        assert!(config_from("host='unterminated").is_err());
    }
}
