// Package testutil holds helpers that tests of several packages share.
// Only tests import it.
package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// PublicCopyOfTest copies the running test binary to name in a new
// directory that every user may enter, readable and runnable by all, so
// that a test running as root can re-run it as another uid (uid 65534
// cannot read the go test cache). It returns the directory (removed when
// the test ends) and the copy's path.
func PublicCopyOfTest(t testing.TB, name string) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "baton-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}
