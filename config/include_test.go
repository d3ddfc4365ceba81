package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeFiles creates files (path relative to dir: content) and returns dir.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func diskLoader() *Loader {
	ld := testLoader()
	ld.ReadFile, ld.Glob = nil, nil
	return ld
}

func TestIncludes(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"main.conf": "include events.conf;\nstream {\n include streams/*.conf;\n include none/*.conf;\n}\n",
		// relative to the main file's directory, not to streams/
		"events.conf":          "events { worker_connections 10; }\n",
		"streams/b.conf":       "server { listen 2; proxy_pass 1.1.1.1:2; }\n",
		"streams/a.conf":       "include upstreams.conf;\nserver { listen 1; proxy_pass u; }\n",
		"streams/.hidden.conf": "bogus;\n",
		"streams/c.txt":        "bogus;\n",
		"upstreams.conf":       "upstream u { server 1.1.1.1:1; }\n",
	})
	main := filepath.Join(dir, "main.conf")
	c, err := diskLoader().Load(main)
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{main, filepath.Join(dir, "events.conf"), filepath.Join(dir, "streams/a.conf"),
		filepath.Join(dir, "upstreams.conf"), filepath.Join(dir, "streams/b.conf")}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Errorf("files\n got %q\nwant %q", c.Files, wantFiles)
	}
	if c.WorkerConnections != 10 || len(c.Stream.Servers) != 2 || c.Stream.Servers[0].Listen[0].Addr.Port() != 1 {
		t.Errorf("config %+v", c)
	}
	if p := c.Stream.Upstreams[0].Pos; p.File != filepath.Join(dir, "upstreams.conf") || p.Line != 1 {
		t.Errorf("upstream pos %+v", p)
	}
}

func TestIncludeErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // with DIR for the temp directory
	}{
		{"missing plain file", map[string]string{"main.conf": "\ninclude nope.conf;\n"},
			`open() "DIR/nope.conf" failed (2: No such file or directory) in DIR/main.conf:2`},
		{"include in ignored http is not followed", map[string]string{"main.conf": "http {\n include nope.conf;\n}\n"}, ""},
		{"cycle", map[string]string{"main.conf": "include a.conf;\n", "a.conf": "include b.conf;\n", "b.conf": "\ninclude a.conf;\n"},
			`include cycle: "DIR/a.conf" is already being read in DIR/b.conf:2`},
		{"self include", map[string]string{"main.conf": "include main.conf;\n"},
			`include cycle: "DIR/main.conf" is already being read in DIR/main.conf:1`},
		{"syntax error in include names it", map[string]string{"main.conf": "include a.conf;\nfoo;\n", "a.conf": "\n\nstream {\n"},
			`unexpected end of file, expecting "}" in DIR/a.conf:4`},
		{"error in include names it", map[string]string{"main.conf": "stream {\ninclude a.conf;\n}\n", "a.conf": "\nbogus;\n"},
			`unknown directive "bogus" in DIR/a.conf:2`},
		{"unbalanced include", map[string]string{"main.conf": "stream {\ninclude a.conf;\n}\n", "a.conf": "}\n"},
			`unexpected "}" in DIR/a.conf:1`},
		{"include needs one argument", map[string]string{"main.conf": "include a b;\n"},
			`invalid number of arguments in "include" directive in DIR/main.conf:1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			_, err := diskLoader().Load(filepath.Join(dir, "main.conf"))
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			switch {
			case want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case want != "" && (err == nil || err.Error() != want):
				t.Fatalf("got %v\nwant %s", err, want)
			}
		})
	}
}

func TestLoadMissingMain(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "x.conf"))
	if err == nil || !strings.Contains(err.Error(), "(2: No such file or directory)") {
		t.Errorf("got %v", err)
	}
}

// Anything but a regular file is refused by its Stat, before it is opened:
// opening a FIFO for reading would block until a writer came (issue 12).
func TestIncludeRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fifo, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, include, want string // with DIR for dir
	}{
		{"FIFO", "fifo", `"DIR/fifo" is not a regular file in DIR/main.conf:2`},
		{"symlink to a FIFO", "link", `"DIR/link" is not a regular file in DIR/main.conf:2`},
		{"device", "/dev/null", `"/dev/null" is not a regular file in DIR/main.conf:2`},
		{"directory", ".", `"DIR" is not a regular file in DIR/main.conf:2`},
		{"glob matching a FIFO", "fif[o]", `"DIR/fifo" is not a regular file in DIR/main.conf:2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			main := filepath.Join(dir, "main.conf")
			if err := os.WriteFile(main, []byte("events {}\ninclude "+tc.include+";\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := loadUnblocked(t, fifo, main)
			if want := strings.ReplaceAll(tc.want, "DIR", dir); err == nil || err.Error() != want {
				t.Fatalf("got %v\nwant %s", err, want)
			}
		})
	}
	t.Run("main file", func(t *testing.T) {
		_, err := loadUnblocked(t, fifo, fifo)
		if want := `"` + fifo + `" is not a regular file`; err == nil || err.Error() != want {
			t.Fatalf("got %v\nwant %s", err, want)
		}
	})
}

// loadUnblocked loads main from disk. Should Load block opening fifo for
// reading, a writer opens it after 10s, so that the test fails rather than
// hangs.
func loadUnblocked(t *testing.T, fifo, main string) (*Config, error) {
	t.Helper()
	var blocked atomic.Bool
	unblock := time.AfterFunc(10*time.Second, func() {
		blocked.Store(true)
		// O_RDWR never blocks on Linux, and makes a reader's open return.
		if f, err := os.OpenFile(fifo, os.O_RDWR, 0); err == nil {
			f.Close()
		}
	})
	c, err := diskLoader().Load(main)
	unblock.Stop()
	if blocked.Load() {
		t.Fatalf("Load blocked opening the FIFO %s", fifo)
	}
	return c, err
}

// One Load reads at most maxTotalSize bytes in all, however the files are
// reached; the include that would pass it is named, and nothing more is
// read (issue 12: a thousand includes of a 20 MB file took a minute).
func TestIncludeTotalSize(t *testing.T) {
	dir := t.TempDir()
	// A valid file just over half the total: the second include is refused
	// by its size, before it is read.
	big := filepath.Join(dir, "big.conf")
	comment := "#" + strings.Repeat("x", maxTotalSize/2) + "\n"
	if err := os.WriteFile(big, []byte(comment), 0o644); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "main.conf")
	if err := os.WriteFile(main, []byte("events {}\n"+strings.Repeat("include big.conf;\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := diskLoader().Load(main)
	want := fmt.Sprintf(`the configuration would be more than %d bytes with "%s" included in %s:3`, maxTotalSize, big, main)
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	// What comes through the ReadFile seam is counted too.
	ld := testLoader()
	ld.ReadFile = func(name string) ([]byte, error) {
		if name == "main.conf" {
			return []byte("events {}\ninclude a.conf;\n"), nil
		}
		return make([]byte, maxTotalSize), nil
	}
	_, err = ld.Load("main.conf")
	want = fmt.Sprintf(`the configuration would be more than %d bytes with "a.conf" included in main.conf:2`, maxTotalSize)
	if err == nil || err.Error() != want {
		t.Fatalf("through the seam: got %v\nwant %s", err, want)
	}
}
