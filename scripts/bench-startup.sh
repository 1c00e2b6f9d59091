#!/usr/bin/env bash
# Benchmark: start-up time and idle memory of the release binary on its embedded default.
#
# Start-up time is measured from process start until GET /health answers 200 (database
# opened, migrations applied, signing key loaded, listener bound). Idle RSS is read from
# /proc two seconds after start-up, with no client connected.
# Usage: scripts/bench-startup.sh [runs]   (default 5 restarts after the first start)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -p matrixon --locked >&2
bin=target/release/matrixon
dir=$(mktemp -d)
port=18008
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT

# Starts the server and sets $pid and $elapsed_ms (no subshell, so $pid survives).
start_once() {
  local t0 t1
  t0=$(date +%s%N)
  MATRIXON_LISTEN="127.0.0.1:$port" MATRIXON_DATABASE_URL="sqlite:$dir/matrixon.db" \
    MATRIXON_LOG_LEVEL=warn "$bin" >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do sleep 0.002; done
  t1=$(date +%s%N)
  elapsed_ms=$(( (t1 - t0) / 1000000 ))
}

stop() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=
}

start_once
first=$elapsed_ms
sleep 2
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
stop
times=()
for _ in $(seq "$runs"); do
  start_once
  times+=("$elapsed_ms")
  stop
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "first start (new database, migrations, key generation): ${first} ms"
echo "restart, median of ${runs}: ${median} ms (all: $(echo $sorted | tr '\n' ' '))"
echo "idle RSS after first start: $((rss_kb / 1024)) MiB (${rss_kb} kB)"
