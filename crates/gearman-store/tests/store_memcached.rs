//! The memcached backend against the local server (127.0.0.1:11211).

mod common;

use std::sync::Arc;

use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use gearman_store::memcached::MemcachedStore;
use gearman_store::testkit::{self, record};
use gearman_store::{QueueStore, StoreError, StoreOptions};

/// As `--libmemcached-servers` takes it.
const SERVER: &str = "127.0.0.1:11211";

async fn admin() -> Option<Client> {
    match Client::new("tcp://127.0.0.1:11211").await {
        Ok(c) => Some(c),
        Err(e) => {
            common::skip("memcached on 127.0.0.1:11211", e);
            None
        }
    }
}

/// Items the store may have left under `prefix` (memcached cannot list keys, so probe the
/// names it uses for the keys the tests touch).
async fn leftovers(admin: &mut Client, prefix: &str, keys: impl IntoIterator<Item = u64>) -> Vec<String> {
    let mut names = vec![format!("{prefix}range")];
    for key in keys {
        names.push(format!("{prefix}{key}"));
        names.push(format!("{prefix}{key}.1"));
        names.push(format!("{prefix}{key}.2"));
        names.push(format!("{prefix}bits.{}", key / 1024));
    }
    names.sort();
    names.dedup();
    let mut found = Vec::new();
    for page in names.chunks(200) {
        for v in admin.meta_get_multi(page, Some(&["s"])).await.unwrap() {
            found.push(String::from_utf8_lossy(&v.key.unwrap_or_default()).into_owned());
        }
    }
    found
}

fn conformance_keys() -> impl Iterator<Item = u64> {
    (0..2000).chain(1_000_000..1_010_000).chain([12_345_678])
}

#[tokio::test]
async fn conformance() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_conf_{}_", common::suffix());
    let store = MemcachedStore::open(SERVER, &prefix).await.unwrap();
    testkit::conformance(Arc::new(store)).await;
    assert_eq!(leftovers(&mut admin, &prefix, conformance_keys()).await, Vec::<String>::new());
}

#[tokio::test]
async fn open_options_and_reopen_replays() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_reopen_{}_", common::suffix());
    let options = StoreOptions {
        queue_type: "LibMemcached".into(),
        libmemcached_servers: Some(SERVER.into()),
        libmemcached_prefix: prefix.clone(),
        ..Default::default()
    };
    let store = gearman_store::open(&options).await.unwrap().unwrap();
    assert_eq!(store.name(), "memcached");
    let big = vec![7u8; 3 * 1024 * 1024 + 5];
    let jobs = [record(5, b"f", b"u", b"x"), record(70_000, b"g", b"", &big)];
    store.add(&jobs).await.unwrap();
    drop(store);
    let again = gearman_store::open(&options).await.unwrap().unwrap();
    assert_eq!(again.replay().await.unwrap(), jobs);
    again.remove(&[5, 70_000]).await.unwrap();
    assert_eq!(again.replay().await.unwrap(), vec![]);
    assert_eq!(leftovers(&mut admin, &prefix, [5, 70_000]).await, Vec::<String>::new());
}

#[tokio::test]
async fn evicted_and_corrupt_entries_are_skipped() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_bad_{}_", common::suffix());
    let store = MemcachedStore::open(SERVER, &prefix).await.unwrap();
    let jobs: Vec<_> = (1..=4).map(|k| record(k, b"f", b"", &[k as u8])).collect();
    store.add(&jobs).await.unwrap();
    // Job 2 "evicted", job 3 overwritten with garbage.
    admin.delete(format!("{prefix}2")).await.unwrap();
    admin.set(format!("{prefix}3"), &b"\x01garbage"[..], None, None).await.unwrap();
    let got = store.replay().await.unwrap();
    assert_eq!(got, vec![jobs[0].clone(), jobs[3].clone()]);
    store.remove(&[1, 2, 3, 4]).await.unwrap();
    assert_eq!(store.replay().await.unwrap(), vec![]);
    assert_eq!(leftovers(&mut admin, &prefix, 1..=4).await, Vec::<String>::new());
}

#[tokio::test]
async fn concurrent_writers_keep_every_job() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_conc_{}_", common::suffix());
    // Two stores on one prefix, as two processes would be: CAS keeps both writers' bits.
    let a = Arc::new(MemcachedStore::open(SERVER, &prefix).await.unwrap());
    let b = Arc::new(MemcachedStore::open(SERVER, &prefix).await.unwrap());
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..50u64 {
                let key = n * 4 + i as u64;
                store.add(&[record(key, b"f", b"", &key.to_be_bytes())]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = a.replay().await.unwrap();
    assert_eq!(got.iter().map(|j| j.key).collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
    b.remove(&(0..200).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(a.replay().await.unwrap(), vec![]);
    assert_eq!(leftovers(&mut admin, &prefix, 0..200).await, Vec::<String>::new());
}

#[tokio::test]
async fn foreign_range_item_is_fatal_not_overwritten() {
    let Some(mut admin) = admin().await else { return };
    let prefix = format!("_gq_foreign_{}_", common::suffix());
    admin.set(format!("{prefix}range"), "someone else's", None, None).await.unwrap();
    let store = MemcachedStore::open(SERVER, &prefix).await.unwrap();
    let e = store.replay().await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("prefix")), "{e}");
    admin.delete(format!("{prefix}range")).await.unwrap();
}

#[tokio::test]
async fn bad_options_and_unreachable_server_are_fatal_at_open() {
    let e = MemcachedStore::open("127.0.0.1:1", "gear_").await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("cannot connect")), "{e}");
    let e = MemcachedStore::open("", "gear_").await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("--libmemcached-servers")), "{e}");
    let e = MemcachedStore::open("a:1,b:2", "gear_").await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("exactly one")), "{e}");
    let e = MemcachedStore::open(SERVER, "has space").await.unwrap_err();
    assert!(matches!(e, StoreError::Fatal(ref m) if m.contains("prefix")), "{e}");
}
