package lookup

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonproxy/baton/config"
)

// golden is a testdata/nginx file: a block, keys, and nginx's answers.
type golden struct {
	Block string
	Ret   string
	Keys  []string
	Nginx []string
}

// TestNginxGolden looks up, for every file of testdata/nginx, each key as
// nginx 1.22.1 did and expects its answer (see testdata/nginx/README.md).
func TestNginxGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/nginx/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatal(err)
			}
			if len(g.Keys) != len(g.Nginx) || len(g.Keys) == 0 {
				t.Fatalf("%d keys, %d answers", len(g.Keys), len(g.Nginx))
			}
			ev := newEvaluator(t, g.Block)
			ret := strings.Trim(g.Ret, `"`)
			for i, k := range g.Keys {
				if got := ev.session(k).expand(ret); got != g.Nginx[i] {
					t.Errorf("key %q: got %q, nginx %q", k, got, g.Nginx[i])
				}
			}
		})
	}
}

// evaluator stands in for proxy: it evaluates templates over the lookups of
// a stream block, with $k as the key and nginx's session captures.
type evaluator struct {
	maps   map[string]*config.Map
	lmaps  map[string]*Map
	geos   map[string]*config.Geo
	lgeos  map[string]*Geo
	splits map[string]*config.SplitClients
	lsplit map[string]*Split
}

func newEvaluator(t *testing.T, block string) *evaluator {
	t.Helper()
	c := parse(t, block)
	ev := &evaluator{maps: map[string]*config.Map{}, lmaps: map[string]*Map{}, geos: map[string]*config.Geo{},
		lgeos: map[string]*Geo{}, splits: map[string]*config.SplitClients{}, lsplit: map[string]*Split{}}
	for _, m := range c.Stream.Maps {
		ev.maps[m.Var], ev.lmaps[m.Var] = m, NewMap(m)
	}
	for _, g := range c.Stream.Geos {
		ev.geos[g.Var], ev.lgeos[g.Var] = g, NewGeo(g)
	}
	for _, s := range c.Stream.SplitClients {
		ev.splits[s.Var], ev.lsplit[s.Var] = s, NewSplit(s)
	}
	return ev
}

// parse loads a stream block, with a server so that the config is whole.
func parse(t testing.TB, block string) *config.Config {
	t.Helper()
	c, err := config.Parse("t.conf", []byte("stream {\n"+block+"\nserver { listen 9; proxy_pass 10.0.0.1:9; }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type session struct {
	*evaluator
	key   string
	caps  []int  // of the last regex that matched, as nginx's s->captures
	capd  string // what caps index
	named map[string]string
}

func (ev *evaluator) session(key string) *session {
	return &session{evaluator: ev, key: key, named: map[string]string{}}
}

func (s *session) variable(name string) string {
	switch {
	case len(name) == 1 && name[0] >= '1' && name[0] <= '9':
		n := int(name[0] - '0')
		if 2*n+1 < len(s.caps) && s.caps[2*n] >= 0 {
			return s.capd[s.caps[2*n]:s.caps[2*n+1]]
		}
		return ""
	case name == "k":
		return s.key
	case name == "dollar":
		return "$"
	}
	if v, ok := s.named[name]; ok {
		return v
	}
	if m, ok := s.maps[name]; ok {
		src := s.expand(m.Source)
		e, caps := s.lmaps[name].Find([]byte(src), nil)
		var value string
		switch {
		case e >= 0:
			value = m.Entries[e].Value
		case m.Default != nil:
			value = m.Default.Value
		}
		if len(caps) > 0 {
			s.caps, s.capd = caps, src
			for i, n := range m.Entries[e].Regex.SubexpNames() {
				if n != "" && caps[2*i] >= 0 {
					s.named[n] = src[caps[2*i]:caps[2*i+1]]
				}
			}
		}
		return s.expand(value)
	}
	if g, ok := s.geos[name]; ok {
		return s.lgeos[name].FindValue([]byte(s.variable(g.Source)))
	}
	if sc, ok := s.splits[name]; ok {
		return s.lsplit[name].Find([]byte(s.expand(sc.Source)))
	}
	return "?" + name
}

// expand evaluates a template whose syntax config has checked.
func (s *session) expand(t string) string {
	var b strings.Builder
	for i := 0; i < len(t); {
		if t[i] != '$' {
			b.WriteByte(t[i])
			i++
			continue
		}
		i++
		if t[i] >= '1' && t[i] <= '9' {
			b.WriteString(s.variable(t[i : i+1]))
			i++
			continue
		}
		brace := t[i] == '{'
		if brace {
			i++
		}
		j := i
		for j < len(t) && (t[j] == '_' || t[j] >= 'a' && t[j] <= 'z' || t[j] >= 'A' && t[j] <= 'Z' || t[j] >= '0' && t[j] <= '9') {
			j++
		}
		b.WriteString(s.variable(t[i:j]))
		i = j
		if brace {
			i++
		}
	}
	return b.String()
}
