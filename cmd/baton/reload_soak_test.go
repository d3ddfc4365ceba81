package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/control"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/proxy"
)

// soakConf is one random configuration of the reload soak.
type soakConf struct {
	servers  []int  // indices of the backends in the upstream
	weights  []int  // their weights
	down     int    // index into servers marked down, or -1
	method   string // "" (round robin) or "least_conn;"
	extra    []bool // which of the optional listeners exist
	check    bool   // health_check on the kept listener's server
	mandate  bool   // ... mandatory
	limit    bool   // limit_conn
	access   bool   // allow 127.0.0.1; deny all;
	sessions int    // worker_connections / 2
}

func randomSoakConf(r *rand.Rand, backends, extras, sessions int) soakConf {
	c := soakConf{down: -1, sessions: sessions}
	for _, i := range r.Perm(backends)[:1+r.IntN(backends)] {
		c.servers = append(c.servers, i)
		c.weights = append(c.weights, 1+r.IntN(3))
	}
	slices.Sort(c.servers)
	if len(c.servers) > 1 && r.IntN(3) == 0 {
		c.down = r.IntN(len(c.servers))
	}
	if r.IntN(2) == 0 {
		c.method = "least_conn;"
	}
	for range extras {
		c.extra = append(c.extra, r.IntN(2) == 0)
	}
	c.check, c.mandate, c.limit, c.access = r.IntN(2) == 0, r.IntN(2) == 0, r.IntN(2) == 0, r.IntN(2) == 0
	return c
}

func (c soakConf) render(kept string, extras, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "error_log stderr notice;\nevents { worker_connections %d; }\nstream {\n", 2*c.sessions)
	if c.limit {
		b.WriteString("    limit_conn_zone $binary_remote_addr zone=perip:1m;\n")
	}
	fmt.Fprintf(&b, "    upstream u {\n        %s\n", c.method)
	for i, s := range c.servers {
		fmt.Fprintf(&b, "        server %s weight=%d%s;\n", backends[s], c.weights[i], map[bool]string{true: " down"}[i == c.down])
	}
	b.WriteString("    }\n    server {\n        listen " + kept + ";\n        proxy_pass u;\n")
	if c.check {
		fmt.Fprintf(&b, "        health_check interval=200ms%s;\n", map[bool]string{true: " mandatory"}[c.mandate])
	}
	if c.limit {
		b.WriteString("        limit_conn perip 1000;\n")
	}
	if c.access {
		b.WriteString("        allow 127.0.0.1;\n        deny all;\n")
	}
	b.WriteString("    }\n")
	for i, on := range c.extra {
		if on {
			fmt.Fprintf(&b, "    server { listen %s; proxy_pass u; }\n", extras[i])
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// The reload soak (issue 13): hundreds of reloads by SIGHUP, each a random
// change (servers added, removed, reweighted, down; listeners added and
// removed; the method, a health check, limit_conn and allow/deny toggled),
// under live traffic whose every line is checked and at the connection
// cap. baton must not crash, lose a byte or refuse a connection on the
// listener every config keeps, and after each reload it must show what a
// fresh start with that config would (live counts and history aside).
func TestReloadSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const nBackends, nExtras, live, reloads = 4, 3, 6, 200
	var backends []string
	for i := range nBackends {
		backends = append(backends, greeter(t, fmt.Sprintf("b%d", i)))
	}
	kept := freePort(t)
	var extras []string
	for range nExtras {
		extras = append(extras, freePort(t))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	// live sessions and one more: every probe below waits for that slot
	// while the loops keep finding the cap.
	sessions := live + 1
	dir := t.TempDir()
	path := filepath.Join(dir, "baton.conf")
	ctl := filepath.Join(dir, "ctl", "control.sock")
	writeConf := func(c soakConf) string {
		text := c.render(kept, extras, backends)
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		return text
	}
	conf := randomSoakConf(r, nBackends, nExtras, sessions)
	writeConf(conf)
	p := startBaton(t, "run", "-c", path, "--control-socket", ctl)

	// Live sessions on the kept listener, checked line by line until the end,
	// once a mandatory check of the first config lets the servers serve.
	if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return allUp(t, ctl) }) {
		t.Fatal("servers not up after 10 s")
	}
	stop := make(chan struct{})
	errs := make(chan error, live)
	for i := range live {
		c, br, greeting := dialLine(t, kept)
		go func() {
			defer c.Close()
			name := strings.TrimPrefix(greeting, "hello from ")
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line := fmt.Sprintf("live %d line %d", i, n)
				if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
					errs <- fmt.Errorf("live %d, line %d: %w", i, n, err)
					return
				}
				got, err := br.ReadString('\n')
				if want := name + ": " + line + "\n"; err != nil || got != want {
					errs <- fmt.Errorf("live %d: got %q, %v; want %q", i, got, err, want)
					return
				}
			}
			errs <- nil
		}()
	}

	for i := 1; i <= reloads; i++ {
		conf = randomSoakConf(r, nBackends, nExtras, sessions)
		text := writeConf(conf)
		p.cmd.Process.Signal(syscall.SIGHUP)
		if !eventually(10*time.Second, time.Millisecond, func() bool {
			return strings.Count(p.stderr.String(), ": reloaded ") == i
		}) {
			t.Fatalf("reload %d did not happen:\n%s", i, text)
		}
		if strings.Contains(p.stderr.String(), "reload refused") {
			t.Fatalf("reload %d refused:\n%s", i, text)
		}

		// A new connection on the kept listener is served by a server the
		// config has and has not marked down, once a mandatory check's
		// first pass let the servers take traffic (a reload that added one
		// used to leave them "checking" for good).
		if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return allUp(t, ctl) }) {
			t.Fatalf("reload %d: servers not up after 10 s:\n%s", i, text)
		}
		c, br, greeting := dialLine(t, kept)
		fmt.Fprintf(c, "probe %d\n", i)
		echo, err := br.ReadString('\n')
		c.Close()
		name := strings.TrimPrefix(greeting, "hello from ")
		if err != nil || echo != name+": probe "+fmt.Sprint(i)+"\n" {
			t.Fatalf("reload %d: probe got %q then %q, %v", i, greeting, echo, err)
		}
		var allowed []string
		for j, s := range conf.servers {
			if j != conf.down {
				allowed = append(allowed, fmt.Sprintf("b%d", s))
			}
		}
		if !slices.Contains(allowed, name) {
			t.Fatalf("reload %d: served by %s, the config allows %v:\n%s", i, name, allowed, text)
		}

		// What baton shows equals what a fresh start would.
		rep, err := control.Call(ctl, control.Request{Cmd: "status"}, 10*time.Second)
		if err != nil || !rep.OK {
			t.Fatalf("reload %d: status: %v %+v", i, err, rep)
		}
		st, err := replyStatus(rep)
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if got, want := shape(st), freshShape(t, text); got != want {
			t.Fatalf("reload %d: status differs from a fresh start's\n got: %s\nwant: %s\nconfig:\n%s", i, got, want, text)
		}
	}
	close(stop)
	for range live {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if out := p.stderr.String(); strings.Contains(out, "panic") || strings.Contains(out, "DATA RACE") || strings.Contains(out, "[crit]") {
		t.Errorf("baton's log:\n%s", out)
	}
}

// allUp reports whether every server not marked down is up.
func allUp(t *testing.T, ctl string) bool {
	rep, err := control.Call(ctl, control.Request{Cmd: "status"}, 10*time.Second)
	if err != nil || !rep.OK {
		t.Fatalf("status: %v %+v", err, rep)
	}
	st, err := replyStatus(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range st.Upstreams {
		for _, s := range u.Servers {
			if !s.Down && !s.Up {
				return false
			}
		}
	}
	return true
}

// shape is what a status says apart from live counts and history: each
// listener and its upstream, each upstream's method, and each server's
// name, address, flags and state ("up", "down (config)"...).
func shape(st *proxy.Status) string {
	var b strings.Builder
	var ls []string
	for _, l := range st.Listeners {
		ls = append(ls, l.Protocol+" "+l.Addr+" -> "+l.Upstream)
	}
	slices.Sort(ls)
	fmt.Fprintf(&b, "%v", ls)
	for _, u := range st.Upstreams {
		fmt.Fprintf(&b, " | %s %s", u.Name, u.Method)
		for _, s := range u.Servers {
			state := s.State
			if strings.HasPrefix(state, "checking") {
				state = "up" // a mandatory check's first pass is history
			}
			fmt.Fprintf(&b, " [%s %s b%v d%v %s]", s.Name, s.Addr, s.Backup, s.Down, state)
		}
	}
	return b.String()
}

// freshShape is the shape of a fresh start with the config text: built as
// "baton run" would build it, listeners from the config (New binds none).
func freshShape(t *testing.T, text string) string {
	t.Helper()
	cfg, err := config.Parse("soak.conf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, proxy.Options{Log: errlog.NewWriter(&strings.Builder{}, errlog.LevelEmerg)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st := p.Status()
	for _, srv := range cfg.Stream.Servers {
		for _, l := range srv.Listen {
			st.Listeners = append(st.Listeners, proxy.ListenerStatus{Addr: l.Addr.String(), Protocol: "tcp", Upstream: srv.Upstream.Name})
		}
	}
	return shape(&st)
}
