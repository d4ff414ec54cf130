//! `-q libsqlite3`: SQLite through rusqlite (bundled, no system library), on one
//! dedicated thread so blocking I/O never runs on the async workers.
//!
//! Layout: gearmand's columns plus an integer key that is the rowid,
//! `(job_key INTEGER PRIMARY KEY, unique_key TEXT, function_name TEXT, priority INTEGER,
//! data BLOB, when_to_run INTEGER)`, with no (unique, function) constraint. Names are
//! stored as TEXT when they are UTF-8 (as gearmand stores them) and as BLOB otherwise.
//! Because the column names are gearmand's, gearmand 1.1.20 can still read and write
//! the table after a downgrade.
//!
//! A table with gearmand's own layout (with or without `when_to_run`) is migrated in one
//! transaction when the store opens: every row is kept, keys 1..n in rowid order.
//!
//! Durability: WAL mode; `synchronous=FULL` with `fsync` (a commit survives power loss),
//! `NORMAL` without (a commit survives kill -9: it is in the WAL file before COMMIT returns).
//! Consecutive `add` calls waiting for the thread are committed in one transaction.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use crate::{key_to_i64, JobRecord, Priority, QueueStore, StoreError, StoreOptions};

/// gearmand's busy timeout for the queue connection.
const BUSY_TIMEOUT: Duration = Duration::from_millis(6000);

/// Most `add` requests merged into one commit.
const MAX_GROUP: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Add(Vec<JobRecord>, Reply<()>),
    Remove(Vec<u64>, Reply<()>),
    Replay(Reply<Vec<JobRecord>>),
}

/// The SQLite store. Dropping it closes the database once pending requests are done.
#[derive(Debug)]
pub struct SqliteStore {
    requests: mpsc::Sender<Request>,
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and the table `table`, migrating gearmand's layout.
    pub async fn open(path: impl AsRef<Path>, table: &str, fsync: bool) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let table = table.to_owned();
        let (requests, inbox) = mpsc::channel();
        let (opened_tx, opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("gearman-sqlite".into())
            .spawn(move || match Db::open(&path, &table, fsync) {
                Ok(db) => {
                    if opened_tx.send(Ok(())).is_ok() {
                        db.serve(inbox);
                    }
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Fatal(format!("libsqlite3: cannot start thread: {e}")))?;
        opened.await.map_err(|_| StoreError::Fatal("libsqlite3: open thread died".into()))??;
        Ok(SqliteStore { requests })
    }

    /// Opens the store from gearmand's `--libsqlite3-db` and `--libsqlite3-table` options.
    pub async fn open_options(options: &StoreOptions) -> Result<SqliteStore, StoreError> {
        let path = match options.libsqlite3_db.as_deref() {
            Some(p) if !p.is_empty() => p,
            _ => return Err(StoreError::Fatal("libsqlite3: --libsqlite3-db is required".into())),
        };
        SqliteStore::open(path, &options.libsqlite3_table, options.fsync).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Fatal("libsqlite3: database thread stopped".into())
}

#[async_trait::async_trait]
impl QueueStore for SqliteStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Checked here so a bad record fails only its own batch, not a merged group.
        for job in jobs {
            key_to_i64(job.key)?;
        }
        self.call(|tx| Request::Add(jobs.to_vec(), tx)).await
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.call(|tx| Request::Remove(keys.to_vec(), tx)).await
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.call(Request::Replay).await
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}

/// The connection and the SQL for one table; lives on the store's thread.
struct Db {
    conn: Connection,
    insert: String,
    delete: String,
    select: String,
}

impl Db {
    fn open(path: &PathBuf, table: &str, fsync: bool) -> Result<Db, StoreError> {
        let fatal = |what: &str, e: rusqlite::Error| {
            StoreError::Fatal(format!("libsqlite3: {what} {}: {e}", path.display()))
        };
        let mut conn = Connection::open(path).map_err(|e| fatal("cannot open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fatal("cannot set busy timeout on", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| fatal("cannot enable WAL on", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "libsqlite3: WAL mode not available");
        }
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })
            .map_err(|e| fatal("cannot set synchronous on", e))?;
        let q = quote(table);
        prepare_table(&mut conn, table, &q).map_err(|e| match e {
            SetupError::Sql(e) => fatal("cannot prepare the queue table in", e),
            SetupError::Layout(msg) => StoreError::Fatal(format!("libsqlite3: {}: {msg}", path.display())),
        })?;
        Ok(Db {
            conn,
            insert: format!(
                "INSERT OR REPLACE INTO {q} (job_key, unique_key, function_name, priority, data, when_to_run) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            delete: format!("DELETE FROM {q} WHERE job_key = ?1"),
            select: format!(
                "SELECT job_key, unique_key, function_name, priority, data, when_to_run FROM {q} ORDER BY job_key"
            ),
        })
    }

    /// Handles requests until the store is dropped.
    fn serve(mut self, inbox: mpsc::Receiver<Request>) {
        let mut next = None;
        loop {
            let request = match next.take() {
                Some(r) => r,
                None => match inbox.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            match request {
                Request::Add(jobs, reply) => {
                    // Group commit: take every add already waiting, stop at anything else
                    // (it runs next, so requests keep their order).
                    let mut group = vec![(jobs, reply)];
                    while group.len() < MAX_GROUP {
                        match inbox.try_recv() {
                            Ok(Request::Add(jobs, reply)) => group.push((jobs, reply)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let result = self.add(group.iter().flat_map(|(jobs, _)| jobs));
                    for (_, reply) in group {
                        let _ = reply.send(result.clone_err());
                    }
                }
                Request::Remove(keys, reply) => {
                    let _ = reply.send(self.remove(&keys).map_err(op_error));
                }
                Request::Replay(reply) => {
                    let _ = reply.send(self.replay().map_err(op_error));
                }
            }
        }
    }

    fn add<'a>(&mut self, jobs: impl Iterator<Item = &'a JobRecord>) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(&self.insert)?;
            for job in jobs {
                // Keys were checked in `QueueStore::add`.
                let key = i64::try_from(job.key).unwrap_or(i64::MAX);
                insert.execute(params![
                    key,
                    Name(&job.unique),
                    Name(&job.function),
                    job.priority.as_i64(),
                    &job.data[..],
                    job.when
                ])?;
            }
        }
        tx.commit()
    }

    fn remove(&mut self, keys: &[u64]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached(&self.delete)?;
            // A key above i64::MAX was never stored.
            for key in keys.iter().filter_map(|&k| i64::try_from(k).ok()) {
                delete.execute([key])?;
            }
        }
        tx.commit()
    }

    fn replay(&mut self) -> Result<Vec<JobRecord>, rusqlite::Error> {
        let mut select = self.conn.prepare_cached(&self.select)?;
        let mut rows = select.query([])?;
        let mut jobs = Vec::new();
        while let Some(row) = rows.next()? {
            let raw_key = row.get_ref(0)?.as_i64().ok();
            let Some(key) = raw_key.and_then(|k| u64::try_from(k).ok()) else {
                tracing::warn!(key = ?raw_key, "libsqlite3: skipping a row with a negative or non-integer job_key");
                continue;
            };
            jobs.push(JobRecord {
                key,
                unique: bytes_of(row.get_ref(1)?),
                function: bytes_of(row.get_ref(2)?),
                priority: match row.get_ref(3)? {
                    ValueRef::Null => Priority::Normal,
                    v => crate::priority_from_stored(int_of(v).unwrap_or(-1), "libsqlite3", key),
                },
                data: bytes_of(row.get_ref(4)?),
                when: int_of(row.get_ref(5)?).unwrap_or(0),
            });
        }
        Ok(jobs)
    }
}

trait CloneErr {
    fn clone_err(&self) -> Result<(), StoreError>;
}

impl CloneErr for Result<(), rusqlite::Error> {
    fn clone_err(&self) -> Result<(), StoreError> {
        match self {
            Ok(()) => Ok(()),
            Err(e) => Err(op_error_ref(e)),
        }
    }
}

fn op_error(e: rusqlite::Error) -> StoreError {
    op_error_ref(&e)
}

/// Damage to the file is fatal; anything else (busy, I/O, disk full) may pass.
fn op_error_ref(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Fatal(format!("libsqlite3: {e}"))
        }
        _ => StoreError::Unavailable(format!("libsqlite3: {e}")),
    }
}

/// A function name or unique: TEXT when it is UTF-8, as gearmand stores it, else BLOB.
struct Name<'a>(&'a Bytes);

impl rusqlite::ToSql for Name<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match std::str::from_utf8(self.0) {
            Ok(_) => ValueRef::Text(self.0),
            Err(_) => ValueRef::Blob(self.0),
        }))
    }
}

/// Reads a bytes column leniently: gearmand stores an empty payload as NULL.
fn bytes_of(v: ValueRef<'_>) -> Bytes {
    match v {
        ValueRef::Null => Bytes::new(),
        ValueRef::Text(b) | ValueRef::Blob(b) => Bytes::copy_from_slice(b),
        ValueRef::Integer(n) => Bytes::from(n.to_string()),
        ValueRef::Real(f) => Bytes::from(f.to_string()),
    }
}

/// Reads an integer column leniently (NULL or garbage → None).
fn int_of(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(n) => Some(n),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Quotes an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

enum SetupError {
    Sql(rusqlite::Error),
    Layout(String),
}

impl From<rusqlite::Error> for SetupError {
    fn from(e: rusqlite::Error) -> Self {
        SetupError::Sql(e)
    }
}

fn create_sql(q: &str) -> String {
    format!(
        "CREATE TABLE {q} (job_key INTEGER PRIMARY KEY, unique_key TEXT, function_name TEXT, \
         priority INTEGER, data BLOB, when_to_run INTEGER)"
    )
}

/// Creates the table, accepts ours, or migrates gearmand's; all in one transaction.
fn prepare_table(conn: &mut Connection, table: &str, q: &str) -> Result<(), SetupError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let columns: Vec<String> = {
        let mut stmt = tx.prepare("SELECT lower(name) FROM pragma_table_info(?1)")?;
        let names = stmt.query_map([table], |r| r.get(0))?;
        names.collect::<Result<_, _>>()?
    };
    let has = |c: &str| columns.iter().any(|x| x == c);
    let gearmand = ["unique_key", "function_name", "priority", "data"];
    if columns.is_empty() {
        tx.execute_batch(&create_sql(q))?;
    } else if has("job_key") {
        if let Some(missing) = gearmand.iter().chain(&["when_to_run"]).find(|c| !has(c)) {
            return Err(SetupError::Layout(format!("table {table} has job_key but no {missing} column")));
        }
    } else if gearmand.iter().all(|c| has(c)) {
        let old = quote(&format!("{table}__gearmand_migration"));
        let when = if has("when_to_run") { "when_to_run" } else { "0" };
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {old};
             ALTER TABLE {q} RENAME TO {old};
             {create};
             INSERT INTO {q} (unique_key, function_name, priority, data, when_to_run)
                 SELECT unique_key, function_name, priority, data, {when} FROM {old} ORDER BY rowid;
             DROP TABLE {old};",
            create = create_sql(q)
        ))?;
        let rows: i64 = tx.query_row(&format!("SELECT count(*) FROM {q}"), [], |r| r.get(0))?;
        tracing::info!(table, rows, "libsqlite3: migrated gearmand's queue table to keyed rows");
    } else {
        return Err(SetupError::Layout(format!(
            "table {table} exists but is not a gearman queue (columns: {})",
            columns.join(", ")
        )));
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("gearman_queue"), "\"gearman_queue\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(bytes_of(ValueRef::Null), Bytes::new());
        assert_eq!(bytes_of(ValueRef::Integer(12)), Bytes::from_static(b"12"));
        assert_eq!(int_of(ValueRef::Text(b" 7")), Some(7));
        assert_eq!(int_of(ValueRef::Blob(b"x")), None);
    }
}
