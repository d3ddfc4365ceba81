#!/usr/bin/env bash
# bench/tls.sh - TLS termination side by side: baton, nginx and HAProxy each
# terminate TLS in front of the same loadgen sinks, and loadgen's Go TLS
# client measures, round after round, alternating between them:
#
#   full   full handshakes per second (connrate -tls: dial, handshake, 1 byte
#          echoed, close), with an ECDSA P-256 and an RSA 2048 certificate,
#          and the proxy's CPU per handshake (all its processes and threads,
#          user + system, from /proc): steadier than the rate on a shared
#          machine, where the load generator takes most of the CPU
#   resume resumed handshakes per second (connrate -tls -tls-resume, ECDSA),
#          and CPU per handshake
#   bulk1  TLS in, plain out, 1 stream (throughput -tls -dir up, Gbit/s)
#   bulk8  the same with 8 streams
#   idle   memory per idle TLS connection: the proxy's RSS (all its
#          processes) with 2,000 idle TLS connections, less its RSS before
#
#   bash bench/tls.sh [-r ROUNDS] [-d SECONDS] [-n IDLE] [ENTRY...]
#
# ENTRY is `baton` (bench/.run/baton, built from this checkout), `nginx`,
# `haproxy`, or NAME=PATH for another baton binary (e.g. old=/tmp/baton-old).
# Default: baton nginx haproxy, 3 rounds of 4 s, 2,000 idle connections.
# nginx runs 2 workers, HAProxy 2 threads, baton its default loops (one per
# core). TLS 1.3 with X25519: loadgen offers nothing else unless -tls-pq,
# since Debian's OpenSSL 3.0 has no ML-KEM and the proxies should do the
# same work. Every proxy's defaults otherwise. Ports 23701-23703 (sinks)
# and 23711 on (proxies, three each) must be free. Everything goes to
# bench/.run/tls/; every process started here is stopped by its PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=3 SECS=4 IDLE=2000
while getopts "r:d:n:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;; d) SECS=$OPTARG ;; n) IDLE=$OPTARG ;;
    *) sed -n '2,25p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(( $# > 0 )) || set -- baton nginx haproxy
for tool in openssl ss awk go; do
  command -v "$tool" >/dev/null || { echo "tls.sh: missing $tool" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DIR=$HERE/.run/tls
rm -rf "$DIR"; mkdir -p "$DIR"
. "$HERE/lib.sh"   # start, cleanup, ports_free, listening
ports_free 23701 23702 23703 $(seq 23711 $((23710 + 3 * $#)))
rss() {   # RSS in KB of a process and its children
  local t=0 p
  for p in $1 $(ps -o pid= --ppid "$1"); do
    [[ -r /proc/$p/status ]] && t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status")))
  done
  echo "$t"
}

(cd "$ROOT" && go build -o "$DIR/loadgen" ./bench/loadgen && go build -o "$DIR/baton" ./cmd/baton)
LG=$DIR/loadgen
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench.test/ \
  -keyout "$DIR/ec.key" -out "$DIR/ec.crt" 2>/dev/null
openssl req -x509 -new -newkey rsa:2048 -nodes -subj /CN=bench.test/ \
  -keyout "$DIR/rsa.key" -out "$DIR/rsa.crt" 2>/dev/null
cat "$DIR/ec.crt" "$DIR/ec.key" >"$DIR/ec.pem"
cat "$DIR/rsa.crt" "$DIR/rsa.key" >"$DIR/rsa.pem"
start sink-echo "$LG" sink -listen 127.0.0.1:23701 -mode echo -max-conns 20000 -idle 10m -max-life 2h
start sink-discard "$LG" sink -listen 127.0.0.1:23702 -mode discard -max-conns 20000 -idle 10m -max-life 2h
listening 23701; listening 23702

NAMES=() BASES=() ROOTPIDS=()
base=23711
for entry in "$@"; do
  ec=127.0.0.1:$base rsa=127.0.0.1:$((base + 1)) bulk=127.0.0.1:$((base + 2))
  case $entry in
    nginx)
      command -v nginx >/dev/null || { echo "tls.sh: missing nginx" >&2; exit 2; }
      cat >"$DIR/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx.err warn;
events { worker_connections 20000; }
stream {
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    server { listen $ec ssl backlog=4096; ssl_certificate $DIR/ec.crt; ssl_certificate_key $DIR/ec.key; proxy_pass 127.0.0.1:23701; }
    server { listen $rsa ssl backlog=4096; ssl_certificate $DIR/rsa.crt; ssl_certificate_key $DIR/rsa.key; proxy_pass 127.0.0.1:23701; }
    server { listen $bulk ssl backlog=4096; ssl_certificate $DIR/ec.crt; ssl_certificate_key $DIR/ec.key; proxy_pass 127.0.0.1:23702; }
}
EOF
      start nginx nginx -c "$DIR/nginx.conf"; name=nginx ;;
    haproxy)
      command -v haproxy >/dev/null || { echo "tls.sh: missing haproxy" >&2; exit 2; }
      cat >"$DIR/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend ec
    bind $ec ssl crt $DIR/ec.pem
    default_backend echo
frontend rsa
    bind $rsa ssl crt $DIR/rsa.pem
    default_backend echo
frontend bulk
    bind $bulk ssl crt $DIR/ec.pem
    default_backend discard
backend echo
    server e 127.0.0.1:23701
backend discard
    server d 127.0.0.1:23702
EOF
      start haproxy haproxy -db -f "$DIR/haproxy.cfg"; name=haproxy ;;
    baton|*=*)
      name=baton bin=$DIR/baton
      [[ $entry == *=* ]] && name=${entry%%=*} bin=${entry#*=}
      cat >"$DIR/$name.conf" <<EOF
events { worker_connections 20000; }
stream {
    ssl_session_cache shared:SSL:10m;
    server { listen $ec ssl; ssl_certificate $DIR/ec.crt; ssl_certificate_key $DIR/ec.key; proxy_pass 127.0.0.1:23701; }
    server { listen $rsa ssl; ssl_certificate $DIR/rsa.crt; ssl_certificate_key $DIR/rsa.key; proxy_pass 127.0.0.1:23701; }
    server { listen $bulk ssl; ssl_certificate $DIR/ec.crt; ssl_certificate_key $DIR/ec.key; proxy_pass 127.0.0.1:23702; }
}
EOF
      start "$name" "$bin" run -c "$DIR/$name.conf" ;;
    *) echo "tls.sh: entry '$entry' is not baton, nginx, haproxy or NAME=PATH" >&2; exit 2 ;;
  esac
  listening "$base"; listening $((base + 1)); listening $((base + 2))
  NAMES+=("$name"); BASES+=("$base"); ROOTPIDS+=("${PIDS[-1]}")
  base=$((base + 3))
done
sleep 1

{
  echo "# TLS termination, $(date -u +%FT%TZ), $(nproc) cores"
  echo "versions: $("$DIR/baton" version 2>&1 | head -1); $(nginx -v 2>&1 | head -1); $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3); $(openssl version); $(go version | cut -d' ' -f3)"
} | tee "$DIR/summary.md"
res() { grep -o "$1=[0-9.]*" | cut -d= -f2; }
ticks() {   # CPU clock ticks (user + system) of a process and its children
  local t=0 p
  for p in $1 $(ps -o pid= --ppid "$1"); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
# connrate NAME ROOTPID KEY ARGS...: runs loadgen connrate, adds the rate to
# R[NAME,KEY] and the proxy's CPU microseconds per connection to R[NAME,KEY_cpu].
connrate() {
  local n=$1 pid=$2 k=$3; shift 3
  local t0 out t1 rate conns
  t0=$(ticks "$pid")
  out=$("$LG" connrate "$@")
  t1=$(ticks "$pid")
  rate=$(echo "$out" | res conns_per_sec)
  conns=$(echo "$out" | grep -o " conns=[0-9]*" | cut -d= -f2)
  R[$n,$k]+=" $rate"
  R[$n,${k}_cpu]+=" $(awk -v d=$((t1 - t0)) -v c="${conns:-0}" -v hz="$HZ" 'BEGIN { if (c > 0) printf "%.0f", d * 1e6 / hz / c; else print "NA" }')"
}
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]} b=${BASES[$i]}
    pid=${ROOTPIDS[$i]}
    connrate "$n" "$pid" full_ec -addr 127.0.0.1:$b -tls -workers 8 -duration "${SECS}s"
    connrate "$n" "$pid" full_rsa -addr 127.0.0.1:$((b + 1)) -tls -workers 8 -duration "${SECS}s"
    connrate "$n" "$pid" resume -addr 127.0.0.1:$b -tls -tls-resume -workers 8 -duration "${SECS}s"
    R[$n,bulk1]+=" $("$LG" throughput -addr 127.0.0.1:$((b + 2)) -tls -conns 1 -duration "${SECS}s" | res throughput_gbps)"
    R[$n,bulk8]+=" $("$LG" throughput -addr 127.0.0.1:$((b + 2)) -tls -conns 8 -duration "${SECS}s" | res throughput_gbps)"
    echo "round $r $n: full_ec ${R[$n,full_ec]##* } (${R[$n,full_ec_cpu]##* } us) full_rsa ${R[$n,full_rsa]##* } (${R[$n,full_rsa_cpu]##* } us) resume ${R[$n,resume]##* } (${R[$n,resume_cpu]##* } us) bulk1 ${R[$n,bulk1]##* } bulk8 ${R[$n,bulk8]##* }" | tee -a "$DIR/summary.md"
  done
done
for i in "${!NAMES[@]}"; do
  n=${NAMES[$i]} b=${BASES[$i]} pid=${ROOTPIDS[$i]}
  before=$(rss "$pid")
  coproc IDLEC { "$LG" idle -addr 127.0.0.1:$b -tls -conns "$IDLE"; }
  read -r line <&"${IDLEC[0]}"
  sleep 1
  after=$(rss "$pid")
  R[$n,idle]=$(( (after - before) * 1024 / IDLE ))
  exec {IDLEC[1]}>&-
  wait "$IDLEC_PID" 2>/dev/null || true
  echo "$n: $line, RSS $before -> $after KB: ${R[$n,idle]} B per idle TLS connection"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
  echo
  echo "| medians of $ROUNDS rounds | $(printf '%s | ' "${NAMES[@]}")"
  echo "|---|$(printf -- '---|%.0s' "${NAMES[@]}")"
  for k in full_ec full_rsa resume full_ec_cpu full_rsa_cpu resume_cpu bulk1 bulk8; do
    row="| $k |"
    for n in "${NAMES[@]}"; do row+=" $(echo "${R[$n,$k]}" | median) |"; done
    echo "$row"
  done
  row="| idle B/conn |"
  for n in "${NAMES[@]}"; do row+=" ${R[$n,idle]} |"; done
  echo "$row"
  echo
  echo "full/resume: handshakes per second (8 workers); _cpu: the proxy's CPU microseconds per handshake; bulk: Gbit/s TLS in; idle: bytes of RSS per idle TLS connection ($IDLE)."
} | tee -a "$DIR/summary.md"
