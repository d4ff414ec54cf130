//! A pipe that carries the data of one large result from a worker's socket to its
//! client's socket with splice(2): the kernel moves page references, so the server
//! never copies the data in or out, which at 64 KiB is most of a foreground job's
//! cost to it (Linux only; elsewhere results are read as usual).

/// Data of this size or more is worth a pipe: below it, the pipe's own system calls
/// cost more than the copies they save.
pub(crate) const FORWARD_MIN_BYTES: usize = 32 * 1024;

/// Largest data forwarded through a pipe; larger results are read as usual. Its
/// pipe takes twice as much room (see [`Pipe::with_room`]), within Linux's default
/// `fs.pipe-max-size` of 1 MiB.
pub(crate) const FORWARD_MAX_BYTES: usize = 512 * 1024;

#[cfg(target_os = "linux")]
pub(crate) use linux::Pipe;
#[cfg(not(target_os = "linux"))]
pub(crate) use other::Pipe;

/// What [`Pipe::fill_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Moved this many bytes (0: the peer closed its side).
    Moved(usize),
    /// The pipe has no room left while the socket still holds data: the data came in
    /// more pieces than the pipe has slots. The caller reads the rest as usual.
    PipeFull,
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};

    use bytes::{BufMut, BytesMut};
    use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
    use parking_lot::Mutex;

    use super::Filled;

    /// Emptied pipes kept for the next results: creating, sizing and closing one
    /// are four system calls, as many as forwarding a result takes.
    static IDLE: Mutex<Vec<Ends>> = Mutex::new(Vec::new());

    /// Most emptied pipes kept (two descriptors each).
    const MAX_IDLE: usize = 32;

    /// Never wait (the sockets are non-blocking too); move pages rather than copy.
    const SPLICE_FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

    /// A pipe's two ends and its capacity in bytes.
    #[derive(Debug)]
    struct Ends {
        rd: OwnedFd,
        wr: OwnedFd,
        capacity: usize,
    }

    /// A pipe holding part or all of one result's data, in order. Dropped empty, it
    /// goes back to a pool of idle pipes.
    #[derive(Debug)]
    pub(crate) struct Pipe {
        /// Always `Some` until dropped, when the ends go back to the pool.
        ends: Option<Ends>,
        /// Bytes in the pipe.
        len: usize,
    }

    impl Pipe {
        /// A pipe with room for `n` bytes even when they arrive in page-sized pieces
        /// or smaller: each piece takes a slot of its own, so the pipe gets twice the
        /// slots that `n` bytes in whole pages would need.
        pub(crate) fn with_room(n: usize) -> io::Result<Pipe> {
            let want = n.saturating_mul(2).max(64 * 1024);
            let idle = {
                let mut idle = IDLE.lock();
                let fit = idle.iter().position(|e| e.capacity >= want);
                fit.map(|i| idle.swap_remove(i))
            };
            if let Some(ends) = idle {
                return Ok(Pipe { ends: Some(ends), len: 0 });
            }
            let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            let size = fcntl(&wr, FcntlArg::F_SETPIPE_SZ(i32::try_from(want).unwrap_or(i32::MAX)))?;
            let capacity = usize::try_from(size).unwrap_or(0);
            if capacity < want {
                return Err(io::ErrorKind::OutOfMemory.into());
            }
            Ok(Pipe { ends: Some(Ends { rd, wr, capacity }), len: 0 })
        }

        /// Bytes in the pipe.
        pub(crate) fn len(&self) -> usize {
            self.len
        }

        fn ends(&self) -> io::Result<&Ends> {
            self.ends.as_ref().ok_or_else(|| io::ErrorKind::NotConnected.into())
        }

        /// Moves up to `n` bytes from the socket `src` into the pipe, without waiting.
        pub(crate) fn fill_from(&mut self, src: impl AsFd, n: usize) -> io::Result<Filled> {
            match self.splice_in(&src, n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // Either the socket was empty (wait for it) or the pipe is full.
            // Answering WouldBlock for a full pipe would clear the socket's readiness
            // while data waits in it, and nothing would wake its reader again. A peek
            // that finds data does not settle it: the data may have arrived after the
            // splice looked. But data stays in the socket until read, so a second
            // splice that finds no room after the peek means a full pipe.
            let mut probe = [MaybeUninit::<u8>::uninit(); 1];
            match socket2::SockRef::from(&src).peek(&mut probe)? {
                0 => Ok(Filled::Moved(0)),
                _ => match self.splice_in(&src, n) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::PipeFull),
                    done => done,
                },
            }
        }

        /// One non-blocking splice of up to `n` bytes from `src` into the pipe.
        fn splice_in(&mut self, src: impl AsFd, n: usize) -> io::Result<Filled> {
            let k = splice(&src, None, &self.ends()?.wr, None, n, SPLICE_FLAGS)?;
            self.len = self.len.saturating_add(k);
            Ok(Filled::Moved(k))
        }

        /// Moves what the pipe holds to the socket `dst`, as much as it takes without
        /// waiting. Returns the bytes moved.
        pub(crate) fn drain_to(&mut self, dst: impl AsFd) -> io::Result<usize> {
            let k = splice(&self.ends()?.rd, None, &dst, None, self.len, SPLICE_FLAGS)?;
            self.len = self.len.saturating_sub(k);
            Ok(k)
        }

        /// Appends what the pipe holds to `into` and empties it: for a forward that
        /// falls back, or output for a connection without a socket; both rare, so
        /// a plain copy through a scratch buffer will do.
        pub(crate) fn read_into(&mut self, into: &mut BytesMut) -> io::Result<()> {
            let mut scratch = vec![0u8; self.len.min(64 * 1024)];
            while self.len > 0 {
                let k = nix::unistd::read(&self.ends()?.rd, &mut scratch)?;
                if k == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                into.put_slice(scratch.get(..k).unwrap_or_default());
                self.len = self.len.saturating_sub(k);
            }
            Ok(())
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            // A pipe that still holds data (a socket failed mid-forward) is closed,
            // and its data with it.
            if self.len > 0 {
                return;
            }
            let mut idle = IDLE.lock();
            if idle.len() < MAX_IDLE {
                idle.extend(self.ends.take());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    use std::io;
    use std::os::fd::AsFd;

    use bytes::BytesMut;

    use super::Filled;

    /// No value exists: results are never forwarded outside Linux.
    #[derive(Debug)]
    pub(crate) enum Pipe {}

    impl Pipe {
        pub(crate) fn with_room(_n: usize) -> io::Result<Pipe> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub(crate) fn len(&self) -> usize {
            match *self {}
        }
        pub(crate) fn fill_from(&mut self, _src: impl AsFd, _n: usize) -> io::Result<Filled> {
            match *self {}
        }
        pub(crate) fn drain_to(&mut self, _dst: impl AsFd) -> io::Result<usize> {
            match *self {}
        }
        pub(crate) fn read_into(&mut self, _into: &mut BytesMut) -> io::Result<()> {
            match *self {}
        }
    }
}

/// Fills `pipe` from `rx` until `want` bytes are in it, the pipe reports full or the
/// writer closes (`Moved(0)`) (tests).
#[cfg(test)]
#[allow(clippy::panic)]
fn fill(pipe: &mut Pipe, rx: impl std::os::fd::AsFd, want: usize) -> Filled {
    loop {
        match pipe.fill_from(&rx, want - pipe.len()) {
            Ok(Filled::Moved(k)) if k > 0 && pipe.len() < want => {}
            Ok(other) => return other,
            // The writer is behind: look again at once, so that data arriving while
            // the pipe fills is the usual case here, as it is for a server.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("splice: {e}"),
        }
    }
}

/// A pipe holding `data`, filled from a socket as a worker's result would be (tests).
#[cfg(test)]
#[allow(clippy::panic)]
pub(crate) fn holding(data: &[u8]) -> Pipe {
    use std::io::Write;
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    rx.set_nonblocking(true).expect("non-blocking");
    tx.write_all(data).expect("write");
    let mut pipe = Pipe::with_room(data.len()).expect("pipe");
    match fill(&mut pipe, &rx, data.len()) {
        Filled::Moved(n) => assert!(n > 0, "the socket holds the data"),
        Filled::PipeFull => panic!("a pipe with room for twice the data filled up"),
    }
    pipe
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::panic)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use bytes::BytesMut;

    use super::{fill, Filled, Pipe};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn data_goes_from_socket_to_socket_through_a_pipe_in_order() {
        let data = pattern(200 * 1024);
        let (mut tx, rx) = UnixStream::pair().expect("pair");
        let (out_tx, mut out_rx) = UnixStream::pair().expect("pair");
        rx.set_nonblocking(true).expect("non-blocking");
        std::thread::scope(|s| {
            s.spawn(|| tx.write_all(&data).expect("write"));
            let reader = s.spawn(move || {
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut out_rx, &mut got).expect("read");
                got
            });
            let mut pipe = Pipe::with_room(data.len()).expect("pipe");
            let mut sent = 0;
            while sent < data.len() {
                match fill(&mut pipe, &rx, (data.len() - sent).min(64 * 1024)) {
                    Filled::Moved(0) => panic!("the writer closed early"),
                    Filled::Moved(_) => {}
                    Filled::PipeFull => panic!("a pipe with twice the room filled up"),
                }
                while pipe.len() > 0 {
                    sent += pipe.drain_to(&out_tx).expect("splice out");
                }
            }
            drop(pipe);
            drop(out_tx);
            assert!(reader.join().expect("reader") == data, "bytes differ");
        });
    }

    /// A socket that is empty when the splice looks and holds data a moment later
    /// is not a full pipe: the data keeps coming while the pipe fills, and a pipe with
    /// room for all of it never says it is full.
    #[test]
    fn data_arriving_while_the_pipe_fills_never_reads_as_a_full_pipe() {
        const PIECE: usize = 4 * 1024;
        const PIECES: usize = 64;
        let data = pattern(PIECE * PIECES);
        for round in 0..20 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut tx = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (rx, _) = listener.accept().expect("accept");
            rx.set_nonblocking(true).expect("non-blocking");
            let mut pipe = Pipe::with_room(data.len()).expect("pipe");
            std::thread::scope(|s| {
                s.spawn(|| {
                    for piece in data.chunks(PIECE) {
                        tx.write_all(piece).expect("write");
                        std::thread::yield_now();
                    }
                });
                match fill(&mut pipe, &rx, data.len()) {
                    Filled::Moved(0) => panic!("the writer closed early"),
                    Filled::Moved(_) => {}
                    Filled::PipeFull => panic!("round {round}: full after {} bytes", pipe.len()),
                }
            });
            let mut got = BytesMut::new();
            pipe.read_into(&mut got).expect("read back");
            assert!(got[..] == data[..], "bytes differ");
        }
    }

    /// Data sent in many small pieces takes a pipe slot each: a pipe runs out of
    /// slots before bytes, says so (rather than waiting on a socket that still holds
    /// data), and gives back what it took, in order.
    #[test]
    fn a_pipe_out_of_slots_says_so_and_gives_its_bytes_back() {
        let data = pattern(16 * 1024);
        let (mut tx, rx) = UnixStream::pair().expect("pair");
        rx.set_nonblocking(true).expect("non-blocking");
        for piece in data.chunks(64) {
            tx.write_all(piece).expect("write");
        }
        let mut pipe = Pipe::with_room(data.len()).expect("pipe");
        assert_eq!(fill(&mut pipe, &rx, data.len()), Filled::PipeFull);
        assert!(pipe.len() < data.len());
        let mut got = BytesMut::new();
        pipe.read_into(&mut got).expect("read back");
        assert_eq!(pipe.len(), 0);
        let mut rest = vec![0u8; data.len() - got.len()];
        std::io::Read::read_exact(&mut &rx, &mut rest).expect("the rest is still in the socket");
        got.extend_from_slice(&rest);
        assert!(got[..] == data[..], "bytes differ");
    }
}
