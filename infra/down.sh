#!/usr/bin/env bash
# Stop what infra/up.sh started, and nothing else: the process groups whose leaders' pids it
# wrote to .tagsmith/run/{worker,server}.pid (worker first, so no run is picked up meanwhile),
# and the process groups of flow runs that worker has running.
# A pid whose process is gone, or is no longer a Prefect process (the pid was reused), is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.tagsmith/run

stop() {  # NAME GRACE_SECONDS
  local file=$RUN/$1.pid pid grace=$2
  [ -f "$file" ] || { echo "$1: not running (no $file)"; return 0; }
  pid=$(cat "$file")
  if ! kill -0 "$pid" 2>/dev/null || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q prefect; then
    echo "$1: pid $pid is not a running Prefect process; removing $file"
    rm -f "$file"; return 0
  fi
  # the worker starts each flow run in a process group of its own: stop those groups too
  local child pgid
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do
    pgid=$(ps -o pgid= -p "$child" 2>/dev/null | tr -d ' ')
    if [ -n "$pgid" ] && [ "$pgid" != "$pid" ]; then kill -TERM -- "-$pgid" 2>/dev/null || true; fi
  done
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 $((grace * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$1: still running after $grace s; killing process group $pid"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
  rm -f "$file"
  echo "$1: stopped (pid $pid)"
}

# `prefect worker start` (Prefect 3.9) does not exit on SIGTERM; stop() ends its flow runs first
stop worker 5
stop server 20
