//! The Hello World of Gearman, client side: asks a "reverse" worker to reverse a text.
//!
//! ```text
//! cargo run -p gearman-client --example reverse_client -- [--server 127.0.0.1:4730]... [TEXT]
//! ```

use std::time::Duration;

use gearman_client::{Client, JobRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--server" || a == "-s" {
            servers.push(args.next().ok_or("--server needs an address")?);
        } else {
            words.push(a);
        }
    }
    if servers.is_empty() {
        servers.push("127.0.0.1:4730".into());
    }
    let text = if words.is_empty() { "Hello World!".to_string() } else { words.join(" ") };
    let client = Client::new(&servers)?;
    let request = JobRequest::new("reverse", text.clone()).timeout(Duration::from_secs(30));
    let answer = client.run(request).await?;
    println!("{text} -> {}", String::from_utf8_lossy(&answer));
    Ok(())
}
