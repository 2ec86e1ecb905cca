#!/usr/bin/env bash
# bench/run.sh: build the daemon, the load tool and the baseline echo
# servers, then run the side-by-side benchmark (bench/cmd/report) and
# rewrite the generated section of docs/benchmarks.md and docs/img/bench-*.png.
#
#   bench/run.sh                 # full run (10 s phases, 30 s idle at 19k; ~20 min)
#   BENCH_DURATION=3s BENCH_IDLE_DURATION=3s bench/run.sh   # short run (~8 min)
#   BENCH_SERVERS=gorilla,nbio bench/run.sh                      # a subset
#   BENCH_PORT_BASE=31000 bench/run.sh   # servers on 31001-31104 instead of 28001-28104
#
# Besides memory, echo msgs per server CPU-second (closed loop) and
# latency, each fixed-rate run reports server CPU-seconds per 100k
# messages (open loop: the same work for every server) and p99.9, and every
# run the load tool's own CPU, so that a saturated client shows.
#
# Run it on an otherwise idle machine with at least 2 cores: the server is
# pinned to CPU 0 and the load tool to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-/tmp/orchestratord-bench}
mkdir -p "$BIN"
go build -trimpath -o "$BIN/orchestratord" ./daemon/cmd/orchestratord
go build -trimpath -o "$BIN/orchestratord-load" ./daemon/cmd/orchestratord-load
(cd bench && go build -trimpath -o "$BIN/" ./cmd/gorilla-echo ./cmd/gws-echo ./cmd/nbio-echo ./cmd/netpoll-echo ./cmd/report)
ulimit -n 20000 2>/dev/null || true
exec "$BIN/report" -bin "$BIN" \
  -duration "${BENCH_DURATION:-10s}" \
  -rate-duration "${BENCH_RATE_DURATION:-${BENCH_DURATION:-10s}}" \
  -hold-duration "${BENCH_HOLD_DURATION:-5s}" \
  -idle-duration "${BENCH_IDLE_DURATION:-30s}" \
  -holds "${BENCH_HOLDS:-1000,5000,10000,19000}" \
  -rates "${BENCH_RATES:-2000,5000,10000,20000,30000}" \
  -fixed-rate "${BENCH_FIXED_RATE:-10000}" \
  -servers "${BENCH_SERVERS:-orchestratord,netpoll-echo,gorilla,gws,nbio}" \
  -port-base "${BENCH_PORT_BASE:-28000}" \
  "$@"
