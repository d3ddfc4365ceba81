package proxy

import (
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// backendDelay is how long the slow backends of these tests hold back:
// far above the 20 ms clusters of least_time's estimates.
const backendDelay = 200 * time.Millisecond

// leastTimeConfig is testConfig over ups balanced by "least_time mode".
func leastTimeConfig(ups []upstreamSpec, mode string, mod func(*config.Server)) *config.Config {
	cfg := testConfig(ups, mod)
	u := cfg.Stream.Upstreams[0]
	u.Method, u.LeastTime = "least_time", mode
	return cfg
}

// TestLeastTimeTCP: two real backends, one slow in the way the mode
// measures. The first connection goes to the first server (no samples:
// a tie, settled by round robin); once its time is known, every later one
// goes to the fast server. The slow session is still live or already
// averaged when the next connection is picked (its time is reported before
// its connection count drops), so the split is exact.
func TestLeastTimeTCP(t *testing.T) {
	slowFirst := func(c net.Conn) { time.Sleep(backendDelay); io.WriteString(c, "slow\n") }
	slowLast := func(c net.Conn) { io.WriteString(c, "slow\n"); time.Sleep(backendDelay) }
	for _, tc := range []struct {
		mode string
		slow func(net.Conn)
	}{
		{"first_byte", slowFirst},
		{"last_byte", slowLast},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			slow := startBackend(t, "slow", tc.slow)
			fast := startBackend(t, "fast", greet("fast"))
			cfg := leastTimeConfig([]upstreamSpec{{addr: slow.addr()}, {addr: fast.addr()}}, tc.mode, nil)
			_, addr, _ := startProxy(t, cfg)
			got := map[string]int{}
			for range 10 {
				c := dial(t, addr)
				b, err := io.ReadAll(c) // to the end: the session's last byte
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				got[strings.TrimSpace(string(b))]++
			}
			if got["slow"] != 1 || got["fast"] != 9 {
				t.Errorf("connections %v, want slow 1, fast 9", got)
			}
		})
	}
}

// TestLeastTimeUDP: the same with UDP sessions of one request and one
// reply, the slow backend late with its reply; $upstream_first_byte_time
// and $upstream_session_time show the times it balanced on.
func TestLeastTimeUDP(t *testing.T) {
	slow := startUDPBackend(t, func(b []byte, from netip.AddrPort) [][]byte {
		time.Sleep(backendDelay)
		return [][]byte{[]byte("slow")}
	})
	fast := startUDPBackend(t, udpTag("fast"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	f := &config.LogFormat{Name: "t", Format: "$upstream_first_byte_time $upstream_session_time"}
	cfg := udpConfig([]upstreamSpec{{addr: slow.addr}, {addr: fast.addr}}, func(s *config.Server) {
		s.ProxyResponses = 1
		s.AccessLogs = []*config.AccessLog{{Path: logPath, Format: f}}
	})
	u := cfg.Stream.Upstreams[0]
	u.Method, u.LeastTime = "least_time", "first_byte"
	_, addr, _ := startProxy(t, cfg)
	got := map[string]int{}
	for range 10 {
		reply := newUDPClient(t, addr).ask("q")
		got[strings.Fields(reply)[0]]++
	}
	if got["slow"] != 1 || got["fast"] != 9 {
		t.Errorf("sessions %v, want slow 1, fast 9", got)
	}
	// The line is written before the reply leaves (the session ends first).
	lines := strings.Split(strings.TrimSpace(readFile(t, logPath)), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d access log lines, want 10:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	f0 := strings.Fields(lines[0])
	if len(f0) != 2 {
		t.Fatalf("first line %q", lines[0])
	}
	for _, v := range f0 {
		if s, err := strconv.ParseFloat(v, 64); err != nil || s < backendDelay.Seconds() || s > 10 {
			t.Errorf("slow session's times %q, want each from %v", lines[0], backendDelay)
		}
	}
}
