package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStatusAndReload(t *testing.T) {
	a, b := greeter(t, "a"), greeter(t, "b")
	listen, listen2 := freePort(t), freePort(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl", "control.sock")
	conf := filepath.Join(dir, "baton.conf")
	write := func(text string) {
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf(`error_log stderr notice;
stream {
    upstream app { server %s; }
    server { listen %s; proxy_pass app; }
}
`, a, listen))
	p := startBaton(t, "run", "-c", conf, "--control-socket", sock)
	c, _, line := dialLine(t, listen)
	c.Close()
	if line != "hello from a" {
		t.Fatal(line)
	}

	out, err := batonCmd("status", "--control-socket", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"UPSTREAM app (round_robin)", a, "tcp 127.0.0.1:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, err = batonCmd("status", "--control-socket", sock, "--json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"upstreams"`) {
		t.Fatalf("status --json: %v\n%s", err, out)
	}

	// baton reload: the upstream changes and a listener is added.
	write(fmt.Sprintf(`error_log stderr notice;
stream {
    upstream app { server %s; }
    server { listen %s; listen %s; proxy_pass app; }
}
`, b, listen, listen2))
	out, err = batonCmd("reload", "--control-socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "listeners added") || !strings.Contains(string(out), "upstreams changed: app") {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	for _, addr := range []string{listen, listen2} {
		c, _, line := dialLine(t, addr)
		c.Close()
		if line != "hello from b" {
			t.Fatalf("after reload %s reached %q", addr, line)
		}
	}

	// A broken config is refused with its line, and the old one keeps serving.
	write("stream {\n    server { listen " + listen + "; proxy_pass; }\n}\n")
	out, err = batonCmd("reload", "--control-socket", sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), conf+":2") {
		t.Fatalf("reload of a broken config: %v\n%s", err, out)
	}
	c, _, line = dialLine(t, listen2)
	c.Close()
	if line != "hello from b" {
		t.Fatalf("after a refused reload: %q", line)
	}

	// SIGHUP reloads too.
	write(fmt.Sprintf(`error_log stderr notice;
stream {
    upstream app { server %s; }
    server { listen %s; proxy_pass app; }
}
`, a, listen))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.stderr.waitFor(t, "reloaded "+conf)
	c, _, line = dialLine(t, listen)
	c.Close()
	if line != "hello from a" {
		t.Fatalf("after SIGHUP: %q", line)
	}
}

// Issue 12: baton refuses to serve its control socket from a directory other
// users can write to (they could replace the socket), says why, and serves
// traffic anyway.
func TestControlSocketInWritableDirectory(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(open, "control.sock")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf("error_log stderr notice;\nstream { server { listen %s; proxy_pass %s; } }\n", listen, a))
	p := startBaton(t, "run", "-c", conf, "--control-socket", sock)
	p.stderr.waitFor(t, "control socket "+sock+": directory "+open+" is writable by other users (mode 0777); baton status, reload and upgrade will not reach this process")
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("baton made %s: %v", sock, err)
	}
	c, _, line := dialLine(t, listen)
	c.Close()
	if line != "hello from a" {
		t.Fatalf("traffic: %q", line)
	}
	if out, err := batonCmd("status", "--control-socket", sock).CombinedOutput(); err == nil || !strings.Contains(string(out), "no baton answers on "+sock) {
		t.Errorf("baton status: %v\n%s", err, out)
	}
}

// baton reload says a reload was refused only when a baton refused it.
func TestReloadWithoutBaton(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	out, err := batonCmd("reload", "--control-socket", sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no baton answers on "+sock) || strings.Contains(string(out), "reload refused") {
		t.Errorf("baton reload with no baton: %v\n%s", err, out)
	}
}

// baton reload --dry-run asks the running process what its config file
// would do to its live sessions, and changes nothing.
func TestReloadDryRun(t *testing.T) {
	a, b := echoServer(t), echoServer(t)
	listen := freePort(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl", "control.sock")
	stream := func(servers string) string {
		return fmt.Sprintf("stream { upstream u { hash $remote_addr consistent; rebalance; %s } server { listen %s; proxy_pass u; } }\n", servers, listen)
	}
	conf := writeFile(t, dir, "baton.conf", stream(fmt.Sprintf("server %s;", a)))
	startBaton(t, "run", "-c", conf, "--control-socket", sock)
	var conns []net.Conn
	for range 5 {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "x")
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// One server replaced by another: every session would move.
	writeFile(t, dir, "baton.conf", stream(fmt.Sprintf("server %s;", b)))
	out, err := batonCmd("reload", "--control-socket", sock, "--dry-run").CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	want := fmt.Sprintf("upstream \"u\": 5 live sessions, 5 would be misplaced\n  %s: 5 to %s\n", a, b)
	if string(out) != want {
		t.Fatalf("dry run said:\n%s\nwant:\n%s", out, want)
	}
	// Nothing changed: the sessions go on.
	for _, c := range conns {
		io.WriteString(c, "y")
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("a session ended after a dry run: %v", err)
		}
	}
}
