//! gearmand as a library: bind a [`Server`], run it on a tokio runtime, and stop or
//! drain it through its [`ServerHandle`]. The `gearmand` binary is a thin shell over
//! this plus the command line.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let config = gearman_server::ServerConfig { port: 0, ..Default::default() };
//! let server = gearman_server::Server::bind(config).await?;
//! println!("listening on {:?}", server.local_addrs());
//! let handle = server.handle();
//! tokio::spawn(server.run());
//! handle.shutdown();
//! # Ok(()) }
//! ```

pub mod config;
mod conn;
mod core;
mod http;
pub mod logging;
mod monitor;
mod outbound;
mod persist;
mod pipe;
mod server;

pub use gearman_engine::EngineConfig;
pub use gearman_store::{QueueStore, StoreOptions};
pub use http::HttpConfig;
pub use server::{Keepalive, Server, ServerConfig, ServerHandle};
