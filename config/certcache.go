package config

import (
	"strings"
	"time"
)

// CertCache is an ssl_certificate_cache or proxy_ssl_certificate_cache
// directive: certificates and keys named with variables are kept after
// loading. Servers that inherit one directive share its cache (the same
// *CertCache).
type CertCache struct {
	Max      int           // max=: entries (a certificate and a key are one each)
	Inactive time.Duration // inactive=: an entry unused this long leaves (default 10s)
	Valid    time.Duration // valid=: an entry older than this is read again (default 60s)

	// State is the running cache, made by the proxy when it builds the
	// first server that uses the directive; nil before.
	State any
}

// certCache reads "off | max=N [inactive=T] [valid=T]"; nil is off.
func (l *loader) certCache(d *directive) (*CertCache, bool) {
	if !l.check(d, false, atLeast(1)) {
		return nil, false
	}
	if len(d.args) == 1 && d.args[0] == "off" {
		return nil, true
	}
	c := &CertCache{Inactive: 10 * time.Second, Valid: 60 * time.Second}
	for _, a := range d.args {
		name, val, _ := strings.Cut(a, "=")
		var err error
		switch name {
		case "max":
			var ok bool
			c.Max, ok = atoiInt(val)
			if !ok || c.Max <= 0 {
				err = errInvalidValue
			}
		case "inactive":
			c.Inactive, err = ParseSeconds(val)
		case "valid":
			c.Valid, err = ParseSeconds(val)
		default:
			err = errInvalidValue
		}
		if err != nil {
			l.errorf(d, "invalid parameter \"%s\"", a)
			return nil, false
		}
	}
	if c.Max == 0 {
		l.errorf(d, "\"%s\" must have the \"max\" parameter", d.name)
		return nil, false
	}
	return c, true
}
