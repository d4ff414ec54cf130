//! The client: submits jobs to a list of servers and follows them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gearman_proto::{Command, Limits};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::util::{normalize_addr, parse_num, req, stable_hash, Backoff};
use crate::ClientError;

pub use gearman_proto::Priority;

/// What to submit: function, workload and options.
///
/// ```
/// use gearman_client::{JobRequest, Priority};
/// let req = JobRequest::new("reverse", "hello").unique("greeting-1").priority(Priority::High);
/// assert_eq!(req.function().as_ref(), b"reverse");
/// ```
#[derive(Debug, Clone)]
pub struct JobRequest {
    function: Bytes,
    data: Bytes,
    unique: Option<Bytes>,
    priority: Priority,
    run_at: Option<SystemTime>,
    timeout: Option<Duration>,
}

impl JobRequest {
    /// A normal-priority job for `function` with workload `data` and no unique key.
    pub fn new(function: impl Into<Bytes>, data: impl Into<Bytes>) -> JobRequest {
        JobRequest {
            function: function.into(),
            data: data.into(),
            unique: None,
            priority: Priority::Normal,
            run_at: None,
            timeout: None,
        }
    }

    /// Sets the unique key. Jobs with the same function and unique key are coalesced by
    /// the server, and the key also picks the server (so coalescing works across clients).
    pub fn unique(mut self, unique: impl Into<Bytes>) -> JobRequest {
        self.unique = Some(unique.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> JobRequest {
        self.priority = priority;
        self
    }

    /// Schedules the job to run at or after `when` (`SUBMIT_JOB_EPOCH`). Epoch jobs are
    /// always background and normal priority; only [`Client::submit_background`] accepts them.
    pub fn run_at(mut self, when: SystemTime) -> JobRequest {
        self.run_at = Some(when);
        self
    }

    /// Limits how long [`Client::run`] or [`JobStream::result`] waits for the job.
    pub fn timeout(mut self, timeout: Duration) -> JobRequest {
        self.timeout = Some(timeout);
        self
    }

    /// The function name.
    pub fn function(&self) -> &Bytes {
        &self.function
    }

    /// The workload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    fn validate(&self) -> Result<(), ClientError> {
        if self.function.contains(&0) {
            return Err(ClientError::InvalidArgument("function name contains a NUL byte".into()));
        }
        if let Some(u) = &self.unique {
            if u.contains(&0) {
                return Err(ClientError::InvalidArgument("unique key contains a NUL byte".into()));
            }
        }
        Ok(())
    }

    fn encode(&self, background: bool) -> Bytes {
        let unique: &[u8] = self.unique.as_deref().unwrap_or_default();
        match self.run_at {
            Some(when) if background => {
                let secs = match when.duration_since(UNIX_EPOCH) {
                    Ok(d) => d.as_secs(),
                    Err(_) => 0,
                };
                let secs = secs.to_string();
                req(Command::SubmitJobEpoch, &[&self.function, unique, secs.as_bytes(), &self.data])
            }
            _ => req(self.priority.submit_command(background), &[&self.function, unique, &self.data]),
        }
    }
}

/// Something that happened to a foreground job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// `WORK_DATA`: partial result.
    Data(Bytes),
    /// `WORK_WARNING`: a warning with data.
    Warning(Bytes),
    /// `WORK_STATUS`: progress.
    Status {
        /// Work done.
        numerator: u64,
        /// Total work.
        denominator: u64,
    },
    /// `WORK_COMPLETE`: the result. Final.
    Complete(Bytes),
    /// `WORK_FAIL`. Final.
    Fail,
    /// `WORK_EXCEPTION` with its data (only with the exceptions option). Final.
    Exception(Bytes),
}

impl JobEvent {
    /// Whether no more events follow this one.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobEvent::Complete(_) | JobEvent::Fail | JobEvent::Exception(_))
    }
}

/// A job handle together with the server that issued it (handles are per server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobHandle {
    server: usize,
    addr: String,
    handle: Bytes,
}

impl JobHandle {
    /// The handle string the server gave, e.g. `H:host:42`.
    pub fn handle(&self) -> &Bytes {
        &self.handle
    }

    /// The address of the server holding the job.
    pub fn server(&self) -> &str {
        &self.addr
    }
}

/// The answer to `GET_STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStatus {
    /// The server knows the job (queued or running).
    pub known: bool,
    /// A worker holds the job.
    pub running: bool,
    /// Last `WORK_STATUS` numerator (0 before any).
    pub numerator: u64,
    /// Last `WORK_STATUS` denominator (0 before any).
    pub denominator: u64,
}

/// The answer to `GET_STATUS_UNIQUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UniqueStatus {
    /// The server knows a job with that unique key.
    pub known: bool,
    /// A worker holds the job.
    pub running: bool,
    /// Last `WORK_STATUS` numerator.
    pub numerator: u64,
    /// Last `WORK_STATUS` denominator.
    pub denominator: u64,
    /// Foreground clients waiting for the job.
    pub waiting_clients: u64,
}

/// The events of one foreground job.
#[derive(Debug)]
pub struct JobStream {
    handle: JobHandle,
    rx: mpsc::UnboundedReceiver<JobEvent>,
    done: bool,
    timeout: Option<Duration>,
}

impl JobStream {
    /// The job's handle.
    pub fn handle(&self) -> &JobHandle {
        &self.handle
    }

    /// The next event: `None` after the final event; `Some(Err(ConnectionLost))` if the
    /// server connection died first.
    pub async fn next(&mut self) -> Option<Result<JobEvent, ClientError>> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Some(ev) => {
                if ev.is_terminal() {
                    self.done = true;
                }
                Some(Ok(ev))
            }
            None => {
                self.done = true;
                Some(Err(ClientError::ConnectionLost { addr: self.handle.addr.clone() }))
            }
        }
    }

    /// Skips intermediate events and returns the result: the `WORK_COMPLETE` data, or
    /// [`ClientError::JobFailed`] / [`ClientError::Exception`]. Honours the request's timeout.
    pub async fn result(mut self) -> Result<Bytes, ClientError> {
        match self.timeout {
            Some(t) => {
                tokio::time::timeout(t, self.result_inner()).await.unwrap_or(Err(ClientError::Timeout))
            }
            None => self.result_inner().await,
        }
    }

    async fn result_inner(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.next().await {
                Some(Ok(JobEvent::Complete(d))) => return Ok(d),
                Some(Ok(JobEvent::Fail)) => return Err(ClientError::JobFailed),
                Some(Ok(JobEvent::Exception(d))) => return Err(ClientError::Exception(d)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ClientError::Protocol("job stream already finished".into())),
            }
        }
    }
}

/// Connection and failover settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Limit on each request/reply exchange (submit until JOB_CREATED, status, echo).
    pub request_timeout: Option<Duration>,
    /// Send `OPTION_REQ exceptions` on connect so `WORK_EXCEPTION` data reaches us.
    pub exceptions: bool,
    /// Sent as `SET_CLIENT_ID` on connect.
    pub client_id: Option<Bytes>,
    /// First pause before reconnecting to a server that failed.
    pub reconnect_min: Duration,
    /// Longest pause between reconnect attempts.
    pub reconnect_max: Duration,
    /// How many times [`Client::run`] resubmits a foreground job whose server died.
    pub retries: usize,
    /// Largest packet body accepted from a server.
    pub max_packet_bytes: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            exceptions: false,
            client_id: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            retries: 3,
            max_packet_bytes: gearman_proto::DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

struct Slot {
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    down: Mutex<(Option<Instant>, Backoff)>,
}

impl Slot {
    fn in_backoff(&self) -> bool {
        let d = self.down.lock().unwrap_or_else(|p| p.into_inner());
        d.0.is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self) {
        let mut d = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let delay = d.1.next_delay();
        d.0 = Some(Instant::now() + delay);
    }

    fn mark_up(&self) {
        let mut d = self.down.lock().unwrap_or_else(|p| p.into_inner());
        d.0 = None;
        d.1.reset();
    }
}

struct Inner {
    slots: Vec<Slot>,
    opts: ClientOptions,
    rr: AtomicUsize,
}

/// A Gearman client over one or more servers. Cheap to clone; clones share connections.
///
/// Each server gets at most one connection, opened on first use; any number of jobs can
/// be in flight on it. Jobs with a unique key go to the server the key hashes to, the rest
/// round robin. A server that cannot be reached is skipped (the next one is used) and
/// retried after an exponential backoff.
///
/// Delivery on failover is at least once: [`Client::run`] resubmits a foreground job whose
/// server died before the result arrived, so the job may have run on the dead server too.
/// Background jobs are the server's responsibility once accepted.
///
/// ```no_run
/// # async fn demo() -> Result<(), gearman_client::ClientError> {
/// use gearman_client::{Client, JobRequest};
/// let client = Client::new(["127.0.0.1:4730"])?;
/// let reversed = client.run(JobRequest::new("reverse", "Hello World!")).await?;
/// assert_eq!(reversed.as_ref(), b"!dlroW olleH");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.inner.slots.iter().map(|s| s.addr.as_str()).collect();
        f.debug_struct("Client").field("servers", &addrs).finish()
    }
}

impl Client {
    /// A client for `servers` (`host:port`; the port defaults to 4730) with default options.
    /// Nothing is connected until the first call.
    pub fn new<I, S>(servers: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(servers, ClientOptions::default())
    }

    /// A client for `servers` with `options`.
    pub fn with_options<I, S>(servers: I, options: ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let slots: Vec<Slot> = servers
            .into_iter()
            .map(|s| Slot {
                addr: normalize_addr(s.as_ref()),
                conn: tokio::sync::Mutex::new(None),
                down: Mutex::new((None, Backoff::new(options.reconnect_min, options.reconnect_max))),
            })
            .collect();
        if slots.is_empty() {
            return Err(ClientError::InvalidArgument("no servers given".into()));
        }
        Ok(Client { inner: Arc::new(Inner { slots, opts: options, rr: AtomicUsize::new(0) }) })
    }

    /// The configured server addresses, in order.
    pub fn servers(&self) -> Vec<String> {
        self.inner.slots.iter().map(|s| s.addr.clone()).collect()
    }

    /// Submits a foreground job and waits for its result. If the job's server dies before
    /// the job finishes, the job is submitted again to another server (up to
    /// [`ClientOptions::retries`] times), so a job may run more than once.
    pub async fn run(&self, request: JobRequest) -> Result<Bytes, ClientError> {
        let timeout = request.timeout;
        let fut = async {
            let mut attempts = 0usize;
            loop {
                let mut stream = self.submit(request.clone()).await?;
                match stream.result_inner().await {
                    Err(e) if e.is_connection_error() && attempts < self.inner.opts.retries => {
                        attempts += 1;
                        tracing::debug!("job lost with its server ({e}), resubmitting");
                    }
                    r => return r,
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or(Err(ClientError::Timeout)),
            None => fut.await,
        }
    }

    /// Submits a foreground job and returns the stream of its events.
    pub async fn submit(&self, request: JobRequest) -> Result<JobStream, ClientError> {
        if request.run_at.is_some() {
            return Err(ClientError::InvalidArgument(
                "epoch jobs are background jobs; use submit_background".into(),
            ));
        }
        let (handle, rx) = self.submit_inner(&request, false).await?;
        let rx = rx.ok_or_else(|| ClientError::Protocol("no listener".into()))?;
        Ok(JobStream { handle, rx, done: false, timeout: request.timeout })
    }

    /// Submits a background job (or, with [`JobRequest::run_at`], an epoch job) and
    /// returns its handle once the server has accepted it.
    pub async fn submit_background(&self, request: JobRequest) -> Result<JobHandle, ClientError> {
        self.submit_inner(&request, true).await.map(|(h, _)| h)
    }

    async fn submit_inner(
        &self,
        request: &JobRequest,
        background: bool,
    ) -> Result<(JobHandle, Option<mpsc::UnboundedReceiver<JobEvent>>), ClientError> {
        request.validate()?;
        let bytes = request.encode(background);
        let n = self.inner.slots.len();
        let start = match &request.unique {
            Some(u) if !u.is_empty() => (stable_hash(u) % n as u64) as usize,
            _ => self.inner.rr.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.on_servers(start, |idx, conn| {
            let bytes = bytes.clone();
            async move {
                let (listener, rx) = if background {
                    (None, None)
                } else {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (Some(tx), Some(rx))
                };
                let p = self.exchange(&conn, bytes, Command::JobCreated, listener).await?;
                let handle = JobHandle { server: idx, addr: conn.addr().to_string(), handle: p.arg_bytes(0) };
                Ok((handle, rx))
            }
        })
        .await
    }

    /// Tries `op` on the servers from `start` on, moving to the next on connection errors.
    /// Servers in backoff are only tried when every other server failed.
    async fn on_servers<T, F, Fut>(&self, start: usize, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(usize, Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let n = self.inner.slots.len();
        let mut last = String::from("no server tried");
        let mut skipped = Vec::new();
        for pass in 0..2 {
            let order: Vec<usize> = if pass == 0 {
                (0..n).map(|i| (start + i) % n).collect()
            } else {
                std::mem::take(&mut skipped)
            };
            for idx in order {
                let conn = match self.conn(idx, pass == 1).await {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        skipped.push(idx);
                        continue;
                    }
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                match op(idx, conn).await {
                    Err(e) if e.is_connection_error() => {
                        self.inner.slots.get(idx).map(Slot::mark_down);
                        last = e.to_string();
                    }
                    r => return r,
                }
            }
        }
        Err(ClientError::NoServerAvailable { last })
    }

    async fn exchange(
        &self,
        conn: &Conn,
        bytes: Bytes,
        expect: Command,
        listener: Option<mpsc::UnboundedSender<JobEvent>>,
    ) -> Result<gearman_proto::Packet, ClientError> {
        let fut = conn.request(bytes, expect, listener);
        match self.inner.opts.request_timeout {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or(Err(ClientError::Timeout)),
            None => fut.await,
        }
    }

    /// The live connection to server `idx`, connecting if needed. `Ok(None)` means the
    /// server is in backoff and `ignore_backoff` is false.
    async fn conn(&self, idx: usize, ignore_backoff: bool) -> Result<Option<Arc<Conn>>, ClientError> {
        let slot = self
            .inner
            .slots
            .get(idx)
            .ok_or_else(|| ClientError::InvalidArgument(format!("no server #{idx}")))?;
        let mut guard = slot.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(Some(c.clone()));
            }
            *guard = None;
        }
        if !ignore_backoff && slot.in_backoff() {
            return Ok(None);
        }
        match self.open(&slot.addr).await {
            Ok(c) => {
                slot.mark_up();
                let c = Arc::new(c);
                *guard = Some(c.clone());
                Ok(Some(c))
            }
            Err(e) => {
                tracing::debug!("cannot use {}: {e}", slot.addr);
                slot.mark_down();
                Err(e)
            }
        }
    }

    async fn open(&self, addr: &str) -> Result<Conn, ClientError> {
        let opts = &self.inner.opts;
        let limits = Limits { max_packet_bytes: opts.max_packet_bytes, ..Limits::default() };
        let conn = Conn::connect(addr, opts.connect_timeout, limits).await?;
        if let Some(id) = &opts.client_id {
            conn.send(req(Command::SetClientId, &[id]))?;
        }
        if opts.exceptions {
            self.exchange(&conn, req(Command::OptionReq, &[b"exceptions"]), Command::OptionRes, None).await?;
        }
        Ok(conn)
    }

    /// `GET_STATUS` for a job, asked of the server that issued the handle.
    pub async fn status(&self, job: &JobHandle) -> Result<JobStatus, ClientError> {
        if job.handle.len() >= 64 {
            // gearmand does not answer such a request at all.
            return Err(ClientError::InvalidArgument("job handles are shorter than 64 bytes".into()));
        }
        let conn = self
            .conn(job.server, true)
            .await?
            .ok_or_else(|| ClientError::ConnectionLost { addr: job.addr.clone() })?;
        let p =
            self.exchange(&conn, req(Command::GetStatus, &[&job.handle]), Command::StatusRes, None).await?;
        Ok(JobStatus {
            known: parse_num(p.arg(1)) != 0,
            running: parse_num(p.arg(2)) != 0,
            numerator: parse_num(p.arg(3)),
            denominator: parse_num(p.arg(4)),
        })
    }

    /// `GET_STATUS_UNIQUE`: asks the server the key hashes to first, then the others,
    /// and returns the first answer that knows the job (or "unknown").
    pub async fn status_unique(&self, unique: impl AsRef<[u8]>) -> Result<UniqueStatus, ClientError> {
        let unique = unique.as_ref();
        if unique.len() >= 64 || unique.contains(&0) {
            return Err(ClientError::InvalidArgument("unique keys are shorter than 64 bytes".into()));
        }
        let n = self.inner.slots.len();
        let start = (stable_hash(unique) % n as u64) as usize;
        let mut answered = false;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let conn = match self.conn(idx, false).await {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let p = match self
                .exchange(&conn, req(Command::GetStatusUnique, &[unique]), Command::StatusResUnique, None)
                .await
            {
                Ok(p) => p,
                Err(e) if e.is_connection_error() => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            answered = true;
            let st = UniqueStatus {
                known: parse_num(p.arg(1)) != 0,
                running: parse_num(p.arg(2)) != 0,
                numerator: parse_num(p.arg(3)),
                denominator: parse_num(p.arg(4)),
                waiting_clients: parse_num(p.arg(5)),
            };
            if st.known {
                return Ok(st);
            }
        }
        match (answered, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(UniqueStatus::default()),
        }
    }

    /// `ECHO_REQ`: sends `data` to the next available server and returns its echo.
    pub async fn echo(&self, data: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let data = data.into();
        let start = self.inner.rr.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let bytes = req(Command::EchoReq, &[&data]);
        self.on_servers(start, |_, conn| {
            let bytes = bytes.clone();
            async move { Ok(self.exchange(&conn, bytes, Command::EchoRes, None).await?.arg_bytes(0)) }
        })
        .await
    }
}
