#!/usr/bin/env bash
# bench/abba.sh: the independent check against gws (issue 17). Builds the
# servers and bench/cmd/abba (a gorilla/websocket client that shares no code
# with orchestratord-load), then runs A-B-B-A ordered pairs at 1k
# connections: netpoll-echo vs gws-echo and the full daemon vs gws-echo.
# Server pinned to CPU 0, client to CPU 1, a fresh server per run. Prints
# markdown tables (per run, per-pair ratios, median and range, the issue 17
# goals) ready to paste into docs/benchmarks.md, and keeps them with the raw
# JSON in bench/results/abba.{md,json}.
#
#   bench/abba.sh                          # 2 ABBA blocks per comparison (~7 min)
#   ABBA_BLOCKS=3 ABBA_DURATION=20s bench/abba.sh
#   ABBA_COMPARE=netpoll-echo:gws bench/abba.sh
#   ABBA_PORT_BASE=29500 bench/abba.sh     # servers on 29502/29504/29580 (+90 admin; default 29000:
#                                          # below the ephemeral range, 32768-60999)
#
# Run it on an otherwise idle machine with at least 2 cores: the load
# average is printed per run because a neighbour on either core skews it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-/tmp/orchestratord-abba}
mkdir -p "$BIN" bench/results
go build -trimpath -o "$BIN/orchestratord" ./daemon/cmd/orchestratord
(cd bench && go build -trimpath -o "$BIN/" ./cmd/gws-echo ./cmd/netpoll-echo ./cmd/gorilla-echo ./cmd/nbio-echo ./cmd/abba)
ulimit -n 20000 2>/dev/null || true
taskset -c "${ABBA_CLIENT_CPU:-1}" "$BIN/abba" -bin "$BIN" \
  -compare "${ABBA_COMPARE:-netpoll-echo:gws,orchestratord:gws}" \
  -blocks "${ABBA_BLOCKS:-2}" \
  -conns "${ABBA_CONNS:-1000}" \
  -inflight "${ABBA_INFLIGHT:-200}" \
  -payload "${ABBA_PAYLOAD:-1024}" \
  -duration "${ABBA_DURATION:-10s}" \
  -rate "${ABBA_RATE:-10000}" \
  -rate-duration "${ABBA_RATE_DURATION:-${ABBA_DURATION:-10s}}" \
  -server-cpu "${ABBA_SERVER_CPU:-0}" \
  -port-base "${ABBA_PORT_BASE:-29000}" \
  -json bench/results/abba.json \
  "$@" | tee bench/results/abba.md
