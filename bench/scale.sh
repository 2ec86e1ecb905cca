#!/usr/bin/env bash
# bench/scale.sh: the load-scale run. SCALE_CONNS idle connections (default
# 100,000) held across several orchestratord processes that share one port
# with SO_REUSEPORT (listen.reuse_port: true, a documented deployment mode),
# driven by several load-tool processes dialing from 127.0.0.2… with
# IP_BIND_ADDRESS_NO_PORT. Each process stays under the 20,000-fd limit. The
# figures (summed over the daemons) go to bench/results/scale.json
# (scale-<N>.json for another N) and the "bench-scale" section of
# docs/benchmarks.md ("bench-scale-<N>" for another N), with the arithmetic
# that takes them to 1M.
#
#   bench/scale.sh                              # 100k
#   SCALE_CONNS=200000 bench/scale.sh           # a trial before 1M
#   make load-scale-1m                          # 1M on 2 cores: the settings below (docs/benchmarks.md)
#   SCALE_CONNS=1000000 SCALE_HEARTBEAT=120s SCALE_HOLD=120s SCALE_CONNECT_RATE=2500 SCALE_DIALERS=8 \
#     SCALE_PER_DAEMON=18500 SCALE_PER_CLIENT=19000 bench/scale.sh
#   SCALE_PORT_BASE=43000 bench/scale.sh        # client port 43080, admin 43201… (default 28000;
#                                               # a port in use, TIME-WAIT included, is skipped)
#
# Settings (environment):
#   SCALE_CONNS         connections (default 100000)
#   SCALE_HEARTBEAT     the daemons' ws.heartbeat, a Go duration (default 25s,
#                       the shipped default): idle CPU scales with 1/interval
#   SCALE_CONNECT_RATE  handshakes started per second in total, over all
#                       load-tool processes (the load tool's -connect-rate;
#                       default 0: as fast as SCALE_DIALERS allow)
#   SCALE_DIALERS       handshakes in flight per load-tool process (default 16)
#   SCALE_PER_DAEMON    connections per daemon (default 16000: room under
#                       20,000 fds for SO_REUSEPORT's uneven hash spread)
#   SCALE_PER_CLIENT    connections per load-tool process (default 9500)
#   SCALE_HOLD          the idle phase after connecting (default 30s)
#   SCALE_PORT_BASE     port base (default 28000)
#   SCALE_MIN_AVAIL_MB  the watchdog's MemAvailable floor (default 3072)
#
# A watchdog stops the run (kills the load tool and the daemons) when
# MemAvailable falls under SCALE_MIN_AVAIL_MB: this host has no swap, and
# the run must not push other work into the OOM killer. Every process the
# script starts (daemons, load tool and its shards, watchdog) is stopped when
# it ends, fails or is interrupted (INT, TERM, HUP); the shards also die
# with the load tool if it is killed (Pdeathsig).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-/tmp/orchestratord-bench}
N=${SCALE_CONNS:-${BENCH_SCALE_CONNS:-100000}}
PER_DAEMON=${SCALE_PER_DAEMON:-16000}   # SO_REUSEPORT spreads by hash: keep room under 20k fds
PER_CLIENT=${SCALE_PER_CLIENT:-9500}
HOLD=${SCALE_HOLD:-30s}
HEARTBEAT=${SCALE_HEARTBEAT:-25s}
RATE=${SCALE_CONNECT_RATE:-0}
DIALERS=${SCALE_DIALERS:-16}
BASE=${SCALE_PORT_BASE:-28000}
MIN_AVAIL_MB=${SCALE_MIN_AVAIL_MB:-3072}
D=$(( (N + PER_DAEMON - 1) / PER_DAEMON ))
P=$(( (N + PER_CLIENT - 1) / PER_CLIENT ))
# Source addresses: one gives ~28k ephemeral ports per destination; keep
# each under 10k connections so that connect never hunts for a free port.
# When there are at least as many addresses as client processes the load
# tool gives each process its own (i, i+P, …): give each enough for its
# share (8,000 a source at most), so that no process dials 19,000
# connections from one address.
NSRC=$(( (N + 9999) / 10000 )); NSRC=$(( NSRC < 40 ? 40 : NSRC ))
PSRC=$(( P * ((PER_CLIENT + 7999) / 8000) )); NSRC=$(( NSRC >= P && PSRC > NSRC ? PSRC : NSRC ))
NSRC=$(( NSRC > 250 ? 250 : NSRC ))
SOURCES=${SCALE_SOURCES:-127.0.0.2-127.0.0.$((NSRC + 1))}
SECRET=${ORCH_JWT_SECRET:-bench-secret-0123456789abcdef-0123456789}
[[ $HEARTBEAT =~ ^[0-9]+(ms|s|m|h)$ ]] || { echo "SCALE_HEARTBEAT=$HEARTBEAT: want a duration such as 25s or 5m" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "SCALE_CONNECT_RATE=$RATE: want handshakes per second (0: unpaced)" >&2; exit 2; }
for v in N PER_DAEMON PER_CLIENT DIALERS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v=${!v}: want a positive integer" >&2; exit 2; }
done
[ "$PER_DAEMON" -le 19000 ] && [ "$PER_CLIENT" -le 19500 ] ||
  { echo "SCALE_PER_DAEMON ($PER_DAEMON) must be <= 19000 and SCALE_PER_CLIENT ($PER_CLIENT) <= 19500: each process has 20,000 fds" >&2; exit 2; }
if [ "$N" = 100000 ]; then OUT=bench/results/scale.json; MARK=bench-scale; else OUT=bench/results/scale-$N.json; MARK=bench-scale-$N; fi
mkdir -p "$BIN" bench/results
go build -trimpath -o "$BIN/orchestratord" ./daemon/cmd/orchestratord
go build -trimpath -o "$BIN/orchestratord-load" ./daemon/cmd/orchestratord-load
(cd bench && go build -trimpath -o "$BIN/" ./cmd/report)
ulimit -n 20000 2>/dev/null || true
# A port of the ephemeral range can be held by some other program's
# outgoing connection from 127.0.0.1 (in TIME-WAIT too: a client socket has
# no SO_REUSEADDR), and the listener's bind then fails: take the first port
# from $1 on (step $2) that no socket on 127.0.0.1 or the wildcard uses.
free_port() {
  local p=$1
  while [ -n "$(ss -Htan "sport = :$p" 2>/dev/null |
                awk '$4 ~ /^(127\.0\.0\.1|\*|0\.0\.0\.0|\[::\]):[0-9]+$/')" ]; do
    p=$((p + $2))
  done
  echo "$p"
}
PORT=$(free_port $((BASE + 80)) 1)
logs=$(mktemp -d /tmp/orchestratord-scale.XXXXXX)
cfg=$logs/daemon.yaml
sed -e 's/^listen:/listen:\n  reuse_port: true/' -e "s/^  heartbeat: .*/  heartbeat: $HEARTBEAT/" \
    -e "s/127.0.0.1:28080/127.0.0.1:$PORT/" -e "s/127.0.0.1:28090/127.0.0.1:$(free_port $((BASE + 150)) 1)/" \
    bench/config/daemon.yaml > "$cfg"
pids=() metrics=() loadpid="" watchpid="" keep_logs=0
# stop PID…: TERM, up to 15 s for them to go (a daemon drains), then KILL.
stop() {
  local p left
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 75); do
    left=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.2
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  set +e
  trap - EXIT INT TERM HUP
  [ -n "$watchpid" ] && kill "$watchpid" 2>/dev/null
  [ -n "$loadpid" ] && stop "$loadpid"   # its shards follow it (ctx, Pdeathsig)
  [ "${#pids[@]}" -gt 0 ] && stop "${pids[@]}"
  wait 2>/dev/null || true
  [ -f "$logs/watch.log" ] && cp "$logs/watch.log" "bench/results/scale-$N-watch.log"
  if [ "$keep_logs" = 1 ]; then echo "== logs kept in $logs"; else rm -rf "$logs"; fi
}
trap cleanup EXIT
trap 'keep_logs=1; echo "== interrupted: stopping everything" >&2; exit 130' INT TERM HUP
avail_mb() { awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo; }
echo "== before: MemAvailable $(avail_mb) MB, load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s%N)
ap=$((BASE + 200))
# start_daemon I: daemon I (0-based) with the next free admin port.
start_daemon() {
  ap=$(free_port $((ap + 1)) 1)
  local admin="127.0.0.1:$ap"
  ORCH_JWT_SECRET=$SECRET setsid "$BIN/orchestratord" serve --config "$cfg" --admin "$admin" \
    > "$logs/daemon-$(( $1 + 1 )).log" 2>&1 &
  pids[$1]=$! metrics[$1]="http://$admin/metrics"
}
for i in $(seq 0 $((D - 1))); do start_daemon "$i"; done
for _ in $(seq 1 300); do
  ok=1
  for i in "${!pids[@]}"; do
    curl -fs -o /dev/null "${metrics[$i]}" && continue
    ok=0
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      # A port taken between the check and the bind: start it again.
      grep -q "address already in use" "$logs/daemon-$((i + 1)).log" || { echo "daemon $((i + 1)) exited:"; tail -5 "$logs/daemon-$((i + 1)).log"; exit 1; }
      echo "daemon $((i + 1)): $(grep -o 'listen tcp [0-9.:]*' "$logs/daemon-$((i + 1)).log" | tail -1) was taken; starting it again"
      start_daemon "$i"
    fi
    break
  done
  [ "$ok" = 1 ] && break; sleep 0.2
done
[ "$ok" = 1 ] || { echo "the daemons did not come up in 60 s"; exit 1; }
echo "== $N connections: $D daemons (pids ${pids[0]}…${pids[-1]}, ws.heartbeat $HEARTBEAT), $P client processes from $SOURCES, connect rate ${RATE}/s (0: unpaced), $DIALERS in flight each (daemons up in $(( ($(date +%s%N) - t0) / 1000000 )) ms)"
"$BIN/orchestratord-load" -mode hold -url "ws://127.0.0.1:$PORT/ws" -jwt-secret "$SECRET" \
  -conns "$N" -procs "$P" -sources "$SOURCES" -dialers "$DIALERS" -connect-rate "$RATE" -dial-timeout 60s \
  -duration "$HOLD" -settle 5s -label "load-scale $N over $D daemons" \
  -server-pid "$(IFS=,; echo "${pids[*]}")" -metrics-url "$(IFS=,; echo "${metrics[*]}")" \
  -json "$OUT" &
loadpid=$!
# The watchdog: memory, and what the client side holds (for the report).
(
  set +e +o pipefail   # ps exits 1 when a process has no children yet
  min=$(avail_mb)
  while kill -0 "$loadpid" 2>/dev/null; do
    a=$(avail_mb); [ "$a" -lt "$min" ] && min=$a
    crss=$( (ps -o rss= -p "$loadpid"; ps -o rss= --ppid "$loadpid") 2>/dev/null | awk '{s+=$1} END {print int(s/1024)}')
    drss=$(ps -o rss= -p "$(IFS=,; echo "${pids[*]}")" 2>/dev/null | awk '{s+=$1} END {print int(s/1024)}')
    slab=$(awk '/^Slab:/ {print int($2/1024)}' /proc/meminfo)
    # Every 30 s: the fds of the fullest daemon (SO_REUSEPORT's spread
    # against the 20,000-fd limit; ls -U does not sort 19,000 names).
    if [ $(( ${tick:=0} % 15 )) = 0 ]; then
      fmax=$(for p in "${pids[@]}"; do ls -U "/proc/$p/fd" 2>/dev/null | wc -l; done | sort -n | tail -n 1)
    fi
    tick=$((tick + 1))
    echo "$(date -u +%T) MemAvailable ${a} MB (min ${min}), daemons RSS ${drss} MB, load tool RSS ${crss} MB, Slab ${slab} MB, load $(cut -d' ' -f1 /proc/loadavg), TCP mem $(awk '/^TCP:/ {print $NF}' /proc/net/sockstat) pages, TCP sockets $(awk '/^TCP:/ {print $3}' /proc/net/sockstat), fullest daemon ${fmax} fds" >> "$logs/watch.log"
    if [ "$a" -lt "$MIN_AVAIL_MB" ]; then
      echo "== ABORT: MemAvailable ${a} MB < ${MIN_AVAIL_MB} MB: stopping the load tool and the daemons" >&2
      kill "$loadpid" 2>/dev/null || true
      for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
      exit 1
    fi
    sleep 2
  done
) &
watchpid=$!
rc=0; wait "$loadpid" || rc=$?
loadpid=""
wait "$watchpid" 2>/dev/null || { echo "== the watchdog stopped the run"; rc=1; }
watchpid=""
echo "== watchdog samples (every 2 s): first, peak memory use, last"
# (awk, not head: head would leave sort writing into a closed pipe, and
# pipefail would end the script with SIGPIPE's 141)
awk 'NR == 1' "$logs/watch.log"; sort -t' ' -k3 -n "$logs/watch.log" | awk 'NR == 1'; tail -n 1 "$logs/watch.log"
cp "$logs/watch.log" "bench/results/scale-$N-watch.log"
[ "$rc" = 0 ] || { keep_logs=1; exit "$rc"; }
cmd="SCALE_CONNS=$N"
[ "$HEARTBEAT" != 25s ] && cmd+=" SCALE_HEARTBEAT=$HEARTBEAT"
[ "$RATE" != 0 ] && cmd+=" SCALE_CONNECT_RATE=$RATE"
[ "$DIALERS" != 16 ] && cmd+=" SCALE_DIALERS=$DIALERS"
[ "$PER_DAEMON" != 16000 ] && cmd+=" SCALE_PER_DAEMON=$PER_DAEMON"
[ "$PER_CLIENT" != 9500 ] && cmd+=" SCALE_PER_CLIENT=$PER_CLIENT"
[ "$HOLD" != 30s ] && cmd+=" SCALE_HOLD=$HOLD"
"$BIN/report" -scale "$OUT" -scale-daemons "$D" -scale-per-daemon "$PER_DAEMON" -scale-marker "$MARK" \
  -scale-watch "bench/results/scale-$N-watch.log" -scale-heartbeat "$HEARTBEAT" -scale-command "$cmd bench/scale.sh"
