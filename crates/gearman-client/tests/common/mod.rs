//! Test servers: ours in-process, or the real gearmand as a subprocess.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gearman_server::{Server, ServerConfig, ServerHandle};
use tokio::task::JoinHandle;

pub(crate) const GEARMAND: &str = "/usr/sbin/gearmand";

/// A running server, stopped on drop.
pub(crate) struct TestServer {
    pub(crate) addr: String,
    pub(crate) port: u16,
    handle: Option<ServerHandle>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    child: Option<Child>,
    pid_file: Option<PathBuf>,
}

impl TestServer {
    /// Our server, in-process, on a free port.
    pub(crate) async fn ours() -> TestServer {
        TestServer::ours_on(0).await
    }

    /// Our server on `port` (0 = any).
    pub(crate) async fn ours_on(port: u16) -> TestServer {
        let config = ServerConfig { port, listen: Some("127.0.0.1".into()), ..Default::default() };
        let server = Server::bind(config).await.expect("bind our server");
        let addr = server.local_addrs().first().copied().expect("bound address");
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        TestServer {
            addr: addr.to_string(),
            port: addr.port(),
            handle: Some(handle),
            task: Some(task),
            child: None,
            pid_file: None,
        }
    }

    /// The real gearmand, or `None` (after printing SKIP) when it is not installed.
    /// With GEARMAN_REQUIRE_SERVICES=1 a missing gearmand fails the test instead.
    pub(crate) async fn gearmand(test: &str) -> Option<TestServer> {
        if !std::path::Path::new(GEARMAND).exists() {
            if std::env::var("GEARMAN_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{GEARMAND} is not installed and GEARMAN_REQUIRE_SERVICES=1");
            }
            eprintln!("SKIP: {test}: {GEARMAND} not installed");
            return None;
        }
        let port = free_port();
        let pid_file =
            std::env::temp_dir().join(format!("gearman-client-test-{}-{port}.pid", std::process::id()));
        let child = Command::new(GEARMAND)
            .args(["-L", "127.0.0.1", "-p", &port.to_string(), "-l", "none"])
            .arg(format!("--pid-file={}", pid_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gearmand");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "gearmand did not start listening on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(TestServer {
            addr,
            port,
            handle: None,
            task: None,
            child: Some(child),
            pid_file: Some(pid_file),
        })
    }

    /// Stops the server now (closing every connection) and waits until it is gone.
    pub(crate) async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = self.pid_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Retries `check` until it returns true or 10 s pass.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generates one test against our server and one against gearmand for `scenario(addr)`.
#[macro_export]
macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod ours {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::common::TestServer::ours().await;
                    super::$name(server.addr.clone()).await;
                }
            )*
        }
        mod gearmand {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = $crate::common::TestServer::gearmand(stringify!($name)).await else {
                        return;
                    };
                    super::$name(server.addr.clone()).await;
                }
            )*
        }
    };
}
