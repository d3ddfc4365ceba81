#!/usr/bin/env bash
# The walkthrough of examples/README.md, as a script: two backends made with
# socat, baton in front of them with tcp_demo_cluster.conf, and nc as the
# client. A test runs it (cmd/baton TestWalkthrough). Every process it starts
# is stopped by its PID on exit.
#
#   BATON=path/to/baton examples/walkthrough.sh
set -euo pipefail
cd "$(dirname "$0")"
BATON=${BATON:-baton}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { # wait (at most 5s) until something listens on 127.0.0.1:$1
    for _ in $(seq 50); do nc -z 127.0.0.1 "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# 1. Two backends that say who they are, then echo what they get.
#    (seed 002 used `sock -s 127.0.0.1 8001`; sock works the same way.)
socat TCP-LISTEN:8001,bind=127.0.0.1,reuseaddr,fork SYSTEM:'echo backend-8001; cat' & pids+=($!)
socat TCP-LISTEN:8002,bind=127.0.0.1,reuseaddr,fork SYSTEM:'echo backend-8002; cat' & pids+=($!)
wait_port 8001; wait_port 8002

# 2. Check the config as nginx -t would, then run baton in the foreground.
"$BATON" check -c tcp_demo_cluster.conf
log=$(mktemp)
"$BATON" run -c tcp_demo_cluster.conf 2>"$log" & pids+=($!)
for _ in $(seq 50); do grep -q "ready on" "$log" && break; sleep 0.1; done
grep -q "ready on" "$log" || { cat "$log" >&2; exit 1; }

# 3. Connect twice: round robin sends one to each backend, which greets and
#    echoes. nc -N ends its side when its input ends; baton passes that on
#    (proxy_half_close on), the backend's cat ends, and so does the session.
echo "hello through baton" | nc -N 127.0.0.1 7000
echo "hello again" | nc -N 127.0.0.1 7000

# 4. Stop a backend: baton skips it (next upstream), and the client notices nothing.
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
echo "one backend down" | nc -N 127.0.0.1 7000
echo "still fine" | nc -N 127.0.0.1 7000

echo "--- baton's log:"
cat "$log"; rm -f "$log"
