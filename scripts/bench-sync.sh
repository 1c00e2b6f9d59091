#!/usr/bin/env bash
# Benchmarks of the rooms-and-sync issue, against a release server started here:
#   idle long-polls (memory per waiting connection), fan-out latency, send throughput, and
#   sliding sync (a user in many rooms: the first window, incremental wake-ups beside /sync).
# Usage: scripts/bench-sync.sh [sqlite|postgres] [idle connections] [fan-out receivers...]
#   BENCH_MEMBERS="1000 10000" sets the sizes of the large-room send runs (default 1000).
#   BENCH_SLIDING_ROOMS sets the sliding sync user's room count (default 1000);
#   BENCH_ONLY=sliding runs only the sliding sync measurements.
#   postgres uses BENCH_POSTGRES_URL (not MATRIXON_…: the server refuses unknown MATRIXON_ keys) (default postgres://postgres@127.0.0.1:5432/test,
#   whose tables are dropped first: use a scratch database).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
idle=${2:-10000}
shift $(( $# > 2 ? 2 : $# )) || true
receivers=("$@")
[ ${#receivers[@]} -gt 0 ] || receivers=(1000)
cargo build --release --locked -p matrixon -p matrixon-tests --bin matrixon --bin matrixon-load >&2
dir=$(mktemp -d)
port=18448
metrics_port=18449
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT
case "$backend" in
  sqlite) db="sqlite:$dir/matrixon.db" ;;
  postgres)
    db=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
    psql "$db" -qc 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
MATRIXON_LISTEN="127.0.0.1:$port" MATRIXON_METRICS_LISTEN="127.0.0.1:$metrics_port" MATRIXON_DATABASE_URL="$db" MATRIXON_DATABASE_MAX_CONNECTIONS=16 \
  MATRIXON_REGISTRATION_SHARED_SECRET="bench secret" MATRIXON_RATE_LIMITS_ENABLED=false \
  MATRIXON_LOG_LEVEL=warn target/release/matrixon >"$dir/server.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.05
done
load=(target/release/matrixon-load --server "http://127.0.0.1:$port" --metrics "http://127.0.0.1:$metrics_port/metrics")
echo "backend: $backend, $(nproc) cores"
# Idle first, on the fresh server: after the fan-out runs, the idle syncs would reuse the
# memory those freed and the per-connection figure would read near zero.
if [ "${BENCH_ONLY:-}" != sliding ]; then
  "${load[@]}" idle --connections "$idle" --users 100 --pid "$pid"
  "${load[@]}" send --rooms 1 --messages 2000 --concurrency 16
  "${load[@]}" send --rooms 100 --messages 2000 --concurrency 16
  for m in ${BENCH_MEMBERS:-1000}; do
    "${load[@]}" send --rooms 1 --messages 500 --concurrency 16 --members "$m"
  done
  for r in "${receivers[@]}"; do
    "${load[@]}" fanout --receivers "$r" --users 100 --messages 5 --pid "$pid"
  done
fi
"${load[@]}" sliding --rooms "${BENCH_SLIDING_ROOMS:-1000}" --window 20 --requests 100 --pid "$pid"
