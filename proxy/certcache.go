package proxy

import (
	"bytes"
	"container/list"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/config"
)

// certCache is ssl_certificate_cache / proxy_ssl_certificate_cache: the
// files that certificates and keys named with variables are read from,
// kept by name (a certificate and its key are an entry each, as nginx's),
// the least recently used leaving first past max, an entry unused for
// inactive dropped, one older than valid read again.
type certCache struct {
	cfg     *config.CertCache
	mu      sync.Mutex
	entries map[string]*list.Element // of *certEntry
	lru     list.List                // front: most recently used
}

type certEntry struct {
	name         string
	data         []byte
	loaded, used time.Time
}

// certCacheOf is the running cache of directive c, made on first use;
// nil for none.
func certCacheOf(c *config.CertCache) *certCache {
	if c == nil {
		return nil
	}
	if cc, ok := c.State.(*certCache); ok {
		return cc
	}
	cc := &certCache{cfg: c, entries: map[string]*list.Element{}}
	c.State = cc
	return cc
}

// read returns name's bytes (a file, or "data:" text), from the cache when
// it holds them and they are still valid.
func (c *certCache) read(name string) ([]byte, error) { return c.readFor(name, false) }

// reread is read with the cached bytes taken for stale: nginx's
// NGX_SSL_CACHE_INVALIDATE, for a pair the cache gave mismatched.
func (c *certCache) reread(name string) ([]byte, error) { return c.readFor(name, true) }

func (c *certCache) readFor(name string, stale bool) ([]byte, error) {
	if text, ok := strings.CutPrefix(name, "data:"); ok {
		return []byte(text), nil
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[name]; ok {
		e := el.Value.(*certEntry)
		switch {
		case now.Sub(e.used) > c.cfg.Inactive:
			c.remove(el)
		case stale || now.Sub(e.loaded) > c.cfg.Valid:
			data, err := os.ReadFile(name)
			if err != nil || encryptedPEM(data) {
				c.remove(el) // gone, or now an encrypted key: not kept
				return data, err
			}
			e.data, e.loaded, e.used = data, now, now
			c.lru.MoveToFront(el)
			return e.data, nil
		default:
			e.used = now
			c.lru.MoveToFront(el)
			return e.data, nil
		}
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	if encryptedPEM(data) {
		return data, nil // an encrypted key is not kept, as nginx's (its password is the server's)
	}
	for c.lru.Len() >= c.cfg.Max {
		c.remove(c.lru.Back())
	}
	c.entries[name] = c.lru.PushFront(&certEntry{name: name, data: data, loaded: now, used: now})
	return data, nil
}

// encryptedPEM reports whether data holds an encrypted key (PKCS#8's
// "ENCRYPTED PRIVATE KEY" or the legacy "Proc-Type: 4,ENCRYPTED"), which
// the cache does not keep, as nginx's: its password is the server's.
func encryptedPEM(data []byte) bool { return bytes.Contains(data, []byte("ENCRYPTED")) }

func (c *certCache) remove(el *list.Element) {
	delete(c.entries, el.Value.(*certEntry).name)
	c.lru.Remove(el)
}

// loadPair loads a certificate pair through c (directly when c is nil).
// A pair whose key is encrypted is not kept at all, as nginx's: its
// password is the server's, and the certificate goes with the key.
func (c *certCache) loadPair(certFile, keyFile string, passwords []string) (tlsCert, error) {
	if c == nil {
		return config.LoadPair(certFile, keyFile, passwords)
	}
	c.mu.Lock()
	_, cached := c.entries[keyFile]
	c.mu.Unlock()
	if !cached && !strings.HasPrefix(keyFile, "data:") {
		if key, err := os.ReadFile(keyFile); err == nil && encryptedPEM(key) {
			return config.LoadPair(certFile, keyFile, passwords)
		}
	}
	pair, err := config.LoadPairWith(c.read, certFile, keyFile, passwords)
	if err != nil {
		// A pair the cache holds mismatched (one file replaced and read
		// again, the other still cached): both read again, as nginx.
		pair, err = config.LoadPairWith(c.reread, certFile, keyFile, passwords)
	}
	return pair, err
}
