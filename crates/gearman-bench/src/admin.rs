//! The `status` admin command, used to check that a run left no job behind.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use gearman_proto::Frame;

use crate::conn::Conn;

/// One line of `status`: function, total jobs, running jobs, registered workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusRow {
    /// Function name.
    pub(crate) name: Vec<u8>,
    /// Queued plus running jobs.
    pub(crate) total: u64,
    /// Jobs assigned to a worker.
    pub(crate) running: u64,
    /// Registered worker entries.
    pub(crate) workers: u64,
}

/// Parses a `name\ttotal\trunning\tworkers` line.
pub(crate) fn parse_status_line(line: &[u8]) -> Option<StatusRow> {
    let mut fields = line.rsplitn(4, |&b| b == b'\t');
    let num = |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
    let workers = num(fields.next())?;
    let running = num(fields.next())?;
    let total = num(fields.next())?;
    let name = fields.next()?.to_vec();
    Some(StatusRow { name, total, running, workers })
}

/// Runs `status` on a fresh connection.
pub(crate) async fn status(addr: SocketAddr) -> Result<Vec<StatusRow>> {
    let mut conn = Conn::connect(addr).await?;
    conn.push_raw(b"status\n");
    conn.flush().await?;
    let mut rows = Vec::new();
    let mut frames = Vec::new();
    loop {
        conn.exchange(&mut frames, None).await?;
        for f in frames.drain(..) {
            let Frame::AdminLine(line) = f else {
                bail!("binary packet in answer to `status`");
            };
            if line.as_ref() == b"." {
                return Ok(rows);
            }
            match parse_status_line(&line) {
                Some(row) => rows.push(row),
                None => bail!("bad `status` line {line:?}"),
            }
        }
    }
}

/// Fails unless every function in `functions` is listed by `status` with no job.
pub(crate) async fn check_empty(addr: SocketAddr, functions: &[Vec<u8>]) -> Result<()> {
    let rows = status(addr).await?;
    for f in functions {
        let Some(row) = rows.iter().find(|r| &r.name == f) else {
            bail!("`status` does not list function {}", String::from_utf8_lossy(f));
        };
        if row.total != 0 || row.running != 0 {
            bail!(
                "`status` shows {} job(s), {} running, left for function {}",
                row.total,
                row.running,
                String::from_utf8_lossy(f)
            );
        }
    }
    Ok(())
}

/// Why `rows` do not show exactly `expected` jobs queued (none running) over
/// `functions`, or `None` when they do.
pub(crate) fn queued_mismatch(rows: &[StatusRow], functions: &[Vec<u8>], expected: u64) -> Option<String> {
    let mut total = 0u64;
    let mut running = 0u64;
    for f in functions {
        let Some(row) = rows.iter().find(|r| &r.name == f) else {
            return Some(format!("`status` does not list function {}", String::from_utf8_lossy(f)));
        };
        total += row.total;
        running += row.running;
    }
    if total != expected || running != 0 {
        return Some(format!(
            "`status` shows {total} job(s), {running} running, over the run's functions; {expected} should be queued"
        ));
    }
    None
}

/// Fails unless `status` shows exactly `expected` jobs queued, none running, over
/// `functions` (the check of `bg-submit --no-drain --check-queued`).
pub(crate) async fn check_queued(addr: SocketAddr, functions: &[Vec<u8>], expected: u64) -> Result<()> {
    let rows = status(addr).await?;
    match queued_mismatch(&rows, functions, expected) {
        Some(e) => bail!(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let row = parse_status_line(b"resize\t3\t1\t2").expect("valid line");
        assert_eq!(row, StatusRow { name: b"resize".to_vec(), total: 3, running: 1, workers: 2 });
        // Names may contain tabs; the numbers are the last three fields.
        let row = parse_status_line(b"a\tb\t0\t0\t1").expect("valid line");
        assert_eq!(row.name, b"a\tb".to_vec());
        assert_eq!(parse_status_line(b"\t1\t0\t0").map(|r| r.name), Some(Vec::new()));
        assert_eq!(parse_status_line(b"x\t1\t0"), None);
        assert_eq!(parse_status_line(b"x\t1\tz\t0"), None);
    }

    #[test]
    fn queued_counts_are_summed_over_the_run_functions() {
        let row =
            |n: &str, total, running| StatusRow { name: n.as_bytes().to_vec(), total, running, workers: 0 };
        let rows = [row("a", 3, 0), row("b", 4, 0), row("other", 9, 1)];
        let fs = [b"a".to_vec(), b"b".to_vec()];
        assert_eq!(queued_mismatch(&rows, &fs, 7), None);
        assert!(queued_mismatch(&rows, &fs, 6).is_some_and(|e| e.contains("7 job(s)")));
        assert!(queued_mismatch(&rows, &[b"c".to_vec()], 0).is_some_and(|e| e.contains("does not list")));
        let busy = [row("a", 3, 1)];
        assert!(queued_mismatch(&busy, &fs[..1], 3).is_some_and(|e| e.contains("1 running")));
    }
}
