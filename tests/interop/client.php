<?php
// Gearman interop client on top of the pecl gearman extension (php-gearman, libgearman).
// Shared CLI and output format: see tests/interop/README.md.

function out($line) { fwrite(STDOUT, $line . "\n"); fflush(STDOUT); }

$opt = getopt("", ["host:", "port:", "function:", "background", "priority:", "unique:",
                   "data-hex:", "data-file:", "exceptions", "status-of:", "timeout:"]);
$host = $opt["host"] ?? "127.0.0.1";
$port = (int)($opt["port"] ?? 4730);
$timeout = (float)($opt["timeout"] ?? 60);

$client = new GearmanClient();
// addServer's third argument makes libgearman send OPTION_REQ "exceptions".
if (!$client->addServer($host, $port, isset($opt["exceptions"]))) {
    out("ERROR addServer " . $client->error());
    exit(1);
}
$client->setTimeout((int)($timeout * 1000));

if (isset($opt["status-of"])) {
    $st = $client->jobStatus($opt["status-of"]);
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        out("ERROR " . $client->error());
        exit(1);
    }
    out(sprintf("JOBSTATUS %d %d %d/%d", $st[0] ? 1 : 0, $st[1] ? 1 : 0, $st[2], $st[3]));
    exit(0);
}

if (isset($opt["data-file"])) {
    $data = file_get_contents($opt["data-file"]);
} else {
    $data = hex2bin($opt["data-hex"] ?? "");
}
$fn = $opt["function"];
$unique = $opt["unique"] ?? null;
$prio = $opt["priority"] ?? "normal";

if (isset($opt["background"])) {
    $m = ["high" => "doHighBackground", "normal" => "doBackground", "low" => "doLowBackground"][$prio];
    $handle = $client->$m($fn, $data, $unique);
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        out("ERROR " . $client->error());
        exit(1);
    }
    out("CREATED " . $handle);
    exit(0);
}

$client->setCreatedCallback(function ($t) { out("CREATED " . $t->jobHandle()); });
$client->setDataCallback(function ($t) { out("DATA " . bin2hex($t->data())); });
$client->setWarningCallback(function ($t) { out("WARNING " . bin2hex($t->data())); });
$client->setStatusCallback(function ($t) {
    out("STATUS " . $t->taskNumerator() . "/" . $t->taskDenominator());
});
$client->setCompleteCallback(function ($t) { out("COMPLETE " . bin2hex($t->data())); });
$client->setFailCallback(function ($t) { out("FAIL"); });
// setExceptionCallback() itself sends OPTION_REQ "exceptions" (and throws when the
// server refuses it), so register it only when the exceptions option is wanted.
if (isset($opt["exceptions"])) {
    $client->setExceptionCallback(function ($t) { out("EXCEPTION " . bin2hex($t->data())); });
}

$m = ["high" => "addTaskHigh", "normal" => "addTask", "low" => "addTaskLow"][$prio];
$task = $client->$m($fn, $data, null, $unique);
if ($task === false) {
    out("ERROR addTask " . $client->error());
    exit(1);
}
if (!$client->runTasks()) {
    out("ERROR runTasks " . $client->error());
    exit(1);
}
exit(0);
