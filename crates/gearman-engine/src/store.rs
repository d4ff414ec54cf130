//! The engine's side of the persistent queue: which background jobs to store, what
//! happens when the store answers, and restoring jobs at start.

use std::cmp::Reverse;

use bytes::Bytes;
use gearman_proto::Command;

use crate::job::{Job, JobId, JobState};
use crate::{Engine, NowMs, Outbox, Priority};

/// A background job as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// Identity in the store (not the handle, which changes across restarts).
    pub key: u64,
    /// Function name.
    pub function: Bytes,
    /// Unique key (may be empty).
    pub unique: Bytes,
    /// Priority.
    pub priority: Priority,
    /// Workload.
    pub data: Bytes,
    /// Epoch seconds at which it may run; 0 = now.
    pub when: i64,
}

impl Engine {
    /// The record to store for a job.
    pub(crate) fn stored_job(&self, jid: JobId) -> Option<StoredJob> {
        let job = self.jobs.get(jid)?;
        Some(StoredJob {
            key: job.extra().store_key?,
            function: self.functions.get(job.function)?.name.clone(),
            unique: job.unique.clone(),
            priority: job.priority,
            data: job.data.clone(),
            when: job.extra().when,
        })
    }

    /// The store answered for a batch of jobs. On success their submitters get
    /// JOB_CREATED and the jobs become runnable; on failure the submitters get
    /// `ERROR QUEUE_ERROR` and the jobs are gone, as if never submitted.
    pub fn persisted(&mut self, keys: &[u64], result: Result<(), String>, now: NowMs, out: &mut dyn Outbox) {
        for &key in keys {
            let Some(&jid) = self.by_store_key.get(&key) else { continue };
            let Some(job) = self.jobs.get_mut(jid) else { continue };
            if job.state != JobState::Persisting {
                continue;
            }
            let waiters = std::mem::take(&mut job.extra_mut().created_waiters);
            match &result {
                Ok(()) => {
                    let handle = crate::handle::Handle::new(&self.config.handle_prefix, job.seq);
                    for (conn, hold) in waiters {
                        out.fill(conn, hold, Command::JobCreated, &[&handle]);
                    }
                    self.release_persisted(jid, now, out);
                }
                Err(e) => {
                    for (conn, hold) in waiters {
                        out.fill(conn, hold, Command::Error, &[b"QUEUE_ERROR", e.as_bytes()]);
                    }
                    // Not stored, so there is nothing to forget.
                    job.extra_mut().store_key = None;
                    self.by_store_key.remove(&key);
                    // Foreground clients that joined were answered with the ERROR too;
                    // removing the job ends their listening.
                    self.remove_job(jid, out);
                }
            }
        }
    }

    /// A committed job becomes runnable (or waits for its epoch time).
    fn release_persisted(&mut self, jid: JobId, now: NowMs, out: &mut dyn Outbox) {
        let Some(job) = self.jobs.get_mut(jid) else { return };
        let when = job.extra().when;
        let due_ms = when.saturating_mul(1000);
        if when > 0 && due_ms > now {
            job.state = JobState::Scheduled;
            let seq = job.seq;
            let fid = job.function;
            if let Some(f) = self.functions.get_mut(fid) {
                f.scheduled += 1;
            }
            self.epoch_timers.push(Reverse((due_ms, jid, seq, 0)));
        } else {
            self.enqueue(jid, now, out);
        }
    }

    /// Restores a job read from the store at start: it gets a new handle, no client
    /// waits for it, and completing it removes it from the store.
    pub fn restore(&mut self, stored: StoredJob, now: NowMs, out: &mut dyn Outbox) {
        self.next_store_key = self.next_store_key.max(stored.key.saturating_add(1));
        let fid = self.function_id(&stored.function);
        let jid = self.create_job(
            fid,
            stored.unique,
            stored.data,
            Bytes::new(),
            stored.priority,
            true,
            stored.when,
        );
        if let Some(job) = self.jobs.get_mut(jid) {
            job.extra_mut().store_key = Some(stored.key);
            job.state = JobState::Persisting;
            job.since_ms = now;
        }
        self.by_store_key.insert(stored.key, jid);
        self.release_persisted(jid, now, out);
    }

    /// Every background job not in the store yet, given a store key now: what
    /// `--store-queue-on-shutdown` writes when the server stops (running jobs too).
    pub fn unstored_background_jobs(&mut self) -> Vec<StoredJob> {
        let wanted: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| (j.background || j.bg_joined) && !j.abandoned && j.extra().store_key.is_none())
            .map(|(jid, _)| jid)
            .collect();
        let mut records = Vec::with_capacity(wanted.len());
        for jid in wanted {
            let key = self.next_key();
            if let Some(job) = self.jobs.get_mut(jid) {
                job.extra_mut().store_key = Some(key);
            }
            self.by_store_key.insert(key, jid);
            records.extend(self.stored_job(jid));
        }
        records
    }

    /// Allocates the store key for a new background job.
    pub(crate) fn next_key(&mut self) -> u64 {
        let k = self.next_store_key;
        self.next_store_key = self.next_store_key.wrapping_add(1);
        k
    }

    /// Forgets a job's stored copy, if it has one.
    pub(crate) fn unstore(&mut self, jid: JobId, out: &mut dyn Outbox) {
        if let Some(job) = self.jobs.get_mut(jid) {
            if let Some(key) = job.extra.as_deref_mut().and_then(|x| x.store_key.take()) {
                self.by_store_key.remove(&key);
                out.forget(key);
            }
        }
    }
}

impl Job {
    /// Whether submitters are still waiting for the store.
    pub(crate) fn is_persisting(&self) -> bool {
        self.state == JobState::Persisting
    }
}

#[cfg(test)]
mod tests {
    use gearman_proto::{Command, Magic, Packet};

    use super::*;
    use crate::{ConnId, EngineConfig, PeerInfo, RecordingOutbox, Sent};

    const NOW: NowMs = 1_700_000_000_000;

    fn engine() -> (Engine, RecordingOutbox) {
        let config = EngineConfig { handle_prefix: "H:t".into(), persistent: true, ..Default::default() };
        (Engine::new(config), RecordingOutbox::default())
    }

    fn conn(e: &mut Engine) -> ConnId {
        e.connect(PeerInfo { label: 0, ip: "127.0.0.1".into() })
    }

    fn send(e: &mut Engine, out: &mut RecordingOutbox, c: ConnId, cmd: Command, args: &[&[u8]]) -> Vec<Sent> {
        let p = Packet::new(Magic::Req, cmd, args).unwrap();
        e.handle_packet(c, &p, NOW, out);
        e.check_invariants().unwrap();
        out.take()
    }

    fn stored(key: u64, f: &str, u: &str, data: &str) -> StoredJob {
        StoredJob {
            key,
            function: Bytes::from(f.to_string()),
            unique: Bytes::from(u.to_string()),
            priority: Priority::Normal,
            data: Bytes::from(data.to_string()),
            when: 0,
        }
    }

    fn pkt(c: ConnId, cmd: Command, args: &[&[u8]]) -> Sent {
        Sent::Packet(c, cmd, args.iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn background_job_is_acknowledged_only_after_the_store_commits() {
        let (mut e, mut out) = engine();
        let (c, w) = (conn(&mut e), conn(&mut e));
        send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
        send(&mut e, &mut out, w, Command::PreSleep, &[]);
        let sent = send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"x"]);
        assert_eq!(sent, vec![Sent::Hold(c, 1), Sent::Persist(stored(1, "f", "", "x"))]);
        // Not runnable before the commit: no NOOP, and a grab finds nothing.
        assert_eq!(send(&mut e, &mut out, w, Command::GrabJob, &[]), vec![pkt(w, Command::NoJob, &[])]);
        send(&mut e, &mut out, w, Command::PreSleep, &[]);
        e.persisted(&[1], Ok(()), NOW, &mut out);
        e.check_invariants().unwrap();
        assert_eq!(
            out.take(),
            vec![Sent::Fill(c, 1, Command::JobCreated, vec![b"H:t:1".to_vec()]), pkt(w, Command::Noop, &[])]
        );
        send(&mut e, &mut out, w, Command::GrabJob, &[]);
        assert_eq!(
            send(&mut e, &mut out, w, Command::WorkComplete, &[b"H:t:1", b"r"]),
            vec![Sent::Forget(1)]
        );
        assert_eq!(e.job_count(), 0);
    }

    #[test]
    fn a_store_failure_answers_queue_error_and_leaves_no_job() {
        let (mut e, mut out) = engine();
        let (c1, c2) = (conn(&mut e), conn(&mut e));
        send(&mut e, &mut out, c1, Command::SubmitJobBg, &[b"f", b"u", b"x"]);
        // A foreground submit joining the job waits for the store too.
        assert_eq!(
            send(&mut e, &mut out, c2, Command::SubmitJob, &[b"f", b"u", b"y"]),
            vec![Sent::Hold(c2, 2)]
        );
        e.persisted(&[1], Err("disk full".into()), NOW, &mut out);
        e.check_invariants().unwrap();
        let err = vec![b"QUEUE_ERROR".to_vec(), b"disk full".to_vec()];
        assert_eq!(
            out.take(),
            vec![Sent::Fill(c1, 1, Command::Error, err.clone()), Sent::Fill(c2, 2, Command::Error, err)]
        );
        assert_eq!(e.job_count(), 0);
        // The unique is free again.
        let sent = send(&mut e, &mut out, c1, Command::SubmitJobBg, &[b"f", b"u", b"x"]);
        assert_eq!(sent, vec![Sent::Hold(c1, 3), Sent::Persist(stored(2, "f", "u", "x"))]);
    }

    #[test]
    fn empty_unique_jobs_get_their_own_keys_and_foreground_jobs_are_not_stored() {
        let (mut e, mut out) = engine();
        let c = conn(&mut e);
        let a = send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"1"]);
        let b = send(&mut e, &mut out, c, Command::SubmitJobLowBg, &[b"f", b"", b"2"]);
        assert_eq!(a[1], Sent::Persist(stored(1, "f", "", "1")));
        let mut low = stored(2, "f", "", "2");
        low.priority = Priority::Low;
        assert_eq!(b[1], Sent::Persist(low));
        let fg = send(&mut e, &mut out, c, Command::SubmitJob, &[b"f", b"", b"3"]);
        assert_eq!(fg, vec![pkt(c, Command::JobCreated, &[b"H:t:3"])]);
    }

    #[test]
    fn restored_jobs_run_with_new_handles_and_keys_continue_after_them() {
        let (mut e, mut out) = engine();
        e.restore(stored(41, "f", "u", "x"), NOW, &mut out);
        let mut epoch = stored(7, "f", "", "later");
        epoch.when = NOW / 1000 + 60;
        e.restore(epoch, NOW, &mut out);
        e.check_invariants().unwrap();
        assert_eq!(out.take(), vec![]);
        assert_eq!(e.next_deadline(), Some(NOW + 60_000));
        let (c, w) = (conn(&mut e), conn(&mut e));
        // The restored unique still coalesces.
        assert_eq!(
            send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"u", b"x"]),
            vec![pkt(c, Command::JobCreated, &[b"H:t:1"])]
        );
        send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
        send(&mut e, &mut out, w, Command::GrabJob, &[]);
        assert_eq!(send(&mut e, &mut out, w, Command::WorkFail, &[b"H:t:1"]), vec![Sent::Forget(41)]);
        let sent = send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"g", b"", b""]);
        assert_eq!(sent[1], Sent::Persist(stored(42, "g", "", "")));
    }

    #[test]
    fn store_on_shutdown_collects_the_background_jobs_not_stored_yet() {
        let config = EngineConfig { handle_prefix: "H:t".into(), persistent: false, ..Default::default() };
        let (mut e, mut out) = (Engine::new(config), RecordingOutbox::default());
        e.restore(stored(5, "f", "", "replayed"), NOW, &mut out);
        let (c, w) = (conn(&mut e), conn(&mut e));
        // Acknowledged at once: nothing is written at submit time in this mode.
        let sent = send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"new"]);
        assert_eq!(sent, vec![pkt(c, Command::JobCreated, &[b"H:t:2"])]);
        send(&mut e, &mut out, c, Command::SubmitJob, &[b"f", b"", b"foreground"]);
        send(&mut e, &mut out, c, Command::SubmitJobLowBg, &[b"g", b"u", b"running"]);
        send(&mut e, &mut out, w, Command::CanDo, &[b"g"]);
        send(&mut e, &mut out, w, Command::GrabJob, &[]);
        let mut low = stored(7, "g", "u", "running");
        low.priority = Priority::Low;
        let mut got = e.unstored_background_jobs();
        got.sort_by_key(|r| r.key);
        assert_eq!(got, vec![stored(6, "f", "", "new"), low]);
        e.check_invariants().unwrap();
        assert_eq!(e.unstored_background_jobs(), vec![]);
    }

    #[test]
    fn cancelling_a_job_forgets_it_once_it_is_stored() {
        let (mut e, mut out) = engine();
        let (c, a) = (conn(&mut e), conn(&mut e));
        send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"x"]);
        // Still being stored: the forget must wait, or it could overtake the add.
        e.handle_admin(a, b"cancel job H:t:1", &mut out);
        assert_eq!(out.take(), vec![Sent::Text(a, b"OK\r\n".to_vec())]);
        e.persisted(&[1], Ok(()), NOW, &mut out);
        out.take();
        let w = conn(&mut e);
        send(&mut e, &mut out, w, Command::CanDo, &[b"f"]);
        assert_eq!(
            send(&mut e, &mut out, w, Command::GrabJob, &[]),
            vec![Sent::Forget(1), pkt(w, Command::NoJob, &[])]
        );
        // A stored job is forgotten at the cancel itself.
        send(&mut e, &mut out, c, Command::SubmitJobBg, &[b"f", b"", b"y"]);
        e.persisted(&[2], Ok(()), NOW, &mut out);
        out.take();
        e.handle_admin(a, b"cancel job H:t:2", &mut out);
        assert_eq!(out.take(), vec![Sent::Forget(2), Sent::Text(a, b"OK\r\n".to_vec())]);
    }
}
