//! The Redis backend against the local server (127.0.0.1:6379).

mod common;

use std::sync::Arc;

use gearman_store::redis::RedisStore;
use gearman_store::{testkit, Priority, QueueStore};

async fn admin() -> Option<redis::aio::MultiplexedConnection> {
    let result = async {
        let client = redis::Client::open("redis://127.0.0.1:6379/")?;
        client.get_multiplexed_async_connection().await
    }
    .await;
    match result {
        Ok(c) => Some(c),
        Err(e) => {
            common::skip("Redis on 127.0.0.1:6379", e);
            None
        }
    }
}

async fn keys(admin: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(admin).await.unwrap()
}

#[tokio::test]
async fn conformance() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_conf_{}", common::suffix());
    let store = RedisStore::open("127.0.0.1", 6379, None, &prefix).await.unwrap();
    testkit::conformance(Arc::new(store)).await;
    assert_eq!(keys(&mut admin, &prefix).await, Vec::<String>::new());
}

#[tokio::test]
async fn converts_gearmand_keys_and_skips_corrupt_entries() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_mig_{}", common::suffix());
    // gearmand's layout: <prefix>-<function>-<unique> -> hash {data, priority}.
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}-reverse-u1"))
        .arg("data")
        .arg("one")
        .arg("priority")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () =
        redis::cmd("SET").arg(format!("{prefix}-plain-")).arg("two").query_async(&mut admin).await.unwrap();
    // One of ours already there (key 5), and a corrupt one (no function).
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}-5"))
        .arg("function")
        .arg("f")
        .arg("data")
        .arg("five")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}-9"))
        .arg("data")
        .arg("x")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}-10"))
        .arg("not a hash")
        .query_async(&mut admin)
        .await
        .unwrap();

    let store = RedisStore::open("127.0.0.1", 6379, None, &prefix).await.unwrap();
    let got = store.replay().await.unwrap();
    let mut summary: Vec<_> =
        got.iter().map(|j| (&j.function[..], &j.unique[..], j.priority, &j.data[..])).collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            (&b"f"[..], &b""[..], Priority::Normal, &b"five"[..]),
            (b"plain", b"", Priority::Normal, b"two"),
            (b"reverse", b"u1", Priority::High, b"one"),
        ]
    );
    let mut keys_seen: Vec<u64> = got.iter().map(|j| j.key).collect();
    keys_seen.sort();
    assert_eq!(keys_seen, vec![5, 11, 12], "converted keys follow the largest one found");
    let _: () = redis::cmd("DEL").arg(keys(&mut admin, &prefix).await).query_async(&mut admin).await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_fatal_at_open() {
    let e = RedisStore::open("127.0.0.1", 1, None, "_gear_").await.unwrap_err();
    assert!(matches!(e, gearman_store::StoreError::Fatal(ref m) if m.contains("cannot connect")), "{e}");
}
