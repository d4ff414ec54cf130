//! `-q libmemcached`: jobs kept in a memcached server, for parity with gearmand.
//!
//! **Not durable.** memcached is a cache: it forgets everything when it restarts and may
//! evict any item when it runs short of memory (start it with `-M` to make it refuse new
//! items instead). A job lost that way is not replayed. Use another backend when jobs
//! must survive.
//!
//! Layout under the prefix `P` (`--libmemcached-prefix`, `gear_` by default):
//!
//! - `P<key>` (decimal job key): the job, length-prefixed and binary-safe (see
//!   `encode`), with the first part of its payload. A record larger than one item
//!   ([`CHUNK`]) continues in `P<key>.1`, `P<key>.2`, ..., each tagged with a nonce the head
//!   also holds, so a chunk left over from an older record of the same key is never mixed
//!   in. The head's client flags hold the number of continuation chunks, so a removal
//!   finds them without reading the payload.
//! - `Pbits.<n>`: the index. A bitmap of the live keys `n * 1024 .. n * 1024 + 1023`
//!   (128 bytes), updated with compare-and-swap (meta protocol `mg ... c`,
//!   `ms ... C<cas>`) so concurrent writers never lose each other's bits, and deleted
//!   (again by CAS) when it becomes empty.
//! - `Prange`: the lowest and highest bucket number that may hold a live key.
//!
//! memcached cannot list its keys (gearmand dumped the slabs, which misses items and sees
//! other programs' keys), so replay reads `Prange`, the bitmaps in that range, then the
//! jobs they name: its cost is the number of live jobs plus one item per 1024 keys of the
//! range. Replay narrows the range to the buckets it found non-empty (by CAS, so a
//! concurrent add, which always rewrites `Prange`, is never cut off). The alternative, one
//! index item listing every live key, rewrites that whole list on every add and remove
//! and outgrows the 1 MiB item limit at about 100,000 jobs.
//!
//! memcached has no transactions: `add` writes the jobs, then sets their bits, then
//! rewrites `Prange`; `remove` clears the bits, then deletes the items. A failure in
//! between leaves unreferenced items (ignored, reclaimed by memcached's LRU), never an
//! index bit pointing at a job that was not written. A batch can be seen in part after a
//! failure; retrying it is safe.
//!
//! Needs memcached 1.6 or later (meta protocol). One server only; keys written by
//! gearmand (`P<function>-<unique>`) are not read.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_memcached::{AsciiProtocol, Client, Error as McError, ErrorKind, MetaProtocol, Status};
use bytes::Bytes;
use tokio::sync::Mutex;

use crate::backoff::Backoff;
use crate::{JobRecord, QueueStore, StoreError, StoreOptions};

const DEFAULT_PORT: u16 = 11211;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An operation that takes longer is treated as a lost connection.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Job keys per index bitmap.
const BUCKET_KEYS: u64 = 1024;
const BITMAP_LEN: usize = (BUCKET_KEYS / 8) as usize;
/// Largest value put in one item. memcached's default item limit (`-I`) is 1 MiB,
/// key and item header included.
const CHUNK: usize = 512 * 1024;
/// Keys per pipelined request.
const PAGE: usize = 256;
/// Compare-and-swap attempts before giving up on a contended index item.
const CAS_ATTEMPTS: usize = 100;
/// Leaves room for our longest suffix within memcached's 250-byte keys.
const MAX_PREFIX: usize = 200;
const HEAD_VERSION: u8 = 1;
const RANGE_VERSION: u8 = 1;
/// Fixed part of a head item: version, nonce, key, priority, when, two name lengths,
/// data length, chunk count.
const HEAD_FIXED: usize = 1 + 8 + 8 + 1 + 8 + 4 + 4 + 8 + 4;

/// The memcached store.
pub struct MemcachedStore {
    addr: String,
    keys: Keys,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("addr", &self.addr)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    backoff: Backoff,
}

impl MemcachedStore {
    /// Connects to `servers` (libmemcached's list syntax, `host[:port]` or a socket path;
    /// exactly one server)
    /// and checks it speaks the meta protocol. Failure is `Fatal`.
    pub async fn open(servers: &str, prefix: &str) -> Result<MemcachedStore, StoreError> {
        let addr = parse_servers(servers)?;
        if prefix.len() > MAX_PREFIX || !prefix.bytes().all(key_byte) {
            return Err(StoreError::Fatal(format!(
                "memcached: the key prefix must be at most {MAX_PREFIX} printable characters without spaces"
            )));
        }
        let store =
            MemcachedStore { addr, keys: Keys { prefix: prefix.to_owned() }, state: Mutex::default() };
        let mut client = store.connect().await.map_err(StoreError::into_fatal)?;
        // Fail at start, as gearmand does, rather than at the first job; `mg` also proves
        // the server is new enough for the meta protocol.
        let probe = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.meta_get(store.keys.range(), false, None, Some(&["v"])),
        )
        .await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(StoreError::Fatal(format!(
                    "memcached: {} does not answer the meta protocol (memcached 1.6 or later is needed): {e}",
                    store.addr
                )))
            }
            Err(_) => return Err(StoreError::Fatal(format!("memcached: {} does not answer", store.addr))),
        }
        store.state.lock().await.client = Some(client);
        Ok(store)
    }

    /// Opens the store from gearmand's `--libmemcached-*` options.
    pub async fn open_options(options: &StoreOptions) -> Result<MemcachedStore, StoreError> {
        let servers = options.libmemcached_servers.as_deref().unwrap_or_default();
        MemcachedStore::open(servers, &options.libmemcached_prefix).await
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::new(&self.addr)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                Err(StoreError::Unavailable(format!("memcached: cannot connect to {}: {e}", self.addr)))
            }
            Err(_) => {
                Err(StoreError::Unavailable(format!("memcached: cannot connect to {}: timed out", self.addr)))
            }
        }
    }

    /// The connection, reconnecting first (paced by the backoff) if the last one was lost.
    async fn client<'s>(&self, state: &'s mut State) -> Result<&'s mut Client, StoreError> {
        if state.client.as_ref().is_some_and(Client::is_closed) {
            state.client = None;
        }
        if state.client.is_none() {
            state.backoff.wait().await;
            match self.connect().await {
                Ok(c) => {
                    state.backoff.succeeded();
                    state.client = Some(c);
                }
                Err(e) => {
                    state.backoff.failed();
                    return Err(e);
                }
            }
        }
        state.client.as_mut().ok_or_else(|| StoreError::Unavailable("memcached: not connected".into()))
    }
}

/// Drops the connection after any failure (its stream may be mid-reply), so the next
/// call starts on a fresh one.
fn settle<T>(
    state: &mut State,
    result: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    let result =
        result.unwrap_or_else(|_| Err(StoreError::Unavailable("memcached: operation timed out".into())));
    if result.is_err() {
        state.client = None;
    }
    result
}

#[async_trait::async_trait]
impl QueueStore for MemcachedStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Encode first: a record we cannot store is refused before anything is written.
        let items = jobs.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state.lock().await;
        let client = self.client(&mut state).await?;
        let result = tokio::time::timeout(OP_TIMEOUT, add_on(client, &self.keys, jobs, &items)).await;
        settle(&mut state, result)
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut state = self.state.lock().await;
        let client = self.client(&mut state).await?;
        let result = tokio::time::timeout(OP_TIMEOUT, remove_on(client, &self.keys, &keys)).await;
        settle(&mut state, result)
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut state = self.state.lock().await;
        let client = self.client(&mut state).await?;
        let result = tokio::time::timeout(OP_TIMEOUT, replay_on(client, &self.keys)).await;
        settle(&mut state, result)
    }

    fn name(&self) -> &'static str {
        "memcached"
    }
}

/// Item names under the prefix.
struct Keys {
    prefix: String,
}

impl Keys {
    fn head(&self, key: u64) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn chunk(&self, key: u64, i: u32) -> Vec<u8> {
        format!("{}{key}.{i}", self.prefix).into_bytes()
    }

    fn bucket(&self, n: u64) -> Vec<u8> {
        format!("{}bits.{n}", self.prefix).into_bytes()
    }

    fn range(&self) -> Vec<u8> {
        format!("{}range", self.prefix).into_bytes()
    }
}

/// A job as memcached items: the head (value, continuation chunk count) and the chunks.
struct Encoded {
    head: Vec<u8>,
    chunks: Vec<Vec<u8>>,
}

/// An item to write: name and value.
type Item<'a> = (Vec<u8>, &'a [u8]);

/// Outcome of a compare-and-swap write.
enum Cas {
    Done,
    Conflict,
}

fn unavailable(what: &str, e: McError) -> StoreError {
    match &e {
        McError::Protocol(Status::Error(ErrorKind::Server(m))) if m.contains("too large") => {
            StoreError::InvalidRecord(format!(
                "memcached: {what}: the server refused an item of up to {CHUNK} bytes as too large ({m}); \
                 start memcached with -I 1m or more"
            ))
        }
        _ => StoreError::Unavailable(format!("memcached: {what}: {e}")),
    }
}

/// Maps a conditional write's reply: a lost race is `Conflict`, anything else an error.
fn cas_outcome(
    what: &str,
    r: Result<Option<async_memcached::MetaValue>, McError>,
) -> Result<Cas, StoreError> {
    match r {
        Ok(_) => Ok(Cas::Done),
        Err(McError::Protocol(Status::Exists | Status::NotFound | Status::NotStored)) => Ok(Cas::Conflict),
        Err(e) => Err(unavailable(what, e)),
    }
}

/// Writes `value` to `name` only if it still has `cas` (or, with `None`, does not exist).
async fn write_cas(c: &mut Client, name: &[u8], value: &[u8], cas: Option<u64>) -> Result<Cas, StoreError> {
    let flag = match cas {
        Some(cas) => format!("C{cas}"),
        None => "ME".to_owned(),
    };
    cas_outcome(
        "cannot update the queue index",
        c.meta_set(name, value, false, None, Some(&[flag.as_str()])).await,
    )
}

/// Deletes `name` only if it still has `cas`.
async fn delete_cas(c: &mut Client, name: &[u8], cas: u64) -> Result<Cas, StoreError> {
    let flag = format!("C{cas}");
    cas_outcome(
        "cannot update the queue index",
        c.meta_delete(name, false, None, Some(&[flag.as_str()])).await,
    )
}

/// Reads many items (value and CAS), by name; misses are absent.
async fn get_many(
    c: &mut Client,
    names: &[Vec<u8>],
    flags: &[&str],
) -> Result<HashMap<Vec<u8>, (Vec<u8>, u64, u32)>, StoreError> {
    let mut out = HashMap::with_capacity(names.len());
    for page in names.chunks(PAGE) {
        let values = c.meta_get_multi(page, Some(flags)).await.map_err(|e| unavailable("cannot read", e))?;
        for v in values {
            if let Some(key) = v.key {
                out.insert(key, (v.data.unwrap_or_default(), v.cas.unwrap_or(0), v.flags.unwrap_or(0)));
            }
        }
    }
    Ok(out)
}

async fn add_on(c: &mut Client, k: &Keys, jobs: &[JobRecord], items: &[Encoded]) -> Result<(), StoreError> {
    // 1. The jobs: continuation chunks first, then heads, grouped by chunk count (the
    //    head's client flags).
    let mut chunks: Vec<Item<'_>> = Vec::new();
    let mut heads: BTreeMap<usize, Vec<Item<'_>>> = BTreeMap::new();
    for (job, item) in jobs.iter().zip(items) {
        for (i, chunk) in (1u32..).zip(&item.chunks) {
            chunks.push((k.chunk(job.key, i), chunk.as_slice()));
        }
        heads.entry(item.chunks.len()).or_default().push((k.head(job.key), item.head.as_slice()));
    }
    for page in chunks.chunks(PAGE) {
        c.meta_set_multi(page, None).await.map_err(|e| unavailable("cannot store jobs", e))?;
    }
    for (count, group) in &heads {
        let flag = format!("F{count}");
        for page in group.chunks(PAGE) {
            c.meta_set_multi(page, Some(&[flag.as_str()]))
                .await
                .map_err(|e| unavailable("cannot store jobs", e))?;
        }
    }
    // 2. Their index bits.
    let keys: Vec<u64> = jobs.iter().map(|j| j.key).collect();
    update_buckets(c, k, &keys, true).await?;
    // 3. The range, rewritten even when unchanged so a concurrent replay cannot narrow
    //    it past the bits just set.
    let lo = keys.iter().min().copied().unwrap_or(0) / BUCKET_KEYS;
    let hi = keys.iter().max().copied().unwrap_or(0) / BUCKET_KEYS;
    for _ in 0..CAS_ATTEMPTS {
        let current = c
            .meta_get(k.range(), false, None, Some(&["v", "c"]))
            .await
            .map_err(|e| unavailable("cannot read the queue range", e))?;
        let (range, cas) = match current {
            None => ((lo, hi), None),
            Some(v) => {
                let (a, b) = decode_range(k, v.data.as_deref().unwrap_or_default())?;
                ((a.min(lo), b.max(hi)), Some(v.cas.unwrap_or(0)))
            }
        };
        if let Cas::Done = write_cas(c, &k.range(), &encode_range(range), cas).await? {
            return Ok(());
        }
    }
    Err(contended(&k.range()))
}

async fn remove_on(c: &mut Client, k: &Keys, keys: &[u64]) -> Result<(), StoreError> {
    update_buckets(c, k, keys, false).await?;
    for page in keys.chunks(PAGE) {
        let names: Vec<Vec<u8>> = page.iter().map(|&key| k.head(key)).collect();
        let found = get_many(c, &names, &["f"]).await?;
        let mut doomed = Vec::new();
        for &key in page {
            let Some((_, _, count)) = found.get(&k.head(key)) else { continue };
            doomed.push(k.head(key));
            doomed.extend((1..=*count).map(|i| k.chunk(key, i)));
        }
        for part in doomed.chunks(PAGE) {
            c.delete_multi_no_reply(part).await.map_err(|e| unavailable("cannot delete jobs", e))?;
        }
    }
    Ok(())
}

/// Sets (or clears) the index bits of `keys`, retrying buckets that lost a CAS race.
async fn update_buckets(c: &mut Client, k: &Keys, keys: &[u64], set: bool) -> Result<(), StoreError> {
    let mut pending: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &key in keys {
        pending.entry(key / BUCKET_KEYS).or_default().push(key % BUCKET_KEYS);
    }
    for _ in 0..CAS_ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let names: Vec<Vec<u8>> = pending.keys().map(|&n| k.bucket(n)).collect();
        let mut current = get_many(c, &names, &["v", "c"]).await?;
        let mut lost = BTreeMap::new();
        for (n, offsets) in pending {
            let name = k.bucket(n);
            let (old, cas) = match current.remove(&name) {
                Some((data, cas, _)) => (bitmap(&name, data), Some(cas)),
                None => (vec![0; BITMAP_LEN], None),
            };
            let mut bits = old.clone();
            for &o in &offsets {
                if let Some(byte) = bits.get_mut((o / 8) as usize) {
                    let mask = 1u8 << (o % 8);
                    if set {
                        *byte |= mask;
                    } else {
                        *byte &= !mask;
                    }
                }
            }
            let outcome = if bits == old && cas.is_some() {
                Cas::Done
            } else if bits.iter().all(|&b| b == 0) {
                match cas {
                    Some(cas) => delete_cas(c, &name, cas).await?,
                    None => Cas::Done,
                }
            } else {
                write_cas(c, &name, &bits, cas).await?
            };
            if let Cas::Conflict = outcome {
                lost.insert(n, offsets);
            }
        }
        pending = lost;
    }
    match pending.keys().next() {
        Some(&n) => Err(contended(&k.bucket(n))),
        None => Ok(()),
    }
}

fn contended(name: &[u8]) -> StoreError {
    StoreError::Unavailable(format!(
        "memcached: gave up updating {} after {CAS_ATTEMPTS} attempts (other writers keep changing it)",
        String::from_utf8_lossy(name)
    ))
}

/// A bitmap as read; a value of the wrong size is treated as empty, with a warning.
fn bitmap(name: &[u8], data: Vec<u8>) -> Vec<u8> {
    if data.len() == BITMAP_LEN {
        return data;
    }
    tracing::warn!(item = %String::from_utf8_lossy(name), len = data.len(), "memcached: ignoring a corrupt queue index item");
    vec![0; BITMAP_LEN]
}

async fn replay_on(c: &mut Client, k: &Keys) -> Result<Vec<JobRecord>, StoreError> {
    let Some(range) = c
        .meta_get(k.range(), false, None, Some(&["v", "c"]))
        .await
        .map_err(|e| unavailable("cannot read the queue range", e))?
    else {
        return Ok(Vec::new());
    };
    let cas = range.cas.unwrap_or(0);
    let (lo, hi) = decode_range(k, range.data.as_deref().unwrap_or_default())?;

    // The live keys, in order, from the bitmaps in the range.
    let mut live = Vec::new();
    let mut found: Option<(u64, u64)> = None;
    let mut start = lo;
    while start <= hi {
        let end = hi.min(start.saturating_add(PAGE as u64 - 1));
        let names: Vec<Vec<u8>> = (start..=end).map(|n| k.bucket(n)).collect();
        let mut maps = get_many(c, &names, &["v"]).await?;
        for (n, name) in (start..=end).zip(&names) {
            let Some((data, _, _)) = maps.remove(name) else { continue };
            let bits = bitmap(name, data);
            let before = live.len();
            for (i, byte) in (0u64..).zip(&bits) {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        live.push(n * BUCKET_KEYS + i * 8 + bit);
                    }
                }
            }
            if live.len() > before {
                found = Some(found.map_or((n, n), |(a, _)| (a, n)));
            }
        }
        if end == hi {
            break;
        }
        start = end + 1;
    }

    let mut jobs = Vec::with_capacity(live.len());
    for page in live.chunks(PAGE) {
        let names: Vec<Vec<u8>> = page.iter().map(|&key| k.head(key)).collect();
        let mut heads = get_many(c, &names, &["v", "f"]).await?;
        for (&key, name) in page.iter().zip(&names) {
            let Some((data, _, _)) = heads.remove(name) else {
                tracing::warn!(
                    key,
                    "memcached: a queued job is gone (evicted, or memcached restarted); skipping it"
                );
                continue;
            };
            match read_job(c, k, key, &data).await? {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    tracing::warn!(key, error = %e, "memcached: skipping a queue entry that cannot be decoded")
                }
            }
        }
    }

    // Narrow the range to what is in use; skipped if a writer changed it meanwhile.
    if found != Some((lo, hi)) {
        let outcome = match found {
            None => delete_cas(c, &k.range(), cas).await?,
            Some(r) => write_cas(c, &k.range(), &encode_range(r), Some(cas)).await?,
        };
        if let Cas::Conflict = outcome {
            tracing::debug!("memcached: queue range changed during replay; left as is");
        }
    }
    Ok(jobs)
}

/// Decodes a head and reads its continuation chunks. The outer error is the store's, the
/// inner one a record to skip.
async fn read_job(
    c: &mut Client,
    k: &Keys,
    key: u64,
    head: &[u8],
) -> Result<Result<JobRecord, String>, StoreError> {
    let (mut job, nonce, total, count) = match decode_head(key, head) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    if count == 0 {
        return Ok(if job.data.len() as u64 == total {
            Ok(job)
        } else {
            Err("payload length mismatch".into())
        });
    }
    let names: Vec<Vec<u8>> = (1..=count).map(|i| k.chunk(key, i)).collect();
    let mut parts = get_many(c, &names, &["v"]).await?;
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0).min(64 << 20));
    data.extend_from_slice(&job.data);
    for name in &names {
        let Some((part, _, _)) = parts.remove(name) else {
            return Ok(Err(format!("continuation {} is gone (evicted?)", String::from_utf8_lossy(name))));
        };
        match part.split_first_chunk::<8>() {
            Some((tag, rest)) if u64::from_be_bytes(*tag) == nonce => data.extend_from_slice(rest),
            _ => {
                return Ok(Err(format!(
                    "continuation {} belongs to another record",
                    String::from_utf8_lossy(name)
                )))
            }
        }
    }
    if data.len() as u64 != total {
        return Ok(Err("payload length mismatch".into()));
    }
    job.data = Bytes::from(data);
    Ok(Ok(job))
}

/// Encodes a job as a head item plus continuation chunks of at most [`CHUNK`] bytes each.
///
/// Head: version u8, nonce u64, key u64, priority u8, when i64, function length u32,
/// unique length u32, payload length u64, chunk count u32 (all big-endian), function,
/// unique, then the payload's first part. Chunk: nonce u64, then payload bytes.
fn encode(job: &JobRecord) -> Result<Encoded, StoreError> {
    let names = HEAD_FIXED + job.function.len() + job.unique.len();
    if names > CHUNK {
        return Err(StoreError::InvalidRecord(format!(
            "memcached: job {}: function name and unique id together exceed {} bytes, more than one memcached item holds",
            job.key,
            CHUNK - HEAD_FIXED
        )));
    }
    let first = job.data.len().min(CHUNK - names);
    let (inline, rest) = job.data.split_at(first);
    let pieces = rest.chunks(CHUNK - 8);
    let count = u32::try_from(pieces.len())
        .map_err(|_| StoreError::InvalidRecord(format!("memcached: job {}: payload too large", job.key)))?;
    let nonce = nonce();
    let mut head = Vec::with_capacity(names + first);
    head.push(HEAD_VERSION);
    head.extend_from_slice(&nonce.to_be_bytes());
    head.extend_from_slice(&job.key.to_be_bytes());
    head.push(job.priority as u8);
    head.extend_from_slice(&job.when.to_be_bytes());
    // Both fit in u32: checked against CHUNK above.
    head.extend_from_slice(&(job.function.len() as u32).to_be_bytes());
    head.extend_from_slice(&(job.unique.len() as u32).to_be_bytes());
    head.extend_from_slice(&(job.data.len() as u64).to_be_bytes());
    head.extend_from_slice(&count.to_be_bytes());
    head.extend_from_slice(&job.function);
    head.extend_from_slice(&job.unique);
    head.extend_from_slice(inline);
    let chunks = pieces
        .map(|p| {
            let mut v = Vec::with_capacity(8 + p.len());
            v.extend_from_slice(&nonce.to_be_bytes());
            v.extend_from_slice(p);
            v
        })
        .collect();
    Ok(Encoded { head, chunks })
}

/// Decodes a head: the job (with the inline part of its payload), its nonce, the full
/// payload length and the number of continuation chunks.
fn decode_head(key: u64, b: &[u8]) -> Result<(JobRecord, u64, u64, u32), String> {
    let mut r = Reader(b);
    let version = r.u8()?;
    if version != HEAD_VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let nonce = r.u64()?;
    let stored_key = r.u64()?;
    if stored_key != key {
        return Err(format!("record holds key {stored_key}"));
    }
    let priority = crate::priority_from_stored(i64::from(r.u8()?), "memcached", key);
    let when = i64::from_be_bytes(r.array()?);
    let function_len = r.u32()? as usize;
    let unique_len = r.u32()? as usize;
    let total = r.u64()?;
    let count = r.u32()?;
    let function = Bytes::copy_from_slice(r.take(function_len)?);
    let unique = Bytes::copy_from_slice(r.take(unique_len)?);
    let data = Bytes::copy_from_slice(r.0);
    Ok((JobRecord { key, function, unique, priority, data, when }, nonce, total, count))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("record is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("record is truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

fn encode_range((lo, hi): (u64, u64)) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(RANGE_VERSION);
    v.extend_from_slice(&lo.to_be_bytes());
    v.extend_from_slice(&hi.to_be_bytes());
    v
}

/// The range item; anything else under its name means the prefix is shared with another
/// program, and is `Fatal` rather than overwritten.
fn decode_range(k: &Keys, b: &[u8]) -> Result<(u64, u64), StoreError> {
    let mut r = Reader(b);
    match (r.u8(), r.u64(), r.u64()) {
        (Ok(RANGE_VERSION), Ok(lo), Ok(hi)) if r.0.is_empty() && lo <= hi => Ok((lo, hi)),
        _ => Err(StoreError::Fatal(format!(
            "memcached: {} does not hold a queue index; is the prefix used by another program?",
            String::from_utf8_lossy(&k.range())
        ))),
    }
}

/// A value that differs between records (per process and call), tying chunks to their head.
fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.finish()
}

/// memcached keys are printable ASCII without spaces.
fn key_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// The client's address (`tcp://host:port` or `unix://path`) for libmemcached's server
/// list (`host[:port][,host[:port]...]`, or a socket path starting with `/`).
fn parse_servers(list: &str) -> Result<String, StoreError> {
    let servers: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let server = match servers.as_slice() {
        [] => return Err(StoreError::Fatal("memcached: --libmemcached-servers is required".into())),
        [one] => *one,
        many => {
            return Err(StoreError::Fatal(format!(
                "memcached: {} servers given; this build supports exactly one",
                many.len()
            )))
        }
    };
    // A weight after a space (`host:port weight`) is accepted and ignored.
    let server = server.split_whitespace().next().unwrap_or(server);
    if server.starts_with('/') {
        return Ok(format!("unix://{server}"));
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port: u16 = port
                .parse()
                .map_err(|_| StoreError::Fatal(format!("memcached: bad port in server {server:?}")))?;
            (host, port)
        }
        Some(_) => {
            return Err(StoreError::Fatal(format!(
                "memcached: IPv6 server addresses are not supported: {server:?}"
            )))
        }
        None => (server, DEFAULT_PORT),
    };
    if host.is_empty()
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(StoreError::Fatal(format!("memcached: bad host in server {server:?}")));
    }
    Ok(format!("tcp://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::record;
    use crate::Priority;

    #[test]
    fn servers() {
        assert_eq!(parse_servers("localhost").unwrap(), "tcp://localhost:11211");
        assert_eq!(parse_servers(" 10.0.0.1:2222 , ").unwrap(), "tcp://10.0.0.1:2222");
        assert_eq!(parse_servers("h:1 5").unwrap(), "tcp://h:1");
        assert_eq!(parse_servers("/run/mc.sock").unwrap(), "unix:///run/mc.sock");
        for bad in ["", " , ", "a,b", "h:x", ":1", "::1", "a/b:1", "h?x"] {
            assert!(matches!(parse_servers(bad), Err(StoreError::Fatal(_))), "{bad:?}");
        }
    }

    #[test]
    fn encode_decode_round_trip_and_chunks() {
        let mut job = record(7, b"f\0-", b"u\xff", b"\0data");
        job.priority = Priority::Low;
        job.when = -5;
        let e = encode(&job).unwrap();
        assert!(e.chunks.is_empty());
        let (back, _, total, count) = decode_head(7, &e.head).unwrap();
        assert_eq!((back, total, count), (job.clone(), 5, 0));
        assert!(decode_head(8, &e.head).is_err(), "key mismatch is detected");

        job.data = Bytes::from(vec![1u8; 2 * CHUNK + 10]);
        let e = encode(&job).unwrap();
        assert_eq!(e.chunks.len(), 2);
        assert!(e.head.len() <= CHUNK && e.chunks.iter().all(|c| c.len() <= CHUNK));
        let inline = decode_head(7, &e.head).unwrap().0.data.len();
        let rest: usize = e.chunks.iter().map(|c| c.len() - 8).sum();
        assert_eq!(inline + rest, job.data.len());

        job.function = Bytes::from(vec![b'f'; CHUNK]);
        assert!(matches!(encode(&job), Err(StoreError::InvalidRecord(_))));
    }

    #[test]
    fn bad_data_never_panics() {
        let e = encode(&record(1, b"fn", b"u", b"payload")).unwrap().head;
        for n in 0..e.len() {
            let _ = decode_head(1, &e[..n]);
        }
        let mut bad = e.clone();
        bad[0] = 9;
        assert!(decode_head(1, &bad).is_err());
        let mut huge = e;
        huge[27..31].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_head(1, &huge).is_err());
        let k = Keys { prefix: "p".into() };
        assert!(decode_range(&k, b"xx").is_err());
        assert!(decode_range(&k, &encode_range((5, 2))).is_err());
        assert_eq!(decode_range(&k, &encode_range((2, 5))).unwrap(), (2, 5));
        assert_eq!(bitmap(b"x", vec![1, 2]), vec![0; BITMAP_LEN]);
    }
}
