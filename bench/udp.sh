#!/usr/bin/env bash
# bench/udp.sh - UDP request/response rate and latency: dnsperf (the DNS load
# generator) against knotd (an authoritative DNS server), direct and through
# nginx's stream module and baton (one build or several), in two modes:
#
#   sessions    no proxy_responses: each dnsperf socket is one long-lived
#               session (one upstream socket) in the proxy
#   responses1  proxy_responses 1 in nginx and baton: a session ends after
#               each answer, as a DNS proxy is often run (a new upstream
#               socket per query)
#
#   bash bench/udp.sh [-r ROUNDS] [-l SECONDS] [-c CLIENTS] [-w SECONDS]
#                     [-m MODES] [-p BASE_PORT] [-b [NAME=]BATON]...
#
#   -r  rounds [3]: each round runs, for each mode, every proxy in turn
#       (direct, nginx, baton, extra batons; the order rotated by one per
#       round), so drift in the machine's speed falls on all of them alike
#   -l  seconds per dnsperf run [5] (dnsperf -l)
#   -c  dnsperf clients (sockets) [20] (dnsperf -c)
#   -w  warm-up seconds per proxy and mode before round 1, not recorded [1]
#   -m  modes ["sessions responses1"]
#   -p  first port tried [15301]; knotd, nginx and every baton get free ports
#       from there up (UDP and TCP checked with ss)
#   -b  another baton binary to compare, labelled NAME (default: the file's
#       name); repeat for more. B=PATH in the environment adds one too.
#
# baton is built from the current tree into bench/.run/baton unless BATON_BIN
# is given. DNSPERF_ARGS adds arguments to every dnsperf run (e.g. "-q 200").
# E.g. an A/B of two builds in one interleaved run:
#
#   go build -o /tmp/a ./cmd/baton      # (and /tmp/b from another commit)
#   BATON_BIN=/tmp/a bash bench/udp.sh -r 5 -b b=/tmp/b
#
# Needs dnsperf, knotd, nginx with the stream module, python3, ss (Debian:
# apt-get install -y dnsperf knot nginx libnginx-mod-stream). Run from the
# repository root. Scratch (configs, logs, raw.tsv) in bench/.run/udp/; the
# Markdown summary is printed and saved as bench/results/udp-<UTC time>.md.
# Every dnsperf run is bounded by `timeout`; every process started here is
# stopped by its PID on exit. Exit status is non-zero if a run failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
usage() { sed -n '2,39p' "$0" >&2; exit 2; }

ROUNDS=3 SECS=5 CLIENTS=20 WARMUP=1 MODES="sessions responses1" BASE_PORT=15301
EXTRA=()
while getopts "r:l:c:w:m:p:b:h" o; do
  case $o in
    r) ROUNDS=$OPTARG ;; l) SECS=$OPTARG ;; c) CLIENTS=$OPTARG ;; w) WARMUP=$OPTARG ;;
    m) MODES=$OPTARG ;; p) BASE_PORT=$OPTARG ;; b) EXTRA+=("$OPTARG") ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
(( $# == 0 )) || usage
[[ -n ${B:-} ]] && EXTRA+=("$B")
for v in ROUNDS SECS CLIENTS WARMUP BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "udp.sh: $v must be a whole number" >&2; exit 2; }
done
(( ROUNDS > 0 && SECS > 0 && CLIENTS > 0 )) || { echo "udp.sh: -r, -l and -c must be > 0" >&2; exit 2; }
for m in $MODES; do
  [[ $m == sessions || $m == responses1 ]] || { echo "udp.sh: mode '$m' is not sessions or responses1" >&2; exit 2; }
done

die() { echo "udp.sh: $*" >&2; exit 1; }
log() { echo "[udp.sh $(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ tools
MISSING=
for tool in dnsperf knotd nginx python3 ss timeout awk sha256sum; do
  command -v "$tool" >/dev/null || MISSING+=" $tool"
done
STREAM_MODULE=${STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
LOAD_MODULE="load_module $STREAM_MODULE;"
if [[ ! -f $STREAM_MODULE ]]; then
  if command -v nginx >/dev/null && nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; then
    LOAD_MODULE=   # stream built in
  else
    MISSING+=" ngx_stream_module"
  fi
fi
if [[ -n $MISSING ]]; then
  echo "udp.sh: missing:$MISSING" >&2
  echo "udp.sh: on Debian/Ubuntu: apt-get install -y dnsperf knot nginx libnginx-mod-stream" >&2
  exit 2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- batons
cd "$ROOT"
DIR=$HERE/.run/udp
rm -rf "$DIR"; mkdir -p "$DIR/knot" "$HERE/results"
NAMES=(baton) BINS=()
if [[ -z ${BATON_BIN:-} ]]; then
  command -v go >/dev/null || die "go is needed to build baton (or give BATON_BIN=/path/to/baton)"
  log "building baton from the current tree into bench/.run/baton"
  timeout 300 go build -o "$HERE/.run/baton" ./cmd/baton || die "go build ./cmd/baton failed (give BATON_BIN=...)"
  BINS+=("$HERE/.run/baton")
  BUILT="git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
else
  [[ -x $BATON_BIN ]] || die "BATON_BIN=$BATON_BIN is not executable"
  BINS+=("$BATON_BIN"); BUILT=
fi
for e in "${EXTRA[@]}"; do
  if [[ $e == *=* ]]; then n=${e%%=*} p=${e#*=}; else n=$(basename "$e") p=$e; fi
  [[ $n =~ ^[A-Za-z0-9._-]+$ ]] || die "label '$n' for $p: use letters, digits, '.', '_', '-' (-b NAME=PATH)"
  [[ -x $p ]] || die "$p is not executable"
  for x in direct nginx "${NAMES[@]}"; do [[ $x != "$n" ]] || die "label '$n' is taken, use -b NAME=$p"; done
  NAMES+=("$n"); BINS+=("$p")
done

# --------------------------------------------------------------- processes
PIDS=()
start() {   # start NAME CMD... ; the PID is ${PIDS[-1]}
  local name=$1; shift
  "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}
kids() { ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' ' || true; }
cleanup() {
  local p k i all=()
  for p in "${PIDS[@]}"; do all+=("$p" $(kids "$p")); done
  (( ${#PIDS[@]} )) && log "stopping the processes started here: ${PIDS[*]}"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for (( i = 0; i < 50; i++ )); do
    k=0; for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && k=1; done
    (( k )) || break
    sleep 0.1
  done
  for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && { log "pid $p still alive, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT=$BASE_PORT
alloc() {   # alloc VAR: the next port with no UDP or TCP socket bound
  local p
  for (( p = NEXT; p < NEXT + 500 && p < 65536; p++ )); do
    if [[ -z $(ss -Hantu "sport = :$p" 2>/dev/null) ]]; then NEXT=$((p + 1)); printf -v "$1" %s "$p"; return 0; fi
  done
  die "no free port in $NEXT-$((NEXT + 499)); give -p"
}
bound() {   # bound PORT PID: wait up to 10 s for a UDP socket on PORT while PID lives
  local i
  for (( i = 0; i < 100; i++ )); do
    [[ -n $(ss -Hanu "sport = :$1" 2>/dev/null) ]] && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ knotd
alloc KPORT
cat >"$DIR/knot/example.com.zone" <<'EOF'
$TTL 300
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 127.0.0.1
www IN A 127.0.0.2
EOF
cat >"$DIR/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KPORT
    background-workers: 1
    udp-workers: 2
    tcp-workers: 1
    rundir: $DIR/knot
database:
    storage: $DIR/knot
zone:
  - domain: example.com
    file: $DIR/knot/example.com.zone
log:
  - target: stderr
    any: error
EOF
printf 'www.example.com A\n' >"$DIR/queries.txt"
start knotd knotd -c "$DIR/knot/knot.conf"
KNOT_PID=${PIDS[-1]}
bound "$KPORT" "$KNOT_PID" || die "knotd is not on port $KPORT (see $DIR/knotd.log)"

# ------------------------------------------------------------------ proxies
# For each proxy: a port per mode, and the PIDs whose CPU is its cost.
declare -A PORT PXPIDS MAINPID
extra_directive() { [[ $1 == responses1 ]] && echo " proxy_responses 1;" || true; }
for m in $MODES; do PORT[direct.$m]=$KPORT; done
PXPIDS[direct]=

servers=
for m in $MODES; do alloc "PORT[nginx.$m]"; servers+="  server { listen 127.0.0.1:${PORT[nginx.$m]} udp reuseport; proxy_pass 127.0.0.1:$KPORT; proxy_timeout 10s;$(extra_directive "$m") }"$'\n'; done
cat >"$DIR/nginx.conf" <<EOF
$LOAD_MODULE
worker_processes 2;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log error;
events { worker_connections 20000; }
stream {
$servers}
EOF
start nginx nginx -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf"
MAINPID[nginx]=${PIDS[-1]}
for m in $MODES; do bound "${PORT[nginx.$m]}" "${MAINPID[nginx]}" || die "nginx is not on port ${PORT[nginx.$m]} (see $DIR/nginx*.log)"; done

for i in "${!NAMES[@]}"; do
  n=${NAMES[i]}
  servers=
  for m in $MODES; do alloc "PORT[$n.$m]"; servers+="  server { listen 127.0.0.1:${PORT[$n.$m]} udp reuseport; proxy_pass 127.0.0.1:$KPORT; proxy_timeout 10s;$(extra_directive "$m") }"$'\n'; done
  # its own control socket: a baton run with -c takes /run/baton/control.sock otherwise
  cat >"$DIR/$n.conf" <<EOF
events { worker_connections 20000; }
baton { control_socket $DIR/$n.sock; }
stream {
$servers}
EOF
  start "$n" "${BINS[i]}" run -c "$DIR/$n.conf"
  MAINPID[$n]=${PIDS[-1]}
  PXPIDS[$n]=${PIDS[-1]}
  for m in $MODES; do bound "${PORT[$n.$m]}" "${MAINPID[$n]}" || die "$n is not on port ${PORT[$n.$m]} (see $DIR/$n.log)"; done
done
sleep 1   # nginx forks its workers after it binds
PXPIDS[nginx]="${MAINPID[nginx]} $(kids "${MAINPID[nginx]}")"
PROXIES=(direct nginx "${NAMES[@]}")

# -------------------------------------------------------------- measuring
HZ=$(getconf CLK_TCK)
ticks() {   # utime+stime of the given PIDs (all their threads)
  local t=0 p v
  for p in "$@"; do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
machine() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }   # busy ticks (steal excluded), steal ticks
secs() { awk '{ s = 0; n = split($0, a, /[ms]/); print a[1] * 60 + a[2] }' <<<"$1"; }   # "1m2.5s" -> 62.5
read -r -a DNSPERF_EXTRA <<<"${DNSPERF_ARGS:-}"
RAW=$DIR/raw.tsv
printf 'round\tmode\tproxy\tport\tqps\tcompleted\tlost\tsent\tavg_lat_s\tsd_lat_s\tmin_lat_s\tmax_lat_s\twall_s\tproxy_cpu_s\tknot_cpu_s\tdnsperf_cpu_s\tbusy_s\tsteal_ticks\tok\n' >"$RAW"
FAILED=0
LAST=
step() {   # step ROUND MODE PROXY SECONDS : one dnsperf run; ROUND 0 is the warm-up (not recorded)
  local r=$1 m=$2 px=$3 s=$4 port=${PORT[$3.$2]} out c0 c1 k0 k1 b0 b1 s0 s1 t0 t1 dcpu ok=1 p
  for p in $KNOT_PID ${MAINPID[$px]:-}; do kill -0 "$p" 2>/dev/null || die "pid $p ($px or knotd) is gone (see $DIR/*.log)"; done
  c0=$(ticks ${PXPIDS[$px]}); k0=$(ticks "$KNOT_PID"); read -r b0 s0 < <(machine); t0=$(date +%s.%N)
  out=$( { timeout $((s + 20)) dnsperf -s 127.0.0.1 -p "$port" -d "$DIR/queries.txt" -c "$CLIENTS" -l "$s" -Q 1000000 \
             "${DNSPERF_EXTRA[@]}" 2>&1 || echo "dnsperf exit status $?"; times; } )
  t1=$(date +%s.%N); c1=$(ticks ${PXPIDS[$px]}); k1=$(ticks "$KNOT_PID"); read -r b1 s1 < <(machine)
  printf '=== round %s %s %s port %s\n%s\n' "$r" "$m" "$px" "$port" "$out" >>"$DIR/dnsperf.log"
  dcpu=$(tail -1 <<<"$out" | { read -r u y; echo "$(secs "$u") $(secs "$y")"; } | awk '{ print $1 + $2 }')
  LAST=$(awk -v r="$r" -v m="$m" -v px="$px" -v port="$port" -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
      -v pc="$(( c1 - c0 ))" -v kc="$(( k1 - k0 ))" -v dc="$dcpu" -v busy="$(( b1 - b0 ))" -v steal="$(( s1 - s0 ))" -v hz="$HZ" '
    /Queries sent:/ { sent = $3 } /Queries completed:/ { done = $3 } /Queries lost:/ { lost = $3 }
    /Queries per second:/ { qps = $4 }
    /Average Latency \(s\):/ { avg = $4; mn = $6; mx = $8; sub(/,/, "", mn); sub(/\)/, "", mx) }
    /Latency StdDev \(s\):/ { sd = $4 }
    END {
      ok = (done > 0) ? 1 : 0
      if (!ok) { qps = "NA"; avg = sd = mn = mx = "NA" }
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\n", r, m, px, port,
        qps, done + 0, lost + 0, sent + 0, avg, sd, mn, mx, wall, pc / hz, kc / hz, dc, busy / hz, steal, ok
    }' <<<"$out")
  [[ $(cut -f19 <<<"$LAST") == 1 ]] || ok=0
  if (( r > 0 )); then
    echo "$LAST" >>"$RAW"
    (( ok )) || FAILED=$((FAILED + 1))
  fi
  log "$(awk -F'\t' '{ printf "round %s %-10s %-10s %7.0f q/s, lost %s, avg %4.0f µs; CPU/s proxy %.2f knotd %.2f dnsperf %.2f; steal %d", $1, $2, $3, $5, $7, $9 * 1e6, $14/$13, $15/$13, $16/$13, $18 }' <<<"$LAST")"
  (( ok )) || log "no answers from $px in $m (see $DIR/dnsperf.log)"
  return 0
}

STARTED=$(date -u +%Y%m%dT%H%M%SZ)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "knotd :$KPORT; $(for p in nginx "${NAMES[@]}"; do for m in $MODES; do printf '%s/%s :%s  ' "$p" "$m" "${PORT[$p.$m]}"; done; done)"
if (( WARMUP > 0 )); then
  for m in $MODES; do
    for px in "${PROXIES[@]}"; do
      step 0 "$m" "$px" "$WARMUP"
      [[ $(cut -f19 <<<"$LAST") == 1 ]] || die "warm-up: no answers from $px in mode $m (see $DIR/dnsperf.log and $DIR/*.log)"
    done
  done
fi
N=${#PROXIES[@]}
for (( r = 1; r <= ROUNDS; r++ )); do
  for m in $MODES; do
    for (( j = 0; j < N; j++ )); do
      step "$r" "$m" "${PROXIES[(j + r - 1) % N]}" "$SECS"
      sleep 1
    done
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup

# ---------------------------------------------------------------- summary
OUT=$HERE/results/udp-$STARTED.md
{
  echo "# UDP (DNS) benchmark, $STARTED"
  echo
  echo "\`dnsperf -c $CLIENTS -l $SECS -Q 1000000${DNSPERF_ARGS:+ $DNSPERF_ARGS}\` (queries: \`www.example.com A\`) against knotd (udp-workers 2), direct and through each proxy;"
  echo "$ROUNDS rounds, modes: $MODES; in each round and mode every proxy in turn, the order rotated by one per round; warm-up ${WARMUP} s per proxy and mode, not counted. $(nproc) cores shared by dnsperf, knotd and the proxy; load average $LOAD0 at start, $LOAD1 at end."
  echo
  echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes 2, \`listen ... udp reuseport\`"
  for i in "${!NAMES[@]}"; do
    extra=; [[ $i == 0 && -n $BUILT ]] && extra=", built from the tree ($BUILT)"
    echo "- ${NAMES[i]}: \`${BINS[i]#"$ROOT/"}\` (sha256 $(sha256sum "${BINS[i]}" | cut -c1-12)$extra), \`listen ... udp reuseport\`"
  done
  echo "- $(knotd -V 2>&1 | head -1); $(dnsperf -h 2>&1 | awk '/^Version/ { print "dnsperf " $2; exit }')"
} >"$OUT"
python3 - "$RAW" "$OUT" "${PROXIES[@]}" <<'PY'
import csv, statistics, sys

raw, out, proxies = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

for r in rows:
    wall = num(r["wall_s"]) or 1.0
    done = num(r["completed"]) or 0.0
    r["proxy_cores"] = num(r["proxy_cpu_s"]) / wall
    r["knot_cores"] = num(r["knot_cpu_s"]) / wall
    r["dnsperf_cores"] = num(r["dnsperf_cpu_s"]) / wall
    r["busy_cores"] = num(r["busy_s"]) / wall
    ok = r["ok"] == "1" and done > 0
    r["proxy_us_q"] = num(r["proxy_cpu_s"]) * 1e6 / done if ok else None
    r["machine_us_q"] = num(r["busy_s"]) * 1e6 / done if ok else None
    r["qps"] = num(r["qps"]) if ok else None
    r["avg_us"] = num(r["avg_lat_s"]) * 1e6 if ok else None
    r["sd_us"] = num(r["sd_lat_s"]) * 1e6 if ok else None
    r["max_us"] = num(r["max_lat_s"]) * 1e6 if ok else None
    r["lost_n"] = num(r["lost"])

def med(rs, key):
    v = [r[key] for r in rs if r[key] is not None]
    return statistics.median(v) if v else None

def f(v, d=0):
    return "NA" if v is None else f"{v:.{d}f}"

modes = list(dict.fromkeys(r["mode"] for r in rows))
lines = []
w = lines.append
for m in modes:
    w("")
    w(f"## {m}: medians")
    w("")
    w("| proxy | queries/s [min - max] | / nginx | lost | avg latency µs | latency sd µs | proxy CPU/s | proxy µs/query | knotd CPU/s | dnsperf CPU/s | machine µs/query |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    nginx_q = med([r for r in rows if r["mode"] == m and r["proxy"] == "nginx"], "qps")
    for p in proxies:
        rs = [r for r in rows if r["mode"] == m and r["proxy"] == p]
        if not rs:
            continue
        q = med(rs, "qps")
        qs = [r["qps"] for r in rs if r["qps"] is not None]
        span = f"{f(q)} [{f(min(qs))} - {f(max(qs))}]" if qs else "NA"
        ratio = f"{q / nginx_q:.2f}" if q and nginx_q else "NA"
        px = p != "direct"
        w(f"| {p} | {span} | {ratio} | {f(med(rs, 'lost_n'))} | {f(med(rs, 'avg_us'))} | {f(med(rs, 'sd_us'))} | "
          f"{f(med(rs, 'proxy_cores'), 2) if px else '-'} | {f(med(rs, 'proxy_us_q'), 2) if px else '-'} | "
          f"{f(med(rs, 'knot_cores'), 2)} | {f(med(rs, 'dnsperf_cores'), 2)} | {f(med(rs, 'machine_us_q'), 2)} |")

batons = [p for p in proxies if p not in ("direct", "nginx")]
w("")
w("## baton against nginx")
w("")
w("| proxy | mode | queries/s / nginx's | proxy µs/query | nginx µs/query | µs/query / nginx's |")
w("|---|---|---|---|---|---|")
for p in batons:
    for m in modes:
        rs = [r for r in rows if r["mode"] == m and r["proxy"] == p]
        ns = [r for r in rows if r["mode"] == m and r["proxy"] == "nginx"]
        q, nq, c, nc = med(rs, "qps"), med(ns, "qps"), med(rs, "proxy_us_q"), med(ns, "proxy_us_q")
        w(f"| {p} | {m} | {f'{q / nq:.2f}' if q and nq else 'NA'} | {f(c, 2)} | {f(nc, 2)} | {f'{c / nc:.2f}' if c and nc else 'NA'} |")

w("")
w("## every run")
w("")
w("| round | mode | proxy | queries/s | completed | lost | avg µs | sd µs | max µs | proxy CPU/s | proxy µs/query | knotd CPU/s | dnsperf CPU/s | machine busy CPU/s | steal ticks |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    px = r["proxy"] != "direct"
    w(f"| {r['round']} | {r['mode']} | {r['proxy']} | {f(r['qps'])} | {r['completed']} | {r['lost']} | {f(r['avg_us'])} | "
      f"{f(r['sd_us'])} | {f(r['max_us'])} | {f(r['proxy_cores'], 2) if px else '-'} | {f(r['proxy_us_q'], 2) if px else '-'} | "
      f"{f(r['knot_cores'], 2)} | {f(r['dnsperf_cores'], 2)} | {f(r['busy_cores'], 2)} | {r['steal_ticks']} |")
w("")
w("Medians are per proxy and mode over the rounds (µs/query: the median of each run's figure). "
  "CPU/s: CPU seconds (user+system, all threads) per second of the run, i.e. cores; "
  "nginx's is its master and workers summed. µs/query: CPU per completed query. "
  "machine: all busy CPU of the machine (steal excluded), whatever used it. "
  "dnsperf reports average, min, max and standard deviation of latency, no percentiles. "
  "A run with more than a few steal ticks was disturbed by the host.")
with open(out, "a") as fh:
    fh.write("\n".join(lines) + "\n")
PY
echo "Raw: ${RAW#"$ROOT/"} (dnsperf output in ${DIR#"$ROOT/"}/dnsperf.log); failed runs: $FAILED." >>"$OUT"
cat "$OUT"
log "saved ${OUT#"$ROOT/"}"
(( FAILED == 0 ))
