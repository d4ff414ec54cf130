//! One client connection: a reader task and a writer task around a TCP stream.
//!
//! Requests that get a reply (SUBMIT_*, GET_STATUS*, ECHO_REQ, OPTION_REQ) register a
//! [`Pending`] entry and queue their bytes under one lock, so the FIFO of pending entries
//! has exactly the order of the bytes on the wire; the server answers in request order,
//! so each reply (or ERROR) belongs to the oldest pending entry. WORK_* packets are
//! routed by job handle to every listener registered for it (coalesced submits on one
//! connection share a handle, and each gets every event).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gearman_proto::{decode, Command, Frame, Limits, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::JobEvent;
use crate::util::parse_num;
use crate::ClientError;

/// Who waits for the next reply on a connection.
struct Pending {
    /// The reply type that answers this request (ERROR answers any).
    expect: Command,
    /// For foreground submits: where the job's WORK_* events go once the handle is known.
    listener: Option<mpsc::UnboundedSender<JobEvent>>,
    reply: oneshot::Sender<Result<Packet, ClientError>>,
}

#[derive(Default)]
struct State {
    closed: bool,
    pending: VecDeque<Pending>,
    jobs: HashMap<Bytes, Vec<mpsc::UnboundedSender<JobEvent>>>,
}

/// A live (or recently died) client connection.
pub(crate) struct Conn {
    addr: String,
    state: Arc<Mutex<State>>,
    tx: mpsc::UnboundedSender<Bytes>,
    stop: CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A poisoned lock only means another task panicked mid-update; the state is still
    // usable for failing everything out.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    /// Connects and starts the reader and writer tasks.
    pub(crate) async fn connect(
        addr: &str,
        connect_timeout: Duration,
        limits: Limits,
    ) -> Result<Conn, ClientError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ClientError::NoServerAvailable { last: format!("{addr}: {e}") });
            }
            Err(_) => {
                return Err(ClientError::NoServerAvailable { last: format!("{addr}: connect timed out") })
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        tokio::spawn(write_loop(wr, rx, state.clone(), stop.clone()));
        tokio::spawn(read_loop(rd, state.clone(), stop.clone(), limits, addr.to_string()));
        Ok(Conn { addr: addr.to_string(), state, tx, stop })
    }

    /// The server address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has died.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn lost(&self) -> ClientError {
        ClientError::ConnectionLost { addr: self.addr.clone() }
    }

    /// Sends a packet that gets no reply.
    pub(crate) fn send(&self, bytes: Bytes) -> Result<(), ClientError> {
        let st = lock(&self.state);
        if st.closed || self.tx.send(bytes).is_err() {
            return Err(self.lost());
        }
        Ok(())
    }

    /// Sends a request and waits for its reply packet (an ERROR becomes `Err`).
    pub(crate) async fn request(
        &self,
        bytes: Bytes,
        expect: Command,
        listener: Option<mpsc::UnboundedSender<JobEvent>>,
    ) -> Result<Packet, ClientError> {
        let rx = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(self.lost());
            }
            let (reply, rx) = oneshot::channel();
            st.pending.push_back(Pending { expect, listener, reply });
            if self.tx.send(bytes).is_err() {
                st.pending.pop_back();
                return Err(self.lost());
            }
            rx
        };
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.lost()),
        }
    }
}

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        buf.extend_from_slice(&first);
        while buf.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let res = tokio::select! {
            r = wr.write_all(&buf) => r,
            _ = stop.cancelled() => break,
        };
        buf.clear();
        if let Err(e) = res {
            tracing::debug!("client write failed: {e}");
            break;
        }
    }
    let _ = wr.shutdown().await;
    close(&state);
    stop.cancel();
}

async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    limits: Limits,
    addr: String,
) {
    let mut buf = BytesMut::with_capacity(8192);
    'outer: loop {
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = stop.cancelled() => break,
        };
        match n {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("read from {addr} failed: {e}");
                break;
            }
        }
        loop {
            match decode(&mut buf, &limits) {
                Ok(Some(Frame::Packet(p))) => {
                    if let Err(e) = dispatch(&state, p) {
                        tracing::warn!("bad packet from {addr}: {e}");
                        break 'outer;
                    }
                }
                Ok(Some(Frame::AdminLine(_))) => {
                    tracing::warn!("unexpected text line from {addr}");
                    break 'outer;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("undecodable data from {addr}: {e}");
                    break 'outer;
                }
            }
        }
    }
    close(&state);
    stop.cancel();
}

/// Marks the connection dead and fails everyone waiting on it.
fn close(state: &Mutex<State>) {
    let (pending, jobs) = {
        let mut st = lock(state);
        st.closed = true;
        (std::mem::take(&mut st.pending), std::mem::take(&mut st.jobs))
    };
    // Dropping the senders tells every waiter that the connection is gone.
    drop(pending);
    drop(jobs);
}

fn dispatch(state: &Mutex<State>, p: Packet) -> Result<(), String> {
    if p.argc() == 0 && p.command.layout().argc > 0 {
        // The decoder hands server-only packets over unsplit when their arguments are
        // missing; for a client that is a broken server.
        return Err(format!("malformed {}", p.command.name()));
    }
    let mut st = lock(state);
    match p.command {
        Command::JobCreated
        | Command::StatusRes
        | Command::StatusResUnique
        | Command::EchoRes
        | Command::OptionRes
        | Command::Error => {
            let Some(front) = st.pending.pop_front() else {
                return Err(format!("unsolicited {}", p.command.name()));
            };
            if p.command == Command::Error {
                let err = ClientError::Server {
                    code: String::from_utf8_lossy(p.arg(0)).into_owned(),
                    text: String::from_utf8_lossy(p.arg(1)).into_owned(),
                };
                let _ = front.reply.send(Err(err));
                return Ok(());
            }
            if p.command != front.expect {
                let msg = format!("expected {} but got {}", front.expect.name(), p.command.name());
                let _ = front.reply.send(Err(ClientError::Protocol(msg.clone())));
                return Err(msg);
            }
            if let Some(listener) = front.listener {
                // Only register if someone still waits for the handle; a submit whose
                // caller gave up must not leak a listener.
                if !front.reply.is_closed() {
                    st.jobs.entry(p.arg_bytes(0)).or_default().push(listener);
                }
            }
            let _ = front.reply.send(Ok(p));
            Ok(())
        }
        Command::WorkData
        | Command::WorkWarning
        | Command::WorkStatus
        | Command::WorkComplete
        | Command::WorkFail
        | Command::WorkException => {
            let mut handle = p.arg_bytes(0);
            if !st.jobs.contains_key(&handle) && handle.last() == Some(&0) {
                // gearmand's exception-to-WORK_FAIL conversion appends a NUL (quirk Q1).
                handle.truncate(handle.len() - 1);
            }
            let event = match p.command {
                Command::WorkData => JobEvent::Data(p.arg_bytes(1)),
                Command::WorkWarning => JobEvent::Warning(p.arg_bytes(1)),
                Command::WorkStatus => {
                    JobEvent::Status { numerator: parse_num(p.arg(1)), denominator: parse_num(p.arg(2)) }
                }
                Command::WorkComplete => JobEvent::Complete(p.arg_bytes(1)),
                Command::WorkFail => JobEvent::Fail,
                _ => JobEvent::Exception(p.arg_bytes(1)),
            };
            let terminal = event.is_terminal();
            if terminal {
                if let Some(listeners) = st.jobs.remove(&handle) {
                    for l in listeners {
                        let _ = l.send(event.clone());
                    }
                }
            } else if let Some(listeners) = st.jobs.get_mut(&handle) {
                listeners.retain(|l| l.send(event.clone()).is_ok());
                if listeners.is_empty() {
                    st.jobs.remove(&handle);
                }
            }
            Ok(())
        }
        // NOOP and friends are not for clients; ignore rather than fail.
        _ => {
            tracing::debug!("ignoring {} on a client connection", p.command.name());
            Ok(())
        }
    }
}
