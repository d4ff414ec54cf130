//! The text admin protocol (`gearadmin`'s commands), parsed into types.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{normalize_addr, parse_num};
use crate::ClientError;

/// Longest admin answer line accepted from a server.
const MAX_LINE: usize = 1 << 20;

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    /// Function name.
    pub name: String,
    /// Jobs queued or running.
    pub total: u64,
    /// Jobs held by a worker.
    pub running: u64,
    /// Registered workers.
    pub workers: u64,
}

/// One row of `prioritystatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityStatus {
    /// Function name.
    pub name: String,
    /// Queued high-priority jobs.
    pub high: u64,
    /// Queued normal-priority jobs.
    pub normal: u64,
    /// Queued low-priority jobs.
    pub low: u64,
    /// Registered workers.
    pub workers: u64,
}

/// One row of `workers`: a connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The server's socket descriptor for the connection.
    pub fd: i64,
    /// Peer IP address.
    pub ip: String,
    /// The id from `SET_CLIENT_ID` (`-` by default).
    pub client_id: String,
    /// Registered functions, most recent first.
    pub functions: Vec<String>,
}

/// One row of `show jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// Job handle.
    pub handle: String,
    /// Times the job was requeued after a worker lost it.
    pub retries: u64,
    /// Every listener left (or the job was cancelled); discarded when next reached.
    pub abandoned: bool,
    /// Recorded in the persistent queue.
    pub persisted: bool,
}

/// Per-priority queue limits for `maxqueue`; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxQueue {
    /// Limit for high-priority submits.
    pub high: u32,
    /// Limit for normal-priority submits.
    pub normal: u32,
    /// Limit for low-priority submits.
    pub low: u32,
}

impl MaxQueue {
    /// The same limit for every priority.
    pub fn all(n: u32) -> MaxQueue {
        MaxQueue { high: n, normal: n, low: n }
    }
}

/// A connection for admin commands to one server.
///
/// ```no_run
/// # async fn demo() -> Result<(), gearman_client::ClientError> {
/// let mut admin = gearman_client::AdminClient::connect("127.0.0.1:4730").await?;
/// for f in admin.status().await? {
///     println!("{}: {} queued, {} workers", f.name, f.total - f.running, f.workers);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AdminClient {
    stream: TcpStream,
    addr: String,
    buf: BytesMut,
    timeout: Option<Duration>,
    /// Set when a command was cut short: answers would no longer match the commands.
    broken: bool,
}

impl AdminClient {
    /// Connects to `addr` (`host:port`; the port defaults to 4730).
    pub async fn connect(addr: &str) -> Result<AdminClient, ClientError> {
        let addr = normalize_addr(addr);
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| ClientError::NoServerAvailable { last: format!("{addr}: connect timed out") })?
            .map_err(|e| ClientError::NoServerAvailable { last: format!("{addr}: {e}") })?;
        Ok(AdminClient {
            stream,
            addr,
            buf: BytesMut::new(),
            timeout: Some(Duration::from_secs(30)),
            broken: false,
        })
    }

    /// Sets the limit on each command's answer (`None`: wait forever). After a timeout
    /// the connection is out of step and every later call fails with
    /// [`ClientError::ConnectionLost`]; connect again.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn lost(&self) -> ClientError {
        ClientError::ConnectionLost { addr: self.addr.clone() }
    }

    async fn read_line(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(pos + 1);
                line.truncate(pos);
                if line.last() == Some(&b'\r') {
                    line.truncate(pos - 1);
                }
                return Ok(line.freeze());
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Protocol("admin answer line too long".into()));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(self.lost()),
                Ok(_) => {}
            }
        }
    }

    fn check_args(args: &[&str]) -> Result<(), ClientError> {
        for a in args {
            if a.is_empty() || a.bytes().any(|b| b == b' ' || b == b'\n' || b == b'\r' || b == 0) {
                return Err(ClientError::InvalidArgument(format!(
                    "admin argument {a:?} is empty or contains a space or line break"
                )));
            }
        }
        Ok(())
    }

    async fn send(&mut self, line: &str) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await.map_err(|_| self.lost())
    }

    async fn with_timeout<T>(
        &mut self,
        f: impl for<'a> FnOnce(&'a mut AdminClient) -> BoxFut<'a, T>,
    ) -> Result<T, ClientError> {
        if self.broken {
            return Err(self.lost());
        }
        let r = match self.timeout {
            Some(t) => tokio::time::timeout(t, f(self)).await.unwrap_or(Err(ClientError::Timeout)),
            None => f(self).await,
        };
        if matches!(
            r,
            Err(ClientError::Timeout | ClientError::ConnectionLost { .. } | ClientError::Protocol(_))
        ) {
            self.broken = true;
        }
        r
    }

    /// Sends `line` and returns the single answer line (`OK ...`), `ERR` as an error.
    async fn command_line(&mut self, line: String) -> Result<String, ClientError> {
        self.with_timeout(move |s| {
            Box::pin(async move {
                s.send(&line).await?;
                let answer = s.read_line().await?;
                let text = String::from_utf8_lossy(&answer).into_owned();
                check_err(&text)?;
                Ok(text)
            })
        })
        .await
    }

    /// Sends `line` and reads a list answer up to the `.` line.
    async fn command_list(&mut self, line: String) -> Result<Vec<String>, ClientError> {
        self.with_timeout(move |s| {
            Box::pin(async move {
                s.send(&line).await?;
                let mut rows = Vec::new();
                loop {
                    let answer = s.read_line().await?;
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    if rows.is_empty() {
                        check_err(&text)?;
                    }
                    if text == "." {
                        return Ok(rows);
                    }
                    rows.push(text);
                }
            })
        })
        .await
    }

    async fn command_ok(&mut self, line: String) -> Result<(), ClientError> {
        let answer = self.command_line(line).await?;
        if answer == "OK" || answer.starts_with("OK ") {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!("unexpected admin answer {answer:?}")))
        }
    }

    async fn command_value(&mut self, line: String) -> Result<String, ClientError> {
        let answer = self.command_line(line).await?;
        match answer.strip_prefix("OK ") {
            Some(v) => Ok(v.to_string()),
            None => Err(ClientError::Protocol(format!("unexpected admin answer {answer:?}"))),
        }
    }

    /// `status`: every function with its job and worker counts.
    pub async fn status(&mut self) -> Result<Vec<FunctionStatus>, ClientError> {
        let rows = self.command_list("status".into()).await?;
        rows.iter()
            .map(|r| {
                let f = split_tabs(r, 4)?;
                Ok(FunctionStatus {
                    name: f[0].to_string(),
                    total: num(f[1]),
                    running: num(f[2]),
                    workers: num(f[3]),
                })
            })
            .collect()
    }

    /// `prioritystatus`: queued jobs per priority for every function.
    pub async fn priority_status(&mut self) -> Result<Vec<PriorityStatus>, ClientError> {
        let rows = self.command_list("prioritystatus".into()).await?;
        rows.iter()
            .map(|r| {
                let f = split_tabs(r, 5)?;
                Ok(PriorityStatus {
                    name: f[0].to_string(),
                    high: num(f[1]),
                    normal: num(f[2]),
                    low: num(f[3]),
                    workers: num(f[4]),
                })
            })
            .collect()
    }

    /// `workers`: every connection with its id and registered functions.
    pub async fn workers(&mut self) -> Result<Vec<WorkerInfo>, ClientError> {
        let rows = self.command_list("workers".into()).await?;
        rows.iter().map(|r| parse_worker(r)).collect()
    }

    /// `version`: the server's version string.
    pub async fn version(&mut self) -> Result<String, ClientError> {
        self.command_value("version".into()).await
    }

    /// `getpid`: the server's process id.
    pub async fn getpid(&mut self) -> Result<u32, ClientError> {
        let v = self.command_value("getpid".into()).await?;
        v.trim().parse().map_err(|_| ClientError::Protocol(format!("bad pid {v:?}")))
    }

    /// `verbose`: the server's log level name.
    pub async fn verbose(&mut self) -> Result<String, ClientError> {
        self.command_value("verbose".into()).await
    }

    /// `show jobs`: every job the server holds.
    pub async fn show_jobs(&mut self) -> Result<Vec<JobInfo>, ClientError> {
        let rows = self.command_list("show jobs".into()).await?;
        rows.iter()
            .map(|r| {
                let f = split_tabs(r, 4)?;
                Ok(JobInfo {
                    handle: f[0].to_string(),
                    retries: num(f[1]),
                    abandoned: num(f[2]) != 0,
                    persisted: num(f[3]) != 0,
                })
            })
            .collect()
    }

    /// `show unique jobs`: the unique key of every job (empty for jobs without one).
    pub async fn show_unique_jobs(&mut self) -> Result<Vec<String>, ClientError> {
        self.command_list("show unique jobs".into()).await
    }

    /// `maxqueue FUNCTION HIGH NORMAL LOW`: sets the queue limits of a function.
    pub async fn set_max_queue(&mut self, function: &str, limits: MaxQueue) -> Result<(), ClientError> {
        Self::check_args(&[function])?;
        self.command_ok(format!("maxqueue {function} {} {} {}", limits.high, limits.normal, limits.low)).await
    }

    /// `maxqueue FUNCTION`: removes the queue limits of a function.
    pub async fn clear_max_queue(&mut self, function: &str) -> Result<(), ClientError> {
        Self::check_args(&[function])?;
        self.command_ok(format!("maxqueue {function}")).await
    }

    /// `cancel job HANDLE`. An unknown handle gives [`ClientError::Admin`] `UNKNOWN_JOB`.
    pub async fn cancel_job(&mut self, handle: &str) -> Result<(), ClientError> {
        Self::check_args(&[handle])?;
        self.command_ok(format!("cancel job {handle}")).await
    }

    /// `create function NAME`.
    pub async fn create_function(&mut self, name: &str) -> Result<(), ClientError> {
        Self::check_args(&[name])?;
        self.command_ok(format!("create function {name}")).await
    }

    /// `drop function NAME`. Fails while workers are registered or jobs run, and for an
    /// unknown function.
    pub async fn drop_function(&mut self, name: &str) -> Result<(), ClientError> {
        Self::check_args(&[name])?;
        self.command_ok(format!("drop function {name}")).await
    }

    /// Sends any admin line and returns the raw answer lines (one for `OK`/`ERR` answers,
    /// the rows for list answers, without the final `.`). `list` says which kind to expect.
    pub async fn raw(&mut self, line: &str, list: bool) -> Result<Vec<String>, ClientError> {
        if line.contains('\n') || line.contains('\r') {
            return Err(ClientError::InvalidArgument("admin line contains a line break".into()));
        }
        if list {
            self.command_list(line.to_string()).await
        } else {
            self.command_line(line.to_string()).await.map(|l| vec![l])
        }
    }
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ClientError>> + Send + 'a>>;

fn check_err(line: &str) -> Result<(), ClientError> {
    if let Some(rest) = line.strip_prefix("ERR") {
        let rest = rest.trim_start();
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            // Free-text errors such as "ERR function not found".
            return Err(ClientError::Admin { code: String::new(), text: rest.to_string() });
        }
        return Err(ClientError::Admin { code: code.to_string(), text: text.replace('+', " ") });
    }
    Ok(())
}

fn num(s: &str) -> u64 {
    parse_num(s.as_bytes())
}

fn split_tabs(row: &str, n: usize) -> Result<Vec<&str>, ClientError> {
    // The name comes first and may itself contain tabs; the counts are the last n-1 fields.
    let mut fields: Vec<&str> = row.rsplitn(n, '\t').collect();
    if fields.len() != n {
        return Err(ClientError::Protocol(format!("malformed admin row {row:?}")));
    }
    fields.reverse();
    Ok(fields)
}

fn parse_worker(row: &str) -> Result<WorkerInfo, ClientError> {
    let bad = || ClientError::Protocol(format!("malformed workers row {row:?}"));
    let (fd, rest) = row.split_once(' ').ok_or_else(bad)?;
    let (ip, rest) = rest.split_once(' ').ok_or_else(bad)?;
    // The id may contain spaces; the function list starts at the last " :" that is
    // followed by nothing or by a space.
    let colon = rest
        .rmatch_indices(" :")
        .map(|(i, _)| i)
        .find(|&i| matches!(rest.as_bytes().get(i + 2), None | Some(b' ')))
        .ok_or_else(bad)?;
    let client_id = rest.get(..colon).ok_or_else(bad)?.to_string();
    let functions =
        rest.get(colon + 2..).unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(String::from);
    Ok(WorkerInfo {
        fd: fd.trim().parse().map_err(|_| bad())?,
        ip: ip.to_string(),
        client_id,
        functions: functions.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_rows_parse() {
        let w = parse_worker("38 127.0.0.1 worker-1 : thumb resize").expect("valid row");
        assert_eq!(w.fd, 38);
        assert_eq!(w.ip, "127.0.0.1");
        assert_eq!(w.client_id, "worker-1");
        assert_eq!(w.functions, vec!["thumb", "resize"]);
        let w = parse_worker("40 127.0.0.1 - :").expect("valid row");
        assert_eq!(w.client_id, "-");
        assert!(w.functions.is_empty());
        let w = parse_worker("38 127.0.0.1  : other").expect("valid row");
        assert_eq!(w.client_id, "");
        assert_eq!(w.functions, vec!["other"]);
        let w = parse_worker("7 ::1 my id : f").expect("valid row");
        assert_eq!(w.client_id, "my id");
        assert!(parse_worker("garbage").is_err());
    }

    #[test]
    fn err_lines_become_typed_errors() {
        match check_err("ERR UNKNOWN_COMMAND Unknown+server+commandbogus") {
            Err(ClientError::Admin { code, text }) => {
                assert_eq!(code, "UNKNOWN_COMMAND");
                assert_eq!(text, "Unknown server commandbogus");
            }
            other => panic!("unexpected {other:?}"),
        }
        match check_err("ERR UNKNOWN_JOB") {
            Err(ClientError::Admin { code, text }) => {
                assert_eq!(code, "UNKNOWN_JOB");
                assert_eq!(text, "");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(check_err("OK").is_ok());
    }

    #[test]
    fn tab_rows_split_from_the_right() {
        assert_eq!(split_tabs("a\tb\t1\t2\t3", 4).expect("row"), vec!["a\tb", "1", "2", "3"]);
        assert_eq!(split_tabs("\t1\t0\t0", 4).expect("row"), vec!["", "1", "0", "0"]);
        assert!(split_tabs("x\t1", 4).is_err());
    }
}
