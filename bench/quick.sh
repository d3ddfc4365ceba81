#!/usr/bin/env bash
# bench/quick.sh - quick baton load benchmark: each scenario DIRECT and THROUGH a proxy,
# with a Go load generator only (no nginx, HAProxy, iperf3 or wrk needed).
#
#   bench/quick.sh                                # builds and runs baton (quick mode)
#   DURATION=10 bench/quick.sh                    # longer measurements
#   PROXY_CMD='socat TCP-LISTEN:{listen_port},bind=127.0.0.1,reuseaddr,fork,backlog=4096 TCP:{backend}' \
#     bench/quick.sh                              # any other proxy, e.g. socat
#
# Prints a Markdown table (direct, proxied, ratio, proxy CPU cost) on stdout;
# progress on stderr; raw loadgen lines and logs in bench/.run/quick/. See
# bench/README.md ("Quick check"). All traffic stays on 127.0.0.1, every measurement is
# bounded in time (and loadgen also by count), and every process this script
# starts is stopped by its PID on exit. Exit status is non-zero if any
# measurement failed.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUN=${RUN:-$HERE/.run/quick}
LOGS=$RUN/logs

DURATION=${DURATION:-5}            # seconds measured per run (decimals allowed)
WARMUP=${WARMUP:-0.5}              # seconds of throughput warm-up, not measured
SIZE=${SIZE:-131072}               # bytes per write/read call
CONNS=${CONNS:-8}                  # connections for the "up, N conns" scenario
WORKERS=${WORKERS:-4}              # connrate dial loops
SETTLE=${SETTLE:-1}                # seconds of pause before each measurement
SCENARIOS=${SCENARIOS:-"up1 upN down1 both1 connrate"}
BASE_PORT=${BASE_PORT:-23400}      # ports are taken from here upwards, free ones only
MAX_SECONDS=${MAX_SECONDS:-115}    # time budget: measurements that would not fit are skipped
# BATON_BIN: an already built baton to use instead of building ./cmd/baton
BUILD_BATON=0
[[ -z ${BATON_BIN:-} ]] && { BATON_BIN=$HERE/.run/baton; BUILD_BATON=1; }
PROXY_CMD=${PROXY_CMD:-}
if [[ -z $PROXY_CMD ]]; then
  LABEL=${LABEL:-baton}
  PROXY_CMD="$BATON_BIN run --listen {listen} --upstream {backend}"
  [[ $BUILD_BATON == 1 || -x $BATON_BIN ]] || { echo "quick.sh: BATON_BIN=$BATON_BIN is not executable" >&2; exit 2; }
else
  read -r first _ <<<"$PROXY_CMD"
  LABEL=${LABEL:-$(basename "$first")}
  BUILD_BATON=0
fi
LOADGEN=$RUN/loadgen

log() { echo "[quick.sh $(date +%T) +${SECONDS}s] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $DURATION =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DURATION must be a number of seconds"
[[ $WARMUP =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WARMUP must be a number of seconds"
for tool in go timeout awk sed ps; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done
HAVE_SS=0; command -v ss >/dev/null && HAVE_SS=1
# whole seconds, rounded up, for `timeout`
ceil() { awk -v v="$1" 'BEGIN { i = int(v); if (i < v) i++; print i }'; }
STEP_TIMEOUT=$(( $(ceil "$DURATION") + $(ceil "$WARMUP") + 20 ))

# ---------------------------------------------------------------- processes
PIDS=()
LAST_PID=
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

start_bg() {   # start_bg NAME CMD... ; sets LAST_PID
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  log "started $name pid=$LAST_PID: $*"
}

descendants() {   # all live descendants of PID (not PID itself)
  ps -e -o pid=,ppid= | awk -v r="$1" '
    { pp[$1] = $2; all[NR] = $1 }
    END {
      found[r] = 1; changed = 1
      while (changed) { changed = 0
        for (i in all) { x = all[i]
          if (!(x in found) && (pp[x] in found)) { found[x] = 1; changed = 1 } } }
      for (x in found) if (x != r) print x
    }'
}

stop_pid() {   # TERM, up to 5 s, KILL; then KILL descendants still alive 3 s later
  local pid=$1 kids p i left
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(descendants "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for (( i=0; i<50; i++ )); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then log "pid $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  for (( i=0; i<30; i++ )); do
    left=
    for p in $kids; do alive "$p" && left+=" $p"; done
    [[ -z $left ]] && break
    sleep 0.1
  done
  for p in $kids; do
    if alive "$p"; then log "child $p of $pid still alive, sending SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  done
}

forget_pid() {   # drop PID from PIDS once stopped
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p != "$1" ]] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local i
  (( ${#PIDS[@]} )) && log "stopping ${#PIDS[@]} process(es) we started: ${PIDS[*]}"
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[i]}"; done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'log "ERROR: unexpected failure (status $?) at line $LINENO: $BASH_COMMAND"' ERR

# -------------------------------------------------------------------- ports
port_in_use() {
  if (( HAVE_SS )); then
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
NEXT_PORT=$BASE_PORT
PORT=
alloc_port() {   # sets PORT to the next port >= NEXT_PORT with no listener
  local p
  for (( p=NEXT_PORT; p<NEXT_PORT+200; p++ )); do
    if ! port_in_use "$p"; then PORT=$p; NEXT_PORT=$((p + 1)); return 0; fi
    log "port $p is in use, skipping it"
  done
  die "no free port in $NEXT_PORT-$((NEXT_PORT + 199)); set BASE_PORT"
}

wait_listen() {   # wait_listen PORT PID SECONDS
  local i
  for (( i=0; i<$3*20; i++ )); do
    port_in_use "$1" && return 0
    alive "$2" || return 1
    sleep 0.05
  done
  return 1
}

# --------------------------------------------------------------- accounting
CLK_TCK=$(getconf CLK_TCK)
tree_cpu_ticks() {   # utime+stime+cutime+cstime of PID and its live descendants
  local p total=0 v
  for p in "$1" $(descendants "$1" || true); do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

# The machine may be shared: for each measurement, estimate the CPU used by
# other processes, as % of all cores, two ways, and keep the lower figure
# (both can only overestimate):
#  a) per process: CPU time (incl. reaped children) of every process except
#     this script's tree and kernel threads; overestimates when another
#     process reaps a child that ran before the window;
#  b) machine: non-idle time in /proc/stat (user, nice, system, irq,
#     softirq, steal) minus this script's tree; overestimates by the loopback
#     softirq work the kernel runs in ksoftirqd on our behalf.
NCPU=$(nproc)
snap_cpu() {   # snap_cpu FILE : "pid ticks" of every other process, plus OURS and BUSY lines
  { cat /proc/[0-9]*/stat 2>/dev/null || true; echo "BUSY $(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)"; } \
  | awk -v me=$$ '
    $1 == "BUSY" { busy = $2; next }
    { pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
      pp[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15]; all[n++] = pid }
    END {
      ours[me] = 1; kt[2] = 1; changed = 1
      while (changed) { changed = 0
        for (i = 0; i < n; i++) { x = all[i]
          if (!(x in ours) && (pp[x] in ours)) { ours[x] = 1; changed = 1 }
          if (!(x in kt) && (pp[x] in kt)) { kt[x] = 1; changed = 1 } } }
      for (i = 0; i < n; i++) { x = all[i]
        if (x in ours) o += t[x]; else if (!(x in kt)) print x, t[x] }
      print "OURS", o + 0; print "BUSY", busy + 0
    }' >"$1"
}
others_pct() {    # others_pct BEFORE AFTER SECONDS
  awk -v secs="$3" -v hz="$CLK_TCK" -v n="$NCPU" '
    NR == FNR { a[$1] = $2; next }
    $1 == "OURS" { ours = $2 - a["OURS"]; next }
    $1 == "BUSY" { busy = $2 - a["BUSY"]; next }
    { d = $2 - (($1 in a) ? a[$1] : 0); if (d > 0) procs += d }
    END { m = busy - ours; if (m < 0) m = 0; x = (procs < m) ? procs : m
          p = 100 * x / hz / (secs * n); if (p > 100) p = 100; printf "%.0f", p }' "$1" "$2"
}

# -------------------------------------------------------------------- build
mkdir -p "$RUN" "$LOGS"
rm -f "$LOGS"/*.log "$RUN/results.txt" "$RUN"/others.[01]
cd "$ROOT"
log "building loadgen"
timeout 300 go build -o "$LOADGEN" ./bench/loadgen || die "go build ./bench/loadgen failed"
if (( BUILD_BATON )); then
  log "building baton"
  timeout 300 go build -o "$BATON_BIN" ./cmd/baton \
    || die "go build ./cmd/baton failed (use PROXY_CMD=... to benchmark another proxy)"
fi
BUILD_SECONDS=$SECONDS

# -------------------------------------------------------------------- sinks
declare -A SINK_PORT
SINK_PIDS=()
for mode in discard source echo; do
  alloc_port
  start_bg "sink-$mode" "$LOADGEN" sink -listen "127.0.0.1:$PORT" -mode "$mode" -max-life "$((MAX_SECONDS + 300))s"
  wait_listen "$PORT" "$LAST_PID" 10 || die "sink $mode did not listen on $PORT (see $LOGS/sink-$mode.log)"
  SINK_PORT[$mode]=$PORT
  SINK_PIDS+=("$LAST_PID")
done

# -------------------------------------------------------------------- proxy
PROXY_PID=
start_proxy() {   # start_proxy BACKEND_PORT TAG ; sets PORT (listen) and PROXY_PID
  local bport=$1 tag=$2 cmd
  alloc_port
  cmd=${PROXY_CMD//\{listen\}/127.0.0.1:$PORT}
  cmd=${cmd//\{backend\}/127.0.0.1:$bport}
  cmd=${cmd//\{listen_port\}/$PORT}
  cmd=${cmd//\{backend_port\}/$bport}
  start_bg "proxy-$tag" bash -c "exec $cmd"
  PROXY_PID=$LAST_PID
  if ! wait_listen "$PORT" "$PROXY_PID" 10; then
    log "proxy did not listen on $PORT within 10s (see $LOGS/proxy-$tag.log)"
    stop_proxy
    return 1
  fi
  sleep 0.2
  alive "$PROXY_PID" || { log "proxy exited right after start (see $LOGS/proxy-$tag.log)"; return 1; }
}
stop_proxy() {
  [[ -n $PROXY_PID ]] || return 0
  stop_pid "$PROXY_PID"; forget_pid "$PROXY_PID"; PROXY_PID=
}

# --------------------------------------------------------------- scenarios
declare -A R          # R[scenario.side.key] = value ; side = direct | proxy
FAILURES=0
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

scenario_args() {   # scenario_args NAME : sets SINK and ARGS (loadgen arguments after -addr)
  case "$1" in
    up1)      SINK=discard; ARGS=(throughput -conns 1 -dir up) ;;
    upN)      SINK=discard; ARGS=(throughput -conns "$CONNS" -dir up) ;;
    down1)    SINK=source;  ARGS=(throughput -conns 1 -dir down) ;;
    both1)    SINK=source;  ARGS=(throughput -conns 1 -dir both) ;;
    connrate) SINK=echo;    ARGS=(connrate -workers "$WORKERS") ;;
    *) die "unknown scenario $1 (want: up1 upN down1 both1 connrate)" ;;
  esac
  ARGS+=(-duration "${DURATION}s")
  [[ ${ARGS[0]} == throughput ]] && ARGS+=(-warmup "${WARMUP}s" -size "$SIZE")
  return 0
}

measure() {   # measure SCENARIO SIDE ADDR
  local s=$1 side=$2 addr=$3 out line t0=0 t1=0 rc=0 tw w0 w1
  scenario_args "$s"
  sleep "$SETTLE"
  if [[ $s == connrate && $HAVE_SS == 1 ]]; then
    tw=$(ss -Htan state time-wait 2>/dev/null | wc -l || true)
    R[$s.$side.timewait]=$tw
  fi
  [[ $side == proxy ]] && t0=$(tree_cpu_ticks "$PROXY_PID")
  snap_cpu "$RUN/others.0"; w0=$(date +%s.%N)
  out=$(timeout "$STEP_TIMEOUT" "$LOADGEN" "${ARGS[0]}" -addr "$addr" "${ARGS[@]:1}" 2>>"$LOGS/loadgen.log") || rc=$?
  [[ $side == proxy ]] && t1=$(tree_cpu_ticks "$PROXY_PID")
  w1=$(date +%s.%N); snap_cpu "$RUN/others.1"
  R[$s.$side.bg]=$(others_pct "$RUN/others.0" "$RUN/others.1" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")
  line=$(grep '^RESULT ' <<<"$out" | tail -1 || true)
  echo "$s $side $line" >>"$RUN/results.txt"
  log "$s $side via $addr (rc=$rc, other load ${R[$s.$side.bg]}%): ${line:-no result}"
  if [[ -z $line ]]; then
    FAILURES=$((FAILURES + 1)); return 0
  fi
  if [[ ${ARGS[0]} == throughput ]]; then
    R[$s.$side.value]=$(kv throughput_gbps "$line")
    # GB moved while the proxy CPU was sampled (whole loadgen run, warm-up
    # included), assuming the warm-up ran at the measured rate
    R[$s.$side.gb]=$(awk -v g="${R[$s.$side.value]}" -v a="$w0" -v b="$w1" 'BEGIN { print g / 8 * (b - a) }')
  else
    R[$s.$side.value]=$(kv conns_per_sec "$line")
    R[$s.$side.conns]=$(kv conns "$line")
    R[$s.$side.p50]=$(kv p50_us "$line")
    R[$s.$side.p99]=$(kv p99_us "$line")
  fi
  R[$s.$side.errors]=$(kv errors "$line")
  R[$s.$side.cpu]=$(( t1 - t0 ))
  # A run that moved nothing counts as failed; a few errors are reported, not fatal.
  if (( rc != 0 )) && [[ ${R[$s.$side.errors]:-0} == 0 ]]; then FAILURES=$((FAILURES + 1)); fi
}

budget_ok() {   # enough time left for one more measurement?
  local need=$(( $(ceil "$DURATION") + $(ceil "$WARMUP") + SETTLE + 3 ))
  (( SECONDS + need <= MAX_SECONDS ))
}

LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg)
log "scenarios: $SCENARIOS; ${DURATION}s each; proxy: $PROXY_CMD"
SKIPPED=
for s in $SCENARIOS; do
  scenario_args "$s"
  if ! budget_ok; then SKIPPED+=" $s"; continue; fi
  measure "$s" direct "127.0.0.1:${SINK_PORT[$SINK]}"
  if ! budget_ok; then SKIPPED+=" $s($LABEL)"; continue; fi
  if start_proxy "${SINK_PORT[$SINK]}" "$s"; then
    measure "$s" proxy "127.0.0.1:$PORT"
  else
    FAILURES=$((FAILURES + 1))
  fi
  stop_proxy
done
[[ -n $SKIPPED ]] && log "time budget MAX_SECONDS=$MAX_SECONDS exhausted, skipped:$SKIPPED" && FAILURES=$((FAILURES + 1))
cleanup

# -------------------------------------------------------------------- table
fmt() {   # fmt VALUE : NA, or a number with 3 significant digits (thousands as integers)
  awk -v v="$1" 'BEGIN {
    if (v == "") { print "NA"; exit }
    if (v >= 1000) { printf "%d\n", v + 0.5; exit }
    if (v >= 100) { printf "%.0f\n", v; exit }
    if (v >= 10)  { printf "%.1f\n", v; exit }
    printf "%.2f\n", v }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a + 0 == 0) print "NA"; else printf "%.2f\n", b / a }'; }
cost() {   # cost TICKS AMOUNT UNIT : proxy CPU per unit of work
  awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" -v u="$3" 'BEGIN {
    if (t == "" || n == "" || n + 0 == 0) { print "NA"; exit }
    s = t / hz
    if (u == "GB") printf "%.2f s/GB\n", s / n
    else           printf "%.0f µs/conn\n", s * 1e6 / n }'
}
errs() { echo "${R[$1.direct.errors]:-NA} / ${R[$1.proxy.errors]:-NA}"; }
bg() { echo "${R[$1.direct.bg]:-NA} / ${R[$1.proxy.bg]:-NA}"; }

echo "# baton bench: proxy=$LABEL duration=${DURATION}s warmup=${WARMUP}s size=$SIZE conns=$CONNS workers=$WORKERS cores=$NCPU date=$(date -u +%FT%TZ) loadavg_start=\"$LOADAVG0\" loadavg_end=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
echo "# proxy command: $PROXY_CMD"
echo
echo "| scenario | unit | direct | $LABEL | $LABEL/direct | $LABEL CPU | errors (direct / $LABEL) | other load % (direct / $LABEL) |"
echo "|---|---|---|---|---|---|---|---|"
for s in $SCENARIOS; do
  d=${R[$s.direct.value]:-}; p=${R[$s.proxy.value]:-}
  case "$s" in
    up1)   name="throughput up, 1 conn" ;;
    upN)   name="throughput up, $CONNS conns" ;;
    down1) name="throughput down, 1 conn" ;;
    both1) name="throughput both ways, 1 conn (sum)" ;;
    connrate) name="new connections ($WORKERS workers)" ;;
  esac
  if [[ $s == connrate ]]; then
    echo "| $name | conn/s | $(fmt "$d") | $(fmt "$p") | $(ratio "$d" "$p") | $(cost "${R[$s.proxy.cpu]:-}" "${R[$s.proxy.conns]:-}" conn) | $(errs "$s") | $(bg "$s") |"
    for q in p50 p99; do
      echo "| connect+echo latency $q | µs | $(fmt "${R[$s.direct.$q]:-}") | $(fmt "${R[$s.proxy.$q]:-}") | $(ratio "${R[$s.direct.$q]:-}" "${R[$s.proxy.$q]:-}") | | | |"
    done
  else
    echo "| $name | Gbit/s | $(fmt "$d") | $(fmt "$p") | $(ratio "$d" "$p") | $(cost "${R[$s.proxy.cpu]:-}" "${R[$s.proxy.gb]:-}" GB) | $(errs "$s") | $(bg "$s") |"
  fi
done
echo
echo "Ratios above 1 are better for rates, worse for latencies. $LABEL CPU: CPU time of the proxy process tree during the run per GB moved / per connection. Other load: CPU used by processes this script did not start, % of all $NCPU cores; above ~10 % the figures are disturbed. $NCPU cores shared by load generator, proxy and sinks (see bench/README.md)."
if [[ -n ${R[connrate.direct.timewait]:-} ]]; then
  echo "TIME_WAIT sockets before connrate: ${R[connrate.direct.timewait]} (direct), ${R[connrate.proxy.timewait]:-NA} ($LABEL)."
fi
echo "Raw loadgen lines: ${RUN#"$ROOT/"}/results.txt; logs: ${LOGS#"$ROOT/"}/. Took ${SECONDS}s (build ${BUILD_SECONDS}s); failures=$FAILURES."
(( FAILURES == 0 ))
