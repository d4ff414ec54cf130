//! SQLite `add` throughput with batches of 1, 16 and 256 records, fsync on and off, to
//! reason about group commit. Not run in CI: `cargo run --release -p gearman-store
//! --example sqlite_batch_bench [seconds-per-case]`. The database goes in a temp dir
//! (set TMPDIR to measure another disk).

use std::time::{Duration, Instant};

use gearman_store::sqlite::SqliteStore;
use gearman_store::{testkit, QueueStore};

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let per_case = Duration::from_secs_f64(secs);
    println!("{:>6} {:>6} {:>10} {:>12} {:>12}", "fsync", "batch", "commits/s", "records/s", "us/commit");
    for fsync in [true, false] {
        for batch in [1usize, 16, 256] {
            let dir = std::env::temp_dir().join(format!("gearman-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("bench.db");
            let store = SqliteStore::open(&path, "gearman_queue", fsync).await.expect("open");
            let payload = vec![0x61u8; 100];
            let mut key = 1u64;
            let mut commits = 0u64;
            let start = Instant::now();
            while start.elapsed() < per_case {
                let jobs: Vec<_> = (0..batch)
                    .map(|_| {
                        key += 1;
                        testkit::record(key, b"bench", b"", &payload)
                    })
                    .collect();
                store.add(&jobs).await.expect("add");
                commits += 1;
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "{:>6} {:>6} {:>10.0} {:>12.0} {:>12.1}",
                fsync,
                batch,
                commits as f64 / elapsed,
                (commits * batch as u64) as f64 / elapsed,
                elapsed * 1e6 / commits as f64
            );
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
