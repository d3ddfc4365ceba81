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
	r, err := CallControl(path, ControlRequest{Cmd: "status"}, 5*time.Second)
	if err != nil || !r.OK || r.Status == nil {
		t.Fatalf("status: %+v %v", r, err)
	}
	st := r.Status
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
	if r, err := CallControl(path, ControlRequest{Cmd: "reload"}, 5*time.Second); err != nil || !r.OK || r.Report != "nothing changed" || reloads != 1 {
		t.Errorf("reload: %+v %v", r, err)
	}
	if r, err := CallControl(path, ControlRequest{Cmd: "bogus"}, 5*time.Second); err != nil || r.OK {
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

// Issue 12: another user who can write the socket's directory can unlink
// baton's socket and listen in its place. ServeControl refuses such a
// directory, and creates nothing in it.
func TestControlRefusesUnsafeDirectory(t *testing.T) {
	p, _, _ := startProxy(t, testConfig([]upstreamSpec{{addr: deadAddr(t)}}, nil))
	mkdir := func(t *testing.T, path string, mode os.FileMode) string {
		t.Helper()
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // not the umask's
			t.Fatal(err)
		}
		return path
	}
	const nobody = 65534
	for _, tc := range []struct {
		name     string
		root     bool // needs root
		make     func(t *testing.T, tmp string) string
		wantErr  string // "" = served; %[1]s is the socket's directory, %[2]s the temp directory
		wantMode os.FileMode
	}{
		{name: "world-writable", make: func(t *testing.T, tmp string) string { return mkdir(t, tmp+"/d", 0o777) },
			wantErr: "control socket %[1]s/control.sock: directory %[1]s is writable by other users (mode 0777)"},
		{name: "group-writable", make: func(t *testing.T, tmp string) string { return mkdir(t, tmp+"/d", 0o770) },
			wantErr: "directory %[1]s is writable by other users (mode 0770)"},
		{name: "sticky and world-writable, as /tmp", make: func(t *testing.T, tmp string) string { return mkdir(t, tmp+"/d", 0o777|os.ModeSticky) },
			wantErr: "directory %[1]s is writable by other users (mode 1777)"},
		{name: "a symbolic link", make: func(t *testing.T, tmp string) string {
			mkdir(t, tmp+"/real", 0o700)
			if err := os.Symlink(tmp+"/real", tmp+"/link"); err != nil {
				t.Fatal(err)
			}
			return tmp + "/link"
		}, wantErr: "directory %[1]s is a symbolic link"},
		{name: "in a world-writable directory", make: func(t *testing.T, tmp string) string {
			return mkdir(t, mkdir(t, tmp+"/open", 0o777)+"/d", 0o700)
		}, wantErr: "directory %[1]s is in %[2]s/open, which is writable by other users and not sticky (mode 0777)"},
		{name: "through a symbolic link into a world-writable directory", make: func(t *testing.T, tmp string) string {
			// The path as written passes (via is a link to a 0700
			// directory); the path resolved does not.
			mkdir(t, mkdir(t, tmp+"/open", 0o777)+"/real", 0o700)
			if err := os.Symlink(tmp+"/open/real", tmp+"/via"); err != nil {
				t.Fatal(err)
			}
			return tmp + "/via/new" // made by ServeControl
		}, wantErr: "directory %[1]s is in %[2]s/open, which is writable by other users and not sticky (mode 0777)"},
		{name: "owned by another user", root: true, make: func(t *testing.T, tmp string) string {
			d := mkdir(t, tmp+"/d", 0o700)
			if err := os.Chown(d, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return d
		}, wantErr: "directory %[1]s is owned by uid 65534, not by root or baton's uid 0"},
		{name: "in a directory owned by another user", root: true, make: func(t *testing.T, tmp string) string {
			o := mkdir(t, tmp+"/o", 0o755)
			if err := os.Chown(o, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return mkdir(t, o+"/d", 0o700)
		}, wantErr: "directory %[1]s is in %[2]s/o, which is owned by uid 65534"},
		{name: "0755", make: func(t *testing.T, tmp string) string { return mkdir(t, tmp+"/d", 0o755) }, wantMode: 0o755},
		{name: "new, in a sticky world-writable directory", make: func(t *testing.T, tmp string) string {
			return mkdir(t, tmp+"/sticky", 0o777|os.ModeSticky) + "/new"
		}, wantMode: 0o700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("needs root to give a directory to another user")
			}
			tmp := t.TempDir()
			dir := tc.make(t, tmp)
			path := filepath.Join(dir, "control.sock")
			ctl, err := p.ServeControl(path, ControlOptions{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer ctl.Close()
				if r, err := CallControl(path, ControlRequest{Cmd: "status"}, 5*time.Second); err != nil || !r.OK {
					t.Fatalf("status: %+v %v", r, err)
				}
				if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != tc.wantMode {
					t.Errorf("directory mode %v %v, want %v", fi.Mode(), err, tc.wantMode)
				}
				return
			}
			want := fmt.Sprintf(tc.wantErr, dir, tmp)
			if err == nil {
				ctl.Close()
				t.Fatalf("served in %s; want %q", dir, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q, want %q", err, want)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("a refused directory holds %s: %v", path, err)
			}
		})
	}
}

// One client more than the control socket serves at once is answered
// "busy" at once (it used to wait 30s for its turn to time out), and the
// socket serves again when clients leave.
func TestControlConnectionCap(t *testing.T) {
	p, _, _ := startProxy(t, testConfig([]upstreamSpec{{addr: deadAddr(t)}}, nil))
	path := filepath.Join(t.TempDir(), "control.sock")
	ctl, err := p.ServeControl(path, ControlOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < maxControlConns; i++ { // silent clients: each holds a slot
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The accept loop takes clients in order: by the time it reaches this
	// one, every slot is taken.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var r ControlReply
	if err := json.NewDecoder(c).Decode(&r); err != nil || r.OK || !strings.Contains(r.Error, "busy") {
		t.Fatalf("client %d: %+v %v; want a busy answer at once", maxControlConns+1, r, err)
	}
	if r, err := CallControl(path, ControlRequest{Cmd: "status"}, 5*time.Second); err != nil || r.OK || !strings.Contains(r.Error, "busy") {
		t.Fatalf("status with every slot taken: %+v %v", r, err)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	// The slots free as the server sees each close: within a few tries.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		r, err := CallControl(path, ControlRequest{Cmd: "status"}, 5*time.Second)
		if err == nil && r.OK {
			break
		}
		if i == 500 {
			t.Fatalf("status after the clients left: %+v %v", r, err)
		}
		<-tick.C
	}
}
