#!/usr/bin/env python3
"""Record byte-exact exchanges with a real gearmand into gearmand-1.1.20.txt.

Usage: capture_gearmand.py [PORT]   (starts /usr/sbin/gearmand itself, stops it at the end)

Output format, one record per line (lines starting with '#' are comments):
    <name> <direction> <hex>
direction is '>' for bytes sent to the server and '<' for bytes read from it.
The golden tests in ../golden.rs decode every record and check named ones exactly.
"""
import os
import socket
import struct
import subprocess
import sys
import time

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 47391
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gearmand-1.1.20.txt")

REQ, RES = b"\0REQ", b"\0RES"


def pkt(magic, code, *args):
    body = b"\0".join(args)
    return magic + struct.pack(">II", code, len(body)) + body


def frames_in(buf):
    """Count complete frames (binary packets or text lines) at the front of buf."""
    n, i = 0, 0
    while i < len(buf):
        if buf[i] == 0:
            if len(buf) - i < 12:
                break
            size = struct.unpack(">I", buf[i + 8 : i + 12])[0]
            if len(buf) - i < 12 + size:
                break
            i += 12 + size
        else:
            j = buf.find(b"\n", i)
            if j < 0:
                break
            i = j + 1
        n += 1
    return n, i


def read_frames(sock, count, timeout=3.0):
    buf = b""
    deadline = time.time() + timeout
    while True:
        n, used = frames_in(buf)
        if n >= count and used == len(buf):
            return buf
        left = deadline - time.time()
        if left <= 0:
            raise RuntimeError(f"wanted {count} frames, got {buf!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"closed after {buf!r}")
        buf += chunk


def main():
    server = subprocess.Popen(
        ["/usr/sbin/gearmand", "-L", "127.0.0.1", "-p", str(PORT), "-l", "stderr",
         "--job-handle-prefix", "H:test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    records = []
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        c = socket.create_connection(("127.0.0.1", PORT))
        w = socket.create_connection(("127.0.0.1", PORT))

        def step(name, sock, data, replies, also=None):
            sock.sendall(data)
            records.append((name, ">", data))
            if replies:
                records.append((name, "<", read_frames(sock, replies)))
            if also is not None:
                other, n = also
                records.append((name + "_other", "<", read_frames(other, n)))

        def send_only(name, sock, data):
            sock.sendall(data)
            records.append((name, ">", data))

        step("echo", c, pkt(REQ, 16, b"hello\0world"), 1)
        send_only("can_do", w, pkt(REQ, 1, b"reverse"))
        step("grab_job_empty", w, pkt(REQ, 9), 1)
        send_only("pre_sleep", w, pkt(REQ, 4))
        step("submit_job", c, pkt(REQ, 7, b"reverse", b"u1", b"test"), 1, also=(w, 1))
        step("grab_job_uniq", w, pkt(REQ, 30), 1)
        step("get_status", c, pkt(REQ, 15, b"H:test:1"), 1)
        step("work_status", w, pkt(REQ, 12, b"H:test:1", b"1", b"2"), 0, also=(c, 1))
        step("get_status_unique", c, pkt(REQ, 41, b"u1"), 1)
        step("work_complete", w, pkt(REQ, 13, b"H:test:1", b"tset"), 0, also=(c, 1))
        step("submit_job_bg", c, pkt(REQ, 18, b"reverse", b"", b"data\0with\0nuls"), 1)
        step("grab_job_all", w, pkt(REQ, 39), 1)
        step("option_exceptions", c, pkt(REQ, 26, b"exceptions"), 1)
        step("option_unknown", c, pkt(REQ, 26, b"bogus"), 1)
        step("res_magic", c, pkt(RES, 16, b"x"), 1)
        step("server_only_type", c, pkt(REQ, 6), 1)
        step("admin_version", c, b"version\r\n", 1)
        step("admin_pipelined", c, b"version\n" + pkt(REQ, 16, b"mixed") + b"getpid\r\n", 3)
        c.close()
        w.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    with open(OUT, "w") as f:
        f.write("# Captured from /usr/sbin/gearmand 1.1.20 (Debian) on loopback by capture_gearmand.py.\n")
        f.write("# <name> <'>' to server | '<' from server> <hex bytes>\n")
        for name, d, data in records:
            f.write(f"{name} {d} {data.hex()}\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
