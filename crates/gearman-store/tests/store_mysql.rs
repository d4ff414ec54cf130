//! The MySQL/MariaDB backend against the local server (127.0.0.1:3306, root, database `test`).

mod common;

use std::sync::Arc;

use gearman_store::mysql::MysqlStore;
use gearman_store::{testkit, Priority, QueueStore, StoreOptions};
use mysql_async::prelude::Queryable;

fn options(table: &str) -> StoreOptions {
    StoreOptions {
        queue_type: "MySQL".into(),
        mysql_host: "127.0.0.1".into(),
        mysql_port: 3306,
        mysql_user: Some("root".into()),
        mysql_db: Some("test".into()),
        mysql_table: table.into(),
        ..Default::default()
    }
}

async fn admin() -> Option<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .db_name(Some("test"));
    match mysql_async::Conn::new(opts).await {
        Ok(c) => Some(c),
        Err(e) => {
            common::skip("MariaDB on 127.0.0.1:3306", e);
            None
        }
    }
}

#[tokio::test]
async fn conformance() {
    let Some(mut admin) = admin().await else { return };
    let table = format!("gq_conf_{}", common::suffix());
    let store = gearman_store::open(&options(&table)).await.unwrap().unwrap();
    assert_eq!(store.name(), "mysql");
    testkit::conformance(store).await;
    admin.query_drop(format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn migrates_gearmand_table() {
    let Some(mut admin) = admin().await else { return };
    let table = format!("gq_mig_{}", common::suffix());
    // gearmand's CREATE and INSERT, as in its mysql plugin.
    admin
        .query_drop(format!(
            "CREATE TABLE {table}(unique_key VARCHAR(64), function_name VARCHAR(255), priority INT, \
             data LONGBLOB, when_to_run INT, unique key (unique_key, function_name))"
        ))
        .await
        .unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO {table} (unique_key, function_name, priority, data, when_to_run) VALUES \
             ('', 'reverse', 1, 'one', 0), ('u-1', 'reverse', 0, NULL, 0), ('', 'other fn', 2, x'00ff', 1700000000)"
        ))
        .await
        .unwrap();
    let store = Arc::new(MysqlStore::open_options(&options(&table)).await.unwrap());
    let got = store.replay().await.unwrap();
    let mut summary: Vec<_> =
        got.iter().map(|j| (&j.function[..], &j.unique[..], j.priority, &j.data[..], j.when)).collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            (&b"other fn"[..], &b""[..], Priority::Low, &b"\0\xff"[..], 1_700_000_000),
            (b"reverse", b"", Priority::Normal, b"one", 0),
            (b"reverse", b"u-1", Priority::High, b"", 0),
        ]
    );
    let mut keys: Vec<u64> = got.iter().map(|j| j.key).collect();
    keys.sort();
    assert_eq!(keys, vec![1, 2, 3]);
    store.add(&[testkit::record(4, b"reverse", b"", b"two")]).await.unwrap();
    assert_eq!(store.replay().await.unwrap().len(), 4);
    drop(store);
    admin.query_drop(format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_fatal_at_open() {
    let mut o = options("queue");
    o.mysql_port = 1;
    let e = gearman_store::open(&o).await.err().unwrap();
    assert!(matches!(e, gearman_store::StoreError::Fatal(ref m) if m.contains("cannot connect")), "{e}");
}
