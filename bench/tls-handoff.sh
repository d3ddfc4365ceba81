#!/usr/bin/env bash
# bench/tls-handoff.sh - how long `baton upgrade` takes to hand N idle TLS
# sessions (terminated by baton, in front of a loadgen echo sink) to the new
# process, and whether every one of them still echoes afterwards:
#
#   bash bench/tls-handoff.sh [-n SESSIONS] [-u UPGRADES]
#
# loadgen `idle -tls` opens the sessions (one echo each) and holds them;
# then each upgrade runs `baton upgrade`, and one more echo on every session
# checks it (CHECK ok=N failed=M). Printed per upgrade: the old process's
# "took over in" line, the command's wall time, the check, and baton's RSS
# and open descriptors before the first. Defaults: 4,000 sessions (a
# session holds two descriptors; the open-file cap is usually 20,000), 3
# upgrades. Ports 23801 (sink) and 23811 (baton) must be free. Everything
# goes to bench/.run/tls-handoff/; every process is stopped by its PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=4000 UPGRADES=3
while getopts "n:u:" o; do
  case $o in
    n) N=$OPTARG ;; u) UPGRADES=$OPTARG ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
  esac
done
for tool in openssl ss awk go; do
  command -v "$tool" >/dev/null || { echo "tls-handoff.sh: missing $tool" >&2; exit 2; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DIR=$HERE/.run/tls-handoff
rm -rf "$DIR"; mkdir -p "$DIR"
. "$HERE/lib.sh"   # start, cleanup, ports_free, listening
ports_free 23801 23811
stop_upgraded() {  # the process an upgrade started is not in PIDS: stop it by its PID file
  [[ -s $DIR/baton.pid ]] && kill -TERM "$(cat "$DIR/baton.pid")" 2>/dev/null || true
  cleanup
}
trap stop_upgraded EXIT

(cd "$ROOT" && go build -o "$DIR/loadgen" ./bench/loadgen && go build -o "$DIR/baton" ./cmd/baton)
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench.test/ \
  -keyout "$DIR/ec.key" -out "$DIR/ec.crt" 2>/dev/null
cat >"$DIR/baton.conf" <<EOF
pid $DIR/baton.pid;
error_log $DIR/error.log notice;
baton { control_socket $DIR/control.sock; }
events { worker_connections 20000; }
stream {
    server { listen 127.0.0.1:23811 ssl; ssl_certificate $DIR/ec.crt; ssl_certificate_key $DIR/ec.key; proxy_pass 127.0.0.1:23801; }
}
EOF
start sink "$DIR/loadgen" sink -listen 127.0.0.1:23801 -mode echo -max-conns 50000 -idle 30m -max-life 2h
listening 23801
start baton "$DIR/baton" run -c "$DIR/baton.conf"
listening 23811

coproc IDLEC { "$DIR/loadgen" idle -addr 127.0.0.1:23811 -tls -conns "$N" -hold 30m; }
read -r line <&"${IDLEC[0]}"
echo "$line"
[[ $line == "READY $N" ]] || { echo "tls-handoff.sh: loadgen did not hold $N sessions" >&2; exit 1; }
pid=$(cat "$DIR/baton.pid")
echo "baton (pid $pid): RSS $(awk '/VmRSS/{print $2, $3}' "/proc/$pid/status"), $(ls "/proc/$pid/fd" | wc -l) descriptors"
for u in $(seq 1 "$UPGRADES"); do
  t0=$(date +%s.%N)
  "$DIR/baton" upgrade -c "$DIR/baton.conf" >"$DIR/upgrade-$u.out" 2>&1 || { cat "$DIR/upgrade-$u.out"; exit 1; }
  t1=$(date +%s.%N)
  echo check >&"${IDLEC[1]}"
  read -r check <&"${IDLEC[0]}"
  took=$(grep -o "took over in [0-9.a-zµ]*" "$DIR/error.log" | tail -1)
  echo "upgrade $u: $took; wall $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s", b - a }'); $(tail -1 "$DIR/upgrade-$u.out"); $check"
done
exec {IDLEC[1]}>&-
wait "$IDLEC_PID" 2>/dev/null || true
