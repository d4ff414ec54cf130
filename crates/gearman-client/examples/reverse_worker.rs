//! The Hello World of Gearman, worker side: serves "reverse" until Ctrl-C.
//!
//! ```text
//! cargo run -p gearman-client --example reverse_worker -- 127.0.0.1:4730 [more servers...]
//! ```

use gearman_client::{Job, JobError, Worker};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers: Vec<String> = std::env::args().skip(1).collect();
    if servers.is_empty() {
        servers.push("127.0.0.1:4730".into());
    }
    let worker = Worker::builder(&servers)
        .client_id("reverse-worker")
        .concurrency(4)
        .function("reverse", |job: Job| async move {
            println!("reversing {} bytes (job {})", job.data().len(), String::from_utf8_lossy(job.handle()));
            Ok::<_, JobError>(job.data().iter().rev().copied().collect::<Vec<u8>>())
        })
        .spawn()?;
    println!("serving \"reverse\" on {servers:?}; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    println!("finishing the jobs in hand...");
    worker.shutdown().await;
    Ok(())
}
