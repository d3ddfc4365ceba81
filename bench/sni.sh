#!/usr/bin/env bash
# bench/sni.sh - new connections per second through SNI routing: nginx's
# stream module and baton (one build or several) side by side, each with two
# listeners in front of the same three echo backends (loadgen sinks db, mq,
# web), in two modes:
#
#   sni    ssl_preread on; proxy_pass $backend; with
#          map $ssl_preread_server_name $backend { db.example.com db;
#          mq.example.com mq; ... (12 more names); default web; }
#          loadgen connrate -hello NAME: every connection sends a real TLS
#          ClientHello (crypto/tls's, made once) and reads it back
#   plain  proxy_pass web; loadgen connrate as today (1 byte and back):
#          the same proxies without preread or map, for reference
#
#   bash bench/sni.sh [-r ROUNDS] [-d SECONDS] [-c WORKERS] [-w SECONDS]
#                     [-m MODES] [-s SERVERNAME] [-a ALPN] [-p BASE_PORT]
#                     [-N] [-b [NAME=]BATON]...
#
#   -r  rounds [3]: each round runs, for each mode, every proxy in turn (nginx,
#       baton, extra batons; the order rotated by one per round), so drift in
#       the machine's speed falls on all of them alike
#   -d  seconds per loadgen run [5]
#   -c  loadgen connrate workers (dial loops) [4]
#   -w  warm-up seconds per proxy and mode before round 1, not recorded [1]
#   -m  modes ["sni plain"]
#   -s  server name in the ClientHello of the sni mode [db.example.com]
#   -a  ALPN protocols in that hello, comma-separated ["h2,http/1.1"; "" for none]
#   -p  base port [24301]: sinks on BASE..BASE+2, proxies two ports each from
#       BASE+10; the script refuses to start if one of them has a listener
#   -b  another baton binary to compare, labelled NAME (default: the file's
#       name); repeat for more. B=PATH in the environment adds one too.
#   -N  no baton from the tree (nor BATON_BIN): nginx and the -b builds only
#
# baton is built from the current tree into bench/.run/baton unless BATON_BIN
# is given, e.g. a build with map support from another checkout:
#
#   (cd ../main && go build -o /tmp/baton-sni ./cmd/baton)
#   BATON_BIN=/tmp/baton-sni bash bench/sni.sh -b old=/tmp/baton-old
#
# Before the warm-up a routing check (python3) sends hellos for several names
# (and none, and plain bytes) through every proxy and mode, holds each
# connection and asks ss which backend got it; the table goes in the summary.
# Needs nginx with the stream module (Debian: nginx libnginx-mod-stream), go,
# python3, ss. Run from anywhere in the repository. Scratch (configs, logs,
# raw.tsv, loadgen.log) in bench/.run/sni/; the Markdown summary is printed
# and saved as bench/results/sni-<UTC time>.md. Every loadgen run is bounded
# by `timeout`; every process started here is stopped by its PID on exit.
# Exit status is non-zero if a run failed or the routing check found a wrong
# backend.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
usage() { sed -n '2,49p' "$0" >&2; exit 2; }

ROUNDS=3 SECS=5 WORKERS=4 WARMUP=1 MODES="sni plain" SNI_NAME=db.example.com ALPN=h2,http/1.1 BASE_PORT=24301
EXTRA=() NOBATON=0
while getopts "r:d:c:w:m:s:a:p:b:Nh" o; do
  case $o in
    r) ROUNDS=$OPTARG ;; d) SECS=$OPTARG ;; c) WORKERS=$OPTARG ;; w) WARMUP=$OPTARG ;;
    m) MODES=$OPTARG ;; s) SNI_NAME=$OPTARG ;; a) ALPN=$OPTARG ;; p) BASE_PORT=$OPTARG ;;
    b) EXTRA+=("$OPTARG") ;; N) NOBATON=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
(( $# == 0 )) || usage
[[ -n ${B:-} ]] && EXTRA+=("$B")
for v in ROUNDS SECS WORKERS WARMUP BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "sni.sh: $v must be a whole number" >&2; exit 2; }
done
(( ROUNDS > 0 && SECS > 0 && WORKERS > 0 && WORKERS <= 1000 )) || { echo "sni.sh: -r, -d must be > 0, -c 1-1000" >&2; exit 2; }
(( BASE_PORT >= 1024 && BASE_PORT < 65000 )) || { echo "sni.sh: -p must be in 1024-64999" >&2; exit 2; }
[[ -n $MODES ]] || usage
for m in $MODES; do
  [[ $m == sni || $m == plain ]] || { echo "sni.sh: mode '$m' is not sni or plain" >&2; exit 2; }
done
[[ $SNI_NAME =~ ^[A-Za-z0-9.-]+$ ]] || { echo "sni.sh: -s wants a DNS name" >&2; exit 2; }
[[ $ALPN =~ ^[A-Za-z0-9./,-]*$ ]] || { echo "sni.sh: -a wants protocol names separated by commas" >&2; exit 2; }

die() { echo "sni.sh: $*" >&2; exit 1; }
log() { echo "[sni.sh $(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ tools
MISSING=
for tool in go nginx python3 ss timeout awk sha256sum; do
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
  echo "sni.sh: missing:$MISSING" >&2
  echo "sni.sh: on Debian/Ubuntu: apt-get install -y nginx libnginx-mod-stream python3 iproute2 (and Go)" >&2
  exit 2
fi
nginx -V 2>&1 | grep -q -- '--with-stream_ssl_preread_module' || die "this nginx has no stream_ssl_preread_module"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ ports
NPROXY=$(( 2 - NOBATON + ${#EXTRA[@]} ))   # nginx and the batons
ALLPORTS=($(seq "$BASE_PORT" $((BASE_PORT + 2))) $(seq $((BASE_PORT + 10)) $((BASE_PORT + 9 + 2 * NPROXY))))
taken=()
for p in "${ALLPORTS[@]}"; do
  [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && taken+=("$p")
done
(( ${#taken[@]} == 0 )) || die "port(s) ${taken[*]} already have a listener (another sni.sh running?); not starting (give -p)"

# ---------------------------------------------------------------- binaries
cd "$ROOT"
DIR=$HERE/.run/sni
rm -rf "$DIR"; mkdir -p "$DIR" "$HERE/results"
log "building loadgen into bench/.run/loadgen"
timeout 300 go build -o "$HERE/.run/loadgen" ./bench/loadgen || die "go build ./bench/loadgen failed"
LOADGEN=$HERE/.run/loadgen
NAMES=(baton) BINS=() BUILT=
if (( NOBATON )); then
  NAMES=()
elif [[ -z ${BATON_BIN:-} ]]; then
  log "building baton from the current tree into bench/.run/baton"
  timeout 300 go build -o "$HERE/.run/baton" ./cmd/baton || die "go build ./cmd/baton failed (give BATON_BIN=...)"
  BINS+=("$HERE/.run/baton")
  BUILT="git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
else
  [[ -x $BATON_BIN ]] || die "BATON_BIN=$BATON_BIN is not executable"
  BINS+=("$BATON_BIN")
fi
for e in "${EXTRA[@]}"; do
  if [[ $e == *=* ]]; then n=${e%%=*} p=${e#*=}; else n=$(basename "$e") p=$e; fi
  [[ $n =~ ^[A-Za-z0-9._-]+$ ]] || die "label '$n' for $p: use letters, digits, '.', '_', '-' (-b NAME=PATH)"
  [[ -x $p ]] || die "$p is not executable"
  for x in nginx "${NAMES[@]}"; do [[ $x != "$n" ]] || die "label '$n' is taken, use -b NAME=$p"; done
  NAMES+=("$n"); BINS+=("$p")
done
PROXIES=(nginx "${NAMES[@]}")

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
listening() {   # listening PORT PID: wait up to 10 s for a listener on PORT while PID lives
  local i
  for (( i = 0; i < 100; i++ )); do
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]] && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ sinks
declare -A BPORT
BACKENDS=(db mq web)
SINK_PIDS=
for i in "${!BACKENDS[@]}"; do
  b=${BACKENDS[i]}; BPORT[$b]=$((BASE_PORT + i))
  start "sink-$b" "$LOADGEN" sink -listen "127.0.0.1:${BPORT[$b]}" -mode echo -idle 30s -max-conns 20000 -max-life 60m
  SINK_PIDS+=" ${PIDS[-1]}"
  listening "${BPORT[$b]}" "${PIDS[-1]}" || die "sink $b is not on port ${BPORT[$b]} (see $DIR/sink-$b.log)"
done

# ---------------------------------------------------------------- configs
# The map: the three names the brief routes, and a dozen more so that the
# lookup is not a one-entry table. Exact names only (no hostnames/wildcards).
MAP_ENTRIES=$(cat <<'EOF'
db.example.com db;
mq.example.com mq;
www.example.com web;
api.example.com web;
static.example.com web;
auth.example.com mq;
queue.example.com mq;
events.example.com mq;
pg.example.com db;
mysql.example.com db;
redis.example.com db;
cache.example.com db;
metrics.example.net web;
admin.example.org web;
mail.example.org mq;
EOF
)
upstreams() {
  local b
  for b in "${BACKENDS[@]}"; do echo "    upstream $b { server 127.0.0.1:${BPORT[$b]}; }"; done
}
servers() {   # servers PROXY : the stream {} body for one proxy; sets PORT[PROXY.MODE]
  local px=$1 m
  upstreams
  if [[ " $MODES " == *" sni "* ]]; then
    echo "    map \$ssl_preread_server_name \$backend {"
    sed 's/^/        /' <<<"$MAP_ENTRIES"
    echo "        default web;"
    echo "    }"
  fi
  for m in $MODES; do
    case $m in
      sni)   echo "    server { listen 127.0.0.1:${PORT[$px.$m]} backlog=4096; ssl_preread on; proxy_pass \$backend; proxy_connect_timeout 5s; proxy_timeout 1h; }" ;;
      plain) echo "    server { listen 127.0.0.1:${PORT[$px.$m]} backlog=4096; proxy_pass web; proxy_connect_timeout 5s; proxy_timeout 1h; }" ;;
    esac
  done
}
declare -A PORT MAINPID
next=$((BASE_PORT + 10))
for px in "${PROXIES[@]}"; do
  for m in sni plain; do PORT[$px.$m]=$next; next=$((next + 1)); done
done

cat >"$DIR/nginx.conf" <<EOF
$LOAD_MODULE
worker_processes 2;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log error;
events { worker_connections 20000; }
stream {
$(servers nginx)
}
EOF
nginx -t -q -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf" 2>"$DIR/nginx-check.log" || die "nginx refuses $DIR/nginx.conf: $(cat "$DIR/nginx-check.log")"
start nginx nginx -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf"
MAINPID[nginx]=${PIDS[-1]}
for m in $MODES; do listening "${PORT[nginx.$m]}" "${MAINPID[nginx]}" || die "nginx is not on port ${PORT[nginx.$m]} (see $DIR/nginx*.log)"; done

for i in "${!NAMES[@]}"; do
  n=${NAMES[i]}
  # its own control socket: a baton run with -c takes /run/baton/control.sock otherwise
  cat >"$DIR/$n.conf" <<EOF
events { worker_connections 20000; }
baton { control_socket $DIR/$n.sock; }
stream {
$(servers "$n")
}
EOF
  if ! "${BINS[i]}" check -c "$DIR/$n.conf" >"$DIR/$n-check.log" 2>&1; then
    grep -q 'not supported' "$DIR/$n-check.log" &&
      log "$n (${BINS[i]}) does not support this config yet; -m plain measures without the map"
    die "$n refuses $DIR/$n.conf: $(grep -m1 -i 'emerg\|error' "$DIR/$n-check.log" || tail -1 "$DIR/$n-check.log")"
  fi
  start "$n" "${BINS[i]}" run -c "$DIR/$n.conf"
  MAINPID[$n]=${PIDS[-1]}
  for m in $MODES; do listening "${PORT[$n.$m]}" "${MAINPID[$n]}" || die "$n is not on port ${PORT[$n.$m]} (see $DIR/$n.log)"; done
done
sleep 1   # nginx forks its workers after it binds
NGINX_WORKERS=$(kids "${MAINPID[nginx]}")

# ---------------------------------------------------------- routing check
# Which backend each proxy picks, seen from outside: a hello (Python's ssl,
# OpenSSL's ClientHello) per name, held open while ss shows the one backend
# connection; expected: the map (sni) or web (plain).
CHECK=$DIR/routing.tsv
python3 - "$CHECK" "$MODES" "${BPORT[db]}" "${BPORT[mq]}" "${BPORT[web]}" "$SNI_NAME" "$MAP_ENTRIES" \
  $(for px in "${PROXIES[@]}"; do for m in $MODES; do echo "$px:$m:${PORT[$px.$m]}"; done; done) <<'PY' || die "routing check failed to run (see above)"
import socket, ssl, subprocess, sys, time

out, modes, db, mq, web, sni_name, map_entries = sys.argv[1:8]
targets = [a.split(":") for a in sys.argv[8:]]
backends = {db: "db", mq: "mq", web: "web"}
table = dict(l.rstrip(";").split() for l in map_entries.splitlines() if l.strip())

def hello(name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(i, o, server_hostname=name)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()

def upstream_conns():
    q = " or ".join(f"sport = :{p}" for p in backends)
    r = subprocess.run(["ss", "-Htn", "state", "established", f"( {q} )"], capture_output=True, text=True, timeout=5)
    seen = []
    for line in r.stdout.splitlines():
        local = line.split()[2]
        seen.append(backends.get(local.rsplit(":", 1)[1], "?"))
    return seen

def settle():
    for _ in range(40):
        if not upstream_conns():
            return
        time.sleep(0.05)

# (label, payload, expected backend in sni mode)
probes = [(n, hello(n), table.get(n, "web")) for n in
          dict.fromkeys([sni_name, "db.example.com", "mq.example.com", "www.example.com", "cache.example.com", "mail.example.org"])]
probes += [("DB.Example.COM (case)", hello("DB.Example.COM"), None),
           ("unknown.example.com", hello("unknown.example.com"), "web"),
           ("(hello, no SNI)", hello(None), "web"),
           ("(not TLS: 'GET / HTTP/1.0')", b"GET / HTTP/1.0\r\n\r\n", "web")]
rows = []
for px, mode, port in targets:
    for label, payload, want in probes:
        if mode == "plain" and label not in (sni_name, "(not TLS: 'GET / HTTP/1.0')"):
            continue
        exp = want if mode == "sni" else "web"
        settle()
        got = "?"
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=3) as c:
                c.sendall(payload)
                back = b""
                while len(back) < len(payload):
                    b = c.recv(65536)
                    if not b:
                        break
                    back += b
                seen = upstream_conns()
                if back != payload:
                    got = f"echo wrong ({len(back)}/{len(payload)} bytes)"
                elif len(seen) != 1:
                    got = "backends " + ",".join(seen) if seen else "no backend seen"
                else:
                    got = seen[0]
        except OSError as e:
            got = f"error: {e}"
        rows.append((mode, label, px, got, exp))
with open(out, "w") as fh:
    for r in rows:
        fh.write("\t".join("" if v is None else v for v in r) + "\n")
PY
ROUTE_BAD=$(awk -F'\t' '$5 != "" && $4 != $5' "$CHECK" | wc -l)
awk -F'\t' '{ printf "route %-5s %-30s %-8s -> %-12s%s\n", $1, $2, $3, $4, ($5 == "" ? "" : ($4 == $5 ? "" : "  (expected " $5 ")")) }' "$CHECK" |
  while read -r l; do log "$l"; done
(( ROUTE_BAD == 0 )) || log "routing check: $ROUTE_BAD answer(s) differ from what the config asks"

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
pxpids() {   # the PIDs whose CPU is PROXY's cost (nginx: master and workers, as they are now)
  if [[ $1 == nginx ]]; then echo "${MAINPID[nginx]} $(kids "${MAINPID[nginx]}")"; else echo "${MAINPID[$1]}"; fi
}
machine() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }   # busy ticks (steal excluded), steal ticks
timewait() {   # TIME_WAIT sockets now (sockstat is instant; ss walks them all)
  awk '/^TCP:/ { for (i = 2; i < NF; i++) if ($i == "tw") { print $(i + 1); f = 1 } } END { if (!f) exit 1 }' /proc/net/sockstat 2>/dev/null ||
    ss -Htan state time-wait 2>/dev/null | wc -l
}
secs() { awk '{ s = 0; n = split($0, a, /[ms]/); print a[1] * 60 + a[2] }' <<<"$1"; }   # "1m2.5s" -> 62.5
RAW=$DIR/raw.tsv
printf 'round\tmode\tproxy\tport\tconns\tattempts\tconns_per_sec\tp50_us\tp99_us\tmax_us\terrors\tfirst_error\twall_s\tproxy_cpu_s\tsinks_cpu_s\tloadgen_cpu_s\tbusy_s\tsteal_ticks\ttimewait_before\tok\n' >"$RAW"
FAILED=0
LAST=
step() {   # step ROUND MODE PROXY SECONDS : one loadgen run; ROUND 0 is the warm-up (not recorded)
  local r=$1 m=$2 px=$3 s=$4 port=${PORT[$3.$2]} out c0 c1 k0 k1 b0 b1 s0 s1 t0 t1 tw p pids lcpu args=()
  for p in $SINK_PIDS ${MAINPID[$px]}; do kill -0 "$p" 2>/dev/null || die "pid $p ($px or a sink) is gone (see $DIR/*.log)"; done
  if [[ $px == nginx && $(kids "${MAINPID[nginx]}") != "$NGINX_WORKERS" ]]; then
    log "nginx's workers changed: $NGINX_WORKERS -> $(kids "${MAINPID[nginx]}") (a worker died? see $DIR/nginx-error.log)"
    NGINX_WORKERS=$(kids "${MAINPID[nginx]}")
  fi
  [[ $m == sni ]] && args=(-hello "$SNI_NAME") && [[ -n $ALPN ]] && args+=(-alpn "$ALPN")
  tw=$(timewait)
  pids=$(pxpids "$px")
  c0=$(ticks $pids); k0=$(ticks $SINK_PIDS); read -r b0 s0 < <(machine); t0=$(date +%s.%N)
  # `times` in the subshell: the CPU of its children (timeout and loadgen), last line
  out=$( { timeout $((s + 20)) "$LOADGEN" connrate -addr "127.0.0.1:$port" -workers "$WORKERS" -duration "${s}s" \
             -timeout 2s -max-errors 1000 "${args[@]}" 2>&1 || echo "loadgen exit status $?"; times; } )
  t1=$(date +%s.%N); c1=$(ticks $pids); k1=$(ticks $SINK_PIDS); read -r b1 s1 < <(machine)
  printf '=== round %s %s %s port %s\n%s\n' "$r" "$m" "$px" "$port" "$out" >>"$DIR/loadgen.log"
  lcpu=$(tail -1 <<<"$out" | { read -r u y; echo "$(secs "$u") $(secs "$y")"; } | awk '{ print $1 + $2 }')
  LAST=$(awk -v r="$r" -v m="$m" -v px="$px" -v port="$port" -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
      -v pc="$(( c1 - c0 ))" -v kc="$(( k1 - k0 ))" -v lc="$lcpu" -v busy="$(( b1 - b0 ))" -v steal="$(( s1 - s0 ))" -v hz="$HZ" -v tw="$tw" '
    /^RESULT connrate / { for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } seen = 1 }
    /^loadgen connrate: / && first == "" { first = $0; sub(/^loadgen connrate: /, "", first); gsub(/\t/, " ", first) }
    END {
      ok = (seen && v["conns"] > 0) ? 1 : 0
      if (first == "") first = "-"
      printf "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\n", r, m, px, port,
        v["conns"], v["attempts"], ok ? v["conns_per_sec"] : "NA", ok ? v["p50_us"] : "NA", ok ? v["p99_us"] : "NA",
        ok ? v["max_us"] : "NA", v["errors"], first, wall, pc / hz, kc / hz, lc, busy / hz, steal, tw, ok
    }' <<<"$out")
  if (( r > 0 )); then
    echo "$LAST" >>"$RAW"
    [[ $(cut -f20 <<<"$LAST") == 1 ]] || FAILED=$((FAILED + 1))
  fi
  log "$(awk -F'\t' '{ o = $17 - $14 - $15 - $16
        printf "round %s %-5s %-8s %6s conn/s, p50 %5s p99 %6s µs, errors %s; proxy %5.1f µs/conn (%.2f CPU/s); other CPU/s %+.2f; steal %d; TIME_WAIT %d",
        $1, $2, $3, $7, $8, $9, $11, ($5 > 0 ? $14 * 1e6 / $5 : 0), $14 / $13, o / $13, $18, $19 }' <<<"$LAST")"
  [[ $(cut -f11 <<<"$LAST") == 0 ]] || log "  $px $m: $(cut -f11 <<<"$LAST") failed attempt(s), first: $(cut -f12 <<<"$LAST")"
  return 0
}

STARTED=$(date -u +%Y%m%dT%H%M%SZ)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "sinks db :${BPORT[db]} mq :${BPORT[mq]} web :${BPORT[web]}; $(for p in "${PROXIES[@]}"; do for m in $MODES; do printf '%s/%s :%s  ' "$p" "$m" "${PORT[$p.$m]}"; done; done)"
if (( WARMUP > 0 )); then
  for m in $MODES; do
    for px in "${PROXIES[@]}"; do
      step 0 "$m" "$px" "$WARMUP"
      [[ $(cut -f20 <<<"$LAST") == 1 ]] || die "warm-up: no connection through $px in mode $m (see $DIR/loadgen.log and $DIR/*.log)"
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
OUT=$HERE/results/sni-$STARTED.md
HELLO_BYTES=$(awk '/hello_bytes=/ { sub(/.*hello_bytes=/, ""); print $1; exit }' "$DIR/loadgen.log" 2>/dev/null || true)
{
  echo "# SNI routing benchmark, $STARTED"
  echo
  echo "\`loadgen connrate -workers $WORKERS -duration ${SECS}s\` (dial, write, read it all back, close) through each proxy to loadgen echo sinks (db, mq, web);"
  echo "$ROUNDS rounds, modes: $MODES; in each round and mode every proxy in turn, the order rotated by one per round; warm-up ${WARMUP} s per proxy and mode, not counted. $(nproc) cores shared by loadgen, the sinks and the proxy; load average $LOAD0 at start, $LOAD1 at end."
  echo
  [[ " $MODES " == *" sni "* ]] && echo "- sni: \`ssl_preread on; proxy_pass \$backend;\`, \`map \$ssl_preread_server_name \$backend\` with 15 names and \`default web\`; each connection sends crypto/tls's ClientHello for \`$SNI_NAME\` (ALPN ${ALPN:-none}, ${HELLO_BYTES:-?} bytes) and reads it back"
  [[ " $MODES " == *" plain "* ]] && echo "- plain: \`proxy_pass web;\`; each connection sends 1 byte and reads it back"
  echo "- both: \`listen ... backlog=4096\`, \`proxy_connect_timeout 5s; proxy_timeout 1h;\`, no access log"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes 2 (no reuseport)"
  for i in "${!NAMES[@]}"; do
    extra=; [[ $i == 0 && $NOBATON == 0 && -n $BUILT ]] && extra=", built from the tree ($BUILT)"
    echo "- ${NAMES[i]}: \`${BINS[i]#"$ROOT/"}\` (sha256 $(sha256sum "${BINS[i]}" | cut -c1-12)$extra; $("${BINS[i]}" version 2>/dev/null | head -1 || echo 'version ?'))"
  done
} >"$OUT"
python3 - "$RAW" "$OUT" "$CHECK" "${PROXIES[@]}" <<'PY'
import csv, statistics, sys

raw, out, check, proxies = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

for r in rows:
    wall = num(r["wall_s"]) or 1.0
    n = num(r["conns"]) or 0.0
    ok = r["ok"] == "1" and n > 0
    r["rate"] = num(r["conns_per_sec"]) if ok else None
    r["p50"], r["p99"] = (num(r["p50_us"]), num(r["p99_us"])) if ok else (None, None)
    r["proxy_cores"] = num(r["proxy_cpu_s"]) / wall
    r["sinks_cores"] = num(r["sinks_cpu_s"]) / wall
    r["loadgen_cores"] = num(r["loadgen_cpu_s"]) / wall
    r["other_cores"] = (num(r["busy_s"]) - num(r["proxy_cpu_s"]) - num(r["sinks_cpu_s"]) - num(r["loadgen_cpu_s"])) / wall
    r["busy_cores"] = num(r["busy_s"]) / wall
    r["proxy_us"] = num(r["proxy_cpu_s"]) * 1e6 / n if ok else None
    r["machine_us"] = num(r["busy_s"]) * 1e6 / n if ok else None
    r["err"] = num(r["errors"])
    r["steal"] = num(r["steal_ticks"])

def med(rs, key):
    v = [r[key] for r in rs if r[key] is not None]
    return statistics.median(v) if v else None

def f(v, d=0):
    return "NA" if v is None else f"{v:.{d}f}"

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "NA"

modes = list(dict.fromkeys(r["mode"] for r in rows))
sel = lambda m, p: [r for r in rows if r["mode"] == m and r["proxy"] == p]
lines = []
w = lines.append
for m in modes:
    w("")
    w(f"## {m}: medians")
    w("")
    w("| proxy | conn/s [min - max] | / nginx | p50 µs | p99 µs | proxy µs/conn [min - max] | / nginx | proxy CPU/s | sinks CPU/s | loadgen CPU/s | other CPU/s | machine µs/conn | errors | steal ticks |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    nr, nc = med(sel(m, "nginx"), "rate"), med(sel(m, "nginx"), "proxy_us")
    for p in proxies:
        rs = sel(m, p)
        if not rs:
            continue
        q = med(rs, "rate")
        qs = [r["rate"] for r in rs if r["rate"] is not None]
        span = f"{f(q)} [{f(min(qs))} - {f(max(qs))}]" if qs else "NA"
        c = med(rs, "proxy_us")
        cs = [r["proxy_us"] for r in rs if r["proxy_us"] is not None]
        cspan = f"{f(c, 1)} [{f(min(cs), 1)} - {f(max(cs), 1)}]" if cs else "NA"
        w(f"| {p} | {span} | {ratio(q, nr)} | {f(med(rs, 'p50'))} | {f(med(rs, 'p99'))} | {cspan} | {ratio(c, nc)} | "
          f"{f(med(rs, 'proxy_cores'), 2)} | {f(med(rs, 'sinks_cores'), 2)} | {f(med(rs, 'loadgen_cores'), 2)} | "
          f"{f(med(rs, 'other_cores'), 2)} | {f(med(rs, 'machine_us'), 1)} | "
          f"{f(sum(r['err'] or 0 for r in rs))} | {f(med(rs, 'steal'))} |")

batons = [p for p in proxies if p != "nginx"]
w("")
w("## baton against nginx (ratios of the medians)")
w("")
w("| proxy | mode | conn/s / nginx's | p99 / nginx's | proxy µs/conn / nginx's |")
w("|---|---|---|---|---|")
for p in batons:
    for m in modes:
        a, n = sel(m, p), sel(m, "nginx")
        w(f"| {p} | {m} | {ratio(med(a, 'rate'), med(n, 'rate'))} | {ratio(med(a, 'p99'), med(n, 'p99'))} | "
          f"{ratio(med(a, 'proxy_us'), med(n, 'proxy_us'))} |")
if "sni" in modes and "plain" in modes:
    w("")
    w("## what SNI routing costs each proxy (sni over plain)")
    w("")
    w("| proxy | conn/s sni / plain | proxy µs/conn sni | plain | sni - plain |")
    w("|---|---|---|---|---|")
    for p in proxies:
        s, pl = sel("sni", p), sel("plain", p)
        cs, cp = med(s, "proxy_us"), med(pl, "proxy_us")
        w(f"| {p} | {ratio(med(s, 'rate'), med(pl, 'rate'))} | {f(cs, 1)} | {f(cp, 1)} | "
          f"{f(cs - cp, 1) if cs is not None and cp is not None else 'NA'} |")

w("")
w("## routing check")
w("")
w("One connection per row, held open while `ss` shows which backend the proxy connected to; the hello is Python's (OpenSSL), "
  "not loadgen's. Expected: the map's value (sni), web (plain); none for a name in another case, where the config does not decide it "
  "(nginx's map lowercases the value it looks up).")
w("")
checks = [l.rstrip("\n").split("\t") for l in open(check)]
keys = list(dict.fromkeys((c[0], c[1]) for c in checks))
got = {(c[0], c[1], c[2]): c[3] for c in checks}
exp = {(c[0], c[1]): c[4] for c in checks}
w("| mode | hello | expected | " + " | ".join(proxies) + " |")
w("|---|---|---|" + "---|" * len(proxies))
for k in keys:
    cells = []
    for p in proxies:
        g = got.get(k + (p,), "-")
        cells.append(g if not exp[k] or g == exp[k] else f"**{g}**")
    w(f"| {k[0]} | {k[1]} | {exp[k] or '-'} | " + " | ".join(cells) + " |")

w("")
w("## every run")
w("")
w("| round | mode | proxy | conn/s | conns | p50 µs | p99 µs | max µs | errors | proxy CPU/s | proxy µs/conn | sinks CPU/s | loadgen CPU/s | other CPU/s | machine busy CPU/s | steal ticks | TIME_WAIT before |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    w(f"| {r['round']} | {r['mode']} | {r['proxy']} | {f(r['rate'])} | {r['conns']} | {f(r['p50'])} | {f(r['p99'])} | "
      f"{r['max_us']} | {r['errors']} | {f(r['proxy_cores'], 2)} | {f(r['proxy_us'], 1)} | {f(r['sinks_cores'], 2)} | "
      f"{f(r['loadgen_cores'], 2)} | {f(r['other_cores'], 2)} | "
      f"{f(r['busy_cores'], 2)} | {r['steal_ticks']} | {r['timewait_before']} |")
errs = [r for r in rows if r["first_error"] not in ("", "-")]
if errs:
    w("")
    w("First error of each run with failed attempts:")
    w("")
    for r in errs:
        w(f"- round {r['round']} {r['mode']} {r['proxy']}: {r['errors']} failed, first: `{r['first_error']}`")
w("")
w("Medians are per proxy and mode over the rounds (µs/conn: the median of each run's figure). "
  "CPU/s: CPU seconds (user+system, all threads) per second of the run, i.e. cores; nginx's is its master and workers summed. "
  "proxy µs/conn: the proxy's CPU per completed connection; machine: all busy CPU of the machine (steal excluded), whatever used it; "
  "other: that minus the proxy, the sinks and loadgen (other processes, interrupt time charged to no process); the two "
  "accountings differ by a few %, so it is near 0, or a little below, when nothing else runs: a run with other CPU/s well "
  "above 0 was disturbed by something else on the machine. "
  "Latency: loadgen's, from the start of the dial to the last byte of the echo. "
  "The machine's cores are shared by loadgen, the sinks and the proxy, so the proxy's CPU per connection is the figure to compare; "
  "a run with more than a few steal ticks was disturbed by the host.")
with open(out, "a") as fh:
    fh.write("\n".join(lines) + "\n")
PY
echo "Raw: ${RAW#"$ROOT/"} (loadgen output in ${DIR#"$ROOT/"}/loadgen.log); failed runs: $FAILED; routing answers not as configured: $ROUTE_BAD." >>"$OUT"
cat "$OUT"
log "saved ${OUT#"$ROOT/"}"
(( FAILED == 0 && ROUTE_BAD == 0 ))
