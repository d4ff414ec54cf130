//! `-q mysql`: MySQL or MariaDB through mysql_async, one connection, reconnected on demand.
//!
//! Layout (InnoDB, for transactions): `(job_key BIGINT PRIMARY KEY, unique_key LONGBLOB,
//! function_name LONGBLOB, priority INT, data LONGBLOB, when_to_run BIGINT)`, all NOT
//! NULL; names are binary because gearman names are bytes. A batch is one transaction of
//! multi-row `REPLACE` statements (≤500 rows and about 4 MiB each, under the default
//! `max_allowed_packet`).
//!
//! gearmand's table (`unique_key VARCHAR(64), function_name VARCHAR(255), priority INT,
//! data LONGBLOB[, when_to_run INT]`) is migrated at open: MySQL DDL is not transactional,
//! so the rows are copied into a new table, which then replaces the old one in one atomic
//! `RENAME TABLE`. A crash before the rename leaves gearmand's table as it was, and the
//! next open starts over; keys 1..n follow the table's natural (insertion) order.

use std::time::Duration;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, IsolationLevel, Opts, OptsBuilder, Row, TxOpts, Value};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::timeout;

use crate::backoff::Backoff;
use crate::{key_to_i64, JobRecord, QueueStore, StoreError, StoreOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A statement that takes longer is treated as a lost connection.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
const CHUNK_ROWS: usize = 500;
const CHUNK_BYTES: usize = 4 << 20;

/// The MySQL/MariaDB store.
pub struct MysqlStore {
    opts: Opts,
    table: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore").field("table", &self.table).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    backoff: Backoff,
}

impl MysqlStore {
    /// Connects and creates or migrates the table. Failure is `Fatal`.
    pub async fn open(opts: Opts, table: &str) -> Result<MysqlStore, StoreError> {
        let store = MysqlStore { opts, table: table.to_owned(), state: Mutex::default() };
        let mut conn = store.connect().await.map_err(StoreError::into_fatal)?;
        store.prepare_table(&mut conn).await?;
        store.state.lock().await.conn = Some(conn);
        Ok(store)
    }

    /// Opens the store from gearmand's `--mysql-*` options.
    pub async fn open_options(options: &StoreOptions) -> Result<MysqlStore, StoreError> {
        let user = options.mysql_user.clone().or_else(|| std::env::var("USER").ok());
        let opts = OptsBuilder::default()
            .ip_or_hostname(options.mysql_host.clone())
            .tcp_port(options.mysql_port)
            .user(user)
            .pass(options.mysql_password.clone())
            .db_name(options.mysql_db.clone());
        MysqlStore::open(opts.into(), &options.mysql_table).await
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match timeout(CONNECT_TIMEOUT, Conn::new(self.opts.clone())).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("mysql: cannot connect: {e}"))),
            Err(_) => Err(StoreError::Unavailable("mysql: cannot connect: timed out".into())),
        }
    }

    /// Creates the table, accepts ours, or migrates gearmand's.
    async fn prepare_table(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let fatal =
            |e: mysql_async::Error| StoreError::Fatal(format!("mysql: cannot prepare the queue table: {e}"));
        let table = &self.table;
        let q = quote(table);
        let columns: Vec<String> = conn
            .exec(
                "SELECT LOWER(COLUMN_NAME) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table.as_str(),),
            )
            .await
            .map_err(fatal)?;
        let has = |c: &str| columns.iter().any(|x| x == c);
        let gearmand = ["unique_key", "function_name", "priority", "data"];
        let create = |name: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (job_key BIGINT NOT NULL PRIMARY KEY, \
                 unique_key LONGBLOB NOT NULL, function_name LONGBLOB NOT NULL, priority INT NOT NULL, \
                 data LONGBLOB NOT NULL, when_to_run BIGINT NOT NULL) ENGINE=InnoDB"
            )
        };
        if columns.is_empty() {
            conn.query_drop(create(&q)).await.map_err(fatal)?;
        } else if has("job_key") {
            if let Some(missing) = gearmand.iter().chain(&["when_to_run"]).find(|c| !has(c)) {
                return Err(StoreError::Fatal(format!(
                    "mysql: table {table} has job_key but no {missing} column"
                )));
            }
        } else if gearmand.iter().all(|c| has(c)) {
            let new = quote(&format!("{table}__keyed_migration"));
            let old = quote(&format!("{table}__gearmand_old"));
            let when = if has("when_to_run") { "COALESCE(when_to_run, 0)" } else { "0" };
            for sql in [
                format!("DROP TABLE IF EXISTS {new}"),
                create(&new),
                format!(
                    "INSERT INTO {new} (job_key, unique_key, function_name, priority, data, when_to_run) \
                     SELECT ROW_NUMBER() OVER (), COALESCE(unique_key, ''), COALESCE(function_name, ''), \
                     COALESCE(priority, 1), COALESCE(data, ''), {when} FROM {q}"
                ),
                format!("RENAME TABLE {q} TO {old}, {new} TO {q}"),
                format!("DROP TABLE {old}"),
            ] {
                conn.query_drop(sql).await.map_err(fatal)?;
            }
            tracing::info!(table, "mysql: migrated gearmand's queue table to keyed rows");
        } else {
            return Err(StoreError::Fatal(format!(
                "mysql: table {table} exists but is not a gearman queue (columns: {})",
                columns.join(", ")
            )));
        }
        Ok(())
    }

    /// Locks the connection, reconnecting first (paced by the backoff) if it was lost.
    async fn connected(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.state.lock().await;
        if state.conn.is_none() {
            state.backoff.wait().await;
            match self.connect().await {
                Ok(conn) => {
                    state.backoff.succeeded();
                    state.conn = Some(conn);
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

fn conn(state: &mut State) -> Result<&mut Conn, StoreError> {
    state.conn.as_mut().ok_or_else(|| StoreError::Unavailable("mysql: not connected".into()))
}

/// Maps the result of one operation run under `OP_TIMEOUT`. Anything but an error the
/// server answered with (a lost connection, a protocol error, a timeout) drops the
/// connection, so the next call reconnects.
fn finish<T>(
    state: &mut State,
    result: Result<Result<T, mysql_async::Error>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if !matches!(e, mysql_async::Error::Server(_)) {
                state.conn = None;
            }
            Err(StoreError::Unavailable(format!("mysql: {e}")))
        }
        Err(_) => {
            state.conn = None;
            Err(StoreError::Unavailable("mysql: query timed out; reconnecting".into()))
        }
    }
}

async fn replace_chunks(conn: &mut Conn, table: &str, jobs: &[JobRecord]) -> Result<(), mysql_async::Error> {
    let mut opts = TxOpts::default();
    opts.with_isolation_level(IsolationLevel::ReadCommitted);
    let mut tx = conn.start_transaction(opts).await?;
    let q = quote(table);
    for part in chunk(jobs) {
        let rows = vec!["(?, ?, ?, ?, ?, ?)"; part.len()].join(", ");
        let sql =
            format!("REPLACE INTO {q} (job_key, unique_key, function_name, priority, data, when_to_run) VALUES {rows}");
        let mut params = Vec::with_capacity(part.len() * 6);
        for j in part {
            params.extend([
                Value::Int(i64::try_from(j.key).unwrap_or(i64::MAX)),
                Value::Bytes(j.unique.to_vec()),
                Value::Bytes(j.function.to_vec()),
                Value::Int(j.priority.as_i64()),
                Value::Bytes(j.data.to_vec()),
                Value::Int(j.when),
            ]);
        }
        tx.exec_drop(sql, params).await?;
    }
    tx.commit().await
}

async fn delete_chunks(conn: &mut Conn, table: &str, keys: &[i64]) -> Result<(), mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    for part in keys.chunks(1000) {
        let marks = vec!["?"; part.len()].join(", ");
        tx.exec_drop(format!("DELETE FROM {} WHERE job_key IN ({marks})", quote(table)), part.to_vec())
            .await?;
    }
    tx.commit().await
}

#[async_trait::async_trait]
impl QueueStore for MysqlStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        for job in jobs {
            key_to_i64(job.key)?;
        }
        let mut state = self.connected().await?;
        let result = timeout(OP_TIMEOUT, replace_chunks(conn(&mut state)?, &self.table, jobs)).await;
        finish(&mut state, result)
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<i64> = keys.iter().filter_map(|&k| i64::try_from(k).ok()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut state = self.connected().await?;
        let result = timeout(OP_TIMEOUT, delete_chunks(conn(&mut state)?, &self.table, &keys)).await;
        finish(&mut state, result)
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT job_key, unique_key, function_name, priority, data, when_to_run FROM {} ORDER BY job_key",
            quote(&self.table)
        );
        let mut state = self.connected().await?;
        let result = timeout(OP_TIMEOUT, conn(&mut state)?.exec::<Row, _, _>(sql, ())).await;
        let rows = finish(&mut state, result)?;
        drop(state);
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            match decode(row) {
                Ok(job) => jobs.push(job),
                Err(e) => tracing::warn!(error = %e, "mysql: skipping a queue row that cannot be decoded"),
            }
        }
        Ok(jobs)
    }

    fn name(&self) -> &'static str {
        "mysql"
    }
}

fn decode(mut row: Row) -> Result<JobRecord, String> {
    let key: i64 = take(&mut row, 0)?.ok_or("NULL job_key")?;
    let key = u64::try_from(key).map_err(|_| format!("negative job_key {key}"))?;
    let bytes = |row: &mut Row, i| take::<Vec<u8>>(row, i).map(|v| v.map(Bytes::from).unwrap_or_default());
    Ok(JobRecord {
        key,
        unique: bytes(&mut row, 1)?,
        function: bytes(&mut row, 2)?,
        priority: crate::priority_from_stored(take(&mut row, 3)?.unwrap_or(1), "mysql", key),
        data: bytes(&mut row, 4)?,
        when: take(&mut row, 5)?.unwrap_or(0),
    })
}

/// Takes column `i`, NULL as `None`.
fn take<T: mysql_async::prelude::FromValue>(row: &mut Row, i: usize) -> Result<Option<T>, String> {
    match row.take_opt::<Option<T>, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(format!("column {i}: {e}")),
        None => Err(format!("column {i} missing")),
    }
}

/// Splits a batch into statements of at most `CHUNK_ROWS` rows and about `CHUNK_BYTES` of payload.
fn chunk(jobs: &[JobRecord]) -> Vec<&[JobRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, job) in jobs.iter().enumerate() {
        let size = job.data.len() + job.unique.len() + job.function.len();
        if i > start && (i - start >= CHUNK_ROWS || bytes + size > CHUNK_BYTES) {
            out.extend(jobs.get(start..i));
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    out.extend(jobs.get(start..).filter(|rest| !rest.is_empty()));
    out
}

/// Quotes a MySQL identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_by_rows_and_bytes() {
        let small = crate::testkit::record(1, b"f", b"", b"x");
        let jobs = vec![small; 1100];
        let sizes: Vec<usize> = chunk(&jobs).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![500, 500, 100]);
        let big = crate::testkit::record(2, b"f", b"", &vec![0; 3 << 20]);
        assert_eq!(chunk(&[big.clone(), big.clone(), big]).len(), 3);
        assert!(chunk(&[]).is_empty());
        assert_eq!(quote("a`b"), "`a``b`");
    }
}
