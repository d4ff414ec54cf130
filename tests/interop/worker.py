#!/usr/bin/env python3
"""Gearman interop worker on top of pygearman (the `gearman` module from PyPI).

Shared CLI and output format: see tests/interop/README.md.
"""
import argparse
import os
import sys
import time

import gearman


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Worker(gearman.GearmanWorker):
    def __init__(self, hosts, mode, count):
        super().__init__(hosts)
        self.mode = mode
        self.count = count
        self.done = 0

    def on_job_execute(self, job):
        data = job.data
        self.done += 1
        out("JOB %s %s" % (job.handle.decode("utf-8", "replace"), data.hex()))
        mode = self.mode
        handler = self._get_handler_for_job(job)
        if mode == "exit-midjob":
            os._exit(0)
        if mode == "fail":
            self.send_job_failure(job)
            return False
        if mode == "exception":
            # The stock send_job_exception() sends WORK_EXCEPTION *and* WORK_FAIL;
            # a 1.1.20 server has already finished the job after the exception and
            # answers the WORK_FAIL with ERROR. Send only the exception.
            handler.send_job_exception(job, b"boom")
            self.wait_until_updates_sent([job])
            return False
        if mode == "events":
            self.send_job_status(job, 1, 4)
            self.send_job_data(job, b"chunk")
            self.send_job_warning(job, b"careful")
            self.send_job_complete(job, data[::-1])
            return True
        if mode.startswith("sleep:"):
            time.sleep(int(mode[6:]) / 1000.0)
            self.send_job_complete(job, data)
            return True
        if mode == "echo":
            self.send_job_complete(job, data)
            return True
        if mode == "reverse":
            self.send_job_complete(job, data[::-1])
            return True
        raise SystemExit("unknown mode " + mode)

    def after_poll(self, any_activity):
        # after_job() is not called once per job when several jobs are handled in one
        # poll round, so count in on_job_execute() and stop between polls.
        return not (self.count and self.done >= self.count)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4730)
    p.add_argument("--function", required=True)
    p.add_argument("--mode", default="reverse")
    p.add_argument("--count", type=int, default=0)
    a = p.parse_args()
    w = Worker(["%s:%d" % (a.host, a.port)], a.mode, a.count)
    w.register_task(a.function.encode(), lambda worker, job: None)
    out("READY")
    w.work(poll_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
