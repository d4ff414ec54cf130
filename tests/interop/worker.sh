#!/bin/bash
# Gearman interop worker on top of the C `gearman -w` tool (Debian gearman-tools, libgearman).
# Shared CLI and output format: see tests/interop/README.md. The tool runs this script
# again with `--job MODE` for every job: the workload arrives on stdin, stdout becomes
# the WORK_COMPLETE payload, a non-zero exit becomes WORK_FAIL. The tool cannot send
# WORK_EXCEPTION, WORK_WARNING or WORK_STATUS, so modes exception and events are unsupported.
set -u
if [ "${1:-}" = "--job" ]; then
    mode=$2
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    cat >"$tmp"
    # stderr is the worker's stdout (see below): report the job there.
    echo "JOB - $(od -An -v -tx1 <"$tmp" | tr -d ' \n')" >&2
    case "$mode" in
        echo) cat "$tmp" ;;
        reverse) python3 -c 'import sys; sys.stdout.buffer.write(open(sys.argv[1], "rb").read()[::-1])' "$tmp" ;;
        fail) exit 1 ;;
        sleep:*) ms=${mode#sleep:}; sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"; cat "$tmp" ;;
        # The parent process is the `gearman -w` worker holding the job.
        exit-midjob) kill -9 "$PPID"; sleep 5 ;;
        *) exit 1 ;;
    esac
    exit 0
fi
host=127.0.0.1 port=4730 fn= mode=reverse count=0
while [ $# -gt 0 ]; do
    case "$1" in
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --function) fn=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$mode" in
    exception | events) echo "UNSUPPORTED $mode"; exit 3 ;;
esac
echo "READY"
exec gearman -w -h "$host" -p "$port" -f "$fn" -c "$count" -- bash "$0" --job "$mode" 2>&1
