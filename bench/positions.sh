#!/usr/bin/env bash
# bench/positions.sh (make bench-positions): what delivery positions and
# the replay log cost on the echo path of the full daemon (issue 13).
#
# Two builds of the same source: the product ("log": every terminal
# numbered, logged in the memory store, sent tagged) and a benchmark-only
# build with -tags benchnolog ("nolog": terminals sent as they are, no
# position, no log; daemon/sessions/benchnolog_on.go, never shipped). The
# two run alternately, ABAB, each started fresh and pinned to CPU 0, the
# load tool (closed-loop echo) pinned to CPU 1; each run reports echo msgs
# per server CPU-second. The result is the ratio log / nolog per pair and
# its median, with the machine's load average.
#
#   bench/positions.sh                        # 3 pairs, 10 s each, 1000 conns
#   POS_PAIRS=5 POS_DURATION=5s bench/positions.sh
#   POS_PORT_BASE=44000 bench/positions.sh    # daemon on +80, admin on +90
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-/tmp/orchestratord-bench-positions}
PAIRS=${POS_PAIRS:-3}
DURATION=${POS_DURATION:-10s}
CONNS=${POS_CONNS:-1000}
WORKERS=${POS_WORKERS:-200}
PAYLOAD=${POS_PAYLOAD:-1024}
BASE=${POS_PORT_BASE:-28000}
mkdir -p "$BIN"
go build -trimpath -o "$BIN/orchestratord-log" ./daemon/cmd/orchestratord
go build -trimpath -tags benchnolog -o "$BIN/orchestratord-nolog" ./daemon/cmd/orchestratord
go build -trimpath -o "$BIN/orchestratord-load" ./daemon/cmd/orchestratord-load
ulimit -n 20000 2>/dev/null || true

export ORCH_JWT_SECRET=${ORCH_JWT_SECRET:-bench-positions-secret-0123456789abcdef}
CFG=$(mktemp /tmp/orchestratord-positions-XXXXXX.yaml)
sed -e "s/127.0.0.1:28080/127.0.0.1:$((BASE + 80))/" -e "s/127.0.0.1:28090/127.0.0.1:$((BASE + 90))/" \
  bench/config/daemon.yaml >"$CFG"
SRV=""
cleanup() {
  if [ -n "$SRV" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
  rm -f "$CFG"
}
trap cleanup EXIT

# run VARIANT OUT.json: one fresh daemon, one load-tool run against it.
run() {
  taskset -c 0 "$BIN/orchestratord-$1" serve --config "$CFG" >/dev/null 2>&1 &
  SRV=$!
  up=0
  for _ in $(seq 100); do
    if curl -fs "http://127.0.0.1:$((BASE + 80))/healthz" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$SRV" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    echo "orchestratord-$1 did not come up on 127.0.0.1:$((BASE + 80)) (port taken? set POS_PORT_BASE)" >&2
    exit 1
  fi
  taskset -c 1 "$BIN/orchestratord-load" -mode echo -url "ws://127.0.0.1:$((BASE + 80))/ws" \
    -jwt-secret "$ORCH_JWT_SECRET" -conns "$CONNS" -workers "$WORKERS" -payload "$PAYLOAD" \
    -duration "$DURATION" -server-pid "$SRV" -json "$2" -label "positions $1" >"$2.log" 2>&1
  kill "$SRV"
  wait "$SRV" 2>/dev/null || true
  SRV=""
}

OUT=$(mktemp -d /tmp/orchestratord-positions-XXXXXX)
echo "pair  log msgs/CPU-s  nolog msgs/CPU-s  log/nolog  load avg (1 min) log, nolog"
for i in $(seq "$PAIRS"); do
  # ABAB, starting with the other variant every second pair (ABBA over
  # two pairs), so that a drift in the machine's load does not favour one.
  if [ $((i % 2)) -eq 1 ]; then order="log nolog"; else order="nolog log"; fi
  for v in $order; do run "$v" "$OUT/$v-$i.json"; done
  l=$(jq -r '.server.msgs_per_cpu_s' "$OUT/log-$i.json")
  n=$(jq -r '.server.msgs_per_cpu_s' "$OUT/nolog-$i.json")
  la=$(jq -r '.loadavg_before | split(" ")[0]' "$OUT/log-$i.json")
  na=$(jq -r '.loadavg_before | split(" ")[0]' "$OUT/nolog-$i.json")
  for f in "$OUT/log-$i.json" "$OUT/nolog-$i.json"; do
    if [ "$(jq -r '.error_count' "$f")" != "0" ]; then echo "errors in $f: $(jq -c '.errors' "$f")" >&2; fi
  done
  printf "%4d  %15.0f  %16.0f  %9.3f  %s, %s\n" "$i" "$l" "$n" "$(echo "$l / $n" | bc -l)" "$la" "$na"
done
jq -s '[.[] | select(.options.label == "positions log") | .server.msgs_per_cpu_s] as $l
       | [.[] | select(.options.label == "positions nolog") | .server.msgs_per_cpu_s] as $n
       | [range(0; $l | length) | $l[.] / $n[.]] | sort | .[(length / 2 | floor)]' \
  "$OUT"/log-*.json "$OUT"/nolog-*.json | xargs printf "median log/nolog: %.3f\n"
echo "results: $OUT"
