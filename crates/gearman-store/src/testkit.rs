//! The conformance suite every backend passes. Test code: it panics on the first failure.
//!
//! Run it on an empty store (a fresh table, file or prefix); it leaves the store empty.

use std::sync::Arc;

use bytes::Bytes;

use crate::{JobRecord, Priority, QueueStore};

/// Builds a record with the given key, function, unique and payload (normal priority, run now).
pub fn record(key: u64, function: &[u8], unique: &[u8], data: &[u8]) -> JobRecord {
    JobRecord {
        key,
        function: Bytes::copy_from_slice(function),
        unique: Bytes::copy_from_slice(unique),
        priority: Priority::Normal,
        data: Bytes::copy_from_slice(data),
        when: 0,
    }
}

/// Runs every check against `store`, which must start empty.
pub async fn conformance(store: Arc<dyn QueueStore>) {
    let s = store.as_ref();
    assert!(!s.name().is_empty());
    assert_eq!(replay(s).await, vec![], "{}: the store must start empty", s.name());
    round_trip(s).await;
    empty_uniques_all_kept(s).await;
    payloads(s).await;
    names_with_dashes_and_spaces(s).await;
    remove_missing_keys(s).await;
    add_is_an_upsert(s).await;
    replay_order(s).await;
    large_batch(s).await;
    assert_eq!(replay(s).await, vec![], "{}: the suite leaves the store empty", s.name());
}

async fn replay(s: &dyn QueueStore) -> Vec<JobRecord> {
    s.replay().await.unwrap_or_else(|e| panic!("{}: replay failed: {e}", s.name()))
}

async fn add(s: &dyn QueueStore, jobs: &[JobRecord]) {
    s.add(jobs).await.unwrap_or_else(|e| panic!("{}: add of {} failed: {e}", s.name(), jobs.len()));
}

async fn remove(s: &dyn QueueStore, keys: &[u64]) {
    s.remove(keys).await.unwrap_or_else(|e| panic!("{}: remove failed: {e}", s.name()));
}

/// Asserts replay returns exactly `want` (in order), comparing field by field for a readable failure.
async fn expect(s: &dyn QueueStore, want: &[JobRecord], what: &str) {
    let got = replay(s).await;
    assert_eq!(
        got.len(),
        want.len(),
        "{}: {what}: replayed {} records, want {}",
        s.name(),
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        assert!(g == w, "{}: {what}: replayed {:?}, want {:?}", s.name(), short(g), short(w));
    }
}

/// A record with its payload cut short, for assertion messages.
fn short(r: &JobRecord) -> String {
    let data = r.data.get(..r.data.len().min(32)).unwrap_or_default();
    format!(
        "key={} function={:?} unique={:?} priority={:?} when={} data[{}]={:?}",
        r.key,
        r.function,
        r.unique,
        r.priority,
        r.when,
        r.data.len(),
        Bytes::copy_from_slice(data)
    )
}

async fn round_trip(s: &dyn QueueStore) {
    let mut a = record(1, b"reverse", b"u-1", b"hello");
    a.priority = Priority::High;
    let mut b = record(2, b"reverse", b"u-2", b"world");
    b.priority = Priority::Low;
    let mut c = record(3, b"later", b"", b"epoch");
    c.when = 1_700_000_000;
    let mut d = record(4, b"far", b"", b"past 2038");
    d.when = 4_102_444_800; // 2100-01-01: does not fit gearmand's 32-bit postgres column
    add(s, &[a.clone(), b.clone()]).await;
    add(s, &[c.clone()]).await;
    add(s, &[d.clone()]).await;
    expect(s, &[a.clone(), b.clone(), c.clone(), d.clone()], "round trip").await;
    remove(s, &[2]).await;
    expect(s, &[a, c, d], "after removing one").await;
    remove(s, &[1, 3, 4]).await;
    expect(s, &[], "after removing all").await;
}

async fn empty_uniques_all_kept(s: &dyn QueueStore) {
    // gearmand keys rows by (unique, function), so all but one of these would be lost.
    let jobs: Vec<_> = (100..1100).map(|k| record(k, b"f", b"", format!("job {k}").as_bytes())).collect();
    add(s, &jobs[..500]).await;
    for chunk in jobs[500..].chunks(100) {
        add(s, chunk).await;
    }
    expect(s, &jobs, "1000 empty-unique jobs of one function").await;
    let keys: Vec<u64> = jobs.iter().map(|j| j.key).collect();
    remove(s, &keys[..1]).await;
    expect(s, &jobs[1..], "removing one empty-unique job keeps the others").await;
    remove(s, &keys).await;
    expect(s, &[], "after removing the empty-unique jobs").await;
}

async fn payloads(s: &dyn QueueStore) {
    let empty = record(10, b"f", b"e", b"");
    let binary = record(11, b"f", b"b", b"\0a\0\xff\xfe\0\r\n\0");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let every = record(12, b"f", b"all", &all_bytes);
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mib = record(13, b"f", b"mib", &big);
    let non_utf8 = record(14, b"f\xff\xc3(", b"\xc0\xaf", b"x");
    let jobs = [empty, binary, every, mib, non_utf8];
    add(s, &jobs).await;
    expect(s, &jobs, "empty, binary, 1 MiB and non-UTF-8 payloads").await;
    remove(s, &[10, 11, 12, 13, 14]).await;
}

async fn names_with_dashes_and_spaces(s: &dyn QueueStore) {
    let jobs = [
        record(20, b"my-func", b"a-b-c", b"1"),
        record(21, b"-", b"-", b"2"),
        record(22, b"with space", b"unique with space", b"3"),
        record(23, b"f-", b"", b"4"),
        record(24, b"'quote\"", b"%_*?[", b"5"),
    ];
    add(s, &jobs).await;
    expect(s, &jobs, "names with dashes, spaces and quotes").await;
    remove(s, &[20, 21, 22, 23, 24]).await;
}

async fn remove_missing_keys(s: &dyn QueueStore) {
    remove(s, &[]).await;
    remove(s, &[999_999, 12_345_678]).await;
    let a = record(30, b"f", b"u", b"a");
    add(s, std::slice::from_ref(&a)).await;
    remove(s, &[31, 999_999]).await;
    expect(s, &[a], "removing missing keys touches nothing").await;
    remove(s, &[30, 30]).await;
    expect(s, &[], "after removing a key twice in one batch").await;
    add(s, &[]).await;
}

async fn add_is_an_upsert(s: &dyn QueueStore) {
    let first = record(40, b"f", b"u", b"first");
    let mut second = record(40, b"g", b"v", b"second");
    second.priority = Priority::Low;
    add(s, &[first]).await;
    add(s, &[second.clone()]).await;
    expect(s, &[second], "adding a stored key again replaces it").await;
    remove(s, &[40]).await;
}

async fn replay_order(s: &dyn QueueStore) {
    // Keys are given out in submission order; batches may arrive out of key order.
    let jobs: Vec<_> = (50..80).map(|k| record(k, b"order", b"", &k.to_be_bytes())).collect();
    add(s, &jobs[20..]).await;
    add(s, &jobs[..10]).await;
    let mut middle = jobs[10..20].to_vec();
    middle.reverse();
    add(s, &middle).await;
    expect(s, &jobs, "replay in key order").await;
    remove(s, &jobs.iter().map(|j| j.key).collect::<Vec<_>>()).await;
}

async fn large_batch(s: &dyn QueueStore) {
    let jobs: Vec<_> = (1_000_000..1_010_000u64)
        .map(|k| {
            let mut r =
                record(k, format!("fn{}", k % 7).as_bytes(), format!("u{k}").as_bytes(), &k.to_le_bytes());
            r.priority = Priority::from_i64((k % 3) as i64).unwrap_or_default();
            r
        })
        .collect();
    add(s, &jobs).await;
    expect(s, &jobs, "10,000 records in one add").await;
    let keys: Vec<u64> = jobs.iter().map(|j| j.key).collect();
    remove(s, &keys).await;
    expect(s, &[], "after removing 10,000 records in one batch").await;
}
