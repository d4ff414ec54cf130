//! The PostgreSQL backend against the local server (127.0.0.1:5432, database `test`).

mod common;

use std::sync::Arc;

use gearman_store::postgres::PostgresStore;
use gearman_store::{testkit, Priority, QueueStore};
use tokio_postgres::NoTls;

/// A conninfo that works here (user postgres or root), or None after printing SKIP.
async fn conninfo() -> Option<(String, tokio_postgres::Client)> {
    let mut last = String::new();
    for user in ["postgres", "root"] {
        let info = format!("host=127.0.0.1 port=5432 dbname=test user={user}");
        match tokio_postgres::connect(&info, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return Some((info, client));
            }
            Err(e) => last = e.to_string(),
        }
    }
    common::skip("PostgreSQL on 127.0.0.1:5432", last);
    None
}

#[tokio::test]
async fn conformance() {
    let Some((info, admin)) = conninfo().await else { return };
    let table = format!("gq_conf_{}", common::suffix());
    let store = PostgresStore::open(&info, &table).await.unwrap();
    testkit::conformance(Arc::new(store)).await;
    admin.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn migrates_gearmand_table_and_reconnects() {
    let Some((info, admin)) = conninfo().await else { return };
    let table = format!("gq_mig_{}", common::suffix());
    // gearmand's CREATE and INSERT, as in its libpq plugin.
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (unique_key VARCHAR(64), function_name VARCHAR(255), priority INTEGER, \
             data BYTEA, when_to_run INTEGER, UNIQUE (unique_key, function_name));
             INSERT INTO {table} (priority, unique_key, function_name, data, when_to_run) VALUES
               (1, '', 'reverse', 'one'::bytea, 0),
               (0, 'u-1', 'reverse', NULL, 0),
               (2, '', 'other fn', '\\x00ff'::bytea, 1700000000);"
        ))
        .await
        .unwrap();
    // Upper case: folded like gearmand's unquoted name.
    let store = PostgresStore::open(&format!("{info} application_name={table}"), &table.to_uppercase())
        .await
        .unwrap();
    let got = store.replay().await.unwrap();
    let summary: Vec<_> = got
        .iter()
        .map(|j| (j.key, &j.function[..], &j.unique[..], j.priority, &j.data[..], j.when))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, &b"reverse"[..], &b""[..], Priority::Normal, &b"one"[..], 0),
            (2, b"reverse", b"u-1", Priority::High, b"", 0),
            (3, b"other fn", b"", Priority::Low, b"\0\xff", 1_700_000_000),
        ]
    );
    store.add(&[testkit::record(4, b"reverse", b"", b"two")]).await.unwrap();

    // Kill the store's connection: the next call fails or reconnects, and one after that works.
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&table],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1, "the store's connection was found and terminated");
    let mut replayed = None;
    let mut failures = 0;
    for _ in 0..5 {
        match store.replay().await {
            Ok(jobs) => {
                replayed = Some(jobs);
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 1, "the lost connection shows once as Unavailable");
    assert_eq!(replayed.expect("reconnected").len(), 4);
    drop(store);
    admin.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_fatal_at_open() {
    let e =
        PostgresStore::open("host=127.0.0.1 port=1 dbname=test user=postgres", "queue").await.unwrap_err();
    assert!(matches!(e, gearman_store::StoreError::Fatal(ref m) if m.contains("cannot connect")), "{e}");
}
