package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/batonproxy/baton/config"
)

func TestCheckAcceptsEveryExample(t *testing.T) {
	confs, err := filepath.Glob("../../examples/*.conf")
	if err != nil || len(confs) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, conf := range confs {
		t.Run(filepath.Base(conf), func(t *testing.T) {
			out, err := batonCmd("check", "-c", conf).CombinedOutput()
			if err != nil {
				t.Fatalf("baton check -c %s: %v\n%s", conf, err, out)
			}
			if !strings.Contains(string(out), "test is successful") {
				t.Fatalf("no success line:\n%s", out)
			}
		})
	}
}

func TestCheckErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		conf string
		line int
		want string // a part of the error
	}{
		{"unknown directive", "stream {\n  server {\n    listen 7000;\n    proxy_pass 127.0.0.1:1;\n    proxy_pasz x;\n  }\n}\n", 5, `unknown directive "proxy_pasz"`},
		{"bad port", "stream {\n  server {\n    listen 127.0.0.1:99999;\n    proxy_pass 127.0.0.1:1;\n  }\n}\n", 3, `"listen"`},
		{"missing semicolon", "stream {\n  server {\n    listen 7000\n  }\n}\n", 4, `unexpected "}"`},
		{"unclosed block", "stream {\n  server {\n    listen 7000;\n", 4, "unexpected end of file"},
		{"no port in upstream", "stream {\n  server {\n    listen 7000;\n    proxy_pass nowhere;\n  }\n}\n", 4, `no port in upstream "nowhere"`},
		{"not supported yet", "stream {\n  server {\n    listen 7000;\n    ssl_early_data on;\n    proxy_pass 127.0.0.1:1;\n  }\n}\n", 4, `"ssl_early_data" directive is not supported yet`},
		{"unknown log variable", "stream {\n  log_format f '$remote_addr $nonsense';\n  server {\n    listen 7000;\n    proxy_pass 127.0.0.1:1;\n    access_log /dev/null f;\n  }\n}\n", 2, `unknown "nonsense" variable`},
		{"backup after hash", "stream {\n  upstream u {\n    hash $remote_addr;\n    server 127.0.0.1:1;\n    server 127.0.0.1:2 backup;\n  }\n  server {\n    listen 7000;\n    proxy_pass u;\n  }\n}\n", 5, `balancing method does not support parameter "backup"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := writeFile(t, dir, "bad.conf", tc.conf)
			out, err := batonCmd("check", "-c", conf).CombinedOutput()
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("baton check accepted a bad config (err %v):\n%s", err, out)
			}
			re := regexp.MustCompile(`(?m)^baton: \[emerg\] .*` + regexp.QuoteMeta(tc.want) + `.* in ` +
				regexp.QuoteMeta(conf) + `:` + strconv.Itoa(tc.line) + `$`)
			if !re.Match(out) {
				t.Fatalf("want an [emerg] line with %q naming %s:%d, got:\n%s", tc.want, conf, tc.line, out)
			}
		})
	}
}

// TestWalkthrough runs examples/walkthrough.sh, the nc/socat walkthrough of
// examples/README.md, against this baton.
func TestWalkthrough(t *testing.T) {
	for _, tool := range []string{"nc", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing; .ci/run installs it", tool)
			}
			t.Skipf("%s is not installed (apt-get install netcat-openbsd socat)", tool)
		}
	}
	cmd := exec.Command("bash", "../../examples/walkthrough.sh")
	cmd.Env = append(os.Environ(), "BATON_TEST_MAIN=1", "BATON="+os.Args[0])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	// Round robin over both backends, each greeting and echoing; then, with
	// 8002 stopped, both connections still served by 8001.
	want := []string{
		"backend-8001", "hello through baton",
		"backend-8002", "hello again",
		"backend-8001", "one backend down",
		"backend-8001", "still fine",
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, w := range want {
			if line == w {
				got = append(got, line)
				break
			}
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("walkthrough output lines %q, want %q\nfull output:\n%s", got, want, out)
	}
}

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		name, conf, want string
	}{
		{"no stream", "events { worker_connections 10; }\n", "no stream {} block: nothing to serve\n"},
		{"methods and flags", `
stream {
    upstream db {
        hash $remote_addr consistent;
        server 127.0.0.1:5432;
        server 127.0.0.2:5432 down;
    }
    upstream web {
        server 127.0.0.1:80;
        server 127.0.0.2:80 backup;
    }
    upstream h { hash $remote_addr; server 127.0.0.1:1; }
    upstream ip { ip_hash; server 127.0.0.1:2; }
    server { listen 127.0.0.1:7000; listen 127.0.0.1:7001; proxy_pass db; }
    server { listen 127.0.0.1:7002; proxy_pass web; }
    server { listen 127.0.0.1:7003; proxy_pass h; }
    server { listen 127.0.0.1:7004; proxy_pass ip; }
    server { listen 127.0.0.1:7005; proxy_pass 127.0.0.1:9000; }
    server { listen 127.0.0.1:7006; proxy_pass 127.0.0.1:9000; }
}
`, `1 files, 6 servers, 4 upstreams
  listen 127.0.0.1:7000 -> db [hash $remote_addr consistent] [127.0.0.1:5432 127.0.0.2:5432 (down)]
  listen 127.0.0.1:7001 -> db [hash $remote_addr consistent] [127.0.0.1:5432 127.0.0.2:5432 (down)]
  listen 127.0.0.1:7002 -> web [round_robin] [127.0.0.1:80 127.0.0.2:80 (backup)]
  listen 127.0.0.1:7003 -> h [hash $remote_addr] [127.0.0.1:1]
  listen 127.0.0.1:7004 -> ip [ip_hash] [127.0.0.1:2]
  listen 127.0.0.1:7005 -> 127.0.0.1:9000 [round_robin] [127.0.0.1:9000]
  listen 127.0.0.1:7006 -> 127.0.0.1:9000 [round_robin] [127.0.0.1:9000]
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("baton.conf", []byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := summary(&b, cfg); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

// manyServers is a config of n server blocks, each with its own listen
// address and upstream address, as issue 12 measured "baton check" with.
func manyServers(n int) []byte {
	var b strings.Builder
	b.WriteString("stream {\n")
	for i := range n {
		fmt.Fprintf(&b, "    server { listen 127.0.%d.%d:%d; proxy_pass 127.1.%d.%d:%d; }\n",
			i/50000, 1+i/25000%2, 10000+i%25000, i/50000, 1+i/25000%2, 10000+i%25000)
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// summary's work must grow with the config, not with its square (issue 12:
// it built its output with +=). Bytes allocated are counted, not time:
// eight times the servers may allocate about eight times the bytes (map and
// buffer growth move that by a factor of two either way); with += it was
// about 64 times.
func TestSummaryAllocatesLinearly(t *testing.T) {
	alloc := func(n int) uint64 {
		cfg, err := config.Parse("baton.conf", manyServers(n))
		if err != nil {
			t.Fatal(err)
		}
		least := uint64(math.MaxUint64)
		for range 3 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if err := summary(io.Discard, cfg); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			least = min(least, after.TotalAlloc-before.TotalAlloc)
		}
		return least
	}
	small, large := alloc(500), alloc(4000)
	t.Logf("summary allocated %d bytes for 500 servers, %d for 4000 (%.1fx)", small, large, float64(large)/float64(small))
	if large > 20*small {
		t.Fatalf("summary allocated %d bytes for 500 servers and %d for 4000: more than 20 times, so it grows faster than the config", small, large)
	}
}

// BenchmarkCheckSummary is summary for the 50,000 servers of issue 12.
func BenchmarkCheckSummary(b *testing.B) {
	cfg, err := config.Parse("baton.conf", manyServers(50000))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := summary(io.Discard, cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// ulimitBaton runs baton with args under an open-file limit of n (soft and
// hard, so that the Go runtime's raise of the soft limit to the hard one at
// start does not move it).
func ulimitBaton(n int, args ...string) *exec.Cmd {
	cmd := exec.Command("sh", append([]string{"-c", `ulimit -n "$0" && exec "$@"`, strconv.Itoa(n), os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), "BATON_TEST_MAIN=1")
	return cmd
}

// As nginx (ngx_event_module_init): worker_connections above the open-file
// limit is a [warn], the limit being worker_rlimit_nofile when set.
func TestCheckWarnsWorkerConnectionsOverFileLimit(t *testing.T) {
	const limit = 512
	for _, tc := range []struct {
		name, main string
		want       string // "" for no warning
	}{
		{"over the limit", "events { worker_connections 1000; }",
			"baton: [warn] 1000 worker_connections exceed open file resource limit: 512\n"},
		{"under the limit", "events { worker_connections 500; }", ""},
		{"worker_rlimit_nofile covers it", "worker_rlimit_nofile 2000;\nevents { worker_connections 1000; }", ""},
		{"over worker_rlimit_nofile too", "worker_rlimit_nofile 600;\nevents { worker_connections 1000; }",
			"baton: [warn] 1000 worker_connections exceed open file resource limit: 600\n"},
		// nginx warns only above the soft limit, whatever worker_rlimit_nofile says.
		{"over worker_rlimit_nofile only", "worker_rlimit_nofile 200;\nevents { worker_connections 300; }", ""},
		{"no worker_connections", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conf := writeFile(t, t.TempDir(), "baton.conf", tc.main+"\nstream { server { listen 127.0.0.1:7000; proxy_pass 127.0.0.1:7001; } }\n")
			out, err := ulimitBaton(limit, "check", "-c", conf).CombinedOutput()
			if err != nil {
				t.Fatalf("baton check: %v\n%s", err, out)
			}
			var got string
			for _, line := range strings.SplitAfter(string(out), "\n") {
				if strings.Contains(line, "worker_connections") {
					got += line
				}
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q; all output:\n%s", got, tc.want, out)
			}
		})
	}
}

// "baton run" logs the same warning at start, after it has applied
// worker_rlimit_nofile.
func TestRunWarnsWorkerConnectionsOverFileLimit(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	conf := writeFile(t, t.TempDir(), "baton.conf", fmt.Sprintf(`
error_log stderr warn;
worker_rlimit_nofile 600;
events { worker_connections 1000; }
stream { server { listen %s; proxy_pass %s; } }
`, listen, a))
	p := startBaton(t, "run", "-c", conf)
	const want = "1000 worker_connections exceed open file resource limit: 600"
	p.stderr.waitFor(t, want)
	if !regexp.MustCompile(`(?m)\[warn\] \d+#0: ` + want + `$`).MatchString(p.stderr.String()) {
		t.Fatalf("not logged at warn level:\n%s", p.stderr)
	}
}

// TestKubernetesExampleConfig runs "baton check" on the config that
// examples/kubernetes/baton.yaml embeds in its ConfigMap (the block scalar
// under "baton.conf: |"), so that the example cannot drift into a config
// baton refuses. Its upstream resolves the headless Service's name at run
// time; check never looks it up (nor contacts the resolver), so the test
// needs no cluster and no DNS.
func TestKubernetesExampleConfig(t *testing.T) {
	const manifest = "../../examples/kubernetes/baton.yaml"
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	// The block: the lines after the key that are indented deeper than it
	// (blank lines included), less the first line's indentation. No YAML
	// library: a literal block scalar is all this needs.
	indent := func(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }
	lines := strings.Split(string(data), "\n")
	key := regexp.MustCompile(`^( *)baton\.conf: *\|[-+]? *$`)
	var block []string
	found := false
	for i, line := range lines {
		m := key.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if found {
			t.Fatalf("%s: more than one baton.conf key (line %d)", manifest, i+1)
		}
		found = true
		blockIndent := -1
		for _, l := range lines[i+1:] {
			if strings.TrimSpace(l) == "" {
				block = append(block, "")
				continue
			}
			if blockIndent < 0 {
				blockIndent = indent(l)
			}
			if indent(l) <= len(m[1]) || indent(l) < blockIndent {
				break
			}
			block = append(block, l[blockIndent:])
		}
	}
	if !found {
		t.Fatalf(`%s has no "baton.conf: |" key`, manifest)
	}
	conf := strings.TrimRight(strings.Join(block, "\n"), "\n") + "\n"
	for _, want := range []string{"stream {", " resolve;", "resolver ", "hash_ring address;"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("the embedded baton.conf has no %q; extracted:\n%s", want, conf)
		}
	}
	file := writeFile(t, t.TempDir(), "baton.conf", conf)
	out, err := batonCmd("check", "-c", file).CombinedOutput()
	if err != nil {
		t.Fatalf("baton check refuses the config of %s: %v\n%s\nconfig:\n%s", manifest, err, out, conf)
	}
	if !strings.Contains(string(out), "test is successful") {
		t.Fatalf("no success line:\n%s", out)
	}
	// The name is kept as written, to be resolved at run time.
	if !strings.Contains(string(out), "-> ws [hash $remote_addr consistent] [ws-backend.default.svc.cluster.local:8080]") {
		t.Fatalf("summary does not show the upstream as expected:\n%s", out)
	}
}
