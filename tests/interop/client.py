#!/usr/bin/env python3
"""Gearman interop client on top of pygearman (the `gearman` module from PyPI).

Shared CLI and output format: see tests/interop/README.md.
"""
import argparse
import sys

import gearman
from gearman.client_handler import GearmanClientCommandHandler
from gearman.constants import (
    JOB_COMPLETE,
    JOB_CREATED,
    JOB_FAILED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NONE,
)
from gearman.job import GearmanJob, GearmanJobRequest

UNSUPPORTED = 3


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def hx(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return data.hex()


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


class LiveHandler(GearmanClientCommandHandler):
    """Prints intermediate events as they arrive (the stock handler only queues them)."""

    def recv_job_created(self, job_handle):
        ok = super().recv_job_created(job_handle)
        out("CREATED " + text(job_handle))
        return ok

    def recv_work_data(self, job_handle, data):
        ok = super().recv_work_data(job_handle, data)
        out("DATA " + hx(data))
        return ok

    def recv_work_warning(self, job_handle, data):
        ok = super().recv_work_warning(job_handle, data)
        out("WARNING " + hx(data))
        return ok

    def recv_work_status(self, job_handle, numerator, denominator):
        ok = super().recv_work_status(job_handle, numerator, denominator)
        out("STATUS %s/%s" % (text(numerator), text(denominator)))
        return ok

    def recv_work_exception(self, job_handle, data):
        ok = super().recv_work_exception(job_handle, data)
        out("EXCEPTION " + hx(data))
        return ok


class Client(gearman.GearmanClient):
    command_handler_class = LiveHandler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4730)
    p.add_argument("--function")
    p.add_argument("--background", action="store_true")
    p.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    p.add_argument("--unique")
    p.add_argument("--data-hex")
    p.add_argument("--data-file")
    p.add_argument("--exceptions", action="store_true")
    p.add_argument("--status-of")
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()

    if a.exceptions:
        # pygearman has no way to send OPTION_REQ (and no OPTION_RES handler).
        out("UNSUPPORTED exceptions")
        return UNSUPPORTED

    client = Client(["%s:%d" % (a.host, a.port)])

    if a.status_of is not None:
        conn = client.establish_connection(client.connection_list[0])
        job = GearmanJob(conn, a.status_of.encode(), None, None, None)
        req = GearmanJobRequest(job)
        req.state = JOB_CREATED  # the library only polls requests it believes are live
        client.get_job_status(req, poll_timeout=a.timeout)
        st = req.status
        if req.timed_out or not st:
            out("TIMEOUT")
            return 1
        out("JOBSTATUS %d %d %d/%d" % (int(st["known"]), int(st["running"]), st["numerator"], st["denominator"]))
        return 0

    if a.data_file is not None:
        with open(a.data_file, "rb") as f:
            data = f.read()
    else:
        data = bytes.fromhex(a.data_hex or "")
    prio = {"high": PRIORITY_HIGH, "normal": PRIORITY_NONE, "low": PRIORITY_LOW}[a.priority]
    req = client.submit_job(
        a.function.encode(),
        data,
        unique=a.unique.encode() if a.unique else None,
        priority=prio,
        background=a.background,
        wait_until_complete=not a.background,
        poll_timeout=a.timeout,
    )
    if req.timed_out:
        out("TIMEOUT")
        return 1
    if a.background:
        return 0
    if req.state == JOB_COMPLETE:
        out("COMPLETE " + hx(req.result or b""))
    elif req.state == JOB_FAILED:
        out("FAIL")
    else:
        out("STATE " + str(req.state))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
