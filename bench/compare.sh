#!/usr/bin/env bash
# bench/compare.sh - baton side by side with nginx (stream), HAProxy (tcp) and a
# direct connection: builds baton, runs bench/matrix.sh over all four,
# interleaved, REPS rounds, and prints the summary (medians, ratios to direct,
# the issue-7 targets against the better of nginx and HAProxy).
#
#   bash bench/compare.sh                 # REPS=3: about 14 minutes on 2 cores
#   REPS=5 bash bench/compare.sh          # more rounds, steadier medians
#   REPS=1 DURATION=5 bash bench/compare.sh   # smoke test (about 3-4 minutes)
#
# Every other knob of run.sh / matrix.sh (DURATION, SCENARIOS, IDLE_CONNS,
# PROXY_CPUS, LOAD_CPUS, OUT, PAUSE, QUIET_MAX, ...) passes through; see
# bench/README.md. BATON_BIN=/path/to/baton uses that binary instead of
# building ./cmd/baton; BATON_ARGS adds flags to `baton run`.
# Results: bench/results/<UTC timestamp>/ (summary.md). Exit status is
# matrix.sh's: non-zero if any run reported a failed measurement.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

export REPS=${REPS:-3}
export PROXIES=${PROXIES:-"direct nginx haproxy custom"}
export CUSTOM_LABEL=${CUSTOM_LABEL:-baton}
export OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}

missing=
for tool in go python3 iperf3 wrk ss jq awk taskset timeout nginx haproxy; do
  command -v "$tool" >/dev/null || missing+=" $tool"
done
if [[ -n $missing ]]; then
  echo "compare.sh: missing:$missing. On Debian 12:" >&2
  echo "  apt-get install -y nginx libnginx-mod-stream haproxy iperf3 wrk netcat-openbsd socat jq procps iproute2" >&2
  exit 2
fi

if [[ -z ${BATON_BIN:-} ]]; then
  BATON_BIN=$HERE/.run/baton
  mkdir -p "$HERE/.run"
  echo "[compare] building baton: go build -o ${BATON_BIN#"$ROOT/"} ./cmd/baton" >&2
  (cd "$ROOT" && timeout 600 go build -o "$BATON_BIN" ./cmd/baton)
fi
[[ -x $BATON_BIN ]] || { echo "compare.sh: BATON_BIN=$BATON_BIN is not executable" >&2; exit 2; }
export BATON_BIN   # versions.sh records its version and build settings

# Quick mode, matched to the nginx/HAProxy configs run.sh writes: listen
# backlog 4096 (quick mode's default), 5 s connect timeout, 1 h idle timeout.
export CUSTOM_CMD=${CUSTOM_CMD:-"$BATON_BIN run --listen {listen} --upstream {backend} --connect-timeout 5s --timeout 1h ${BATON_ARGS:-}"}

echo "[compare] REPS=$REPS PROXIES=\"$PROXIES\" $CUSTOM_LABEL: $CUSTOM_CMD" >&2
echo "[compare] results will be in ${OUT#"$ROOT/"}/" >&2
rc=0
"$HERE/matrix.sh" || rc=$?
echo >&2
echo "[compare] summary: ${OUT#"$ROOT/"}/summary.md (raw runs: ${OUT#"$ROOT/"}/<label>-rep<N>.txt, logs .log, versions.txt)" >&2
(( rc == 0 )) || echo "[compare] some runs reported failed measurements (NA in the summary); see the .log files" >&2
exit "$rc"
