#!/usr/bin/env bash
# bench/scale.sh: the load-scale run. SCALE_CONNS idle connections (default
# 100,000) held across several orchestratord processes that share one port
# with SO_REUSEPORT (listen.reuse_port: true, a documented deployment mode),
# driven by several load-tool processes dialing from 127.0.0.2–127.0.0.41.
# Each process stays under the 20,000-fd limit. The figures (summed over the
# daemons) go to bench/results/scale.json and the "bench-scale" section of
# docs/benchmarks.md, with the arithmetic that takes them to 1M.
#
#   bench/scale.sh                       # 100k
#   SCALE_CONNS=30000 bench/scale.sh     # a smaller try
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-/tmp/orchestratord-bench}
N=${SCALE_CONNS:-100000}
PER_DAEMON=${SCALE_PER_DAEMON:-16000}   # SO_REUSEPORT spreads by hash: keep room under 20k fds
PER_CLIENT=${SCALE_PER_CLIENT:-9500}
HOLD=${SCALE_HOLD:-30s}
D=$(( (N + PER_DAEMON - 1) / PER_DAEMON ))
P=$(( (N + PER_CLIENT - 1) / PER_CLIENT ))
SECRET=${ORCH_JWT_SECRET:-bench-secret-0123456789abcdef-0123456789}
mkdir -p "$BIN" bench/results
go build -trimpath -o "$BIN/orchestratord" ./daemon/cmd/orchestratord
go build -trimpath -o "$BIN/orchestratord-load" ./daemon/cmd/orchestratord-load
(cd bench && go build -trimpath -o "$BIN/" ./cmd/report)
ulimit -n 20000 2>/dev/null || true
cfg=$(mktemp /tmp/orchestratord-scale.XXXXXX.yaml)
sed -e 's/^listen:/listen:\n  reuse_port: true/' bench/config/daemon.yaml > "$cfg"
pids=() metrics=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$cfg"; }
trap cleanup EXIT
for i in $(seq 1 "$D"); do
  admin="127.0.0.1:$((28200 + i))"
  ORCH_JWT_SECRET=$SECRET setsid "$BIN/orchestratord" serve --config "$cfg" --admin "$admin" \
    > "bench/results/scale-daemon-$i.log" 2>&1 &
  pids+=("$!") metrics+=("http://$admin/metrics")
done
for _ in $(seq 1 100); do
  ok=1; for m in "${metrics[@]}"; do curl -fs -o /dev/null "$m" || ok=0; done
  [ "$ok" = 1 ] && break; sleep 0.1
done
echo "== $N connections: $D daemons (pids ${pids[*]}), $P client processes"
"$BIN/orchestratord-load" -mode hold -url ws://127.0.0.1:28080/ws -jwt-secret "$SECRET" \
  -conns "$N" -procs "$P" -sources 127.0.0.2-127.0.0.41 -dialers 16 -dial-timeout 30s \
  -duration "$HOLD" -settle 5s -label "load-scale $N over $D daemons" \
  -server-pid "$(IFS=,; echo "${pids[*]}")" -metrics-url "$(IFS=,; echo "${metrics[*]}")" \
  -json bench/results/scale.json
"$BIN/report" -scale bench/results/scale.json -scale-daemons "$D"
