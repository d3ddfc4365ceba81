#!/usr/bin/env bash
# bench/versions.sh - print the versions and machine facts a result depends on.
echo "date: $(date -u +%FT%TZ)"
echo "os: Debian $(cat /etc/debian_version 2>/dev/null), kernel $(uname -r)"
echo "cpu: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "ulimit -n: soft $(ulimit -Sn) hard $(ulimit -Hn)"
for s in net.ipv4.ip_local_port_range net.ipv4.tcp_tw_reuse net.core.somaxconn net.ipv4.tcp_congestion_control; do
  echo "sysctl $s = $(sysctl -n "$s" 2>/dev/null | tr '\t' ' ')"
done
echo "nginx: $(nginx -v 2>&1)"
echo "haproxy: $(haproxy -v 2>&1 | head -1)"
echo "iperf3: $(iperf3 --version 2>&1 | head -1)"
echo "wrk: $(wrk -v 2>&1 | head -1)"
echo "go: $(go version 2>&1)"
# The proxy under test, when compare.sh (or the caller) names its binary.
if [[ -n ${BATON_BIN:-} && -x $BATON_BIN ]]; then
  echo "baton: $("$BATON_BIN" version 2>&1 | head -1), binary $BATON_BIN sha256 $(sha256sum "$BATON_BIN" | cut -c1-16)"
  go version -m "$BATON_BIN" 2>/dev/null | awk '$1 == "build" && $2 ~ /^(vcs|-ldflags|-tags|CGO_ENABLED|GOAMD64)/ { print "  baton build " $2 }'
  for v in GOMAXPROCS GOGC GOMEMLIMIT GODEBUG; do [[ -n ${!v:-} ]] && echo "  env $v=${!v}"; done
fi
echo "debian packages:"
dpkg-query -W -f='  ${Package} ${Version}\n' nginx nginx-common libnginx-mod-stream haproxy iperf3 libiperf0 wrk netcat-openbsd socat jq 2>/dev/null
