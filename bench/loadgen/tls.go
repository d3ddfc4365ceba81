package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"math/big"
	"net"
	"time"
)

// tlsFlags are the TLS options of the client subcommands: with -tls every
// connection is a TLS client (certificates not verified), as a client of a
// terminating proxy; -tls-max caps the version; -tls-resume resumes
// sessions from one shared cache (tickets). The key exchange is X25519,
// which every peer here speaks (Debian's OpenSSL 3.0 has no ML-KEM), so
// that proxies compare doing the same work; -tls-pq offers crypto/tls's
// default, X25519MLKEM768 first.
type tlsFlags struct {
	on     bool
	max    string
	resume bool
	pq     bool
	cache  tls.ClientSessionCache
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "tls", false, "speak TLS on every connection (a terminating proxy's client)")
	fs.StringVar(&f.max, "tls-max", "1.3", "with -tls: the highest TLS `version`, 1.2 or 1.3")
	fs.BoolVar(&f.resume, "tls-resume", false, "with -tls: resume sessions (one shared session cache)")
	fs.BoolVar(&f.pq, "tls-pq", false, "with -tls: offer X25519MLKEM768 (crypto/tls's default) instead of X25519 alone")
}

func (f *tlsFlags) config() (*tls.Config, error) {
	if !f.on {
		if f.resume || f.pq {
			return nil, usageError("-tls-resume and -tls-pq need -tls")
		}
		return nil, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "bench.test"}
	if !f.pq {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	switch f.max {
	case "1.2":
		cfg.MaxVersion = tls.VersionTLS12
	case "1.3":
	default:
		return nil, usageError(fmt.Sprintf("-tls-max %q: want 1.2 or 1.3", f.max))
	}
	if f.resume {
		if f.cache == nil {
			f.cache = tls.NewLRUClientSessionCache(64)
		}
		cfg.ClientSessionCache = f.cache
	}
	return cfg, nil
}

// dialWith dials addr with d and, with cfg, runs a TLS client handshake
// within d's timeout.
func dialWith(d *net.Dialer, addr string, cfg *tls.Config) (net.Conn, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil || cfg == nil {
		return c, err
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(d.Timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// sinkTLS is the sink's server configuration for -tls: the certificate in
// cert and key, or without them a fresh self-signed ECDSA P-256 one.
func sinkTLS(cert, key string) (*tls.Config, error) {
	var pair tls.Certificate
	var err error
	if cert != "" || key != "" {
		pair, err = tls.LoadX509KeyPair(cert, key)
	} else {
		pair, err = selfSignedPair()
	}
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, nil
}

func selfSignedPair() (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench.test"}, DNSNames: []string{"bench.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}
