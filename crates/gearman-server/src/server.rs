//! The embeddable server: bind, run, and stop or drain from another task.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gearman_engine::{Engine, EngineConfig};
use gearman_proto::Limits;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{self, ConnLimits};
use crate::core::{now_ms, Shared, StoreOp};
use crate::http::{HttpConfig, HttpLimits};
use crate::persist::from_record;
use gearman_store::QueueStore;
use tokio::sync::mpsc::UnboundedReceiver;

/// TCP keepalive settings for accepted connections (`--keepalive*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keepalive {
    /// Seconds idle before the first probe (TCP_KEEPIDLE).
    pub idle_secs: Option<u32>,
    /// Seconds between probes (TCP_KEEPINTVL).
    pub interval_secs: Option<u32>,
    /// Probes before the connection is dropped (TCP_KEEPCNT).
    pub count: Option<u32>,
}

/// Everything needed to start a server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Host or address to bind; `None` binds every address (IPv4 and IPv6).
    pub listen: Option<String>,
    /// Port of the Gear protocol (binary and admin text); 0 picks a free one.
    pub port: u16,
    /// listen(2) backlog.
    pub backlog: u32,
    /// Job semantics.
    pub engine: EngineConfig,
    /// Frame size limits.
    pub limits: Limits,
    /// Unread output a peer may accumulate before it is disconnected.
    pub max_output_bytes: usize,
    /// Extra keepalive tuning (`--keepalive`); accepted sockets always get SO_KEEPALIVE.
    pub keepalive: Option<Keepalive>,
    /// How long to keep retrying a bind that fails with "address in use".
    pub bind_retry: Duration,
    /// Persistent queue for background jobs; `None` keeps them in memory only.
    pub store: Option<Arc<dyn QueueStore>>,
    /// gearmand's `--store-queue-on-shutdown`: background jobs are acknowledged at
    /// once and written to `store` only when the server stops (replayed at start and
    /// removed when done, as usual). Faster, but a crash loses them.
    pub store_on_shutdown: bool,
    /// The HTTP front end (`-r http`), on the same host as `listen`; `None` for none.
    pub http: Option<HttpConfig>,
    /// The monitor port (`--monitor-port`: Prometheus `/metrics`, JSON `/status` and
    /// `/workers`), on the same host as `listen`; `None` for none. 0 picks a free one.
    pub monitor_port: Option<u16>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            port: 4730,
            backlog: 32,
            engine: EngineConfig::default(),
            limits: Limits::default(),
            max_output_bytes: 256 * 1024 * 1024,
            keepalive: None,
            bind_retry: Duration::from_secs(20),
            store: None,
            store_on_shutdown: false,
            http: None,
            monitor_port: None,
        }
    }
}

/// Stops or drains a running [`Server`] from anywhere.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    stop: CancellationToken,
    drain: CancellationToken,
}

impl ServerHandle {
    /// Immediate shutdown: stop accepting, close every connection, return from `run`.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Graceful shutdown: stop accepting now, keep serving existing connections, and
    /// shut down once the server holds no jobs (gearmand's SIGUSR1).
    pub fn drain(&self) {
        self.drain.cancel();
    }
}

/// The store and the queue of work the engine sends it.
type StoreLink = (Arc<dyn QueueStore>, UnboundedReceiver<Vec<StoreOp>>);

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listeners: Vec<TcpListener>,
    /// The HTTP front end's listeners (empty without one).
    http_listeners: Vec<TcpListener>,
    http_limits: HttpLimits,
    /// The monitor port's listeners (empty without one).
    monitor_listeners: Vec<TcpListener>,
    store: Option<StoreLink>,
    /// Where `--store-queue-on-shutdown` writes the queue at the end.
    shutdown_store: Option<Arc<dyn QueueStore>>,
    shared: Arc<Shared>,
    limits: ConnLimits,
    keepalive: Option<Keepalive>,
    handle: ServerHandle,
}

impl Server {
    /// Replays the persistent queue (if any), then binds the listening sockets.
    /// Nothing is served until [`Server::run`].
    pub async fn bind(mut config: ServerConfig) -> io::Result<Server> {
        config.engine.persistent = config.store.is_some() && !config.store_on_shutdown;
        let mut engine = Engine::new(config.engine.clone());
        let (store_tx, store) = match config.store.clone() {
            Some(store) => {
                // Replay before the listener opens, so no client sees a half-loaded queue.
                let records = store.replay().await.map_err(|e| io::Error::other(e.to_string()))?;
                let count = records.len();
                let mut sink = gearman_engine::RecordingOutbox::default();
                for r in records {
                    engine.restore(from_record(r), now_ms(), &mut sink);
                }
                tracing::info!("replayed {count} job(s) from the {} queue", store.name());
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some((store, rx)))
            }
            None => (None, None),
        };
        let listeners = bind_all(&config, config.port).await?;
        for l in &listeners {
            if let Ok(a) = l.local_addr() {
                tracing::info!("Listening on {a}");
            }
        }
        let (http_listeners, max_body_bytes) = match &config.http {
            Some(http) => (bind_all(&config, http.port).await?, http.max_body_bytes),
            None => (Vec::new(), 0),
        };
        for l in &http_listeners {
            if let Ok(a) = l.local_addr() {
                tracing::info!("HTTP front end listening on {a}");
            }
        }
        let monitor_listeners = match config.monitor_port {
            Some(port) => bind_all(&config, port).await?,
            None => Vec::new(),
        };
        for l in &monitor_listeners {
            if let Ok(a) = l.local_addr() {
                tracing::info!("monitor port listening on {a}");
            }
        }
        Ok(Server {
            listeners,
            http_listeners,
            monitor_listeners,
            http_limits: HttpLimits { max_body_bytes, max_output_bytes: config.max_output_bytes },
            store,
            shutdown_store: config.store.clone().filter(|_| config.store_on_shutdown),
            shared: Arc::new(Shared::new(engine, store_tx)),
            limits: ConnLimits { frames: config.limits, max_output_bytes: config.max_output_bytes },
            keepalive: config.keepalive,
            handle: ServerHandle { stop: CancellationToken::new(), drain: CancellationToken::new() },
        })
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The bound addresses of the HTTP front end (empty without one).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http_listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The bound addresses of the monitor port (empty without one).
    pub fn monitor_addrs(&self) -> Vec<SocketAddr> {
        self.monitor_listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// A handle to stop or drain the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until shut down (or drained and empty).
    pub async fn run(self) -> io::Result<()> {
        let Server {
            listeners,
            http_listeners,
            http_limits,
            monitor_listeners,
            store,
            shutdown_store,
            shared,
            limits,
            keepalive,
            handle,
        } = self;
        let tracker = TaskTracker::new();
        let stop = handle.stop.clone();
        let store_stop = CancellationToken::new();
        let store_task = store.map(|(store, rx)| {
            tokio::spawn(crate::persist::run(shared.clone(), store, rx, store_stop.clone()))
        });
        let gear = listeners.into_iter().map(|l| (l, false));
        for (listener, http) in gear.chain(http_listeners.into_iter().map(|l| (l, true))) {
            let (shared, stop, drain, tracker2) =
                (shared.clone(), stop.clone(), handle.drain.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        r = listener.accept() => r,
                        _ = stop.cancelled() => break,
                        _ = drain.cancelled() => break,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            tune(&stream, keepalive);
                            let (shared, stop) = (shared.clone(), stop.clone());
                            if http {
                                tracker2.spawn(crate::http::serve(shared, stream, http_limits, stop));
                            } else {
                                tracker2.spawn(conn::serve(shared, stream, limits, stop));
                            }
                        }
                        Err(e) => {
                            // Out of fds and the like: back off instead of spinning.
                            tracing::error!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        for listener in monitor_listeners {
            // Served until stop, through a drain too: draining is when it is watched.
            let (shared, stop, tracker2) = (shared.clone(), stop.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        r = listener.accept() => r,
                        _ = stop.cancelled() => break,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            tracker2.spawn(crate::monitor::serve(shared.clone(), stream, stop.clone()));
                        }
                        Err(e) => {
                            tracing::error!("monitor accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        tracker.spawn(run_timers(shared.clone(), stop.clone()));
        tracker.spawn(run_housekeeping(shared.clone(), stop.clone()));
        let drain = handle.drain.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async {
                drain.cancelled().await;
                tracing::info!("draining: no new connections; stopping when no jobs remain");
                while shared.core.lock().engine.job_count() > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } => stop.cancel(),
        }
        tracker.close();
        // Connections flush and close on cancel; don't wait forever on a stuck peer.
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        store_stop.cancel();
        if let Some(task) = store_task {
            let _ = task.await;
        }
        if let Some(store) = shutdown_store {
            let records: Vec<_> = shared
                .with_engine(|engine, _| engine.unstored_background_jobs())
                .into_iter()
                .map(crate::persist::to_record)
                .collect();
            let count = records.len();
            store.add(&records).await.map_err(|e| io::Error::other(format!("storing the queue: {e}")))?;
            tracing::info!("stored {count} background job(s) in the {} queue at shutdown", store.name());
        }
        Ok(())
    }
}

/// Binds `port` on the configured host (every address it resolves to), or on every
/// IPv4 and IPv6 address without one. Fails only if no address could be bound.
async fn bind_all(config: &ServerConfig, port: u16) -> io::Result<Vec<TcpListener>> {
    let addrs: Vec<SocketAddr> = match &config.listen {
        Some(host) => tokio::net::lookup_host((host.as_str(), port)).await?.collect(),
        None => vec![
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        ],
    };
    let mut listeners = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        match bind_one(addr, config.backlog, config.bind_retry).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                tracing::warn!("could not bind {addr}: {e}");
                last_err = Some(e);
            }
        }
    }
    if listeners.is_empty() {
        return Err(last_err.unwrap_or_else(|| io::Error::other("no address to bind")));
    }
    Ok(listeners)
}

async fn bind_one(addr: SocketAddr, backlog: u32, retry_for: Duration) -> io::Result<TcpListener> {
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        if addr.is_ipv6() {
            socket2::SockRef::from(&socket).set_only_v6(true)?;
        }
        match socket.bind(addr).and_then(|_| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() + pause <= retry_for => {
                tracing::warn!("{addr} is in use, retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            Err(e) => return Err(e),
        }
    }
}

fn tune(stream: &tokio::net::TcpStream, keepalive: Option<Keepalive>) {
    let sock = socket2::SockRef::from(stream);
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(k) = keepalive {
        if let Some(s) = k.idle_secs {
            ka = ka.with_time(Duration::from_secs(s.into()));
        }
        if let Some(s) = k.interval_secs {
            ka = ka.with_interval(Duration::from_secs(s.into()));
        }
        if let Some(n) = k.count {
            ka = ka.with_retries(n);
        }
    }
    let _ = sock.set_tcp_keepalive(&ka);
}

/// Sleeps until the engine's next deadline (epoch jobs, CAN_DO_TIMEOUT) and ticks it.
/// Every few seconds, lets the engine give back the room its collections grew for a
/// burst (see `Engine::compact`), so memory falls again after a big queue drains.
async fn run_housekeeping(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
        shared.core.lock().engine.compact();
    }
}

async fn run_timers(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let due = shared.core.lock().engine.next_deadline().unwrap_or(i64::MAX);
        shared.timer_due.store(due, Ordering::Relaxed);
        let wait_ms = due.saturating_sub(now_ms()).clamp(0, 60_000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            _ = shared.timer_wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        let now = now_ms();
        shared.with_engine(|engine, out| engine.tick(now, out));
    }
}
