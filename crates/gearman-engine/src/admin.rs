//! The admin text protocol: one line in, gearmand's exact reply bytes out (ADMIN.md).

use std::fmt::Write as _;

use gearman_proto::Command;

use crate::function::FunctionId;
use crate::job::{strtol, JobState};
use crate::{ConnId, Engine, Outbox};

/// gearmand closes the connection on a line with more tokens than this.
const MAX_TOKENS: usize = 5;

/// Splits like gearmand: on single spaces, skipping runs after a separator; a leading
/// space gives an empty first token and trailing spaces an empty last one.
fn tokenize(line: &[u8]) -> Vec<&[u8]> {
    let mut tokens = Vec::new();
    let mut rest = line;
    loop {
        match rest.iter().position(|&b| b == b' ') {
            None => {
                tokens.push(rest);
                return tokens;
            }
            Some(i) => {
                tokens.push(rest.get(..i).unwrap_or_default());
                let after = rest.get(i + 1..).unwrap_or_default();
                let skip = after.iter().take_while(|&&b| b == b' ').count();
                rest = after.get(skip..).unwrap_or_default();
                if rest.is_empty() {
                    tokens.push(rest);
                    return tokens;
                }
            }
        }
    }
}

fn is(token: Option<&&[u8]>, word: &str) -> bool {
    token.is_some_and(|t| t.eq_ignore_ascii_case(word.as_bytes()))
}

fn err_unknown(first: &[u8]) -> Vec<u8> {
    let mut v = b"ERR UNKNOWN_COMMAND Unknown+server+command".to_vec();
    v.extend_from_slice(first);
    v.extend_from_slice(b"\r\n");
    v
}

/// The command token is echoed as the peer spelled it.
fn err_args(command: &[u8]) -> Vec<u8> {
    let mut v = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+".to_vec();
    v.extend_from_slice(command);
    v.extend_from_slice(b"\r\n");
    v
}

const OK: &[u8] = b"OK\r\n";

impl Engine {
    /// Handles one admin line (without its line ending) from `conn`.
    pub fn handle_admin(&mut self, conn: ConnId, line: &[u8], out: &mut dyn Outbox) {
        let t = tokenize(line);
        if t.len() > MAX_TOKENS {
            out.close(conn);
            return;
        }
        let first = t.first().copied().unwrap_or_default();
        let lower = first.to_ascii_lowercase();
        let reply: Vec<u8> = match &lower[..] {
            b"status" => self.admin_status(false),
            b"prioritystatus" => self.admin_status(true),
            b"workers" => self.admin_workers(),
            b"version" => format!("OK {}\n", self.config.version).into_bytes(),
            b"getpid" => format!("OK {}\n", self.config.pid).into_bytes(),
            b"verbose" => format!("OK {}\n", self.config.verbose).into_bytes(),
            b"show" => match t.len() {
                1 => err_unknown(first),
                2 if is(t.get(1), "jobs") => self.admin_show_jobs(),
                3 if is(t.get(1), "unique") && is(t.get(2), "jobs") => self.admin_show_unique(),
                _ => b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n".to_vec(),
            },
            b"maxqueue" => self.admin_maxqueue(&t),
            b"create" if t.len() == 3 && is(t.get(1), "function") => {
                self.function_id(t.get(2).copied().unwrap_or_default());
                OK.to_vec()
            }
            b"create" => err_args(first),
            b"drop" if t.len() == 3 && is(t.get(1), "function") => {
                self.admin_drop(t.get(2).copied().unwrap_or_default())
            }
            b"drop" => err_args(first),
            b"cancel" if t.len() < 3 => err_unknown(first),
            b"cancel" if t.len() == 3 && is(t.get(1), "job") => {
                self.admin_cancel(t.get(2).copied().unwrap_or_default(), out)
            }
            b"cancel" => b"ERR UNKNOWN_ERROR\r\n".to_vec(),
            _ => err_unknown(first),
        };
        out.text(conn, &reply);
    }

    /// Functions in creation order (gearmand prints hash order; clients must not care).
    pub(crate) fn functions_in_order(&self) -> Vec<FunctionId> {
        let mut ids: Vec<(u64, FunctionId)> = self.functions.iter().map(|(id, f)| (f.created, id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn admin_status(&self, by_priority: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for fid in self.functions_in_order() {
            let Some(f) = self.functions.get(fid) else { continue };
            // Names print up to the first NUL, as gearmand's %s does.
            let name = f.name.split(|&b| b == 0).next().unwrap_or_default();
            v.extend_from_slice(name);
            let line = if by_priority {
                format!(
                    "\t{}\t{}\t{}\t{}\n",
                    f.queued(0),
                    f.queued(1) + f.scheduled,
                    f.queued(2),
                    f.workers.len()
                )
            } else {
                format!("\t{}\t{}\t{}\n", f.total, f.running, f.workers.len())
            };
            v.extend_from_slice(line.as_bytes());
        }
        v.extend_from_slice(b".\n");
        v
    }

    fn admin_workers(&self) -> Vec<u8> {
        let mut sessions: Vec<_> = self.sessions.iter().collect();
        sessions.sort_unstable_by_key(|(_, s)| std::cmp::Reverse(s.created));
        let mut v = Vec::new();
        for (_, s) in sessions {
            v.extend_from_slice(format!("{} {} ", s.label, s.ip).as_bytes());
            v.extend_from_slice(&s.client_id);
            v.extend_from_slice(b" :");
            for a in &s.abilities {
                if let Some(f) = self.functions.get(a.function) {
                    v.push(b' ');
                    v.extend_from_slice(&f.name);
                }
            }
            v.push(b'\n');
        }
        v.extend_from_slice(b".\n");
        v
    }

    fn jobs_in_order(&self) -> Vec<&crate::job::Job> {
        let mut jobs: Vec<_> = self.jobs.iter().map(|(_, j)| &**j).collect();
        jobs.sort_unstable_by_key(|j| j.seq);
        jobs
    }

    fn admin_show_jobs(&self) -> Vec<u8> {
        let mut s = String::new();
        let mut v = Vec::new();
        for j in self.jobs_in_order() {
            v.extend_from_slice(&self.handle_of(j.seq));
            s.clear();
            let _ = writeln!(s, "\t{}\t{}\t{}", j.retries, u8::from(j.abandoned), u8::from(j.is_persisted()));
            v.extend_from_slice(s.as_bytes());
        }
        v.extend_from_slice(b".\n");
        v
    }

    fn admin_show_unique(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for j in self.jobs_in_order() {
            v.extend_from_slice(&j.unique);
            v.push(b'\n');
        }
        v.extend_from_slice(b".\n");
        v
    }

    fn admin_maxqueue(&mut self, t: &[&[u8]]) -> Vec<u8> {
        let Some(&name) = t.get(1) else { return err_args(t.first().copied().unwrap_or_default()) };
        // C atoi: junk and negatives count as 0, which means unlimited.
        let num = |i: usize| t.get(i).map_or(0, |s| strtol(s).clamp(0, i64::from(u32::MAX)) as u32);
        let limits = match t.len() {
            2 => [0, 0, 0],
            3 => [num(2); 3],
            4 => [num(2), num(3), 0],
            _ => [num(2), num(3), num(4)],
        };
        if let Some(f) = self.function_ids.get(name).and_then(|&id| self.functions.get_mut(id)) {
            f.max_queue = limits;
        }
        OK.to_vec()
    }

    fn admin_drop(&mut self, name: &[u8]) -> Vec<u8> {
        let found = self
            .functions_in_order()
            .into_iter()
            .find(|&id| self.functions.get(id).is_some_and(|f| f.name.eq_ignore_ascii_case(name)));
        let Some(fid) = found else { return b"ERR function not found\r\n".to_vec() };
        let Some(f) = self.functions.get(fid) else { return b"ERR function not found\r\n".to_vec() };
        // gearmand also drops functions with queued jobs, leaving them dangling
        // (ADMIN.md §2.8 [bug]); we refuse those too.
        if !f.workers.is_empty() || f.total > 0 {
            return b"ERR there are still connected workers or executing clients\r\n".to_vec();
        }
        self.ready.remove(fid);
        let f = self.functions.remove(fid);
        self.function_ids.remove(&f.name);
        OK.to_vec()
    }

    fn admin_cancel(&mut self, handle: &[u8], out: &mut dyn Outbox) -> Vec<u8> {
        let Some(jid) = self.job_by_handle(handle) else { return b"ERR UNKNOWN_JOB\r\n".to_vec() };
        // A new submit with the same unique must start a new job, not join this one.
        self.stop_coalescing(jid);
        let Some(job) = self.jobs.get_mut(jid) else { return b"ERR UNKNOWN_JOB\r\n".to_vec() };
        // A cancelled job still held can be cancelled again (`OK`), as in gearmand.
        if !job.abandoned {
            self.stats.cancelled += 1;
        }
        job.abandoned = true;
        // Listeners are told now and detached, so a running worker's late results go
        // nowhere (gearmand keeps forwarding them after the WORK_FAIL: §2.9 [bug]).
        let listeners = std::mem::take(&mut job.listeners);
        let (seq, state) = (job.seq, job.state);
        for c in listeners {
            out.packet(c, Command::WorkFail, &[handle]);
            self.unlisten(c, jid, seq);
        }
        // Cancelled means gone for the store too (gearmand removes the row here). A
        // job still being stored is forgotten when a worker reaches and discards it.
        if state != JobState::Persisting {
            self.unstore(jid, out);
        }
        if state == JobState::Scheduled {
            // Nothing will ever reach a scheduled job through a queue: drop it now.
            self.remove_job(jid, out);
        }
        OK.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    #[test]
    fn tokenize_like_gearmand() {
        assert_eq!(tokenize(b"status"), vec![&b"status"[..]]);
        assert_eq!(tokenize(b"  status"), vec![&b""[..], b"status"]);
        assert_eq!(tokenize(b"status "), vec![&b"status"[..], b""]);
        assert_eq!(tokenize(b"a  b"), vec![&b"a"[..], b"b"]);
        assert_eq!(tokenize(b""), vec![&b""[..]]);
        assert_eq!(tokenize(b"a b c d e f").len(), 6);
    }
}
