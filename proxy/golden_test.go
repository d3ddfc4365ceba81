package proxy

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// nginxCase is one case recorded from a real nginx (../lb/testdata, copied
// from shared/nginx-cases).
type nginxCase struct {
	Kind     string
	Config   string
	Upstream []struct {
		Server  string
		Backend string
	}
	Expected json.RawMessage
}

// TestBalancingMatchesNginxEndToEnd runs each recorded nginx config through
// the real parser and proxy, with every client socket bound to the source
// address nginx saw, and checks that each reaches the backend nginx chose.
// The upstream servers keep their names as written (the hash methods hash
// them) but connect to local greeters.
func TestBalancingMatchesNginxEndToEnd(t *testing.T) {
	var src struct{ Sources []string }
	readJSON(t, "../lb/testdata/sources.json", &src)
	for _, name := range []string{"chash_s3", "hash_s3", "iphash_s3_stream"} {
		t.Run(name, func(t *testing.T) {
			var c nginxCase
			readJSON(t, "../lb/testdata/"+name+".json", &c)
			var expected map[string]string
			if err := json.Unmarshal(c.Expected, &expected); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse(name+".conf", []byte(c.Config))
			if err != nil {
				t.Fatal(err)
			}
			backendOf := map[string]string{}
			for _, u := range c.Upstream {
				backendOf[u.Server] = u.Backend
			}
			greeters := map[string]netip.AddrPort{}
			srv := cfg.Stream.Servers[0]
			srv.Listen[0].Addr = netip.MustParseAddrPort("127.0.0.1:0")
			for _, us := range srv.Upstream.Servers {
				b := backendOf[us.Name]
				if _, ok := greeters[b]; !ok {
					greeters[b] = startBackend(t, b, greet(b)).addr()
				}
				us.Addrs = []netip.AddrPort{greeters[b]}
			}
			_, addr, _ := startProxy(t, cfg)

			wrong := 0
			for _, s := range src.Sources {
				got := dialFrom(t, s, addr)
				if got != expected[s] {
					if wrong++; wrong <= 10 {
						t.Errorf("client %s reached %s, nginx chose %s", s, got, expected[s])
					}
				}
			}
			if wrong > 0 {
				t.Fatalf("%d of %d clients reached another backend than nginx's", wrong, len(src.Sources))
			}
		})
	}
}

// dialFrom connects to addr from the loopback source address src and returns
// the backend's greeting.
func dialFrom(t *testing.T, src, addr string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return strings.TrimSpace(readLine(t, c))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
