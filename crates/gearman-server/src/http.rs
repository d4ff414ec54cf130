//! gearmand's HTTP front end (`-r http --http-port P`), on hyper's HTTP/1 server.
//!
//! Each request becomes a virtual client connection of the engine: it is registered
//! like a TCP connection, submits one job with a SUBMIT_* packet, and reads the
//! engine's `\0RES` replies back out of its own [`Outbound`] buffer. The engine knows
//! nothing of HTTP; when the request ends (answered, or the client went away) the
//! virtual connection is disconnected like any other client.
//!
//! Mapping (as gearmand 1.1.20, except where `docs/COMPATIBILITY.md` says otherwise):
//! `GET|HEAD|POST|PUT /<function>` submits a job; the function is the request target
//! with every leading `/` removed, query string included. `X-Gearman-Unique` sets the
//! unique (default `-`, so identical requests coalesce), `X-Gearman-Background: true`
//! makes it a background job (answered at once with `JOB_CREATED`), and
//! `X-Gearman-Priority: high|low` picks the queue.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use gearman_engine::{ConnId, PeerInfo};
use gearman_proto::{decode, Command, Frame, Limits, Magic, Packet};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, SERVER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::core::{now_ms, Shared};
use crate::outbound::Outbound;

/// Settings of the HTTP front end.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// Port to listen on (same host or address as the Gear port); 0 picks a free one.
    pub port: u16,
    /// Largest accepted request body (the workload); larger requests get `413`.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { port: 8080, max_body_bytes: gearman_proto::DEFAULT_MAX_PACKET_BYTES as usize }
    }
}

/// Limits applied to every HTTP request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Largest request body.
    pub(crate) max_body_bytes: usize,
    /// Largest result (WORK_DATA chunks plus WORK_COMPLETE) buffered for one answer;
    /// also the virtual connection's output budget.
    pub(crate) max_output_bytes: usize,
}

const SERVER_NAME: &str = concat!("gearman-rs/", env!("CARGO_PKG_VERSION"));
const X_HANDLE: HeaderName = HeaderName::from_static("x-gearman-job-handle");
const X_COMMAND: HeaderName = HeaderName::from_static("x-gearman-command");
const X_ERROR_CODE: HeaderName = HeaderName::from_static("x-gearman-error-code");
const X_UNIQUE: HeaderName = HeaderName::from_static("x-gearman-unique");
const X_BACKGROUND: HeaderName = HeaderName::from_static("x-gearman-background");
const X_PRIORITY: HeaderName = HeaderName::from_static("x-gearman-priority");

/// Serves one accepted HTTP connection (keep-alive: any number of requests, one at a
/// time) until the peer closes it or the server stops.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let peer = PeerInfo {
        label: crate::conn::fd_label(&stream),
        ip: stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "-".into()),
    };
    let _ = stream.set_nodelay(true);
    tracing::info!("Accepted HTTP connection from {}", peer.ip);
    let service = hyper::service::service_fn(move |req| {
        let (shared, peer) = (shared.clone(), peer.clone());
        async move { Ok::<_, Infallible>(respond(&shared, &peer, limits, req).await) }
    });
    // Title-case header names, as gearmand writes them, for clients that compare them
    // case-sensitively.
    let conn = hyper::server::conn::http1::Builder::new()
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    // On stop the connection (and a request waiting for its job) is dropped, which
    // disconnects the virtual client.
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!("HTTP connection ended: {e}") },
        _ = stop.cancelled() => {}
    }
}

/// Answers one request; never fails (every problem is an HTTP status).
async fn respond(
    shared: &Arc<Shared>,
    peer: &PeerInfo,
    limits: HttpLimits,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::HEAD | Method::POST | Method::PUT) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT"));
        return r;
    }
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    let function = target.trim_start_matches('/').as_bytes().to_vec();
    if function.is_empty() {
        // Empty body, as gearmand.
        return base(StatusCode::NOT_FOUND, Bytes::new());
    }
    let headers = req.headers();
    let unique = match headers.get(X_UNIQUE) {
        Some(v) if !v.is_empty() => v.as_bytes().to_vec(),
        _ => b"-".to_vec(),
    };
    let background = headers.get(X_BACKGROUND).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let priority = headers.get(X_PRIORITY).map(|v| v.as_bytes().to_ascii_lowercase());
    let command = match (priority.as_deref(), background) {
        (Some(b"high"), false) => Command::SubmitJobHigh,
        (Some(b"high"), true) => Command::SubmitJobHighBg,
        (Some(b"low"), false) => Command::SubmitJobLow,
        (Some(b"low"), true) => Command::SubmitJobLowBg,
        (_, false) => Command::SubmitJob,
        (_, true) => Command::SubmitJobBg,
    };
    // gearmand reads a body for POST and PUT only.
    let workload = if matches!(method, Method::POST | Method::PUT) {
        match read_body(req.into_body(), limits.max_body_bytes).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Bytes::new()
    };
    let packet = match Packet::new(Magic::Req, command, &[&function, &unique, &workload]) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    };
    drop(workload);
    run_job(shared, peer, limits, packet, background).await
}

/// Reads the whole body, or the `413`/`400` answer.
async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {max} bytes\n"));
    // A declared length over the limit is refused before reading anything.
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > max) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, &format!("could not read the body: {e}\n"))),
    }
}

/// The engine side of one request: registered on creation, disconnected on drop
/// (answered, client gone, or server stopping).
struct VirtualConn {
    shared: Arc<Shared>,
    conn: ConnId,
    outbound: Arc<Outbound>,
    /// Cancelled by the outbound buffer when it passes its budget.
    overflow: CancellationToken,
}

impl VirtualConn {
    fn connect(shared: &Arc<Shared>, peer: &PeerInfo, max_output_bytes: usize) -> VirtualConn {
        let overflow = CancellationToken::new();
        let outbound = Arc::new(Outbound::new(max_output_bytes, overflow.clone()));
        let conn = {
            let mut core = shared.core.lock();
            let conn = core.engine.connect(peer.clone());
            Shared::set_route(&mut core.routes, conn, outbound.clone());
            conn
        };
        VirtualConn { shared: shared.clone(), conn, outbound, overflow }
    }
}

impl Drop for VirtualConn {
    fn drop(&mut self) {
        let conn = self.conn;
        self.shared.with_engine(|engine, out| {
            engine.disconnect(conn, now_ms(), out);
            if let Some(slot) = out.routes.get_mut(conn) {
                *slot = None;
            }
        });
    }
}

/// Submits the job and waits for the packet that answers the request.
async fn run_job(
    shared: &Arc<Shared>,
    peer: &PeerInfo,
    limits: HttpLimits,
    submit: Packet,
    background: bool,
) -> Response<Full<Bytes>> {
    let vc = VirtualConn::connect(shared, peer, limits.max_output_bytes);
    // With the exceptions option a WORK_EXCEPTION reaches us as such, not as WORK_FAIL.
    let option = Packet::new(Magic::Req, Command::OptionReq, &[b"exceptions"]).ok();
    let conn = vc.conn;
    shared.with_engine(|engine, out| {
        let now = now_ms();
        if let (false, Some(option)) = (background, &option) {
            engine.handle_packet(conn, option, now, out);
        }
        engine.handle_packet(conn, &submit, now, out);
    });
    drop(submit);

    // Replies come from the engine, whose packets are bounded already.
    let decode_limits = Limits { max_packet_bytes: u32::MAX, ..Limits::default() };
    let mut buf = BytesMut::new();
    let mut result = BytesMut::new();
    loop {
        vc.outbound.take(&mut buf);
        loop {
            let packet = match decode(&mut buf, &decode_limits) {
                Ok(Some(Frame::Packet(p))) => p,
                Ok(Some(Frame::AdminLine(_))) => continue,
                Ok(None) => break,
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            };
            let handle = packet.arg(0);
            match packet.command {
                Command::JobCreated if background => {
                    return job_reply(handle, "JOB_CREATED", Bytes::new());
                }
                Command::WorkData | Command::WorkComplete => {
                    let data = packet.arg(1);
                    if result.len().saturating_add(data.len()) > limits.max_output_bytes {
                        let why = format!("result larger than {} bytes\n", limits.max_output_bytes);
                        return text(StatusCode::BAD_GATEWAY, &why);
                    }
                    result.extend_from_slice(data);
                    if packet.command == Command::WorkComplete {
                        return job_reply(handle, "WORK_COMPLETE", result.freeze());
                    }
                }
                Command::WorkFail => return job_reply(handle, "WORK_FAIL", Bytes::new()),
                Command::WorkException => {
                    return job_reply(handle, "WORK_EXCEPTION", Bytes::copy_from_slice(packet.arg(1)));
                }
                Command::Error => return engine_error(packet.arg(0), packet.arg(1)),
                // JOB_CREATED of a foreground job, OPTION_RES, WORK_STATUS and
                // WORK_WARNING do not end the request.
                _ => {}
            }
        }
        tokio::select! {
            _ = vc.outbound.ready.notified() => {}
            _ = vc.overflow.cancelled() => {
                return text(StatusCode::BAD_GATEWAY, "result too large\n");
            }
        }
    }
}

/// A job answer: handle and command headers, `200`.
fn job_reply(handle: &[u8], command: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = base(StatusCode::OK, body);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_bytes(handle) {
        h.insert(X_HANDLE, v);
    }
    h.insert(X_COMMAND, HeaderValue::from_static(command));
    r
}

/// An ERROR packet from the engine: `400` for an argument the client made too large,
/// `503` otherwise (queue full and the like), with the error text as body.
fn engine_error(code: &[u8], message: &[u8]) -> Response<Full<Bytes>> {
    let status =
        if code == b"ARGUMENT_TOO_LARGE" { StatusCode::BAD_REQUEST } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = message.to_vec();
    body.push(b'\n');
    let mut r = base(status, Bytes::from(body));
    let h = r.headers_mut();
    h.insert(X_COMMAND, HeaderValue::from_static("ERROR"));
    if let Ok(v) = HeaderValue::from_bytes(code) {
        h.insert(X_ERROR_CODE, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    base(status, Bytes::copy_from_slice(body.as_bytes()))
}

/// A response with the `Server` header and an explicit `Content-Length` (hyper leaves
/// it out of HEAD answers otherwise; gearmand always sends it).
fn base(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let len = HeaderValue::from(body.len());
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    h.insert(CONTENT_LENGTH, len);
    r
}
