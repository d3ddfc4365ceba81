# bench/lib.sh - what ab.sh, tls.sh and tls-handoff.sh share: starting processes into
# $DIR/NAME.log, stopping them all by PID on exit, refusing ports in use,
# and waiting for a port.
# Source it before starting anything (DIR set by the time start runs); it
# sets PIDS and the EXIT/INT/TERM traps.
PIDS=()
start() {   # start NAME CMD...
  local name=$1; shift
  "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ports_free() {   # ports_free PORT...: refuse to start (exit 2) if anything listens on one
  local p taken=()
  for p in "$@"; do
    ss -ltn "sport = :$p" | grep -q LISTEN && taken+=("$p")
  done
  if ((${#taken[@]})); then
    echo "${0##*/}: port(s) ${taken[*]} already in use (another run?); not starting" >&2
    exit 2
  fi
}
listening() {   # listening PORT: wait up to 10 s for a listener from the last process started
  local i
  for i in $(seq 1 100); do
    ss -ltn "sport = :$1" | grep -q LISTEN && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "${0##*/}: nothing listens on port $1 (see $DIR/*.log)" >&2; exit 1
}
