//! Everything in one process: starts the gearman server in-process on a free port, runs a
//! "reverse" worker and a client against it, prints the admin view, and shuts down.
//!
//! ```text
//! cargo run -p gearman-client --example embedded_server
//! ```

use std::time::Duration;

use gearman_client::{AdminClient, Client, Job, JobError, JobEvent, JobRequest, Worker};
use gearman_server::{Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig { port: 0, listen: Some("127.0.0.1".into()), ..Default::default() };
    let server = Server::bind(config).await?;
    let addr = server.local_addrs().first().copied().ok_or("server bound no address")?.to_string();
    let handle = server.handle();
    let server_task = tokio::spawn(server.run());
    println!("server listening on {addr}");

    let worker = Worker::builder([&addr])
        .client_id("embedded-worker")
        .function("reverse", |job: Job| async move {
            job.send_status(1, 2).await.map_err(|_| JobError::Fail)?;
            Ok::<_, JobError>(job.data().iter().rev().copied().collect::<Vec<u8>>())
        })
        .spawn()?;

    let client = Client::new([&addr])?;
    let mut stream = client.submit(JobRequest::new("reverse", "Hello World!")).await?;
    while let Some(event) = stream.next().await {
        match event? {
            JobEvent::Status { numerator, denominator } => println!("progress {numerator}/{denominator}"),
            JobEvent::Complete(data) => println!("result: {}", String::from_utf8_lossy(&data)),
            other => println!("event: {other:?}"),
        }
    }

    let mut admin = AdminClient::connect(&addr).await?;
    println!("server version {}", admin.version().await?);
    for f in admin.status().await? {
        println!("function {}: {} jobs, {} running, {} workers", f.name, f.total, f.running, f.workers);
    }

    worker.shutdown().await;
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), server_task).await???;
    Ok(())
}
