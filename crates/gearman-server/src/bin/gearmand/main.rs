//! `gearmand`: the drop-in job server binary. Everything but process setup lives in
//! the `gearman_server` library.

use gearman_server::config::{self, Config};
use gearman_server::{logging, EngineConfig, HttpConfig, Keepalive, Server, ServerConfig};

mod allocator;

/// jemalloc rather than glibc's malloc: after a queue of a million jobs drained, glibc
/// kept most of its pages (its arenas stay fragmented, and giving them back takes an
/// explicit `malloc_trim`, which needs unsafe code), while jemalloc's pages can be
/// purged through its safe control interface (see `allocator` and `bench/memory`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let purge = allocator::tune();
    let cfg = config::from_args_or_exit();
    if let Err(e) = cfg.prepare_process() {
        fail(&e.message, e.exit_code);
    }
    if purge {
        allocator::spawn_purger();
    }
    // Kept alive until exit: dropping it removes the pid file.
    let _pid_file = cfg.write_pid_file().unwrap_or_else(|e| fail(&e.message, e.exit_code));
    let log = logging::init(&cfg).unwrap_or_else(|e| fail(&e.to_string(), 1));
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    // One thread: tokio's single-threaded scheduler, which has no work-stealing
    // queues to synchronize; it runs on this thread, inside `block_on`.
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = builder
        .thread_name("gearmand")
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("could not start the runtime: {e}"), 1));
    if let Err(e) = runtime.block_on(serve(&cfg, log)) {
        fail(&e.to_string(), 1);
    }
}

fn fail(message: &str, code: i32) -> ! {
    eprintln!("gearmand: {message}");
    std::process::exit(code);
}

/// Maps the command line onto the library's configuration.
fn server_config(cfg: &Config) -> ServerConfig {
    let defaults = EngineConfig::default();
    let prefix = cfg.job_handle_prefix.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
        format!("H:{}", host.unwrap_or_else(|| "localhost".into()))
    });
    let positive = |v: i32| u32::try_from(v).ok();
    ServerConfig {
        listen: cfg.listen.clone(),
        port: cfg.port,
        backlog: u32::try_from(cfg.backlog).unwrap_or(32),
        engine: EngineConfig {
            handle_prefix: prefix,
            job_retries: cfg.job_retries,
            worker_wakeup: cfg.worker_wakeup,
            grab_hold_ms: cfg.grab_hold_ms,
            round_robin: cfg.round_robin,
            exceptions: cfg.exceptions,
            verbose: cfg.verbose.as_str().to_string(),
            ..defaults
        },
        limits: gearman_proto::Limits { max_packet_bytes: cfg.max_packet_size, ..Default::default() },
        keepalive: cfg.keepalive.then(|| Keepalive {
            idle_secs: positive(cfg.keepalive_idle),
            interval_secs: positive(cfg.keepalive_interval),
            count: positive(cfg.keepalive_count),
        }),
        // `unsupported()` refuses any other protocol module before this runs.
        http: (cfg.protocol.as_deref() == Some("http")).then(|| HttpConfig {
            port: cfg.http_port,
            max_body_bytes: usize::try_from(cfg.max_packet_size).unwrap_or(usize::MAX),
        }),
        monitor_port: cfg.monitor_port,
        ..ServerConfig::default()
    }
}

async fn serve(cfg: &Config, log: logging::LogHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let store = gearman_store::open(&cfg.queue).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = Server::bind(ServerConfig {
        store,
        store_on_shutdown: cfg.store_queue_on_shutdown,
        ..server_config(cfg)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let handle = server.handle();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    // SIGPIPE is already ignored by the Rust runtime, as gearmand ignores it.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received, shutting down"); handle.shutdown() }
                _ = int.recv() => { tracing::info!("SIGINT received, shutting down"); handle.shutdown() }
                _ = usr1.recv() => { tracing::info!("SIGUSR1 received, draining"); handle.drain() }
                _ = hup.recv() => {
                    if let Err(e) = log.reopen() {
                        tracing::error!("could not reopen the log file: {e}");
                    }
                }
            }
        }
    });
    server.run().await?;
    Ok(())
}
