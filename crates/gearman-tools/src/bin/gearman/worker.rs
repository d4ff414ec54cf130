//! Worker mode (`-w`): one job at a time; each job runs the command with the workload on
//! its stdin and its stdout as the result, or, without a command, echoes the workload to
//! our stdout and completes with an empty result.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gearman_client::{Job, JobError, Worker, WorkerOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::client::write_out;
use crate::{exit, Args};

/// What job handlers tell the main loop.
enum Round {
    /// A job arrived; the `-t` idle timeout does not run while it is being worked on.
    Started,
    /// A job is done; the handler returns (and its result is sent) once `ack` is answered,
    /// so the main loop can begin shutting down first when this was the last round.
    Done { ack: oneshot::Sender<()> },
}

struct Ctx {
    command: Vec<OsString>,
    per_line: bool,
    strip_newline: bool,
    rounds: mpsc::UnboundedSender<Round>,
    /// Set once the `-c` count is reached: jobs that still arrive are not started (they
    /// go back to the server when the connection closes).
    finished: AtomicBool,
}

/// Runs worker mode and returns the exit status.
pub(crate) async fn run(args: Args) -> u8 {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        command: args.rest.clone(),
        per_line: args.per_line,
        strip_newline: args.strip_newline,
        rounds: tx,
        finished: AtomicBool::new(false),
    });
    let options = WorkerOptions { concurrency: 1, ..WorkerOptions::default() };
    let mut builder = Worker::builder(&args.servers).options(options);
    // The C tool registers the functions in reverse order; keep that for `workers` output.
    for f in args.functions.iter().rev() {
        let ctx = ctx.clone();
        builder = builder.function(Bytes::copy_from_slice(f.as_bytes()), move |job: Job| {
            let ctx = ctx.clone();
            async move { handle(ctx, job).await }
        });
    }
    let worker = match builder.spawn() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("gearman: {e}");
            return exit::FAILED;
        }
    };
    if !worker.wait_connected(1, Duration::from_secs(5)).await {
        eprintln!(
            "gearman: gearman_worker_work : flush(GEARMAN_COULD_NOT_CONNECT) Connection to {} failed",
            args.servers.join(",")
        );
        worker.abort();
        return exit::CONNECTION;
    }
    let mut rounds = 0u64;
    let mut busy = false;
    loop {
        let next = match (args.timeout, busy) {
            (Some(t), false) => match tokio::time::timeout(t, rx.recv()).await {
                Ok(n) => n,
                Err(_) => {
                    eprintln!(
                        "gearman: gearman_worker_work : gearman_wait(GEARMAN_TIMEOUT) timeout reached, \
                         no job within {} ms",
                        t.as_millis()
                    );
                    rounds += 1;
                    if args.count > 0 && rounds >= args.count {
                        ctx.finished.store(true, Ordering::SeqCst);
                        worker.abort();
                        return exit::TIMEOUT;
                    }
                    continue;
                }
            },
            _ => rx.recv().await,
        };
        match next {
            Some(Round::Started) => busy = true,
            Some(Round::Done { ack }) => {
                busy = false;
                rounds += 1;
                if args.count > 0 && rounds >= args.count {
                    ctx.finished.store(true, Ordering::SeqCst);
                    // Ask for no more jobs before this job's result frees the worker's
                    // only slot, so it cannot grab one more job than -c allows.
                    let shutdown = tokio::spawn(worker.shutdown());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = ack.send(());
                    let _ = tokio::time::timeout(Duration::from_secs(5), shutdown).await;
                    return exit::OK;
                }
                let _ = ack.send(());
            }
            None => return exit::CONNECTION,
        }
    }
}

async fn handle(ctx: Arc<Ctx>, job: Job) -> Result<Bytes, JobError> {
    if ctx.finished.load(Ordering::SeqCst) {
        // Past the -c count: hold the job until we exit, so the server requeues it.
        std::future::pending::<()>().await;
    }
    let _ = ctx.rounds.send(Round::Started);
    let result = if ctx.command.is_empty() {
        write_out(job.data());
        Ok(Bytes::new())
    } else {
        run_command(&ctx, &job).await
    };
    let (ack, wait) = oneshot::channel();
    if ctx.rounds.send(Round::Done { ack }).is_ok() {
        let _ = wait.await;
    }
    result
}

/// Runs the command for one job. Exit status 0 completes the job with the output; any
/// other status sends the output collected so far as WORK_DATA and fails the job.
async fn run_command(ctx: &Ctx, job: &Job) -> Result<Bytes, JobError> {
    let Some((program, args)) = ctx.command.split_first() else {
        return Err(JobError::Fail);
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gearman: could not run {}: {e}", program.to_string_lossy());
            return Err(JobError::Fail);
        }
    };
    // Feed stdin from its own task so a command that writes a lot before reading all of
    // its input cannot deadlock against us.
    if let Some(mut stdin) = child.stdin.take() {
        let data = job.data().clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let Some(stdout) = child.stdout.take() else {
        return Err(JobError::Fail);
    };
    let mut output = Vec::new();
    if ctx.per_line {
        // -n: one WORK_DATA per line. The C tool (1.1.20) resends everything read so far
        // each time; we send each line once. -N drops the line's newline.
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if ctx.strip_newline && line.last() == Some(&b'\n') {
                line.pop();
            }
            if job.send_data(line).await.is_err() {
                break;
            }
        }
    } else {
        let mut stdout = stdout;
        if let Err(e) = stdout.read_to_end(&mut output).await {
            eprintln!("gearman: reading the output of {}: {e}", program.to_string_lossy());
        }
    }
    match child.wait().await {
        Ok(s) if s.success() => Ok(Bytes::from(output)),
        _ => {
            if !output.is_empty() {
                let _ = job.send_data(output).await;
            }
            Err(JobError::Fail)
        }
    }
}
