#!/bin/bash
# Gearman interop client on top of the C `gearman` tool (Debian gearman-tools, libgearman).
# Shared CLI and output format: see tests/interop/README.md. The tool writes WORK_DATA,
# WORK_STATUS ("N% Complete") and WORK_COMPLETE payloads to one stdout stream, so this
# wrapper reports everything after the "Task created" line as one COMPLETE event, and
# stderr (warnings, exceptions, errors) as a STDERR event. No CREATED event in the
# foreground (see below).
set -u
host=127.0.0.1 port=4730 fn= bg= prio= unique= datahex= datafile= timeout=60
hx() { od -An -v -tx1 | tr -d ' \n'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --function) fn=$2; shift 2 ;;
        --background) bg=-b; shift ;;
        --priority) case "$2" in high) prio=-I ;; low) prio=-L ;; *) prio= ;; esac; shift 2 ;;
        --unique) unique=$2; shift 2 ;;
        --data-hex) datahex=$2; shift 2 ;;
        --data-file) datafile=$2; shift 2 ;;
        --timeout) timeout=${2%.*}; shift 2 ;;
        --exceptions) echo "UNSUPPORTED exceptions"; exit 3 ;;
        --status-of) echo "UNSUPPORTED status-of"; exit 3 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$datafile" ]; then
    datafile=$tmp/in
    printf '%b' "$(printf '%s' "$datahex" | sed 's/../\\x&/g')" >"$datafile"
fi
args=(-h "$host" -p "$port" -f "$fn" -t "$((timeout * 1000))")
# -v prints "Task created: <handle>" through stdio while payloads are written unbuffered,
# so in the foreground the two interleave unpredictably: use -v for background jobs only.
[ -n "$bg" ] && args+=("$bg" -v)
[ -n "$prio" ] && args+=("$prio")
[ -n "$unique" ] && args+=(-u "$unique")
[ -s "$datafile" ] || args+=(-s)
gearman "${args[@]}" <"$datafile" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ -n "$bg" ]; then
    sed -n 's/^Task created: /CREATED /p' "$tmp/out"
fi
if [ -s "$tmp/err" ]; then
    echo "STDERR $(hx <"$tmp/err")"
fi
if [ -z "$bg" ]; then
    if grep -q '^Job failed' "$tmp/err"; then
        echo "FAIL"
    elif [ "$rc" -eq 0 ]; then
        echo "COMPLETE $(hx <"$tmp/out")"
    fi
fi
exit 0
