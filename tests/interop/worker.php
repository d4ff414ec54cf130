<?php
// Gearman interop worker on top of the pecl gearman extension (php-gearman, libgearman).
// Shared CLI and output format: see tests/interop/README.md.

function out($line) { fwrite(STDOUT, $line . "\n"); fflush(STDOUT); }

$opt = getopt("", ["host:", "port:", "function:", "mode:", "count:"]);
$host = $opt["host"] ?? "127.0.0.1";
$port = (int)($opt["port"] ?? 4730);
$mode = $opt["mode"] ?? "reverse";
$count = (int)($opt["count"] ?? 0);

$worker = new GearmanWorker();
$worker->addServer($host, $port);
$worker->addFunction($opt["function"], function (GearmanJob $job) use ($mode) {
    $data = $job->workload();
    out("JOB " . $job->handle() . " " . bin2hex($data));
    if ($mode === "exit-midjob") {
        // A plain exit() inside the callback is not a crash: libgearman then reports
        // the job as an exception. Die hard, as a crashing worker would.
        if (function_exists("posix_kill")) {
            posix_kill(getmypid(), 9);
        }
        exec("kill -9 " . getmypid());
        exit(1);
    }
    if ($mode === "fail") {
        $job->sendFail();
        return null;
    }
    if ($mode === "exception") {
        $job->sendException("boom");
        return null;
    }
    if ($mode === "events") {
        $job->sendStatus(1, 4);
        $job->sendData("chunk");
        $job->sendWarning("careful");
        return strrev($data);
    }
    if (strncmp($mode, "sleep:", 6) === 0) {
        usleep((int)substr($mode, 6) * 1000);
        return $data;
    }
    if ($mode === "echo") {
        return $data;
    }
    if ($mode === "reverse") {
        return strrev($data);
    }
    fwrite(STDERR, "unknown mode $mode\n");
    exit(2);
});
out("READY");
$done = 0;
while ($worker->work()) {
    if ($worker->returnCode() != GEARMAN_SUCCESS) {
        out("ERROR " . $worker->error());
        exit(1);
    }
    $done++;
    if ($count > 0 && $done >= $count) {
        break;
    }
}
exit(0);
