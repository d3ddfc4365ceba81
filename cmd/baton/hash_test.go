package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

const chashConf = `stream {
    upstream backend {
        hash $remote_addr consistent;
%s    }
    server { listen 127.0.0.1:18000; proxy_pass backend; }
}
`

func chashConfig(t *testing.T, dir, name string, servers ...string) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "        server %s;\n", s)
	}
	return writeFile(t, dir, name, fmt.Sprintf(chashConf, b.String()))
}

func runHash(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := batonCmd(append([]string{"hash"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("baton hash %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// The CLI maps every recorded client address exactly as nginx did.
func TestHashMatchesNginx(t *testing.T) {
	var src struct{ Sources []string }
	var c struct {
		Upstream []struct{ Server, Backend string }
		Expected map[string]string
	}
	for path, v := range map[string]any{"../../lb/testdata/sources.json": &src, "../../lb/testdata/chash_s3.json": &c} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	var servers []string
	backend := map[string]string{}
	for _, u := range c.Upstream {
		servers = append(servers, u.Server)
		backend[u.Server] = u.Backend
	}
	conf := chashConfig(t, dir, "a.conf", servers...)
	out := runHash(t, strings.Join(src.Sources, "\n")+"\n", "-c", conf)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(src.Sources) {
		t.Fatalf("%d lines for %d keys", len(lines), len(src.Sources))
	}
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) != 2 || f[0] != src.Sources[i] {
			t.Fatalf("line %d: %q", i, line)
		}
		if got, want := backend[f[1]], c.Expected[f[0]]; got != want {
			t.Fatalf("key %s lands on %s (%s), nginx chose %s", f[0], f[1], got, want)
		}
	}
}

// --against reports exactly the keys that move: adding a server moves keys
// only to it; removing one moves only its keys.
func TestHashAgainst(t *testing.T) {
	dir := t.TempDir()
	three := chashConfig(t, dir, "three.conf", "127.0.0.1:19001", "127.0.0.1:19002", "127.0.0.1:19003")
	four := chashConfig(t, dir, "four.conf", "127.0.0.1:19001", "127.0.0.1:19002", "127.0.0.1:19003", "127.0.0.1:19004")
	var keys []string
	for i := 0; i < 2000; i++ {
		keys = append(keys, fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256))
	}
	in := strings.Join(keys, "\n")

	out := runHash(t, in, "-c", three, "--against", four)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	summary := lines[len(lines)-1]
	var moved, total int
	if _, err := fmt.Sscanf(summary, "# %d of %d keys move", &moved, &total); err != nil || total != len(keys) {
		t.Fatalf("summary %q", summary)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasSuffix(l, "-> 127.0.0.1:19004") {
			t.Fatalf("adding a server moved a key elsewhere: %q", l)
		}
	}
	if moved != len(lines)-1 || moved < total/8 || moved > total*3/8 {
		t.Fatalf("adding 1 server to 3 moved %d of %d keys, want about a quarter", moved, total)
	}

	out = runHash(t, in, "-c", four, "--against", three)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "#") && !strings.Contains(l, " 127.0.0.1:19004 -> ") {
			t.Fatalf("removing a server moved a key it did not hold: %q", l)
		}
	}
}

func TestHashRefusesKeylessMethod(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "rr.conf", "stream { upstream u { server 127.0.0.1:1; } server { listen 127.0.0.1:18000; proxy_pass u; } }\n")
	cmd := batonCmd("hash", "-c", conf)
	cmd.Stdin = strings.NewReader("127.0.0.1\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "do not depend on a key") {
		t.Fatalf("want a refusal for round robin, got %v:\n%s", err, out)
	}
}

// An upstream resolved at run time has no addresses until it runs: baton
// hash says so at once, and how to plan with it, instead of failing on the
// first key (or silently, with no key).
func TestHashRefusesResolvedUpstream(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "r.conf", "stream { resolver 127.0.0.1; upstream u { zone z; hash $remote_addr consistent; server db.test:5432 resolve; } server { listen 127.0.0.1:18000; proxy_pass u; } }\n")
	cmd := batonCmd("hash", "-c", conf)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "resolved at run time") {
		t.Fatalf("want a refusal for a resolved upstream, got %v:\n%s", err, out)
	}
}
