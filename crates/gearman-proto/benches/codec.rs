//! Codec microbenchmarks: decoding pipelined packets (whole buffers and streams cut
//! at awkward boundaries), encoding the same packets, and admin line framing.
//!
//! Run with `cargo bench -p gearman-proto --bench codec`. Each benchmark processes a
//! whole buffer of many frames per iteration and reports throughput, so the time per
//! frame is the iteration time divided by the frame count in its name.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use gearman_proto::{decode, encode, encode_parts, Command, Frame, Limits, Magic, Packet};

const HANDLE: &[u8] = b"H:gearman.example.net:1234567";
const FUNCTION: &[u8] = b"reverse";
const UNIQUE: &[u8] = b"0b7c1f2e-5a3d-4c11-9a0e-7d2b6c4e8f10";

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn packet(magic: Magic, command: Command, args: &[&[u8]]) -> Packet {
    Packet::new(magic, command, args).expect("benchmark packets follow the command layouts")
}

/// The packets the server sees or sends most, by name.
fn sample_packets() -> Vec<(&'static str, Packet)> {
    let kib = payload(1024);
    let big = payload(64 * 1024);
    vec![
        ("submit_job_bg_0B", packet(Magic::Req, Command::SubmitJobBg, &[FUNCTION, b"", b""])),
        ("submit_job_bg_1KiB", packet(Magic::Req, Command::SubmitJobBg, &[FUNCTION, UNIQUE, &kib])),
        ("submit_job_bg_64KiB", packet(Magic::Req, Command::SubmitJobBg, &[FUNCTION, UNIQUE, &big])),
        ("job_created", packet(Magic::Res, Command::JobCreated, &[HANDLE])),
        ("grab_job_uniq", packet(Magic::Req, Command::GrabJobUniq, &[])),
        (
            "job_assign_uniq_1KiB",
            packet(Magic::Res, Command::JobAssignUniq, &[HANDLE, FUNCTION, UNIQUE, &kib]),
        ),
        ("work_complete_1KiB", packet(Magic::Req, Command::WorkComplete, &[HANDLE, &kib])),
    ]
}

/// How many copies of a packet to pipeline in one buffer: about 1 MiB, at most 1000.
fn copies(p: &Packet) -> usize {
    let len = 12 + p.body().len();
    (1024 * 1024 / len).clamp(16, 1000)
}

fn encoded(packets: &[&Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        encode(p, &mut out);
    }
    out.to_vec()
}

/// A worker/client conversation: submits of every size, replies, grabs, results.
fn mixed_stream() -> (Vec<u8>, usize) {
    let all = sample_packets();
    let by_name = |n: &str| &all.iter().find(|(name, _)| *name == n).expect("known sample").1;
    let mut seq: Vec<&Packet> = Vec::new();
    for round in 0..64 {
        for name in [
            "submit_job_bg_0B",
            "job_created",
            "submit_job_bg_1KiB",
            "job_created",
            "grab_job_uniq",
            "job_assign_uniq_1KiB",
            "work_complete_1KiB",
        ] {
            seq.push(by_name(name));
        }
        if round % 16 == 0 {
            seq.push(by_name("submit_job_bg_64KiB"));
        }
    }
    (encoded(&seq), seq.len())
}

/// Decodes every frame in `buf`; returns how many there were.
fn decode_all(buf: &mut BytesMut, limits: &Limits) -> usize {
    let mut n = 0;
    while let Some(frame) = decode(buf, limits).expect("benchmark streams are valid") {
        black_box(&frame);
        n += 1;
    }
    n
}

/// Feeds `stream` in `chunk`-byte reads, decoding after each as the server's reader
/// does; returns the frame count.
fn decode_chunked(stream: &[u8], chunk: usize, limits: &Limits) -> usize {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut n = 0;
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        n += decode_all(&mut buf, limits);
    }
    n
}

fn bench_decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_pipelined");
    for (name, p) in sample_packets() {
        let n = copies(&p);
        let stream = encoded(&vec![&p; n]);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_with_input(BenchmarkId::new(name, format!("x{n}")), &stream, |b, stream| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| assert_eq!(decode_all(&mut buf, &limits), n),
                BatchSize::LargeInput,
            )
        });
    }
    let (stream, n) = mixed_stream();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_with_input(BenchmarkId::new("mixed", format!("x{n}")), &stream, |b, stream| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| assert_eq!(decode_all(&mut buf, &limits), n),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_decode_incremental(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_incremental");
    // Reads of 1 byte (worst case), 7 and 13 (headers straddle reads), a TCP segment
    // and a prime just under a page: every frame boundary lands somewhere awkward.
    let (mixed, n_mixed) = mixed_stream();
    let big = sample_packets().into_iter().find(|(n, _)| *n == "submit_job_bg_64KiB").expect("sample").1;
    let big_stream = encoded(&[&big; 8]);
    for (label, stream, n) in [("mixed", &mixed, n_mixed), ("submit_job_bg_64KiB_x8", &big_stream, 8)] {
        g.throughput(Throughput::Bytes(stream.len() as u64));
        for chunk in [1usize, 7, 13, 1460, 4093] {
            g.bench_with_input(BenchmarkId::new(label, format!("chunk_{chunk}")), stream, |b, stream| {
                b.iter(|| assert_eq!(decode_chunked(stream, chunk, &limits), n))
            });
        }
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, p) in sample_packets() {
        let n = copies(&p);
        let bytes = n * (12 + p.body().len());
        let mut out = BytesMut::with_capacity(bytes);
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new(name, format!("x{n}")), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..n {
                    encode(black_box(&p), &mut out);
                }
                black_box(out.len())
            })
        });
    }
    // The server's path: replies are encoded from argument slices, no Packet built.
    let kib = payload(1024);
    let n = 1000;
    let args: [&[u8]; 4] = [HANDLE, FUNCTION, UNIQUE, &kib];
    let bytes = n * gearman_proto::encoded_len(&args);
    let mut out = BytesMut::with_capacity(bytes);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(BenchmarkId::new("parts_job_assign_uniq_1KiB", format!("x{n}")), |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..n {
                encode_parts(Magic::Res, Command::JobAssignUniq, black_box(&args), &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_admin_lines(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("admin_lines");
    let lines: [&[u8]; 6] = [
        b"status\n",
        b"workers\r\n",
        b"cancel job H:gearman.example.net:1234567\r\n",
        b"maxqueue reverse 10 20 30\n",
        b"show unique jobs\r\n",
        b"prioritystatus\n",
    ];
    let n = 1002;
    let stream: Vec<u8> = lines.iter().cycle().take(n).flat_map(|l| l.iter().copied()).collect();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::new("decode", format!("x{n}")), &stream, |b, stream| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut count = 0;
                while let Some(frame) = decode(&mut buf, &limits).expect("valid lines") {
                    if let Frame::AdminLine(line) = frame {
                        black_box(line);
                        count += 1;
                    }
                }
                assert_eq!(count, n);
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_with_input(BenchmarkId::new("decode_chunk_7", format!("x{n}")), &stream, |b, stream| {
        b.iter(|| assert_eq!(decode_chunked(stream, 7, &limits), n))
    });
    // One line just under the 8 KiB limit, whole and trickled in byte by byte: the
    // decoder keeps no state between calls, so each call rescans the partial line.
    let mut long = vec![b'x'; 8000];
    long.push(b'\n');
    g.throughput(Throughput::Elements(1));
    for chunk in [long.len(), 1] {
        g.bench_with_input(
            BenchmarkId::new("long_line_8000B", format!("chunk_{chunk}")),
            &long,
            |b, long| b.iter(|| assert_eq!(decode_chunked(long, chunk, &limits), 1)),
        );
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_decode_incremental, bench_encode, bench_admin_lines
}
criterion_main!(benches);
