package lb

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nginxCase is one recording from a real nginx (testdata/*.json; see
// /work/shared/nginx-cases/README.md).
type nginxCase struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"` // "mapping" or "sequence"
	Balancer string `json:"balancer"`
	Upstream []struct {
		Server  string `json:"server"`
		Backend string `json:"backend"`
		Weight  int    `json:"weight"`
		Down    bool   `json:"down"`
		Backup  bool   `json:"backup"`
	} `json:"upstream"`
	Expected json.RawMessage `json:"expected"`
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// caseMethod maps the case's balancer text ("hash $remote_addr consistent",
// "round robin (default)") to a Method.
func caseMethod(t *testing.T, balancer string) Method {
	t.Helper()
	if strings.HasPrefix(balancer, "round robin") {
		return RoundRobin
	}
	var words []string
	for _, w := range strings.Fields(balancer) {
		if !strings.HasPrefix(w, "$") {
			words = append(words, w)
		}
	}
	m, err := ParseMethod(strings.Join(words, " "))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// clientKey is the key the proxy passes for a client address: the text of
// $remote_addr for hash, the address bytes (4 for IPv4) for ip_hash.
func clientKey(t testing.TB, m Method, addr string) []byte {
	if m != IPHash {
		return []byte(addr)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return a.AsSlice()
}

// TestNginxGolden replays every recorded nginx case in testdata and wants
// nginx's answer for every source address or connection.
func TestNginxGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	var sources struct{ Sources []string }
	readJSON(t, "sources.json", &sources)
	ran := 0
	for _, f := range files {
		var c nginxCase
		readJSON(t, filepath.Base(f), &c)
		if c.Kind == "" {
			continue // sources.json, backends.json
		}
		ran++
		t.Run(c.Name, func(t *testing.T) {
			m := caseMethod(t, c.Balancer)
			peers := make([]Peer, len(c.Upstream))
			down := make([]bool, len(c.Upstream))
			for i, u := range c.Upstream {
				peers[i] = Peer{Name: u.Server, Weight: u.Weight, Backup: u.Backup}
				down[i] = u.Down
			}
			b, err := New(m, peers, Options{})
			if err != nil {
				t.Fatal(err)
			}
			usable := func(i int) bool { return !down[i] }
			pick := func(key []byte) string {
				i, err := b.Pick(key, usable)
				if err != nil {
					return err.Error()
				}
				return c.Upstream[i].Backend
			}
			agree, total := 0, 0
			switch c.Kind {
			case "sequence":
				var want []string
				if err := json.Unmarshal(c.Expected, &want); err != nil {
					t.Fatal(err)
				}
				for n, w := range want {
					total++
					if got := pick(nil); got == w {
						agree++
					} else if total-agree <= 5 {
						t.Errorf("connection %d: got %s, nginx %s", n, got, w)
					}
				}
			case "mapping":
				var want map[string]string
				if err := json.Unmarshal(c.Expected, &want); err != nil {
					t.Fatal(err)
				}
				for _, src := range sources.Sources {
					w, ok := want[src]
					if !ok {
						continue
					}
					total++
					if got := pick(clientKey(t, m, src)); got == w {
						agree++
					} else if total-agree <= 5 {
						t.Errorf("%s: got %s, nginx %s", src, got, w)
					}
				}
				if total != len(want) {
					t.Errorf("%d of %d expected addresses are in sources.json", total, len(want))
				}
			default:
				t.Fatalf("unknown kind %q", c.Kind)
			}
			t.Logf("%s (%v): %d/%d agree with nginx", c.Name, m, agree, total)
			if agree != total {
				t.Errorf("%d of %d disagree with nginx", total-agree, total)
			}
		})
	}
	if ran < 4 {
		t.Errorf("ran %d recorded cases, want at least 4", ran)
	}
}
