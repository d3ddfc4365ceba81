package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// The certificate cache keeps what it read until valid passes or it is
// pushed out past max, least recently used first.
func TestCertCache(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b, c := file("a", "a1"), file("b", "b1"), file("c", "c1")
	cc := certCacheOf(&config.CertCache{Max: 2, Inactive: time.Hour, Valid: time.Hour})
	read := func(name string) string {
		data, err := cc.read(name)
		if err != nil {
			return "error"
		}
		return string(data)
	}
	read(a)
	file("a", "a2")
	if got := read(a); got != "a1" {
		t.Fatalf("a cached entry was read again: %q", got)
	}
	read(b)
	read(c) // a is the least recently used: out
	if got := read(a); got != "a2" {
		t.Fatalf("an evicted entry came from the cache: %q", got)
	}
	cc.cfg.Valid = 0
	file("c", "c2")
	if got := read(c); got != "c2" {
		t.Fatalf("an entry past valid was not read again: %q", got)
	}
	os.Remove(c)
	cc.cfg.Valid = -1
	if got := read(c); got != "error" {
		t.Fatalf("a removed file past valid: %q", got)
	}
}
