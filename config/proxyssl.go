package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strconv"
	"strings"
)

// ProxyTLS is a server's "proxy_ssl on" and what goes with it
// (ngx_stream_proxy_module's proxy_ssl_*): TLS to the upstream.
type ProxyTLS struct {
	Name         string // proxy_ssl_name, with variables; "" for the proxy_pass host
	ServerName   bool   // proxy_ssl_server_name: send it as SNI (default off)
	Verify       bool   // proxy_ssl_verify (default off)
	VerifyDepth  int    // proxy_ssl_verify_depth, default 1
	Trusted      *x509.CertPool
	MinVersion   uint16
	MaxVersion   uint16
	CipherSuites []uint16
	Certs        []tls.Certificate // proxy_ssl_certificate / _key
	// CertVar is proxy_ssl_certificate / _key with variables, as written:
	// evaluated per session (an empty certificate sends none), a relative
	// name then taken from Prefix, loaded with Passwords.
	CertVar      [2]string
	Prefix       string
	Passwords    []string
	CertCache    *CertCache             // proxy_ssl_certificate_cache; nil: off
	CRLs         []*x509.RevocationList // proxy_ssl_crl
	KeyLog       string                 // proxy_ssl_key_log
	SessionReuse bool                   // proxy_ssl_session_reuse, default on
	ALPN         []string               // proxy_ssl_alpn
}

// proxyTLSConf is one level's proxy_ssl_* directives.
type proxyTLSConf struct {
	on                 bool
	name               string
	serverName, verify bool
	depth              int
	trusted, cert, key string
	passwordFile       string
	protocols          []string
	ciphers            string
	reuse              bool
	certCache          *CertCache
	crl, keyLog        string
	alpn               []string
}

// proxyTLSSetting handles the proxy_ssl_* directives of stream and server
// and reports whether d was one of them.
func (l *loader) proxyTLSSetting(d *directive, pc *proxyConf) bool {
	pt := &pc.ptls
	switch d.name {
	case "proxy_ssl", "proxy_ssl_server_name", "proxy_ssl_verify", "proxy_ssl_session_reuse":
		if !l.check(d, false, take(1)) || !l.once(d, pc) {
			return true
		}
		on, ok := l.flagArg(d)
		if !ok {
			return true
		}
		switch d.name {
		case "proxy_ssl":
			pt.on = on
		case "proxy_ssl_server_name":
			pt.serverName = on
		case "proxy_ssl_verify":
			pt.verify = on
		default:
			pt.reuse = on
		}
	case "proxy_ssl_crl", "proxy_ssl_key_log":
		if !l.check(d, false, take(1)) || !l.once(d, pc) {
			return true
		}
		if d.name == "proxy_ssl_crl" {
			pt.crl = d.args[0]
		} else {
			pt.keyLog = d.args[0]
		}
	case "proxy_ssl_name", "proxy_ssl_trusted_certificate", "proxy_ssl_certificate",
		"proxy_ssl_certificate_key", "proxy_ssl_password_file", "proxy_ssl_ciphers", "proxy_ssl_verify_depth":
		if !l.check(d, false, take(1)) || !l.once(d, pc) {
			return true
		}
		v := d.args[0]
		switch d.name {
		case "proxy_ssl_name":
			pt.name = v
		case "proxy_ssl_trusted_certificate":
			pt.trusted = v
		case "proxy_ssl_certificate":
			pt.cert = v
		case "proxy_ssl_certificate_key":
			pt.key = v
		case "proxy_ssl_password_file":
			pt.passwordFile = v
		case "proxy_ssl_ciphers":
			pt.ciphers = v
		default:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				l.errorf(d, "\"%s\" directive invalid number", d.name)
				return true
			}
			pt.depth = n
		}
	case "proxy_ssl_protocols", "proxy_ssl_alpn":
		if !l.check(d, false, atLeast(1)) || !l.once(d, pc) {
			return true
		}
		if d.name == "proxy_ssl_alpn" {
			pt.alpn = d.args
			return true
		}
		for _, p := range d.args {
			if _, ok := tlsVersions[p]; !ok {
				l.errorf(d, "invalid value \"%s\"", p)
				return true
			}
		}
		pt.protocols = d.args
	case "proxy_ssl_certificate_cache":
		if c, ok := l.certCache(d); ok && l.once(d, pc) {
			pt.certCache = c
		}
	case "proxy_ssl_conf_command":
		l.errorf(d, "\"proxy_ssl_conf_command\" is OpenSSL's own and baton's TLS is Go's crypto/tls: set what it would set with proxy_ssl_protocols and proxy_ssl_ciphers")
	default:
		return false
	}
	return true
}

// finishProxyTLS merges a server's proxy_ssl_* with the stream's; nil
// without "proxy_ssl on".
func (l *loader) finishProxyTLS(srv *Server, own, parent *proxyConf) *ProxyTLS {
	pick := func(name string) *proxyTLSConf {
		if own.set[name] {
			return &own.ptls
		}
		if parent.set[name] {
			return &parent.ptls
		}
		return nil
	}
	if c := pick("proxy_ssl"); c == nil || !c.on {
		return nil
	}
	p := &ProxyTLS{VerifyDepth: 1, SessionReuse: true, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	if c := pick("proxy_ssl_crl"); c != nil {
		crls, err := loadCRLs(l.confFile(c.crl))
		if err != nil {
			l.errAt(srv.Pos, "proxy_ssl_crl", "%v", err)
			return nil
		}
		p.CRLs = crls
	}
	if c := pick("proxy_ssl_key_log"); c != nil {
		p.KeyLog = l.confFile(c.keyLog)
	}
	if c := pick("proxy_ssl_certificate_cache"); c != nil {
		p.CertCache = c.certCache
	}
	if c := pick("proxy_ssl_name"); c != nil {
		p.Name = c.name
	}
	if c := pick("proxy_ssl_server_name"); c != nil {
		p.ServerName = c.serverName
	}
	if c := pick("proxy_ssl_verify"); c != nil {
		p.Verify = c.verify
	}
	if c := pick("proxy_ssl_verify_depth"); c != nil {
		p.VerifyDepth = c.depth
	}
	if c := pick("proxy_ssl_session_reuse"); c != nil {
		p.SessionReuse = c.reuse
	}
	if c := pick("proxy_ssl_alpn"); c != nil {
		p.ALPN = c.alpn
	}
	if c := pick("proxy_ssl_ciphers"); c != nil {
		p.CipherSuites = cipherSuites(c.ciphers)
	}
	if c := pick("proxy_ssl_protocols"); c != nil {
		p.MinVersion, p.MaxVersion = 0, 0
		for _, name := range c.protocols {
			v := tlsVersions[name]
			if v < tls.VersionTLS10 {
				continue
			}
			if p.MinVersion == 0 || v < p.MinVersion {
				p.MinVersion = v
			}
			p.MaxVersion = max(p.MaxVersion, v)
		}
	}
	if c := pick("proxy_ssl_trusted_certificate"); c != nil {
		data, err := os.ReadFile(l.confFile(c.trusted))
		if err != nil {
			l.errAt(srv.Pos, "proxy_ssl_trusted_certificate", "cannot read \"%s\": %v", c.trusted, err)
			return nil
		}
		p.Trusted = x509.NewCertPool()
		if !p.Trusted.AppendCertsFromPEM(data) {
			l.errAt(srv.Pos, "proxy_ssl_trusted_certificate", "no certificate in \"%s\"", c.trusted)
			return nil
		}
	} else if p.Verify {
		l.errAt(srv.Pos, "proxy_ssl_verify", "no proxy_ssl_trusted_certificate for proxy_ssl_verify")
		return nil
	}
	if c := pick("proxy_ssl_certificate"); c != nil && c.cert != "" {
		k := pick("proxy_ssl_certificate_key")
		if k == nil {
			l.errAt(srv.Pos, "proxy_ssl_certificate", "no \"proxy_ssl_certificate_key\" is defined for certificate \"%s\"", c.cert)
			return nil
		}
		var passwords []string
		if pf := pick("proxy_ssl_password_file"); pf != nil {
			data, err := os.ReadFile(l.confFile(pf.passwordFile))
			if err != nil {
				l.errAt(srv.Pos, "proxy_ssl_password_file", "cannot open \"%s\": %v", pf.passwordFile, err)
				return nil
			}
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimRight(line, "\r"); line != "" {
					passwords = append(passwords, line)
				}
			}
		}
		if hasVariable(c.cert) || hasVariable(k.key) {
			p.CertVar, p.Prefix, p.Passwords = [2]string{c.cert, k.key}, l.prefix, passwords
			return p
		}
		cert, err := l.loadPair(c.cert, k.key, passwords)
		if err != nil {
			l.errAt(srv.Pos, "proxy_ssl_certificate", "%v", err)
			return nil
		}
		p.Certs = []tls.Certificate{cert}
	}
	return p
}
