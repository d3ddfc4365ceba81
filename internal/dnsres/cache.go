package dnsres

import (
	"context"
	"slices"
	"sync"
	"time"
)

// DefaultCacheSize is the number of lookups a Cache keeps when NewCache is
// given no size.
const DefaultCacheSize = 10000

// errorTTL is how long a Cache keeps a failed lookup.
const errorTTL = time.Second

// Cache serves a Resolver's answers until their TTL runs out (failures for
// a second), and merges concurrent lookups of one name into one query. It
// keeps at most its size of names, dropping the expired ones, then those
// expiring first. It is safe for concurrent use.
type Cache struct {
	r    *Resolver
	size int
	now  func() time.Time
	// joined, when set (by tests), is called with the lock held when a
	// lookup waits for another one's result.
	joined func()

	mu      sync.Mutex
	entries map[string]*entry
}

// entry is one lookup, in flight or done.
type entry struct {
	done    chan struct{} // closed when the fields below are set
	filled  bool          // done is closed (read under Cache.mu)
	ans     Answer
	err     error
	expires time.Time
}

// NewCache returns a cache in front of r keeping at most size lookups
// (DefaultCacheSize when size <= 0).
func NewCache(r *Resolver, size int) *Cache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Cache{r: r, size: size, now: time.Now, entries: make(map[string]*entry)}
}

// LookupHost is Resolver.LookupHost served from the cache. The answer's
// TTL is the time it has left.
func (c *Cache) LookupHost(ctx context.Context, name string) (Answer, error) {
	fqdn, err := canonical(name)
	if err != nil {
		return Answer{}, err
	}
	return c.lookup(ctx, "host "+fqdn, display(fqdn), func(ctx context.Context) (Answer, error) {
		return c.r.LookupHost(ctx, fqdn)
	})
}

// LookupService is Resolver.LookupService served from the cache. The
// answer's TTL is the time it has left.
func (c *Cache) LookupService(ctx context.Context, service, name string) (Answer, error) {
	qname, err := serviceName(service, name)
	if err != nil {
		return Answer{}, err
	}
	return c.lookup(ctx, "srv "+qname, display(qname), func(ctx context.Context) (Answer, error) {
		return c.r.LookupService(ctx, service, name)
	})
}

// lookup returns the answer cached under key, or joins the lookup in
// flight, or starts one with fn. The lookup runs on its own, bounded by
// the Resolver's Timeout, so that a caller giving up does not fail the
// others; the caller waits for it or for ctx (name is then the failure's).
func (c *Cache) lookup(ctx context.Context, key, name string, fn func(context.Context) (Answer, error)) (Answer, error) {
	c.mu.Lock()
	e := c.entries[key]
	switch {
	case e == nil || e.filled && !c.now().Before(e.expires):
		e = &entry{done: make(chan struct{})}
		c.insertLocked(key, e)
		go c.fill(context.WithoutCancel(ctx), e, fn)
	case !e.filled && c.joined != nil:
		c.joined()
	}
	c.mu.Unlock()
	select {
	case <-e.done:
		return c.result(e)
	case <-ctx.Done():
		return Answer{}, ctxError(ctx, name)
	}
}

// fill runs fn and stores its result in e.
func (c *Cache) fill(ctx context.Context, e *entry, fn func(context.Context) (Answer, error)) {
	ans, err := fn(ctx)
	ttl := ans.TTL
	if err != nil {
		ttl = errorTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e.ans, e.err, e.expires, e.filled = ans, err, c.now().Add(ttl), true
	close(e.done)
}

// result is e's answer with its own copy of the addresses and the time it
// has left as TTL.
func (c *Cache) result(e *entry) (Answer, error) {
	if e.err != nil {
		return Answer{}, e.err
	}
	left := max(e.expires.Sub(c.now()), 0)
	return Answer{Addrs: slices.Clone(e.ans.Addrs), TTL: left}, nil
}

// insertLocked adds e under key, making room first when the cache is full.
func (c *Cache) insertLocked(key string, e *entry) {
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		c.evictLocked()
	}
	c.entries[key] = e
}

// evictLocked drops the expired entries, or else the one expiring first.
// Lookups in flight stay.
func (c *Cache) evictLocked() {
	now := c.now()
	var first string
	var firstAt time.Time
	for k, e := range c.entries {
		switch {
		case !e.filled:
		case !now.Before(e.expires):
			delete(c.entries, k)
		case first == "" || e.expires.Before(firstAt):
			first, firstAt = k, e.expires
		}
	}
	if len(c.entries) >= c.size && first != "" {
		delete(c.entries, first)
	}
}

// Len returns the number of lookups the cache holds, in flight included.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// CachedHost returns what LookupHost would answer at once from the cache,
// without waiting or querying: ok is false when no fresh answer for name
// is there (none, expired, or a lookup still in flight).
func (c *Cache) CachedHost(name string) (ans Answer, ok bool, err error) {
	fqdn, err := canonical(name)
	if err != nil {
		return Answer{}, true, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries["host "+fqdn]
	if e == nil || !e.filled || !c.now().Before(e.expires) {
		return Answer{}, false, nil
	}
	ans, err = c.result(e)
	return ans, true, err
}
