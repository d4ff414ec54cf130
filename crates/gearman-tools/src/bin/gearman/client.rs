//! Client mode: every workload is submitted once per `-f` function; a batch (one workload
//! over all functions) runs to completion before the next one starts, as in the C tool.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;
use gearman_client::{Client, ClientError, ClientOptions, JobEvent, JobRequest, Priority};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::{exit, Args, Prio};

/// Why a batch stopped early; the exit status it maps to.
enum Stop {
    Connection,
    Timeout,
}

impl Stop {
    fn code(&self) -> u8 {
        match self {
            Stop::Connection => exit::CONNECTION,
            Stop::Timeout => exit::TIMEOUT,
        }
    }
}

struct Runner {
    args: Args,
    client: Client,
    /// Some job failed (WORK_FAIL or an exception).
    failed: bool,
}

/// Runs client mode and returns the exit status.
pub(crate) async fn run(args: Args) -> u8 {
    let options = ClientOptions { request_timeout: args.timeout, retries: 0, ..ClientOptions::default() };
    let client = match Client::with_options(&args.servers, options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gearman: {e}");
            return exit::FAILED;
        }
    };
    let mut runner = Runner { args, client, failed: false };
    match runner.run_all().await {
        Ok(()) if runner.failed => exit::FAILED,
        Ok(()) => exit::OK,
        Err(stop) => stop.code(),
    }
}

impl Runner {
    async fn run_all(&mut self) -> Result<(), Stop> {
        if !self.args.rest.is_empty() {
            let words: Vec<Bytes> =
                self.args.rest.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
            for w in words {
                self.batch(w).await?;
            }
        } else if self.args.no_input {
            self.batch(Bytes::new()).await?;
        } else if self.args.per_line {
            let mut stdin = BufReader::new(tokio::io::stdin());
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("gearman: reading standard input: {e}");
                        self.failed = true;
                        break;
                    }
                }
                // -N strips the newline only; the C tool cuts the last byte even when it
                // is not a newline (a final line without one lost a character).
                if self.args.strip_newline && line.last() == Some(&b'\n') {
                    line.pop();
                }
                self.batch(Bytes::from(line)).await?;
            }
        } else {
            let mut all = Vec::new();
            if let Err(e) = tokio::io::stdin().read_to_end(&mut all).await {
                eprintln!("gearman: reading standard input: {e}");
                self.failed = true;
                return Ok(());
            }
            self.batch(Bytes::from(all)).await?;
        }
        Ok(())
    }

    fn request(&self, function: &str, workload: &Bytes) -> JobRequest {
        let priority = match self.args.priority {
            Prio::Low => Priority::Low,
            Prio::Normal => Priority::Normal,
            Prio::High => Priority::High,
        };
        // Like libgearman, a job without -u gets a fresh UUID, so CLI jobs never coalesce.
        let unique = self.args.unique.clone().unwrap_or_else(uuid);
        JobRequest::new(Bytes::copy_from_slice(function.as_bytes()), workload.clone())
            .priority(priority)
            .unique(unique)
    }

    /// Submits `workload` to every function and waits for all of those jobs.
    async fn batch(&mut self, workload: Bytes) -> Result<(), Stop> {
        let functions = self.args.functions.clone();
        if self.args.background {
            for f in &functions {
                match self.client.submit_background(self.request(f, &workload)).await {
                    Ok(h) => self.created(h.handle()),
                    Err(e) => return Err(self.report(&e)),
                }
            }
            return Ok(());
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<JobEvent, ClientError>)>();
        let mut open = 0usize;
        for (i, f) in functions.iter().enumerate() {
            let mut stream = match self.client.submit(self.request(f, &workload)).await {
                Ok(s) => s,
                Err(e) => return Err(self.report(&e)),
            };
            self.created(stream.handle().handle());
            open += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(ev) = stream.next().await {
                    if tx.send((i, ev)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while open > 0 {
            let next = match self.args.timeout {
                Some(t) => match tokio::time::timeout(t, rx.recv()).await {
                    Ok(n) => n,
                    Err(_) => return Err(self.report(&ClientError::Timeout)),
                },
                None => rx.recv().await,
            };
            let Some((i, ev)) = next else { break };
            let function = functions.get(i).map(String::as_str).unwrap_or_default();
            match ev {
                Ok(ev) => {
                    if ev.is_terminal() {
                        open -= 1;
                    }
                    self.show(function, ev);
                }
                Err(e) => return Err(self.report(&e)),
            }
        }
        Ok(())
    }

    /// Prints an error in the shape of libgearman's messages (without its source location
    /// and pid) and classifies it.
    fn report(&self, e: &ClientError) -> Stop {
        let servers = self.args.servers.join(",");
        match e {
            ClientError::Timeout => {
                let ms = self.args.timeout.map_or(0, |t| t.as_millis());
                eprintln!(
                    "gearman: gearman_client_run_tasks : gearman_wait(GEARMAN_TIMEOUT) timeout reached, \
                     no answer within {ms} ms"
                );
                Stop::Timeout
            }
            ClientError::NoServerAvailable { last } => {
                eprintln!(
                    "gearman: gearman_client_run_tasks : flush(GEARMAN_COULD_NOT_CONNECT) \
                     Connection to {servers} failed -> {last}"
                );
                Stop::Connection
            }
            ClientError::ConnectionLost { addr } => {
                eprintln!(
                    "gearman: gearman_client_run_tasks : _client_run_tasks(GEARMAN_LOST_CONNECTION) \
                     lost connection to {addr}"
                );
                Stop::Connection
            }
            other => {
                eprintln!("gearman: gearman_client_run_tasks : {other}");
                Stop::Connection
            }
        }
    }

    fn created(&self, handle: &Bytes) {
        if self.args.verbose {
            let mut line = b"Task created: ".to_vec();
            line.extend_from_slice(handle);
            line.push(b'\n');
            write_out(&line);
        }
    }

    /// Prints one job event the way the C tool's callbacks do.
    fn show(&mut self, function: &str, ev: JobEvent) {
        let mut text = Vec::new();
        if self.args.prefix {
            text.extend_from_slice(function.as_bytes());
            text.extend_from_slice(b": ");
        }
        match ev {
            JobEvent::Data(d) | JobEvent::Complete(d) => {
                text.extend_from_slice(&d);
                write_out(&text);
            }
            JobEvent::Status { numerator, denominator } => {
                // The C tool dies with SIGFPE on a zero denominator; show 0% instead.
                let pct = u128::from(numerator)
                    .saturating_mul(100)
                    .checked_div(u128::from(denominator))
                    .unwrap_or(0);
                text.extend_from_slice(format!("{pct}% Complete\n").as_bytes());
                write_out(&text);
            }
            JobEvent::Warning(d) => {
                text.extend_from_slice(&d);
                write_err(&text);
            }
            JobEvent::Exception(d) => {
                text.extend_from_slice(&d);
                write_err(&text);
                self.failed = true;
            }
            JobEvent::Fail => {
                text.extend_from_slice(b"Job failed\n");
                write_err(&text);
                self.failed = true;
            }
        }
    }
}

/// Raw write to stdout, flushed at once (the C tool uses write(2) for results).
pub(crate) fn write_out(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn write_err(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// A random (version 4) UUID in its 36-character text form, from std's hasher seeds.
fn uuid() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let word = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        h.finish()
    };
    let (a, b) = (word(), word());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_libgearmans() {
        let (a, b) = (uuid(), uuid());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(a.as_bytes().get(14), Some(&b'4'));
    }
}
