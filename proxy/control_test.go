package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/control"
)

func TestControlStatusAndMetrics(t *testing.T) {
	live := startBackend(t, "live", greet("live"))
	dead := deadAddr(t)
	cfg := testConfig([]upstreamSpec{{addr: live.addr()}, {addr: dead}}, nil)
	cfg.Baton.Metrics = "127.0.0.1:0"
	p, addr, _ := startProxy(t, cfg)
	for i := 0; i < 4; i++ {
		c := dial(t, addr)
		if got := readLine(t, c); got != "live" {
			t.Fatal(got)
		}
		c.Close()
	}

	path := filepath.Join(t.TempDir(), "run", "control.sock")
	reloads := 0
	ctl, err := p.ServeControl(path, ControlOptions{Reload: func() (string, error) { reloads++; return "nothing changed", nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode: %v %v", fi.Mode(), err)
	}
	r, err := control.Call(path, control.Request{Cmd: "status"}, 5*time.Second)
	if err != nil || !r.OK || r.Status == nil {
		t.Fatalf("status: %+v %v", r, err)
	}
	var st Status
	if err := json.Unmarshal(r.Status, &st); err != nil {
		t.Fatalf("status %s: %v", r.Status, err)
	}
	if st.Total != 4 || len(st.Upstreams) != 1 || len(st.Upstreams[0].Servers) != 2 {
		t.Fatalf("status: %+v", st)
	}
	ls, ds := st.Upstreams[0].Servers[0], st.Upstreams[0].Servers[1]
	if !ls.Up || ls.Total != 4 || ls.State != "up" {
		t.Errorf("live server: %+v", ls)
	}
	if ds.Up || ds.ConnectFails != 1 || !strings.HasPrefix(ds.State, "unavailable") {
		t.Errorf("dead server: %+v", ds)
	}
	if d := st.Descriptors; d.Limit <= 0 || d.FileLimit != d.Limit+d.Reserve || d.Held < 0 || d.Held > d.Limit {
		t.Errorf("descriptors: %+v", d)
	}
	if r, err := control.Call(path, control.Request{Cmd: "reload"}, 5*time.Second); err != nil || !r.OK || r.Report != "nothing changed" || reloads != 1 {
		t.Errorf("reload: %+v %v", r, err)
	}
	if r, err := control.Call(path, control.Request{Cmd: "bogus"}, 5*time.Second); err != nil || r.OK {
		t.Errorf("bogus command: %+v %v", r, err)
	}
	// Garbage does not hurt the server.
	if c, err := net.Dial("unix", path); err == nil {
		c.Write([]byte("\x00\xff{{{{\n"))
		io.ReadAll(c)
		c.Close()
	}
	if _, err := p.ServeControl(path, ControlOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second control socket on a live path: %v", err)
	}

	resp, err := http.Get("http://" + p.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`baton_connections_total{listener="tcp/` + addr + `"} 4`,
		`baton_upstream_connections_total{server="` + live.addr().String() + `",upstream="backend"} 4`,
		`baton_upstream_connect_failures_total{server="` + dead.String() + `",upstream="backend"} 1`,
		`baton_upstream_server_up{server="` + dead.String() + `",upstream="backend"} 0`,
		`baton_upstream_server_up{server="` + live.addr().String() + `",upstream="backend"} 1`,
		`baton_pick_duration_seconds_count 5`,
		fmt.Sprintf("baton_descriptors_limit %d\n", p.fds.limit.Load()),
		fmt.Sprintf("baton_descriptors_udp_limit %d\n", p.fds.udpLimit.Load()),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
	ctl.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
}
