package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testHandlers serve status only, as a baton without a config file.
var testHandlers = Handlers{Status: func() any { return testStatus{PID: 7, Active: 2} }}

type testStatus struct {
	PID    int `json:"pid"`
	Active int `json:"active"`
}

// The bytes on the wire: an old and a new baton talk to each other across
// an upgrade, so these never change (only grow).
func TestWire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	h := testHandlers
	h.Reload = func() (string, error) { return "listeners kept: all\n", nil }
	ctl, err := Serve(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	for _, tc := range []struct{ req, want string }{
		{`{"cmd":"status"}`, `{"ok":true,"status":{"pid":7,"active":2}}`},
		{`{"cmd":"reload"}`, `{"ok":true,"report":"listeners kept: all\n"}`},
		{`{"cmd":"upgrade","binary":"/usr/sbin/baton"}`, `{"ok":false,"error":"upgrade is not available here"}`},
		{`{"cmd":"bogus"}`, `{"ok":false,"error":"unknown command \"bogus\""}`},
		{`{{{`, `{"ok":false,"error":"bad request: invalid character '{' looking for beginning of object key string"}`},
	} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%s\n", tc.req)
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != tc.want+"\n" {
			t.Errorf("%s: got %q %v, want %q", tc.req, got, err, tc.want+"\n")
		}
	}
	r, err := Call(path, Request{Cmd: "status"}, 5*time.Second)
	if err != nil || !r.OK {
		t.Fatalf("status: %+v %v", r, err)
	}
	var st testStatus
	if err := json.Unmarshal(r.Status, &st); err != nil || st != (testStatus{PID: 7, Active: 2}) {
		t.Errorf("status %s: %+v %v", r.Status, st, err)
	}
}

// Issue 12: another user who can write the socket's directory can unlink
// baton's socket and listen in its place. Serve refuses such a
// directory, and creates nothing in it.
func TestServeRefusesUnsafeDirectory(t *testing.T) {
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
			return tmp + "/via/new" // made by Serve
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
			ctl, err := Serve(path, testHandlers, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer ctl.Close()
				if r, err := Call(path, Request{Cmd: "status"}, 5*time.Second); err != nil || !r.OK {
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
func TestServeConnectionCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ctl, err := Serve(path, testHandlers, nil)
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
	for i := 0; i < MaxConns; i++ { // silent clients: each holds a slot
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
	var r Reply
	if err := json.NewDecoder(c).Decode(&r); err != nil || r.OK || !strings.Contains(r.Error, "busy") {
		t.Fatalf("client %d: %+v %v; want a busy answer at once", MaxConns+1, r, err)
	}
	if r, err := Call(path, Request{Cmd: "status"}, 5*time.Second); err != nil || r.OK || !strings.Contains(r.Error, "busy") {
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
		r, err := Call(path, Request{Cmd: "status"}, 5*time.Second)
		if err == nil && r.OK {
			break
		}
		if i == 500 {
			t.Fatalf("status after the clients left: %+v %v", r, err)
		}
		<-tick.C
	}
}
