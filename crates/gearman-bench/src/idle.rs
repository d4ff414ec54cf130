//! `--idle-connections`: extra connections that stay open and silent during the run.
//!
//! Each is a bare socket (no buffers of its own, so 10,000 of them cost the bench
//! only kernel memory). They are opened in small batches, each batch proving its
//! connections live with one ECHO round trip before the next is opened, so a short
//! listen backlog never drops a SYN; after the run every one must answer again.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use gearman_proto::{encode_parts, Command, Magic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened before their ECHOs are awaited.
const BATCH: usize = 16;

const TOKEN: &[u8] = b"gearman-bench-idle";

/// How long an idle connection's ECHO_RES may take before the run fails naming it,
/// rather than hanging until the run's own timeout with nothing to show where.
const ECHO_WAIT: Duration = Duration::from_secs(30);

/// The ECHO_REQ an idle connection sends and the ECHO_RES it must get back.
fn echo_bytes() -> (BytesMut, BytesMut) {
    let mut req = BytesMut::new();
    encode_parts(Magic::Req, Command::EchoReq, &[TOKEN], &mut req);
    let mut res = BytesMut::new();
    encode_parts(Magic::Res, Command::EchoRes, &[TOKEN], &mut res);
    (req, res)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let mut tries = 0u32;
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if tries >= 100 => {
                return Err(e).with_context(|| format!("opening an idle connection to {addr}"));
            }
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Sends one ECHO on each connection, then reads every answer.
async fn echo_all(conns: &mut [TcpStream], first: usize) -> Result<()> {
    let (req, res) = echo_bytes();
    for c in conns.iter_mut() {
        c.write_all(&req).await.context("writing to an idle connection")?;
    }
    let mut buf = vec![0u8; res.len()];
    for (i, c) in conns.iter_mut().enumerate() {
        match tokio::time::timeout(ECHO_WAIT, c.read_exact(&mut buf)).await {
            Ok(r) => r.with_context(|| format!("idle connection {} got no ECHO_RES", first + i))?,
            Err(_) => bail!("idle connection {} got no ECHO_RES within {} s", first + i, ECHO_WAIT.as_secs()),
        };
        if buf[..] != res[..] {
            bail!("idle connection {} got {:?} instead of its ECHO_RES", first + i, buf);
        }
    }
    Ok(())
}

/// Opens `n` connections, each checked with an ECHO.
pub(crate) async fn open(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    while conns.len() < n {
        let start = conns.len();
        for _ in 0..BATCH.min(n - start) {
            conns.push(connect(addr).await?);
        }
        echo_all(&mut conns[start..], start).await?;
    }
    Ok(conns)
}

/// Checks that every idle connection still answers (the server kept them all).
pub(crate) async fn check(conns: &mut [TcpStream]) -> Result<()> {
    // Bounded batches keep the unread answers within the sockets' buffers.
    for (k, chunk) in conns.chunks_mut(1024).enumerate() {
        echo_all(chunk, k * 1024).await?;
    }
    Ok(())
}
