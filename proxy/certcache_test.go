package proxy

import (
	"crypto/x509"
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

// A pair the cache gives mismatched (the certificate evicted and read
// anew from a replaced file, the key still cached from before) is read
// again whole, as nginx's NGX_SSL_CACHE_INVALIDATE retry.
func TestCertCacheMismatchedPair(t *testing.T) {
	dir := t.TempDir()
	xCrt, xKey := selfSigned(t, dir, "x", "x.test")
	yCrt, yKey := selfSigned(t, dir, "y", "y.test")
	zCrt, zKey := selfSigned(t, dir, "z", "z.test")
	wCrt, _ := selfSigned(t, dir, "w", "w.test")
	c := certCacheOf(&config.CertCache{Max: 4, Inactive: time.Hour, Valid: time.Hour})
	if _, err := c.loadPair(xCrt, xKey, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.loadPair(zCrt, zKey, nil); err != nil {
		t.Fatal(err)
	}
	c.read(xKey) // x's key most recently used: x's certificate leaves next
	c.read(wCrt)
	if _, ok := c.entries[xCrt]; ok {
		t.Fatal("x's certificate is still cached")
	}
	for _, f := range [][2]string{{yCrt, xCrt}, {yKey, xKey}} {
		b, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], b, 0o600)
	}
	pair, err := c.loadPair(xCrt, xKey, nil)
	if err != nil {
		t.Fatalf("the pair after its files were replaced: %v", err)
	}
	if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); leaf.Subject.CommonName != "y.test" {
		t.Fatalf("got %s, want the replaced files' y.test", leaf.Subject.CommonName)
	}
}
