//! The worker: serves registered functions for every configured server.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gearman_proto::{decode, Command, Frame, Limits, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::util::{normalize_addr, req, Backoff};
use crate::{JobError, WorkerError};

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, JobError>> + Send + 'static>>;

/// Runs one job. Implemented for every `Fn(Job) -> impl Future<Output = Result<R, JobError>>`
/// where `R: Into<Bytes>` (`Vec<u8>`, `String`, `&'static str`, `Bytes`, ...), so an
/// async closure is a handler:
///
/// ```
/// use gearman_client::{Job, JobError, Worker};
/// let builder = Worker::builder(["127.0.0.1:4730"]).function("reverse", |job: Job| async move {
///     Ok::<_, JobError>(job.data().iter().rev().copied().collect::<Vec<u8>>())
/// });
/// # drop(builder);
/// ```
///
/// A handler that returns `Err(JobError::Fail)` ends the job with `WORK_FAIL`, one that
/// returns `Err(JobError::Exception(data))` with `WORK_EXCEPTION`, and one that panics
/// with `WORK_FAIL`; the worker keeps running in every case.
pub trait Handler: Send + Sync + 'static {
    /// Starts the work for `job`.
    fn call(&self, job: Job) -> HandlerFuture;
}

impl<F, Fut, R> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    R: Into<Bytes> + 'static,
{
    fn call(&self, job: Job) -> HandlerFuture {
        let fut = self(job);
        Box::pin(async move { fut.await.map(Into::into) })
    }
}

/// A job handed to a [`Handler`]: its workload, and the way to report progress.
#[derive(Debug, Clone)]
pub struct Job {
    handle: Bytes,
    function: Bytes,
    unique: Bytes,
    data: Bytes,
    server: Arc<str>,
    tx: mpsc::Sender<Bytes>,
}

impl Job {
    /// The job handle the server assigned.
    pub fn handle(&self) -> &Bytes {
        &self.handle
    }

    /// The function name.
    pub fn function(&self) -> &Bytes {
        &self.function
    }

    /// The unique key (empty when the client gave none).
    pub fn unique(&self) -> &Bytes {
        &self.unique
    }

    /// The workload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The address of the server the job came from.
    pub fn server(&self) -> &str {
        &self.server
    }

    async fn send(&self, packet: Bytes) -> Result<(), WorkerError> {
        self.tx.send(packet).await.map_err(|_| WorkerError::ConnectionLost)
    }

    /// Sends partial data to the waiting clients (`WORK_DATA`).
    pub async fn send_data(&self, data: impl Into<Bytes>) -> Result<(), WorkerError> {
        self.send(req(Command::WorkData, &[&self.handle, &data.into()])).await
    }

    /// Sends a warning to the waiting clients (`WORK_WARNING`).
    pub async fn send_warning(&self, data: impl Into<Bytes>) -> Result<(), WorkerError> {
        self.send(req(Command::WorkWarning, &[&self.handle, &data.into()])).await
    }

    /// Reports progress, `numerator` of `denominator` (`WORK_STATUS`).
    pub async fn send_status(&self, numerator: u64, denominator: u64) -> Result<(), WorkerError> {
        let (n, d) = (numerator.to_string(), denominator.to_string());
        self.send(req(Command::WorkStatus, &[&self.handle, n.as_bytes(), d.as_bytes()])).await
    }
}

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How many jobs run at the same time, over all servers together.
    pub concurrency: usize,
    /// Sent as `SET_CLIENT_ID` on every connection (shown by the `workers` admin command).
    pub client_id: Option<Bytes>,
    /// Limit on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// First pause before reconnecting to a server that failed or closed.
    pub reconnect_min: Duration,
    /// Longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// While asleep, ask for work this often anyway. gearmand sends no NOOP when an epoch
    /// job becomes due, so without polling such jobs wait for the next submit.
    /// `None` relies on NOOPs only.
    pub poll_interval: Option<Duration>,
    /// Largest packet body accepted from a server.
    pub max_packet_bytes: u32,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 1,
            client_id: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            poll_interval: Some(Duration::from_secs(2)),
            max_packet_bytes: gearman_proto::DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

struct Function {
    name: Bytes,
    timeout: Option<Duration>,
    handler: Arc<dyn Handler>,
}

/// Configures a [`Worker`]: servers, functions and options.
pub struct WorkerBuilder {
    servers: Vec<String>,
    options: WorkerOptions,
    functions: Vec<Function>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.functions.iter().map(|f| f.name.clone()).collect();
        f.debug_struct("WorkerBuilder")
            .field("servers", &self.servers)
            .field("options", &self.options)
            .field("functions", &names)
            .finish()
    }
}

impl WorkerBuilder {
    /// Registers `handler` for `name` (`CAN_DO`).
    pub fn function(self, name: impl Into<Bytes>, handler: impl Handler) -> WorkerBuilder {
        self.add(name.into(), None, Arc::new(handler))
    }

    /// Registers `handler` for `name` with a server-side timeout (`CAN_DO_TIMEOUT`): the
    /// server takes the job back after `timeout` (at least one second in gearmand).
    pub fn function_with_timeout(
        self,
        name: impl Into<Bytes>,
        timeout: Duration,
        handler: impl Handler,
    ) -> WorkerBuilder {
        self.add(name.into(), Some(timeout), Arc::new(handler))
    }

    fn add(mut self, name: Bytes, timeout: Option<Duration>, handler: Arc<dyn Handler>) -> WorkerBuilder {
        self.functions.retain(|f| f.name != name);
        self.functions.push(Function { name, timeout, handler });
        self
    }

    /// How many jobs run at the same time (at least 1).
    pub fn concurrency(mut self, n: usize) -> WorkerBuilder {
        self.options.concurrency = n.max(1);
        self
    }

    /// Sets the id sent with `SET_CLIENT_ID`.
    pub fn client_id(mut self, id: impl Into<Bytes>) -> WorkerBuilder {
        self.options.client_id = Some(id.into());
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: WorkerOptions) -> WorkerBuilder {
        self.options = options;
        self
    }

    /// Starts serving (one task per server) on the current tokio runtime.
    pub fn spawn(self) -> Result<Worker, WorkerError> {
        if self.servers.is_empty() {
            return Err(WorkerError::InvalidArgument("no servers given".into()));
        }
        if self.functions.is_empty() {
            return Err(WorkerError::InvalidArgument("no functions registered".into()));
        }
        for f in &self.functions {
            if f.name.contains(&0) {
                return Err(WorkerError::InvalidArgument("function name contains a NUL byte".into()));
            }
        }
        if let Some(id) = &self.options.client_id {
            if id.contains(&0) {
                return Err(WorkerError::InvalidArgument("client id contains a NUL byte".into()));
            }
        }
        let mut opts = self.options;
        opts.concurrency = opts.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(opts.concurrency));
        let shared = Arc::new(Shared {
            handlers: self.functions.iter().map(|f| (f.name.clone(), f.handler.clone())).collect(),
            functions: self.functions,
            opts,
            permits,
            connected: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let tasks = self
            .servers
            .iter()
            .map(|addr| tokio::spawn(serve_server(addr.clone(), shared.clone(), stop.clone())))
            .collect();
        Ok(Worker { stop, tasks, shared })
    }
}

struct Shared {
    functions: Vec<Function>,
    handlers: HashMap<Bytes, Arc<dyn Handler>>,
    opts: WorkerOptions,
    permits: Arc<Semaphore>,
    connected: AtomicUsize,
}

/// A running worker. Dropping it leaves it running in the background; call
/// [`Worker::shutdown`] to stop.
pub struct Worker {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("connected", &self.connected()).finish()
    }
}

impl Worker {
    /// Starts configuring a worker for `servers` (`host:port`; the port defaults to 4730).
    /// It serves every server, each over its own connection.
    pub fn builder<I, S>(servers: I) -> WorkerBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        WorkerBuilder {
            servers: servers.into_iter().map(|s| normalize_addr(s.as_ref())).collect(),
            options: WorkerOptions::default(),
            functions: Vec::new(),
        }
    }

    /// How many servers the worker is connected and registered to right now.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Waits until the worker is registered with at least `n` servers, or `timeout` passes.
    /// Returns whether it got there.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.connected() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Graceful shutdown: asks for no more jobs, finishes the jobs in hand and sends
    /// their results, then closes every connection.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stops at once: connections close and running jobs are abandoned (the server
    /// gives them to another worker).
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_server(addr: String, shared: Arc<Shared>, stop: CancellationToken) {
    let mut jobs: JoinSet<()> = JoinSet::new();
    let mut backoff = Backoff::new(shared.opts.reconnect_min, shared.opts.reconnect_max);
    let server: Arc<str> = Arc::from(addr.as_str());
    while !stop.is_cancelled() {
        let connect = tokio::time::timeout(shared.opts.connect_timeout, TcpStream::connect(addr.as_str()));
        let attempt = tokio::select! {
            r = connect => Some(r),
            _ = stop.cancelled() => None,
        };
        match attempt {
            None => break,
            Some(Ok(Ok(stream))) => {
                let _ = stream.set_nodelay(true);
                tracing::debug!("worker connected to {addr}");
                let mut session = Session::new(&shared, server.clone());
                let outcome = session.run(stream, &stop, &mut jobs).await;
                if outcome == Outcome::Served {
                    backoff.reset();
                }
            }
            Some(Ok(Err(e))) => tracing::debug!("worker cannot connect to {addr}: {e}"),
            Some(Err(_)) => tracing::debug!("worker connect to {addr} timed out"),
        }
        while jobs.try_join_next().is_some() {}
        if stop.is_cancelled() {
            break;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
    }
    // Finish the jobs in hand (their results go out if their connection still lives).
    while jobs.join_next().await.is_some() {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The connection was registered and used before it ended.
    Served,
    /// It failed right away.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a free concurrency slot before sending GRAB_JOB_UNIQ.
    NeedPermit,
    /// GRAB_JOB_UNIQ sent, waiting for JOB_ASSIGN_UNIQ or NO_JOB.
    Grabbing,
    /// PRE_SLEEP sent, waiting for NOOP (or the poll timer).
    Sleeping,
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    server: Arc<str>,
    state: State,
    permit: Option<OwnedSemaphorePermit>,
    /// Poll deadline while sleeping.
    wake_at: Option<Instant>,
    /// NOOPs that led straight to NO_JOB, in a row (gearmand can answer PRE_SLEEP with
    /// NOOP while GRAB finds nothing; this keeps that from becoming a busy loop).
    spurious: u32,
    woken_by_noop: bool,
    /// While set, a NOOP is remembered but acted on only at this time.
    hold_noop_until: Option<Instant>,
    noop_pending: bool,
    stopping: bool,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>, server: Arc<str>) -> Session<'a> {
        Session {
            shared,
            server,
            state: State::NeedPermit,
            permit: None,
            wake_at: None,
            spurious: 0,
            woken_by_noop: false,
            hold_noop_until: None,
            noop_pending: false,
            stopping: false,
        }
    }

    async fn run(&mut self, stream: TcpStream, stop: &CancellationToken, jobs: &mut JoinSet<()>) -> Outcome {
        let (mut rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let writer = tokio::spawn(write_loop(wr, rx));
        let opts = &self.shared.opts;
        let mut hello = Vec::new();
        if let Some(id) = &opts.client_id {
            hello.push(req(Command::SetClientId, &[id]));
        }
        for f in &self.shared.functions {
            match f.timeout {
                Some(t) => {
                    let ms = t.as_millis().to_string();
                    hello.push(req(Command::CanDoTimeout, &[&f.name, ms.as_bytes()]));
                }
                None => hello.push(req(Command::CanDo, &[&f.name])),
            }
        }
        for p in hello {
            if tx.send(p).await.is_err() {
                writer.abort();
                return Outcome::Failed;
            }
        }
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        let limits = Limits { max_packet_bytes: opts.max_packet_bytes, ..Limits::default() };
        let mut buf = BytesMut::with_capacity(8192);
        let mut graceful = false;
        loop {
            if self.stopping && self.state != State::Grabbing && jobs.is_empty() {
                graceful = true;
                break;
            }
            let want_permit = self.state == State::NeedPermit && !self.stopping;
            let permits = self.shared.permits.clone();
            let timer = match (self.state, self.wake_at) {
                (State::Sleeping, Some(at)) if !self.stopping => Some(at),
                _ => None,
            };
            tokio::select! {
                r = rd.read_buf(&mut buf) => {
                    match r {
                        Ok(0) => break,
                        Err(e) => {
                            tracing::debug!("worker read from {} failed: {e}", self.server);
                            break;
                        }
                        Ok(_) => {}
                    }
                    if !self.drain_frames(&mut buf, &limits, &tx, jobs).await {
                        break;
                    }
                }
                p = permits.acquire_owned(), if want_permit => {
                    let Ok(p) = p else { break };
                    self.permit = Some(p);
                    self.state = State::Grabbing;
                    if tx.send(req(Command::GrabJobUniq, &[])).await.is_err() {
                        break;
                    }
                }
                _ = sleep_until_opt(timer), if timer.is_some() => {
                    self.wake_at = None;
                    self.woken_by_noop = std::mem::take(&mut self.noop_pending);
                    self.hold_noop_until = None;
                    self.state = State::NeedPermit;
                }
                _ = stop.cancelled(), if !self.stopping => {
                    self.stopping = true;
                }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            }
        }
        self.shared.connected.fetch_sub(1, Ordering::Relaxed);
        self.permit = None;
        drop(tx);
        if graceful {
            // Every job of this connection is done, so the writer ends once it has
            // flushed their results.
            let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        } else {
            writer.abort();
        }
        Outcome::Served
    }

    /// Handles every complete frame in `buf`. Returns false when the connection must close.
    async fn drain_frames(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        tx: &mpsc::Sender<Bytes>,
        jobs: &mut JoinSet<()>,
    ) -> bool {
        loop {
            match decode(buf, limits) {
                Ok(Some(Frame::Packet(p))) => {
                    if !self.on_packet(p, tx, jobs).await {
                        return false;
                    }
                }
                Ok(Some(Frame::AdminLine(_))) => {
                    tracing::warn!("unexpected text from {}", self.server);
                    return false;
                }
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!("undecodable data from {}: {e}", self.server);
                    return false;
                }
            }
        }
    }

    async fn on_packet(&mut self, p: Packet, tx: &mpsc::Sender<Bytes>, jobs: &mut JoinSet<()>) -> bool {
        match p.command {
            Command::Noop => {
                if self.state == State::Sleeping {
                    match self.hold_noop_until {
                        Some(until) if Instant::now() < until => {
                            self.noop_pending = true;
                            self.wake_at = Some(self.wake_at.map_or(until, |w| w.min(until)));
                        }
                        _ => {
                            self.hold_noop_until = None;
                            self.wake_at = None;
                            self.woken_by_noop = true;
                            self.state = State::NeedPermit;
                        }
                    }
                }
                true
            }
            Command::NoJob => {
                self.permit = None;
                if self.woken_by_noop {
                    self.spurious = self.spurious.saturating_add(1);
                } else {
                    self.spurious = 0;
                }
                self.woken_by_noop = false;
                let now = Instant::now();
                self.hold_noop_until = if self.spurious >= 2 {
                    let ms = 10u64.saturating_mul(1 << self.spurious.min(10));
                    let cap = self.shared.opts.poll_interval.unwrap_or(Duration::from_secs(1));
                    Some(now + Duration::from_millis(ms).min(cap))
                } else {
                    None
                };
                self.wake_at = self.shared.opts.poll_interval.map(|d| now + d);
                self.state = State::Sleeping;
                if self.stopping {
                    return true;
                }
                tx.send(req(Command::PreSleep, &[])).await.is_ok()
            }
            Command::JobAssign | Command::JobAssignUniq | Command::JobAssignAll => {
                let (unique, data) = match p.command {
                    Command::JobAssign => (Bytes::new(), p.arg_bytes(2)),
                    Command::JobAssignUniq => (p.arg_bytes(2), p.arg_bytes(3)),
                    _ => (p.arg_bytes(2), p.arg_bytes(4)),
                };
                if p.argc() == 0 {
                    tracing::warn!("malformed {} from {}", p.command.name(), self.server);
                    return false;
                }
                self.spurious = 0;
                self.woken_by_noop = false;
                let permit = match self.permit.take() {
                    Some(p) => Some(p),
                    None => self.shared.permits.clone().try_acquire_owned().ok(),
                };
                let job = Job {
                    handle: p.arg_bytes(0),
                    function: p.arg_bytes(1),
                    unique,
                    data,
                    server: self.server.clone(),
                    tx: tx.clone(),
                };
                let handler = self.shared.handlers.get(&job.function).cloned();
                jobs.spawn(run_job(job, handler, permit));
                self.state = State::NeedPermit;
                true
            }
            Command::Error => {
                tracing::warn!(
                    "server {} reported {}: {}",
                    self.server,
                    String::from_utf8_lossy(p.arg(0)),
                    String::from_utf8_lossy(p.arg(1))
                );
                true
            }
            other => {
                tracing::debug!("worker ignoring {} from {}", other.name(), self.server);
                true
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_job(job: Job, handler: Option<Arc<dyn Handler>>, permit: Option<OwnedSemaphorePermit>) {
    let _permit = permit;
    let handle = job.handle.clone();
    let tx = job.tx.clone();
    let outcome = match handler {
        // A task of its own, so a panic in the handler is caught by tokio.
        Some(h) => match tokio::spawn(h.call(job)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("handler for job {} panicked: {e}", String::from_utf8_lossy(&handle));
                Err(JobError::Fail)
            }
        },
        None => Err(JobError::Fail),
    };
    let packet = match outcome {
        Ok(data) => req(Command::WorkComplete, &[&handle, &data]),
        Err(JobError::Fail) => req(Command::WorkFail, &[&handle]),
        Err(JobError::Exception(data)) => req(Command::WorkException, &[&handle, &data]),
    };
    let _ = tx.send(packet).await;
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            tracing::debug!("worker write failed: {e}");
            return;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}
