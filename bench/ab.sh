#!/usr/bin/env bash
# bench/ab.sh - a quick A/B of proxies running side by side: each behind its
# own port in front of one nginx HTTP backend, wrk runs alternating between
# them, round after round, so drift in the machine's speed (steal, TIME_WAIT
# build-up) falls on all of them alike. Per run it prints the rate, p99, the
# proxy's CPU per request, the whole machine's CPU per request (busy time,
# steal excluded), TCP segments per request and the steal ticks; then the
# medians. The steadier figures on a shared VM are the per-request costs,
# not the rate.
#
#   bash bench/ab.sh [-r ROUNDS] [-d SECONDS] [-m close|keep] ENTRY...
#
# ENTRY is `nginx`, `haproxy` (configured as run.sh does), or
# NAME='COMMAND' with {listen} and {backend} in the command, e.g.
#
#   go build -o /tmp/a ./cmd/baton    # (and /tmp/b from another commit)
#   bash bench/ab.sh -r 4 nginx a='/tmp/a run --listen {listen} --upstream {backend}' \
#                               b='/tmp/b run --listen {listen} --upstream {backend}'
#
# Defaults: 3 rounds of 5 s, new connection per request (-m close). Ports
# 23080 (backend) and 23101 on (proxies) must be free. Logs and configs go to
# bench/.run/ab/. Every process started here is stopped by its PID on exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=3 SECS=5 MODE=close
while getopts "r:d:m:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;; d) SECS=$OPTARG ;; m) MODE=$OPTARG ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(( $# > 0 )) || { sed -n '2,22p' "$0" >&2; exit 2; }
[[ $MODE == close || $MODE == keep ]] || { echo "ab.sh: -m close or keep" >&2; exit 2; }
for tool in nginx wrk nstat awk; do
  command -v "$tool" >/dev/null || { echo "ab.sh: missing $tool (see bench/README.md, Setup)" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

. "$HERE/lib.sh"   # start, cleanup, ports_free, listening
# Refuse to start where another run (or anything) holds the ports: its
# proxies would answer for ours, and its files are under $DIR.
ports_free 23080 $(seq 23101 $((23100 + $#)))
DIR=$HERE/.run/ab
rm -rf "$DIR"; mkdir -p "$DIR/be/www" "$DIR/be/tmp"
BACKEND=127.0.0.1:23080
tree() {    # a PID and its children, comma-separated
  echo "$1$(ps -o pid= --ppid "$1" | awk '{printf ",%s", $1}')"
}

printf 'hello, world\n' >"$DIR/be/www/tiny.txt"
cat >"$DIR/be/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $DIR/be/nginx.pid;
error_log $DIR/be/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $DIR/be/tmp/body;
    proxy_temp_path $DIR/be/tmp/proxy;
    fastcgi_temp_path $DIR/be/tmp/fastcgi;
    uwsgi_temp_path $DIR/be/tmp/uwsgi;
    scgi_temp_path $DIR/be/tmp/scgi;
    server { listen $BACKEND backlog=4096; root $DIR/be/www; location / { } }
}
EOF
start backend nginx -c "$DIR/be/nginx.conf"
listening 23080

NAMES=() PORTS=() TREES=()
port=23100
for entry in "$@"; do
  port=$((port + 1))
  listen=127.0.0.1:$port
  case $entry in
    nginx)
      cat >"$DIR/nginx-$port.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
daemon off;
pid $DIR/nginx-$port.pid;
error_log $DIR/nginx-$port.err warn;
events { worker_connections 20000; }
stream { server { listen $listen backlog=4096; proxy_pass $BACKEND; proxy_connect_timeout 5s; proxy_timeout 1h; } }
EOF
      start nginx nginx -c "$DIR/nginx-$port.conf"; name=nginx ;;
    haproxy)
      command -v haproxy >/dev/null || { echo "ab.sh: missing haproxy" >&2; exit 2; }
      printf 'global\n    nbthread 2\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    backlog 4096\nfrontend fe\n    bind %s\n    default_backend be\nbackend be\n    server s1 %s\n' \
        "$listen" "$BACKEND" >"$DIR/haproxy-$port.cfg"
      start haproxy haproxy -db -f "$DIR/haproxy-$port.cfg"; name=haproxy ;;
    *=*)
      name=${entry%%=*}; cmd=${entry#*=}
      cmd=${cmd//\{listen\}/$listen}; cmd=${cmd//\{backend\}/$BACKEND}
      start "$name" bash -c "exec $cmd"
      ;;
    *) echo "ab.sh: entry '$entry' is not nginx, haproxy or NAME=COMMAND" >&2; exit 2 ;;
  esac
  listening "$port"
  NAMES+=("$name"); PORTS+=("$port"); TREES+=("${PIDS[-1]}")
done
sleep 1   # nginx forks its workers after it listens

cpu_ticks() {   # user+system ticks of a process tree
  local t=0 p
  for p in $(tree "$1" | tr ',' ' '); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$t"
}
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9}' /proc/stat; }   # busy ticks, steal ticks
HZ=$(getconf CLK_TCK)
HDR=(); [[ $MODE == close ]] && HDR=(-H "Connection: close")
declare -A RPS P99 PXUS SYSUS SEGS
echo "mode=$MODE rounds=$ROUNDS secs=$SECS backend=nginx $BACKEND, wrk -t2 -c50"
printf '%-5s %-12s %10s %8s %10s %11s %9s %5s\n' round proxy req/s p99_ms px_us/req sys_us/req segs/req steal
for ((r = 1; r <= ROUNDS; r++)); do
  for i in "${!NAMES[@]}"; do
    n=${NAMES[i]} p=${PORTS[i]}
    c0=$(cpu_ticks "${TREES[i]}"); read -r b0 s0 < <(machine); nstat -n >/dev/null
    out=$(timeout $((SECS + 20)) wrk -t2 -c50 -d"${SECS}s" "${HDR[@]}" --latency "http://127.0.0.1:$p/tiny.txt" || true)
    segs=$(nstat -z TcpOutSegs | awk '/TcpOutSegs/{print $2}')
    c1=$(cpu_ticks "${TREES[i]}"); read -r b1 s1 < <(machine)
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    [[ -n $reqs && $reqs -gt 0 ]] || { echo "ab.sh: wrk got no answers from $n:"; echo "$out"; exit 1; }
    rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}' <<<"$out")
    pxus=$(awk -v c=$((c1 - c0)) -v n="$reqs" -v hz="$HZ" 'BEGIN{printf "%.1f", c/hz*1e6/n}')
    sysus=$(awk -v c=$((b1 - b0)) -v n="$reqs" -v hz="$HZ" 'BEGIN{printf "%.1f", c/hz*1e6/n}')
    spr=$(awk -v s="$segs" -v n="$reqs" 'BEGIN{printf "%.2f", s/n}')
    printf '%-5s %-12s %10s %8s %10s %11s %9s %5s\n' "$r" "$n" "$rps" "$p99" "$pxus" "$sysus" "$spr" $((s1 - s0))
    RPS[$i]+="$rps "; P99[$i]+="$p99 "; PXUS[$i]+="$pxus "; SYSUS[$i]+="$sysus "; SEGS[$i]+="$spr "
    sleep 1
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "medians over $ROUNDS rounds:"
printf '%-12s %10s %8s %10s %11s %9s\n' proxy req/s p99_ms px_us/req sys_us/req segs/req
for i in "${!NAMES[@]}"; do
  printf '%-12s %10s %8s %10s %11s %9s\n' "${NAMES[i]}" "$(median <<<"${RPS[$i]}")" "$(median <<<"${P99[$i]}")" \
    "$(median <<<"${PXUS[$i]}")" "$(median <<<"${SYSUS[$i]}")" "$(median <<<"${SEGS[$i]}")"
done
