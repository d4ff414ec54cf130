//! Whole-binary durability of the persistent queues (`-q libsqlite3|postgres|mysql|redis`).
//!
//! * `crash_*`: a client pipelines background submits while the server is killed with
//!   SIGKILL at a random moment; after a restart on the same store, every acknowledged
//!   job runs and nothing runs that was never submitted.
//! * `restart_keeps_queue*`: every kind of background job survives a SIGTERM restart with
//!   its data, unique, priority and epoch, and completed jobs stay gone.
//! * `migration_from_real_gearmand_*`: jobs the real gearmand 1.1.20 stored run on ours.
//! * `store_failure_*` / `store_unreachable_*`: a lost database answers `ERROR QUEUE_ERROR`
//!   instead of hanging, and an unreachable one stops the server at start.
//!
//! The SQL and Redis cases use their own table or key prefix with a random suffix, clean
//! it afterwards, and skip (`SKIP:`) when the service is absent unless
//! `GEARMAN_REQUIRE_SERVICES=1`. Seeds are random per run and printed; set
//! `GEARMAN_DURABILITY_SEED` to replay one.
#![allow(missing_docs)]

mod support;
#[allow(unused_macros)]
#[macro_use]
mod wire;

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{req, Conn, Kind, Server};
use wire::*;

const PG_USER: &str = "postgres";
const PG_CONNINFO: &str = "host=127.0.0.1 port=5432 dbname=test user=postgres";

// ---------------------------------------------------------------------------------------
// Seeds, temp dirs, external clients
// ---------------------------------------------------------------------------------------

/// A random seed per call (or `GEARMAN_DURABILITY_SEED`), printed so a failure can be replayed.
fn seed(what: &str) -> u64 {
    let s = std::env::var("GEARMAN_DURABILITY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
    });
    eprintln!("{what}: seed {s} (GEARMAN_DURABILITY_SEED={s} replays it)");
    s.max(1)
}

/// A fresh, unique name suffix.
fn suffix(rng: &mut Rng) -> String {
    format!("{}_{:08x}", std::process::id(), rng.next_u64() as u32)
}

/// A temporary directory removed on drop (the server's own `dir` dies with each process,
/// so the store file lives here, across restarts).
struct TempDir(PathBuf);

impl TempDir {
    fn new(rng: &mut Rng) -> TempDir {
        let p = std::env::temp_dir().join(format!("gm-durability-{}", suffix(rng)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command line tool; `Ok(stdout)` on exit 0.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn psql(sql: &str) -> Result<String, String> {
    let conn = ["-h", "127.0.0.1", "-p", "5432", "-U", PG_USER, "-d", "test"];
    run_tool("psql", &[&conn[..], &["-v", "ON_ERROR_STOP=1", "-Atqc", sql]].concat())
}

fn mariadb(sql: &str) -> Result<String, String> {
    let args = ["-h", "127.0.0.1", "-P", "3306", "-u", "root", "test", "-N", "-B", "-e", sql];
    run_tool("mariadb", &args).or_else(|_| run_tool("mysql", &args))
}

fn redis_cli(args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-h", "127.0.0.1", "-p", "6379"];
    all.extend_from_slice(args);
    run_tool("redis-cli", &all)
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

// ---------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
    Redis,
}

/// One store namespace (file, table or key prefix), cleaned on drop.
struct Store {
    backend: Backend,
    /// File (sqlite), table (SQL) or key prefix (redis).
    name: String,
    _dir: Option<TempDir>,
}

impl Store {
    /// A fresh namespace on `backend`, or `None` (after `support::require`) when the
    /// service is not available.
    fn new(backend: Backend, rng: &mut Rng) -> Option<Store> {
        let name = format!("gmdur_{}", suffix(rng));
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new(rng);
                let file = dir.0.join("queue.db").display().to_string();
                Some(Store { backend, name: file, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let up = port_open(5432) && psql("select 1").is_ok();
                support::require(up, "PostgreSQL on 127.0.0.1:5432 (psql, user postgres, db test)")
                    .then_some(Store { backend, name, _dir: None })
            }
            Backend::Mysql => {
                let up = port_open(3306) && mariadb("select 1").is_ok();
                support::require(up, "MariaDB on 127.0.0.1:3306 (mariadb client, root, db test)")
                    .then_some(Store { backend, name, _dir: None })
            }
            Backend::Redis => {
                let up = port_open(6379) && redis_cli(&["ping"]).is_ok_and(|s| s.contains("PONG"));
                support::require(up, "Redis on 127.0.0.1:6379 (redis-cli)").then_some(Store {
                    backend,
                    name,
                    _dir: None,
                })
            }
        }
    }

    /// The `-q` options for this store (the same spelling for ours and the real gearmand).
    fn args(&self) -> Vec<String> {
        let n = self.name.clone();
        let v: Vec<&str> = match self.backend {
            Backend::Sqlite => vec!["-q", "libsqlite3", "--libsqlite3-db", &n],
            Backend::Postgres => vec!["-q", "postgres", "--libpq-conninfo", PG_CONNINFO, "--libpq-table", &n],
            Backend::Mysql => vec![
                "-q",
                "mysql",
                "--mysql-host",
                "127.0.0.1",
                "--mysql-port",
                "3306",
                "--mysql-user",
                "root",
                "--mysql-db",
                "test",
                "--mysql-table",
                &n,
            ],
            Backend::Redis => {
                vec![
                    "-q",
                    "redis",
                    "--redis-server",
                    "127.0.0.1",
                    "--redis-port",
                    "6379",
                    "--redis-prefix",
                    &n,
                ]
            }
        };
        v.into_iter().map(String::from).collect()
    }

    /// Whether replay keeps submission order within a priority. The real gearmand's
    /// Redis keys carry no order, so jobs migrated from them come back in SCAN order.
    fn keeps_fifo_after_migration(&self) -> bool {
        self.backend != Backend::Redis
    }

    fn start(&self, kind: Kind) -> Server {
        let args = self.args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(kind, &a).expect("server kind available")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let n = &self.name;
        let r = match self.backend {
            Backend::Sqlite => Ok(String::new()),
            Backend::Postgres => psql(&format!(
                "DROP TABLE IF EXISTS {n}; DROP TABLE IF EXISTS {n}__gearmand_migration; \
                 DROP TABLE IF EXISTS {n}_keyed_migration"
            )),
            Backend::Mysql => mariadb(&format!(
                "DROP TABLE IF EXISTS {n}; DROP TABLE IF EXISTS {n}__keyed_migration; \
                 DROP TABLE IF EXISTS {n}__gearmand_old"
            )),
            Backend::Redis => redis_cli(&["--scan", "--pattern", &format!("{n}*")]).and_then(|keys| {
                let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
                for part in keys.chunks(500) {
                    let mut a = vec!["DEL"];
                    a.extend_from_slice(part);
                    redis_cli(&a)?;
                }
                Ok(String::new())
            }),
        };
        if let Err(e) = r {
            eprintln!("cleanup of {:?} {n} failed: {e}", self.backend);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------

/// Reads one response packet; any I/O error (EOF after a kill, timeout) is returned.
fn read_packet(r: &mut impl Read) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 12];
    r.read_exact(&mut h)?;
    if &h[..4] != b"\0RES" {
        return Err(std::io::Error::other(format!("bad magic {h:02x?}")));
    }
    let command = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let len = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((command, body))
}

/// One background job as a test submits it.
#[derive(Clone, Debug)]
struct Job {
    command: u32,
    function: Vec<u8>,
    unique: Vec<u8>,
    /// Epoch seconds for SUBMIT_JOB_EPOCH.
    when: Option<u64>,
    data: Vec<u8>,
}

impl Job {
    fn new(command: u32, function: &str, unique: &str, data: &[u8]) -> Job {
        Job { command, function: function.into(), unique: unique.into(), when: None, data: data.to_vec() }
    }

    fn epoch(function: &str, unique: &str, when: u64, data: &[u8]) -> Job {
        Job { when: Some(when), ..Job::new(SUBMIT_JOB_EPOCH, function, unique, data) }
    }

    fn packet(&self) -> Vec<u8> {
        match self.when {
            Some(t) => {
                let t = t.to_string();
                req(self.command, &[&self.function, &self.unique, t.as_bytes(), &self.data])
            }
            None => req(self.command, &[&self.function, &self.unique, &self.data]),
        }
    }

    /// Queue rank: 0 high, 1 normal, 2 low.
    fn rank(&self) -> u8 {
        match self.command {
            SUBMIT_JOB_HIGH_BG => 0,
            SUBMIT_JOB_LOW_BG => 2,
            _ => 1,
        }
    }
}

/// Submits one job and asserts JOB_CREATED; returns the handle.
fn submit(c: &mut Conn, job: &Job) -> String {
    c.send(&job.packet());
    let p = c.read_packet();
    assert_eq!(
        p.command,
        JOB_CREATED,
        "submit {job:?}: got {} {:?}",
        p.command,
        String::from_utf8_lossy(&p.body)
    );
    String::from_utf8(p.body).unwrap()
}

/// A job a worker received.
#[derive(Debug, Clone)]
struct Ran {
    function: Vec<u8>,
    unique: Vec<u8>,
    data: Vec<u8>,
}

/// Splits a JOB_ASSIGN_UNIQ body: handle, function, unique, data (data may hold NULs).
fn parse_assign_uniq(body: &[u8]) -> (Vec<u8>, Ran) {
    let mut parts = body.splitn(4, |&b| b == 0);
    let handle = parts.next().unwrap_or_default().to_vec();
    let function = parts.next().unwrap_or_default().to_vec();
    let unique = parts.next().unwrap_or_default().to_vec();
    let data = parts.next().unwrap_or_default().to_vec();
    (handle, Ran { function, unique, data })
}

/// A worker for `function` takes (GRAB_JOB_UNIQ) and completes jobs until NO_JOB; bounded.
fn drain(s: &Server, function: &str, limit: Duration) -> Vec<Ran> {
    let mut w = s.connect();
    w.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    w.can_do(function);
    let start = Instant::now();
    let mut ran = Vec::new();
    w.send(&req(GRAB_JOB_UNIQ, &[]));
    loop {
        let p = w.read_packet();
        match p.command {
            NO_JOB => return ran,
            JOB_ASSIGN_UNIQ => {
                let (handle, job) = parse_assign_uniq(&p.body);
                ran.push(job);
                // Complete and ask for the next one in one write.
                let mut next = req(WORK_COMPLETE, &[&handle, b""]);
                next.extend_from_slice(&req(GRAB_JOB_UNIQ, &[]));
                w.send(&next);
            }
            other => panic!("worker got {other} {:?}", String::from_utf8_lossy(&p.body)),
        }
        assert!(
            start.elapsed() < limit,
            "draining {function} took over {limit:?} ({} jobs so far)",
            ran.len()
        );
    }
}

/// A worker completes up to `k` jobs of `function`, then the server is killed with
/// SIGKILL (the last removals may or may not have reached the store).
fn drain_some(s: &Server, function: &str, k: usize) -> Vec<Ran> {
    let mut w = s.connect();
    w.can_do(function);
    let mut ran = Vec::new();
    while ran.len() < k {
        w.send(&req(GRAB_JOB_UNIQ, &[]));
        let p = w.read_packet();
        if p.command == NO_JOB {
            break;
        }
        assert_eq!(p.command, JOB_ASSIGN_UNIQ, "{p:?}");
        let (handle, job) = parse_assign_uniq(&p.body);
        w.send(&req(WORK_COMPLETE, &[&handle, b""]));
        ran.push(job);
    }
    w.sync();
    ran
}

/// Grabs one job of `function`, polling until one is assigned (bounded); completes it.
fn grab_one_when_due(s: &Server, function: &str, limit: Duration) -> Ran {
    let mut w = s.connect();
    w.can_do(function);
    let start = Instant::now();
    loop {
        w.send(&req(GRAB_JOB_UNIQ, &[]));
        let p = w.read_packet();
        if p.command == JOB_ASSIGN_UNIQ {
            let (handle, job) = parse_assign_uniq(&p.body);
            w.send(&req(WORK_COMPLETE, &[&handle, b""]));
            w.sync();
            return job;
        }
        assert_eq!(p.command, NO_JOB, "{p:?}");
        assert!(start.elapsed() < limit, "no {function} job within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a server with SIGTERM and asserts a clean exit.
fn stop(mut s: Server) {
    s.signal("TERM");
    let code = s.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "server did not exit 0 after SIGTERM (log in {})", s.dir.display());
}

/// `status` rows whose total is not zero.
fn busy_functions(s: &Server) -> Vec<String> {
    let mut admin = s.connect();
    rows(&admin.list("status"))
        .into_iter()
        .filter(|r| r.split('\t').nth(1).is_some_and(|total| total != "0"))
        .collect()
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 60 {
        format!("{}…({} bytes)", &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)], b.len())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// 1, 2: kill -9 while submitting
// ---------------------------------------------------------------------------------------

/// When the server is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as this many JOB_CREATED arrived.
    Acked(usize),
    /// This long after the client started.
    After(Duration),
    /// Right after the last JOB_CREATED.
    AllAcked,
}

#[derive(Default, Debug)]
struct Submitted {
    /// Submits written (or being written) to the socket.
    sent: usize,
    /// Indexes of the submits that got JOB_CREATED.
    acked: Vec<usize>,
    handles: HashSet<Vec<u8>>,
    /// Any other answer.
    unexpected: Vec<String>,
}

/// Pipelines `jobs` on one connection with at most `window` unanswered; answers come in
/// submit order, so the k-th answer belongs to the k-th submit. Stops at the first I/O
/// error (the server was killed).
fn pipeline(port: u16, jobs: &[Job], window: usize, acked: &AtomicUsize) -> Submitted {
    let mut out = Submitted::default();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return out };
    stream.set_nodelay(true).unwrap();
    // Long enough for a slow commit on a busy machine; a hung server fails the test below.
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut answered = 0;
    while answered < jobs.len() {
        if out.sent < jobs.len() && out.sent - answered < window {
            let mut buf = Vec::new();
            while out.sent < jobs.len() && out.sent - answered < window {
                buf.extend_from_slice(&jobs[out.sent].packet());
                out.sent += 1;
            }
            if writer.write_all(&buf).is_err() {
                break;
            }
        }
        match read_packet(&mut reader) {
            Ok((JOB_CREATED, handle)) => {
                assert!(out.handles.insert(handle.clone()), "handle {} acknowledged twice", show(&handle));
                out.acked.push(answered);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok((command, body)) => out.unexpected.push(format!("job {answered}: {command} {}", show(&body))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                out.unexpected.push(format!("no answer to job {answered} within 20 s (server hung?)"));
                break;
            }
            Err(_) => break,
        }
        answered += 1;
    }
    out
}

/// The crash jobs: distinct payloads (binary, variable length), all three background
/// priorities, distinct uniques on even jobs and empty ones on odd jobs.
fn crash_jobs(seed: u64, n: usize) -> Vec<Job> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut data = format!("{seed:x}:{i:06}:").into_bytes();
            let mut tail = vec![0u8; (rng.next_u64() % 64) as usize];
            rng.fill(&mut tail);
            data.extend_from_slice(&tail);
            let command = [SUBMIT_JOB_BG, SUBMIT_JOB_HIGH_BG, SUBMIT_JOB_LOW_BG][i % 3];
            let unique = if i % 2 == 0 { format!("u{seed:x}-{i}") } else { String::new() };
            Job::new(command, "dur", &unique, &data)
        })
        .collect()
}

/// One crash round: submit, kill -9 at `kill`, restart, drain, check; then SIGTERM,
/// restart, and check the queue is empty.
fn crash_round(store: &Store, seed: u64, n: usize, kill: KillAt) {
    let jobs = Arc::new(crash_jobs(seed, n));
    let distinct: HashSet<&[u8]> = jobs.iter().map(|j| &j.data[..]).collect();
    assert_eq!(distinct.len(), n, "payloads must be distinct");

    let mut server = store.start(Kind::Ours);
    let port = server.port;
    let acked = Arc::new(AtomicUsize::new(0));
    let client = {
        let (jobs, acked) = (jobs.clone(), acked.clone());
        std::thread::spawn(move || pipeline(port, &jobs, 32, &acked))
    };
    let started = Instant::now();
    let limit = Duration::from_secs(30);
    match kill {
        KillAt::Acked(k) => {
            while acked.load(Ordering::SeqCst) < k && !client.is_finished() && started.elapsed() < limit {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        KillAt::After(d) => std::thread::sleep(d),
        KillAt::AllAcked => {
            while !client.is_finished() && started.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let at_kill = acked.load(Ordering::SeqCst);
    let sub = client.join().expect("client thread");
    drop(server);
    assert!(sub.unexpected.is_empty(), "{kill:?}: unexpected answers: {:?}", sub.unexpected);
    if matches!(kill, KillAt::AllAcked) {
        assert_eq!(sub.acked.len(), n, "not every submit was acknowledged before the kill");
    }

    // Phase B: restart; replayed jobs wait while a second batch is submitted (new store
    // keys must not collide with replayed ones), a worker completes some, kill -9 again.
    let mut server = store.start(Kind::Ours);
    let second = crash_jobs(seed ^ 0x5EC0_4D00, n / 4);
    let sub2 = pipeline(server.port, &second, 32, &AtomicUsize::new(0));
    assert!(sub2.unexpected.is_empty(), "second batch: {:?}", sub2.unexpected);
    assert_eq!(sub2.acked.len(), second.len(), "second batch not fully acknowledged");
    let k = (seed % (n as u64 / 2)) as usize;
    let early = drain_some(&server, "dur", k);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    // Phase C: restart and run everything that is left.
    let server = store.start(Kind::Ours);
    let ran = drain(&server, "dur", Duration::from_secs(30));
    let first_index: HashMap<&[u8], usize> = jobs.iter().enumerate().map(|(i, j)| (&j.data[..], i)).collect();
    let second_index: HashMap<&[u8], usize> =
        second.iter().enumerate().map(|(i, j)| (&j.data[..], i)).collect();
    let mut seen: HashMap<(u8, usize), usize> = HashMap::new();
    for r in early.iter().chain(&ran) {
        let (batch, i, job) = match (first_index.get(&r.data[..]), second_index.get(&r.data[..])) {
            (Some(&i), _) => {
                assert!(i < sub.sent, "{kill:?}: job {i} ran but was never sent (sent {})", sub.sent);
                (0u8, i, &jobs[i])
            }
            (_, Some(&i)) => (1u8, i, &second[i]),
            _ => panic!(
                "{kill:?}: a job ran that was never submitted: {} / {}",
                show(&r.unique),
                show(&r.data)
            ),
        };
        assert_eq!(r.unique, job.unique, "{kill:?}: job {i} came back with another unique");
        assert_eq!(r.function, b"dur");
        *seen.entry((batch, i)).or_default() += 1;
    }
    let acked = sub.acked.iter().map(|&i| (0u8, i)).chain(sub2.acked.iter().map(|&i| (1u8, i)));
    let lost: Vec<(u8, usize)> = acked.filter(|key| !seen.contains_key(key)).collect();
    assert!(
        lost.is_empty(),
        "{:?} {kill:?}: {} acknowledged job(s) lost after kill -9, first (batch, index) {:?} \
         (acked {} + {}, ran {} + {})",
        store.backend,
        lost.len(),
        &lost[..lost.len().min(10)],
        sub.acked.len(),
        sub2.acked.len(),
        early.len(),
        ran.len()
    );
    // Only a job completed just before the second kill may run twice.
    let finished: HashSet<&[u8]> = early.iter().map(|r| &r.data[..]).collect();
    let mut again = HashSet::new();
    for r in &ran {
        assert!(again.insert(&r.data[..]), "{kill:?}: {} replayed twice in one run", show(&r.data));
    }
    let reran = ran.iter().filter(|r| finished.contains(&r.data[..])).count();
    eprintln!(
        "{:?} {kill:?}: sent {}, acked {} ({at_kill} at the kill) + {}; ran {} + {} after the second kill \
         ({} completed ones ran again)",
        store.backend,
        sub.sent,
        sub.acked.len(),
        sub2.acked.len(),
        early.len(),
        ran.len(),
        reran
    );
    stop(server);

    // Completed jobs were removed: nothing comes back.
    let server = store.start(Kind::Ours);
    assert_eq!(busy_functions(&server), Vec::<String>::new(), "completed jobs came back after restart");
    stop(server);
}

/// Several kill points for one backend: early, mid-stream, after a random delay, and
/// after the last acknowledgement.
fn crash_case(backend: Backend, n: usize) {
    let base = seed(&format!("crash {backend:?}"));
    let mut rng = Rng(base);
    let Some(store) = Store::new(backend, &mut rng) else { return };
    let points = [
        KillAt::Acked(1 + (rng.next_u64() % 64) as usize),
        KillAt::Acked(n / 4 + (rng.next_u64() as usize) % (n / 2)),
        KillAt::After(Duration::from_millis(rng.next_u64() % 40)),
        KillAt::AllAcked,
    ];
    let t = Instant::now();
    for (round, kill) in points.into_iter().enumerate() {
        crash_round(&store, base.wrapping_add(round as u64 * 0x1000_0001), n, kill);
    }
    eprintln!("{backend:?}: crash rounds took {:?}", t.elapsed());
}

#[test]
fn crash_sqlite_kill9_keeps_every_acknowledged_job() {
    crash_case(Backend::Sqlite, 2000);
}

#[test]
fn crash_postgres_kill9_keeps_every_acknowledged_job() {
    crash_case(Backend::Postgres, 2000);
}

#[test]
fn crash_mysql_kill9_keeps_every_acknowledged_job() {
    crash_case(Backend::Mysql, 2000);
}

#[test]
fn crash_redis_kill9_keeps_every_acknowledged_job() {
    crash_case(Backend::Redis, 2000);
}

// ---------------------------------------------------------------------------------------
// 3: a SIGTERM restart keeps every kind of background job
// ---------------------------------------------------------------------------------------

fn restart_case(backend: Backend) {
    let mut rng = Rng(seed(&format!("restart {backend:?}")));
    let Some(store) = Store::new(backend, &mut rng) else { return };
    let mut big = vec![0u8; 1 << 20];
    rng.fill(&mut big);
    let f = "dur-a-b";
    // Submitted low first, high last, so FIFO order and priority order differ.
    let queued = [
        Job::new(SUBMIT_JOB_LOW_BG, f, "l-1", b"low-1"),
        Job::new(SUBMIT_JOB_BG, f, "n-1", b"normal-1"),
        Job::new(SUBMIT_JOB_HIGH_BG, f, "h-1", b"high-1"),
        Job::new(SUBMIT_JOB_LOW_BG, f, "", b"low-2, empty unique"),
        Job::new(SUBMIT_JOB_BG, f, "", b"normal-2, empty unique"),
        Job::new(SUBMIT_JOB_BG, f, "", b"normal-3, empty unique"),
        Job::new(SUBMIT_JOB_BG, f, "", b"normal-4, empty unique"),
        Job::new(SUBMIT_JOB_HIGH_BG, f, "h-2", b"\0binary\0\0with NULs\xff\xfe\0"),
        Job::new(SUBMIT_JOB_BG, f, "n-empty-payload", b""),
        Job::new(SUBMIT_JOB_LOW_BG, f, "big", &big),
    ];
    let now = now_secs();
    let (past, soon, far) = (now - 10, now + 4, now + 86_400);
    let epoch = [
        Job::epoch("dur-epoch", "e-past", past, b"past"),
        Job::epoch("dur-epoch", "e-soon", soon, b"soon"),
        Job::epoch("dur-epoch", "e-far", far, b"far"),
    ];

    let server = store.start(Kind::Ours);
    let mut c = server.connect();
    c.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for j in queued.iter().chain(&epoch) {
        submit(&mut c, j);
    }
    drop(c);
    stop(server);

    let server = store.start(Kind::Ours);
    let mut admin = server.connect();
    assert_eq!(
        rows(&admin.list("status")),
        vec![format!("{f}\t10\t0\t0"), "dur-epoch\t3\t0\t0".to_string()],
        "status after restart"
    );
    assert_eq!(
        rows(&admin.list("prioritystatus")),
        vec![format!("{f}\t2\t5\t3\t0"), "dur-epoch\t0\t3\t0\t0".to_string()],
        "prioritystatus after restart"
    );

    // Priority order within the function, FIFO within a priority, data and unique intact.
    let mut want: Vec<&Job> = queued.iter().collect();
    want.sort_by_key(|j| j.rank()); // stable: keeps submission order within a rank
    let ran = drain(&server, f, Duration::from_secs(20));
    let got: Vec<(String, String)> = ran.iter().map(|r| (show(&r.unique), show(&r.data))).collect();
    let expected: Vec<(String, String)> = want.iter().map(|j| (show(&j.unique), show(&j.data))).collect();
    assert_eq!(got, expected, "{backend:?}: jobs after restart (unique, data) in grab order");
    for (r, j) in ran.iter().zip(&want) {
        assert_eq!(r.function, f.as_bytes());
        assert!(r.data == j.data, "{backend:?}: data of {} changed across the restart", show(&j.unique));
    }

    // Epoch jobs: the past one runs now, the near one only when due, the far one waits.
    let ran = drain(&server, "dur-epoch", Duration::from_secs(10));
    let got: Vec<String> = ran.iter().map(|r| show(&r.data)).collect();
    assert!(now_secs() >= soon || got == ["past"], "{backend:?}: epoch jobs before {soon}: {got:?}");
    if !got.iter().any(|d| d == "soon") {
        assert_eq!(got, ["past"], "{backend:?}: epoch jobs");
        let j = grab_one_when_due(&server, "dur-epoch", Duration::from_secs(10));
        assert_eq!(j.data, b"soon");
        assert!(now_secs() >= soon, "{backend:?}: epoch job ran before its time");
    }
    let jobs = rows(&admin.list("show jobs"));
    assert_eq!(jobs.len(), 1, "{backend:?}: only the far epoch job is left: {jobs:?}");
    let handle = jobs[0].split('\t').next().unwrap().to_string();
    assert_eq!(admin.admin_line(&format!("cancel job {handle}")), "OK\r\n");
    drop(admin);
    stop(server);

    // Completed and cancelled jobs were removed from the store.
    let server = store.start(Kind::Ours);
    assert_eq!(
        busy_functions(&server),
        Vec::<String>::new(),
        "{backend:?}: queue not empty after completion"
    );
    stop(server);
}

#[test]
fn restart_keeps_queue() {
    restart_case(Backend::Sqlite);
}

#[test]
fn restart_keeps_queue_postgres() {
    restart_case(Backend::Postgres);
}

#[test]
fn restart_keeps_queue_mysql() {
    restart_case(Backend::Mysql);
}

#[test]
fn restart_keeps_queue_redis() {
    restart_case(Backend::Redis);
}

// ---------------------------------------------------------------------------------------
// 4: jobs stored by the real gearmand 1.1.20 run on ours
// ---------------------------------------------------------------------------------------

fn migration_case(backend: Backend) {
    if support::real_gearmand().is_none() {
        support::require(false, "the real gearmand (/usr/sbin/gearmand)");
        return;
    }
    let mut rng = Rng(seed(&format!("migration {backend:?}")));
    let Some(store) = Store::new(backend, &mut rng) else { return };
    // Distinct non-empty uniques (gearmand collapses empty ones), no `-` (its Redis keys).
    let f = "migf";
    let mut jobs = vec![
        Job::new(SUBMIT_JOB_HIGH_BG, f, "m1", b"alpha"),
        Job::new(SUBMIT_JOB_BG, f, "m2", b"beta with spaces"),
        Job::new(SUBMIT_JOB_LOW_BG, f, "m3", b"gamma"),
        Job::new(SUBMIT_JOB_BG, f, "m4", b"delta"),
        Job::new(SUBMIT_JOB_HIGH_BG, f, "m5", b"epsilon"),
        Job::new(SUBMIT_JOB_LOW_BG, f, "m6", b"zeta"),
        Job::new(SUBMIT_JOB_BG, "migg", "m7", b"other function"),
    ];
    if backend == Backend::Sqlite {
        jobs.push(Job::new(SUBMIT_JOB_BG, f, "m8", b"bin\0ary\xff"));
    }

    let real = store.start(Kind::Real);
    let mut c = real.connect();
    for j in &jobs {
        submit(&mut c, j);
    }
    drop(c);
    stop(real);

    let ours = store.start(Kind::Ours);
    let mut admin = ours.connect();
    let total = jobs.iter().filter(|j| j.function == f.as_bytes()).count();
    assert_eq!(
        rows(&admin.list("status")),
        vec![format!("{f}\t{total}\t0\t0"), "migg\t1\t0\t0".to_string()],
        "{backend:?}: status after migrating"
    );
    let ran = drain(&ours, f, Duration::from_secs(10));
    let mut want: Vec<&Job> = jobs.iter().filter(|j| j.function == f.as_bytes()).collect();
    want.sort_by_key(|j| j.rank());
    let key = |u: &[u8], d: &[u8]| (show(u), show(d));
    let got: Vec<_> = ran.iter().map(|r| key(&r.unique, &r.data)).collect();
    let expected: Vec<_> = want.iter().map(|j| key(&j.unique, &j.data)).collect();
    if store.keeps_fifo_after_migration() {
        assert_eq!(got, expected, "{backend:?}: migrated jobs in grab order");
    } else {
        let rank = |u: &str| want.iter().find(|j| show(&j.unique) == u).map(|j| j.rank());
        let ranks: Vec<_> = got.iter().map(|(u, _)| rank(u)).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted, "{backend:?}: priority order of migrated jobs: {got:?}");
        let (mut g, mut e) = (got.clone(), expected.clone());
        g.sort();
        e.sort();
        assert_eq!(g, e, "{backend:?}: migrated jobs");
    }
    for (r, j) in ran.iter().zip(&want) {
        if store.keeps_fifo_after_migration() {
            assert!(r.data == j.data, "{backend:?}: data of {} changed in migration", show(&j.unique));
        }
    }
    let other = drain(&ours, "migg", Duration::from_secs(10));
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].data, b"other function");
    drop(admin);
    stop(ours);

    let ours = store.start(Kind::Ours);
    assert_eq!(busy_functions(&ours), Vec::<String>::new(), "{backend:?}: migrated jobs came back");
    stop(ours);
}

#[test]
fn migration_from_real_gearmand_sqlite() {
    migration_case(Backend::Sqlite);
}

#[test]
fn migration_from_real_gearmand_postgres() {
    migration_case(Backend::Postgres);
}

#[test]
fn migration_from_real_gearmand_mysql() {
    migration_case(Backend::Mysql);
}

#[test]
fn migration_from_real_gearmand_redis() {
    migration_case(Backend::Redis);
}

/// Ours is killed with SIGKILL, at random moments, while it opens (and converts) a queue
/// of `n` jobs the real gearmand left; a later start still runs every job exactly once.
fn migration_kill_case(backend: Backend, n: usize) {
    if support::real_gearmand().is_none() {
        support::require(false, "the real gearmand (/usr/sbin/gearmand)");
        return;
    }
    let mut rng = Rng(seed(&format!("migration kill {backend:?}")));
    let Some(store) = Store::new(backend, &mut rng) else { return };
    let jobs: Vec<Job> = (0..n)
        .map(|i| {
            let command = [SUBMIT_JOB_BG, SUBMIT_JOB_HIGH_BG, SUBMIT_JOB_LOW_BG][i % 3];
            Job::new(command, "migk", &format!("k{i}"), format!("job {i} {:x}", rng.next_u64()).as_bytes())
        })
        .collect();
    let real = store.start(Kind::Real);
    let t = Instant::now();
    let sub = pipeline(real.port, &jobs, 32, &AtomicUsize::new(0));
    assert!(sub.unexpected.is_empty(), "real gearmand: {:?}", sub.unexpected);
    assert_eq!(sub.acked.len(), n, "real gearmand acknowledged {} of {n}", sub.acked.len());
    eprintln!("{backend:?}: the real gearmand stored {n} jobs in {:?}", t.elapsed());
    stop(real);

    let args = store.args();
    let mut delays: Vec<u64> = vec![rng.next_u64() % 5, 5 + rng.next_u64() % 35, 40 + rng.next_u64() % 110];
    delays.sort();
    for ms in delays {
        let port = support::free_port().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gearmand"))
            .args(["-L", "127.0.0.1", "-p", &port, "-l", "none"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        child.wait().unwrap();
    }

    let ours = store.start(Kind::Ours);
    let ran = drain(&ours, "migk", Duration::from_secs(20));
    let mut got: Vec<Vec<u8>> = ran.iter().map(|r| r.data.clone()).collect();
    let mut want: Vec<Vec<u8>> = jobs.iter().map(|j| j.data.clone()).collect();
    got.sort();
    want.sort();
    let missing = want.iter().filter(|d| !got.contains(d)).count();
    assert!(
        got == want,
        "{backend:?}: after kills during start-up, {} jobs ran for {n} stored ({missing} missing)",
        got.len()
    );
    stop(ours);
    let ours = store.start(Kind::Ours);
    assert_eq!(busy_functions(&ours), Vec::<String>::new(), "{backend:?}: migrated jobs came back");
    stop(ours);
}

#[test]
fn migration_survives_kill9_sqlite() {
    migration_kill_case(Backend::Sqlite, 300);
}

#[test]
fn migration_survives_kill9_postgres() {
    migration_kill_case(Backend::Postgres, 300);
}

#[test]
fn migration_survives_kill9_mysql() {
    migration_kill_case(Backend::Mysql, 300);
}

#[test]
fn migration_survives_kill9_redis() {
    migration_kill_case(Backend::Redis, 300);
}

// ---------------------------------------------------------------------------------------
// 5: store failures
// ---------------------------------------------------------------------------------------

/// A PostgreSQL role only our server logs in as, so an outage (NOLOGIN plus terminating
/// its sessions) touches nobody else. Dropped, with its table, on drop.
struct PgRole {
    role: String,
}

impl PgRole {
    fn create(name: &str) -> PgRole {
        psql(&format!("CREATE ROLE {name} LOGIN; GRANT USAGE, CREATE ON SCHEMA public TO {name}"))
            .expect("create a test role");
        PgRole { role: name.to_string() }
    }

    fn outage(&self) {
        let r = &self.role;
        psql(&format!(
            "ALTER ROLE {r} NOLOGIN; SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{r}'"
        ))
        .expect("start the outage");
    }

    fn recover(&self) {
        psql(&format!("ALTER ROLE {} LOGIN", self.role)).expect("end the outage");
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let r = &self.role;
        if let Err(e) = psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{r}'; \
             DROP OWNED BY {r}; DROP ROLE IF EXISTS {r}"
        )) {
            eprintln!("cleanup of role {r} failed: {e}");
        }
    }
}

/// Reads the answer to a background submit: `Ok(handle)` or `Err(error code)`.
fn bg_answer(c: &mut Conn) -> Result<String, String> {
    let p = c.read_packet();
    match p.command {
        JOB_CREATED => Ok(String::from_utf8(p.body).unwrap()),
        ERROR => Err(String::from_utf8_lossy(&p.args()[0]).into_owned()),
        other => panic!("unexpected answer {other} {:?}", String::from_utf8_lossy(&p.body)),
    }
}

/// One foreground job round trip: submit, a worker runs it, the client gets the result.
fn foreground_round_trip(client: &mut Conn, worker: &mut Conn, n: usize) {
    let data = format!("fg-{n}");
    client.req(SUBMIT_JOB, &["fg", "", &data]);
    let handle = String::from_utf8(client.want_type(JOB_CREATED)).unwrap();
    worker.req(GRAB_JOB, &[]);
    let body = worker.want_type(JOB_ASSIGN);
    assert_eq!(body, format!("{handle}\0fg\0{data}").into_bytes());
    worker.req(WORK_COMPLETE, &[&handle, "done"]);
    client.want(WORK_COMPLETE, &[&handle, "done"]);
}

#[test]
fn store_failure_is_queue_error() {
    let mut rng = Rng(seed("store failure"));
    let Some(store) = Store::new(Backend::Postgres, &mut rng) else { return };
    let role = PgRole::create(&store.name);
    let table = &store.name;
    let conninfo =
        format!("host=127.0.0.1 port=5432 dbname=test user={} application_name={}", role.role, role.role);
    let args = ["-q", "postgres", "--libpq-conninfo", &conninfo, "--libpq-table", table];
    let mut server = Server::start(Kind::Ours, &args).expect("ours");
    let mut client = server.connect();
    // Reconnect back-off is at most 5 s; anything much longer is a hang.
    client.stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let (mut fg_client, mut fg_worker) = (server.connect(), server.connect());
    fg_worker.can_do("fg");

    let mut acked: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for i in 0..5 {
        let d = format!("before-{i}");
        client.req(SUBMIT_JOB_BG, &["bg", "", &d]);
        bg_answer(&mut client).expect("submit before the outage");
        acked.push(d);
    }
    foreground_round_trip(&mut fg_client, &mut fg_worker, 0);

    role.outage();
    // A worker completes one stored job during the outage; the removal must wait, not vanish.
    let mut w = server.connect();
    w.can_do("bg");
    w.req(GRAB_JOB, &[]);
    let assigned = w.want_type(JOB_ASSIGN);
    let parts: Vec<&[u8]> = assigned.splitn(3, |&b| b == 0).collect();
    let completed = String::from_utf8_lossy(parts[2]).into_owned();
    assert_eq!(completed, "before-0");
    w.send(&req(WORK_COMPLETE, &[parts[0], b""]));
    w.sync();

    let t = Instant::now();
    for i in 0..4 {
        let d = format!("during-{i}");
        let sent = Instant::now();
        client.req(SUBMIT_JOB_BG, &["bg", "", &d]);
        match bg_answer(&mut client) {
            Ok(h) => panic!("JOB_CREATED {h} for {d} while the database refuses our role"),
            Err(code) => assert_eq!(code, "QUEUE_ERROR"),
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "QUEUE_ERROR took {:?}", sent.elapsed());
        refused.push(d);
        // Foreground jobs do not need the store and keep flowing.
        foreground_round_trip(&mut fg_client, &mut fg_worker, i + 1);
    }
    eprintln!("outage: 4 refusals in {:?}", t.elapsed());

    role.recover();
    let t = Instant::now();
    loop {
        let d = format!("after-{}", acked.len() + refused.len());
        client.req(SUBMIT_JOB_BG, &["bg", "", &d]);
        match bg_answer(&mut client) {
            Ok(_) => {
                acked.push(d);
                break;
            }
            Err(code) => {
                assert_eq!(code, "QUEUE_ERROR");
                refused.push(d);
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "background submits still refused 20 s after recovery"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("recovered after {:?}", t.elapsed());
    for i in 0..5 {
        let d = format!("later-{i}");
        client.req(SUBMIT_JOB_BG, &["bg", "", &d]);
        bg_answer(&mut client).expect("submit after recovery");
        acked.push(d);
    }
    foreground_round_trip(&mut fg_client, &mut fg_worker, 99);
    // Give the retried removal a moment, then crash: no shutdown flush helps.
    std::thread::sleep(Duration::from_millis(500));
    drop((client, fg_client, fg_worker, w));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = Server::start(Kind::Ours, &args).expect("ours");
    let ran: Vec<String> =
        drain(&server, "bg", Duration::from_secs(10)).iter().map(|r| show(&r.data)).collect();
    let want: Vec<String> = acked.iter().filter(|d| **d != completed).cloned().collect();
    assert_eq!(ran, want, "jobs after the outage and a crash (refused: {refused:?})");
    stop(server);
    drop(role);
}

/// Starts ours with `args` on a free port and returns (exit code, stderr) once it exits
/// (bounded; a server still running after 30 s is killed and fails the test).
fn start_expecting_exit(args: &[&str]) -> (Option<i32>, String) {
    let port = support::free_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gearmand"))
        .args(["-L", "127.0.0.1", "-p", &port, "-l", "none"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gearmand {args:?} still running after 30 s (listening: {})",
                port_open(port.parse().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), err)
}

/// An unreachable store stops the server at start with exit 1 and a message that names
/// the backend and says why, as gearmand's does (its postgres line quotes libpq's
/// "Connection refused").
#[test]
fn store_unreachable_at_start_exits_1() {
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["-q", "postgres", "--libpq-conninfo", "host=127.0.0.1 port=1 dbname=test user=postgres"],
            "postgres",
            "refused",
        ),
        (
            &["-q", "libsqlite3", "--libsqlite3-db", "/nonexistent-gm-durability-dir/sub/q.db"],
            "libsqlite3",
            "unable to open",
        ),
        (
            &["-q", "mysql", "--mysql-host", "127.0.0.1", "--mysql-port", "1", "--mysql-user", "root"],
            "mysql",
            "refused",
        ),
        (&["-q", "redis", "--redis-server", "127.0.0.1", "--redis-port", "1"], "redis", "refused"),
    ];
    let mut unclear = Vec::new();
    for (args, backend, why) in cases {
        let t = Instant::now();
        let (code, err) = start_expecting_exit(args);
        assert_eq!(code, Some(1), "{args:?}: exit code (stderr {err:?})");
        let line = err.to_lowercase();
        assert!(line.contains(backend), "{args:?}: message should name {backend}: {err:?}");
        if !line.contains(why) {
            unclear.push(format!("{backend}: {:?} does not say {why:?}", err.trim()));
        }
        eprintln!("{backend}: exit 1 after {:?}: {}", t.elapsed(), err.trim());
    }
    assert!(unclear.is_empty(), "start-up failure messages without their cause: {unclear:#?}");
}

/// `--store-queue-on-shutdown` (gearmand's option): jobs are acknowledged without
/// touching the store, written when the server stops (running ones included), replayed
/// at the next start, and removed once done.
#[test]
fn store_queue_on_shutdown_writes_the_queue_at_stop() {
    let mut rng = Rng(seed("store_queue_on_shutdown"));
    let Some(store) = Store::new(Backend::Sqlite, &mut rng) else { return };
    let mut args = store.args();
    args.push("--store-queue-on-shutdown".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start(Kind::Ours, &a).expect("our server");
    let mut c = s.connect();
    let jobs = [
        Job::new(SUBMIT_JOB_BG, "sqos", "", b"one"),
        Job::new(SUBMIT_JOB_BG, "sqos", "", b"two"),
        Job::new(SUBMIT_JOB_HIGH_BG, "sqos", "u3", b"three"),
    ];
    for j in &jobs {
        submit(&mut c, j);
    }
    // One job is running when the server stops: it is stored too.
    let mut w = s.connect();
    w.can_do("sqos");
    w.send(&req(GRAB_JOB_UNIQ, &[]));
    assert_eq!(w.read_packet().command, JOB_ASSIGN_UNIQ);
    stop(s);
    let s = Server::start(Kind::Ours, &a).expect("our server");
    let mut ran: Vec<Vec<u8>> =
        drain(&s, "sqos", Duration::from_secs(10)).into_iter().map(|r| r.data).collect();
    ran.sort();
    assert_eq!(ran, vec![b"one".to_vec(), b"three".to_vec(), b"two".to_vec()]);
    stop(s);
    // Done jobs were removed: nothing comes back.
    let s = Server::start(Kind::Ours, &a).expect("our server");
    assert_eq!(busy_functions(&s), Vec::<String>::new());
    stop(s);
}
