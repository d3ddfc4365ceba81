package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
