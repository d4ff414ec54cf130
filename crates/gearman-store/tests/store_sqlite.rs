//! The SQLite backend against real files: conformance, persistence across reopen, and
//! migration of tables gearmand wrote.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gearman_store::sqlite::SqliteStore;
use gearman_store::{testkit, JobRecord, Priority, QueueStore, StoreError, StoreOptions};

#[tokio::test]
async fn conformance_fsync_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("q.db"), "gearman_queue", false).await.unwrap();
    testkit::conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn conformance_fsync_on_through_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        queue_type: "LibSQLite3".into(),
        libsqlite3_db: Some(dir.path().join("q.db").to_string_lossy().into_owned()),
        libsqlite3_table: "my \"odd\" table".into(),
        fsync: true,
        ..Default::default()
    };
    let store = gearman_store::open(&options).await.unwrap().unwrap();
    assert_eq!(store.name(), "sqlite");
    testkit::conformance(store).await;
}

#[tokio::test]
async fn jobs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let jobs: Vec<JobRecord> = (1..=3).map(|k| testkit::record(k, b"f", b"", b"d")).collect();
    {
        let store = SqliteStore::open(&path, "gearman_queue", true).await.unwrap();
        store.add(&jobs).await.unwrap();
        store.remove(&[2]).await.unwrap();
    }
    let store = SqliteStore::open(&path, "gearman_queue", true).await.unwrap();
    assert_eq!(store.replay().await.unwrap(), vec![jobs[0].clone(), jobs[2].clone()]);
}

#[tokio::test]
async fn open_failures_are_fatal() {
    let missing = StoreOptions { queue_type: "libsqlite3".into(), ..Default::default() };
    assert!(
        matches!(gearman_store::open(&missing).await, Err(StoreError::Fatal(m)) if m.contains("--libsqlite3-db"))
    );
    let e = SqliteStore::open("/nonexistent-dir/q.db", "gearman_queue", false).await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("cannot open")), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE gearman_queue (a, b)").unwrap();
    let e = SqliteStore::open(&path, "gearman_queue", false).await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("not a gearman queue")), "{e}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert!(matches!(SqliteStore::open(&garbage, "gearman_queue", false).await, Err(StoreError::Fatal(_))));
}

#[tokio::test]
async fn key_above_i64_max_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("q.db"), "gearman_queue", false).await.unwrap();
    let e = store.add(&[testkit::record(u64::MAX, b"f", b"", b"")]).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidRecord(_)));
    store.remove(&[u64::MAX]).await.unwrap();
}

/// unique, function, priority, data, when_to_run.
type GearmandRow = (&'static str, &'static str, i64, Option<&'static [u8]>, i64);

/// Creates a table exactly as gearmand 1.1.20 does and fills it the way its INSERT does.
fn gearmand_table(path: &Path, with_when: bool) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let when_col = if with_when { ", when_to_run INTEGER" } else { "" };
    conn.execute_batch(&format!(
        "CREATE TABLE gearman_queue ( unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB{when_col}, \
         PRIMARY KEY (unique_key, function_name))"
    ))
    .unwrap();
    let rows: [GearmandRow; 5] = [
        ("", "reverse", 1, Some(b"one"), 0),
        ("u-1", "reverse", 0, None, 0),
        ("", "other fn", 2, Some(b"\0bin\xff"), 1_700_000_000),
        ("u 2", "my-func", 1, Some(b""), 0),
        ("u3", "reverse", 7, Some(b"bad priority"), 0),
    ];
    for (unique, function, priority, data, when) in rows {
        if with_when {
            conn.execute(
                "INSERT OR REPLACE INTO gearman_queue (priority, unique_key, function_name, data, when_to_run) \
                 VALUES (?,?,?,?,?)",
                rusqlite::params![priority, unique, function, data, when],
            )
            .unwrap();
        } else {
            conn.execute(
                "INSERT OR REPLACE INTO gearman_queue (priority, unique_key, function_name, data) VALUES (?,?,?,?)",
                rusqlite::params![priority, unique, function, data],
            )
            .unwrap();
        }
    }
}

fn rec(key: u64, function: &str, unique: &str, priority: Priority, data: &[u8], when: i64) -> JobRecord {
    JobRecord { priority, when, ..testkit::record(key, function.as_bytes(), unique.as_bytes(), data) }
}

#[tokio::test]
async fn migrates_gearmand_table() {
    for with_when in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gearmand.db");
        gearmand_table(&path, with_when);
        let epoch = if with_when { 1_700_000_000 } else { 0 };
        let want = vec![
            rec(1, "reverse", "", Priority::Normal, b"one", 0),
            rec(2, "reverse", "u-1", Priority::High, b"", 0),
            rec(3, "other fn", "", Priority::Low, b"\0bin\xff", epoch),
            rec(4, "my-func", "u 2", Priority::Normal, b"", 0),
            rec(5, "reverse", "u3", Priority::Normal, b"bad priority", 0),
        ];
        let store = SqliteStore::open(&path, "gearman_queue", false).await.unwrap();
        assert_eq!(store.replay().await.unwrap(), want, "with_when_to_run={with_when}");
        // Now keyed by identity: a second empty-unique job of "reverse" is kept.
        store.add(&[rec(6, "reverse", "", Priority::Normal, b"two", 0)]).await.unwrap();
        store.remove(&[2]).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&path, "gearman_queue", false).await.unwrap();
        let keys: Vec<u64> = store.replay().await.unwrap().iter().map(|j| j.key).collect();
        assert_eq!(keys, vec![1, 3, 4, 5, 6]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child on drop, so a failing assertion never leaves a gearmand behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn replays_a_file_the_real_gearmand_wrote() {
    let (gearmand, gearman) = ("/usr/sbin/gearmand", "/usr/bin/gearman");
    if !Path::new(gearmand).exists() || !Path::new(gearman).exists() {
        println!("SKIP: {gearmand} or {gearman} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gearmand.db");
    let port = free_port().to_string();
    let mut server = Child(
        Command::new(gearmand)
            .args(["-q", "libsqlite3", "--libsqlite3-db"])
            .arg(&db)
            .args(["-p", &port, "-L", "127.0.0.1", "-l", "none", "-P"])
            .arg(dir.path().join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        assert!(Instant::now() < deadline, "gearmand did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let submit = |args: &[&str]| {
        let status = Command::new(gearman)
            .args(["-b", "-p", &port, "-h", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "gearman {args:?}");
    };
    submit(&["-f", "f", "first"]);
    submit(&["-f", "f", "-u", "uniq", "second"]);
    submit(&["-f", "other", "-u", "x", "third"]);
    // The gearman tool sends a UUID as unique when -u is not given, so both "f" jobs are rows.
    submit(&["-f", "f", "fourth"]);
    // SIGTERM: a normal shutdown.
    Command::new("kill").arg("-TERM").arg(server.0.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gearmand did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);

    let store = SqliteStore::open(&db, "gearman_queue", false).await.unwrap();
    let got = store.replay().await.unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut summary: Vec<(String, String)> = got.iter().map(|j| (s(&j.function), s(&j.data))).collect();
    summary.sort();
    let want: Vec<(String, String)> = [("f", "first"), ("f", "fourth"), ("f", "second"), ("other", "third")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(summary, want);
    let uniques: Vec<String> = got.iter().map(|j| s(&j.unique)).collect();
    assert!(uniques.contains(&"uniq".into()) && uniques.contains(&"x".into()), "{uniques:?}");
    assert!(got.iter().all(|j| j.priority == Priority::Normal && j.when == 0));
    let mut keys: Vec<u64> = got.iter().map(|j| j.key).collect();
    keys.sort();
    assert_eq!(keys, vec![1, 2, 3, 4]);
}
