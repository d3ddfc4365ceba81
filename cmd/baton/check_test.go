package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
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
		{"not supported yet", "stream {\n  server {\n    listen 7000;\n    ssl_preread on;\n    proxy_pass 127.0.0.1:1;\n  }\n}\n", 4, `"ssl_preread" directive is not supported yet`},
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
