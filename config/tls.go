package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TLS is a server's ngx_stream_ssl_module settings, inherited from stream
// where the server sets none, with its certificates loaded.
type TLS struct {
	// Certs are the ssl_certificate / ssl_certificate_key pairs, in order:
	// several (RSA and ECDSA side by side) let the handshake choose the one
	// the client supports, as nginx.
	Certs []tls.Certificate

	// CertVars are the pairs whose file names have variables: loaded at
	// each handshake, their names evaluated then ($ssl_server_name among
	// others), with Passwords for their keys.
	CertVars  [][2]string
	Passwords []string
	CertCache *CertCache // ssl_certificate_cache; nil: off

	MinVersion, MaxVersion uint16 // ssl_protocols (default TLSv1.2 TLSv1.3)
	Ciphers                string // ssl_ciphers as written (default HIGH:!aNULL:!MD5)
	CipherSuites           []uint16

	HandshakeTimeout time.Duration // ssl_handshake_timeout, default 60s
	SessionTimeout   time.Duration // ssl_session_timeout, default 5m
	SessionTickets   bool          // ssl_session_tickets, default on
	SessionCache     bool          // ssl_session_cache builtin or shared (default: none)
	SessionZone      string        // ssl_session_cache shared:NAME's NAME: servers with one zone share sessions and ticket keys
	ALPN             []string      // ssl_alpn
	RejectHandshake  bool          // ssl_reject_handshake

	// VerifyClient is ssl_verify_client: "off", "on", "optional" or
	// "optional_no_ca"; ClientCAs are ssl_client_certificate's.
	VerifyClient string
	ClientCAs    *x509.CertPool
	VerifyDepth  int // ssl_verify_depth, default 1
	// TrustedCAs verify client certificates too (ClientCAs and
	// ssl_trusted_certificate's), but only ClientCAs are named to clients.
	TrustedCAs *x509.CertPool

	// OCSP stapling: ssl_stapling, ssl_stapling_file (a DER response
	// stapled as it is), ssl_stapling_responder (else each certificate's
	// own), ssl_stapling_verify; TrustedList are ssl_trusted_certificate's
	// certificates, where a certificate's issuer is looked for when its
	// file has no chain.
	// OCSP, ssl_ocsp: "" (off), "on" (every certificate of the client's
	// chain) or "leaf"; ssl_ocsp_responder overrides the certificates'
	// own; ssl_ocsp_cache keeps the answers.
	OCSP          string
	OCSPResponder string
	OCSPCache     bool
	// HasResolver: the server has a "resolver", which an OCSP responder
	// named by host name needs, as nginx's.
	HasResolver bool

	Stapling          bool
	StaplingFile      []byte
	StaplingResponder string
	StaplingVerify    bool
	TrustedList       []*x509.Certificate

	Curves     []tls.CurveID          // ssl_ecdh_curve; nil: "auto" (crypto/tls's own)
	CRLs       []*x509.RevocationList // ssl_crl
	KeyLog     string                 // ssl_key_log: where the session secrets go (NSS key log format)
	TicketKeys [][32]byte             // ssl_session_ticket_key files, each hashed to crypto/tls's 32 bytes
}

// tlsConf is one level's (stream or server) ssl_* directives.
type tlsConf struct {
	certs, keys       []string
	certPos           []Pos
	protocols         []string
	ciphers           string
	handshakeTimeout  time.Duration
	sessionTimeout    time.Duration
	tickets           bool
	alpn              []string
	reject            bool
	verifyClient      string
	clientCertificate string
	verifyDepth       int
	sessionCache      bool
	sessionZone       string
	certCache         *CertCache
	curves            string
	crl, keyLog       string
	ocsp              string
	ocspResponder     string
	ocspCache         bool
	stapling          bool
	staplingVerify    bool
	staplingFile      string
	staplingResponder string
	ticketKeys        []string
	ticketKeyPos      []Pos
	passwordFile      string
	trusted           string
}

// tlsSetting handles the ssl_* directives of stream and server and reports
// whether d was one of them.
func (l *loader) tlsSetting(d *directive, pc *proxyConf) bool {
	tc := &pc.tls
	switch d.name {
	case "ssl_certificate", "ssl_certificate_key":
		if !l.check(d, false, take(1)) {
			return true
		}
		if d.name == "ssl_certificate" {
			tc.certs = append(tc.certs, d.args[0])
			tc.certPos = append(tc.certPos, d.pos)
		} else {
			tc.keys = append(tc.keys, d.args[0])
		}
		return true
	case "ssl_protocols", "ssl_alpn":
		if !l.check(d, false, atLeast(1)) || !l.once(d, pc) {
			return true
		}
		if d.name == "ssl_alpn" {
			tc.alpn = d.args
			return true
		}
		for _, p := range d.args {
			if _, ok := tlsVersions[p]; !ok {
				l.errorf(d, "invalid value \"%s\"", p)
				return true
			}
		}
		tc.protocols = d.args
		return true
	case "ssl_ciphers", "ssl_handshake_timeout", "ssl_session_timeout", "ssl_session_tickets",
		"ssl_prefer_server_ciphers", "ssl_reject_handshake", "ssl_verify_client",
		"ssl_client_certificate", "ssl_verify_depth", "ssl_ecdh_curve", "ssl_dhparam", "ssl_password_file", "ssl_trusted_certificate", "ssl_crl", "ssl_key_log",
		"ssl_stapling", "ssl_stapling_verify", "ssl_stapling_file", "ssl_stapling_responder",
		"ssl_ocsp", "ssl_ocsp_responder", "ssl_ocsp_cache":
	case "ssl_session_cache":
		if !l.check(d, false, atLeast(1)) || !l.once(d, pc) {
			return true
		}
		tc.sessionCache, tc.sessionZone = false, ""
		for _, a := range d.args {
			switch {
			case a == "off" || a == "none":
			case a == "builtin":
				tc.sessionCache = true
			case strings.HasPrefix(a, "builtin:"):
				// nginx's ngx_atoi of the size: digits only.
				if n := strings.TrimPrefix(a, "builtin:"); n == "" || strings.Trim(n, "0123456789") != "" {
					l.errorf(d, "invalid session cache \"%s\"", a)
				}
				tc.sessionCache = true
			case strings.HasPrefix(a, "shared:"):
				// nginx's ngx_stream_ssl_session_cache: a name, then a size
				// of at least 8 pages.
				name, sizeText, ok := strings.Cut(strings.TrimPrefix(a, "shared:"), ":")
				size, err := ParseSize(sizeText)
				switch {
				case !ok || name == "" || err != nil:
					l.errorf(d, "invalid session cache \"%s\"", a)
				case size < minZoneSize:
					l.errorf(d, "session cache \"%s\" is too small", a)
				}
				tc.sessionCache, tc.sessionZone = true, name
			default:
				l.errorf(d, "invalid session cache \"%s\"", a)
			}
		}
		return true
	case "ssl_certificate_cache":
		if c, ok := l.certCache(d); ok && l.once(d, pc) {
			tc.certCache = c
		}
		return true
	case "ssl_session_ticket_key":
		if !l.check(d, false, take(1)) {
			return true
		}
		tc.ticketKeys = append(tc.ticketKeys, d.args[0])
		tc.ticketKeyPos = append(tc.ticketKeyPos, d.pos)
		return true
	case "ssl_conf_command":
		l.errorf(d, "\"ssl_conf_command\" is OpenSSL's own and baton's TLS is Go's crypto/tls: set what it would set with ssl_protocols, ssl_ciphers and ssl_ecdh_curve")
		return true
	default:
		return false
	}
	if !l.check(d, false, take(1)) || !l.once(d, pc) {
		return true
	}
	v := d.args[0]
	switch d.name {
	case "ssl_ciphers":
		tc.ciphers = v
	case "ssl_handshake_timeout", "ssl_session_timeout":
		t, err := ParseDuration(v)
		if err != nil {
			l.errorf(d, "\"%s\" directive invalid value", d.name)
			return true
		}
		if d.name == "ssl_handshake_timeout" {
			tc.handshakeTimeout = t
		} else {
			tc.sessionTimeout = t
		}
	case "ssl_session_tickets", "ssl_prefer_server_ciphers", "ssl_reject_handshake":
		on, ok := l.flagArg(d)
		if !ok {
			return true
		}
		switch d.name {
		case "ssl_session_tickets":
			tc.tickets = on
		case "ssl_reject_handshake":
			tc.reject = on
		}
	case "ssl_verify_client":
		if v, ok := l.enumArg(d, "on", "off", "optional", "optional_no_ca"); ok {
			tc.verifyClient = v
		}
	case "ssl_client_certificate":
		tc.clientCertificate = v
	case "ssl_password_file":
		tc.passwordFile = v
	case "ssl_trusted_certificate":
		tc.trusted = v
	case "ssl_ecdh_curve":
		tc.curves = v
	case "ssl_stapling", "ssl_stapling_verify":
		on, ok := l.flagArg(d)
		if !ok {
			return true
		}
		if d.name == "ssl_stapling" {
			tc.stapling = on
		} else {
			tc.staplingVerify = on
		}
	case "ssl_stapling_file":
		tc.staplingFile = v
	case "ssl_ocsp":
		if v, ok := l.enumArg(d, "on", "off", "leaf"); ok {
			tc.ocsp = v
		}
	case "ssl_ocsp_responder":
		tc.ocspResponder = v
	case "ssl_ocsp_cache":
		tc.ocspCache = v != "off"
	case "ssl_stapling_responder":
		tc.staplingResponder = v
	case "ssl_crl":
		tc.crl = v
	case "ssl_key_log":
		tc.keyLog = v
	case "ssl_verify_depth":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			l.errorf(d, "\"ssl_verify_depth\" directive invalid number")
			return true
		}
		tc.verifyDepth = n
	}
	return true
}

// flagArg reads d's one argument as an nginx flag (ngx_conf_set_flag_slot:
// "on" or "off", any case); ok is false after reporting anything else.
func (l *loader) flagArg(d *directive) (on, ok bool) {
	v, ok := l.enumArg(d, "on", "off")
	return v == "on", ok
}

// enumArg reads d's one argument as one of values, in any case (as nginx's
// enum and flag slots), and returns it in lower case; ok is false after
// reporting anything else, with the values it may be.
func (l *loader) enumArg(d *directive, values ...string) (string, bool) {
	v := strings.ToLower(d.args[0])
	if slices.Contains(values, v) {
		return v, true
	}
	var list strings.Builder
	for i, w := range values {
		switch {
		case i == len(values)-1:
			list.WriteString(" or ")
		case i > 0:
			list.WriteString(", ")
		}
		fmt.Fprintf(&list, "\"%s\"", w)
	}
	l.errorf(d, "invalid value \"%s\" in \"%s\" directive, it must be %s", d.args[0], d.name, list.String())
	return "", false
}

var tlsVersions = map[string]uint16{
	"SSLv2": 0, "SSLv3": 0x0300, "TLSv1": tls.VersionTLS10, // SSLv2, SSLv3: accepted, and left out (crypto/tls has neither) "TLSv1.1": tls.VersionTLS11,
	"TLSv1.2": tls.VersionTLS12, "TLSv1.3": tls.VersionTLS13,
}

// finishTLS merges a server's ssl_* settings with the stream's and loads
// its certificates; nil when the server has no "listen ... ssl" and shares
// no TLS address (shared) with certificates of its own or the stream's.
func (l *loader) finishTLS(srv *Server, own, parent *proxyConf, shared bool) *TLS {
	ssl, owner := false, false
	for _, ln := range srv.Listen {
		ssl = ssl || ln.SSL
		owner = owner || (ln.SSL && !ln.Vhost)
	}
	if !ssl && !shared {
		return nil
	}
	reject := own.tls.reject
	if !own.set["ssl_reject_handshake"] {
		reject = parent.tls.reject
	}
	if !owner && !reject && len(own.tls.certs) == 0 && len(parent.tls.certs) == 0 {
		// A virtual server of a TLS address that another server owns, with
		// no certificate: the default server's serve it (nginx checks the
		// default server of each address only).
		return nil
	}
	pick := func(name string) *tlsConf {
		if own.set[name] {
			return &own.tls
		}
		if parent.set[name] {
			return &parent.tls
		}
		return nil
	}
	t := &TLS{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, Ciphers: "HIGH:!aNULL:!MD5",
		HandshakeTimeout: 60 * time.Second, SessionTimeout: 5 * time.Minute, SessionTickets: true,
		VerifyClient: "off", VerifyDepth: 1}
	if c := pick("ssl_protocols"); c != nil {
		t.MinVersion, t.MaxVersion = 0, 0
		for _, p := range c.protocols {
			v := tlsVersions[p]
			if v < tls.VersionTLS10 {
				continue // SSLv2, SSLv3: crypto/tls has neither
			}
			if t.MinVersion == 0 || v < t.MinVersion {
				t.MinVersion = v
			}
			t.MaxVersion = max(t.MaxVersion, v)
		}
	}
	if c := pick("ssl_ciphers"); c != nil {
		t.Ciphers = c.ciphers
	}
	t.CipherSuites = cipherSuites(t.Ciphers)
	if c := pick("ssl_handshake_timeout"); c != nil {
		t.HandshakeTimeout = c.handshakeTimeout
	}
	if c := pick("ssl_session_timeout"); c != nil {
		t.SessionTimeout = c.sessionTimeout
	}
	if c := pick("ssl_session_tickets"); c != nil {
		t.SessionTickets = c.tickets
	}
	if c := pick("ssl_session_cache"); c != nil {
		t.SessionCache, t.SessionZone = c.sessionCache, c.sessionZone
	}
	if c := pick("ssl_certificate_cache"); c != nil {
		t.CertCache = c.certCache
	}
	if c := pick("ssl_alpn"); c != nil {
		t.ALPN = c.alpn
	}
	if c := pick("ssl_reject_handshake"); c != nil {
		t.RejectHandshake = c.reject
	}
	if c := pick("ssl_verify_depth"); c != nil {
		t.VerifyDepth = c.verifyDepth
	}
	certs := &own.tls
	if len(certs.certs) == 0 && len(certs.keys) == 0 {
		certs = &parent.tls
	}
	var passwords []string
	if c := pick("ssl_password_file"); c != nil {
		data, err := os.ReadFile(l.confFile(c.passwordFile))
		if err != nil {
			l.errAt(srv.Pos, "ssl_password_file", "cannot open \"%s\": %v", c.passwordFile, err)
			return nil
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimRight(line, "\r"); line != "" {
				passwords = append(passwords, line)
			}
		}
	}
	for i, cf := range certs.certs {
		if i >= len(certs.keys) {
			l.errAt(certs.certPos[i], "ssl_certificate", "no \"ssl_certificate_key\" is defined for certificate \"%s\"", cf)
			return nil
		}
		if hasVariable(cf) || hasVariable(certs.keys[i]) {
			t.CertVars = append(t.CertVars, [2]string{l.confFile(cf), l.confFile(certs.keys[i])})
			continue
		}
		cert, err := l.loadPair(cf, certs.keys[i], passwords)
		if err != nil {
			l.errAt(certs.certPos[i], "ssl_certificate", "%v", err)
			return nil
		}
		t.Certs = append(t.Certs, cert)
	}
	t.Passwords = passwords
	if len(t.Certs) == 0 && len(t.CertVars) == 0 && !t.RejectHandshake {
		l.errAt(srv.Pos, "server", "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive")
		return nil
	}
	if c := pick("ssl_verify_client"); c != nil {
		t.VerifyClient = c.verifyClient
	}
	if c := pick("ssl_ecdh_curve"); c != nil && c.curves != "auto" {
		for _, name := range strings.Split(c.curves, ":") {
			id, ok := curveIDs[name]
			if !ok {
				l.errAt(srv.Pos, "ssl_ecdh_curve", "SSL_CTX_set1_curves_list(\"%s\") failed: crypto/tls has no curve \"%s\"", c.curves, name)
				return nil
			}
			t.Curves = append(t.Curves, id)
		}
	}
	if c := pick("ssl_trusted_certificate"); c != nil {
		data, err := os.ReadFile(l.confFile(c.trusted))
		if err != nil {
			l.errAt(srv.Pos, "ssl_trusted_certificate", "cannot read \"%s\": %v", c.trusted, err)
			return nil
		}
		t.TrustedList = append(t.TrustedList, parseCerts(data)...)
	}
	if c := pick("ssl_ocsp"); c != nil && c.ocsp != "off" {
		t.OCSP, t.HasResolver = c.ocsp, srv.Resolver != nil
		if r := pick("ssl_ocsp_responder"); r != nil {
			t.OCSPResponder = r.ocspResponder
		}
		if r := pick("ssl_ocsp_cache"); r != nil {
			t.OCSPCache = r.ocspCache
		}
	}
	if c := pick("ssl_stapling"); c != nil && c.stapling {
		t.Stapling = true
		if f := pick("ssl_stapling_file"); f != nil {
			data, err := os.ReadFile(l.confFile(f.staplingFile))
			if err != nil {
				l.errAt(srv.Pos, "ssl_stapling_file", "cannot open \"%s\": %v", f.staplingFile, err)
				return nil
			}
			t.StaplingFile = data
		}
		if r := pick("ssl_stapling_responder"); r != nil {
			t.StaplingResponder = r.staplingResponder
		}
		if v := pick("ssl_stapling_verify"); v != nil {
			t.StaplingVerify = v.staplingVerify
		}
	}
	if c := pick("ssl_crl"); c != nil {
		crls, err := loadCRLs(l.confFile(c.crl))
		if err != nil {
			l.errAt(srv.Pos, "ssl_crl", "%v", err)
			return nil
		}
		t.CRLs = crls
	}
	if c := pick("ssl_key_log"); c != nil {
		t.KeyLog = l.confFile(c.keyLog)
	}
	keys := &own.tls
	if len(keys.ticketKeys) == 0 {
		keys = &parent.tls
	}
	for i, f := range keys.ticketKeys {
		data, err := os.ReadFile(l.confFile(f))
		if err != nil {
			l.errAt(keys.ticketKeyPos[i], "ssl_session_ticket_key", "cannot open \"%s\": %v", f, err)
			return nil
		}
		if len(data) != 48 && len(data) != 80 {
			l.errAt(keys.ticketKeyPos[i], "ssl_session_ticket_key", "\"%s\" must be 48 or 80 bytes", f)
			return nil
		}
		t.TicketKeys = append(t.TicketKeys, sha256.Sum256(data))
	}
	if t.VerifyClient != "off" {
		cc, tr := pick("ssl_client_certificate"), pick("ssl_trusted_certificate")
		if cc == nil && tr == nil && t.VerifyClient != "optional_no_ca" {
			l.errAt(srv.Pos, "server", "no ssl_client_certificate for ssl_verify_client")
			return nil
		}
		t.TrustedCAs = x509.NewCertPool()
		for _, f := range []struct {
			c    *tlsConf
			name string
			own  bool
		}{{cc, "ssl_client_certificate", true}, {tr, "ssl_trusted_certificate", false}} {
			if f.c == nil {
				continue
			}
			file := f.c.clientCertificate
			if !f.own {
				file = f.c.trusted
			}
			data, err := os.ReadFile(l.confFile(file))
			if err != nil {
				l.errAt(srv.Pos, f.name, "cannot read \"%s\": %v", file, err)
				return nil
			}
			if !t.TrustedCAs.AppendCertsFromPEM(data) {
				l.errAt(srv.Pos, f.name, "no certificate in \"%s\"", file)
				return nil
			}
			if f.own {
				t.ClientCAs = x509.NewCertPool()
				t.ClientCAs.AppendCertsFromPEM(data)
				t.TrustedList = append(t.TrustedList, parseCerts(data)...)
			}
		}
	}
	return t
}

// loadPair loads a certificate and its key, the key decrypted with the
// first of passwords that opens it (ssl_password_file).
func (l *loader) loadPair(certFile, keyFile string, passwords []string) (tls.Certificate, error) {
	return LoadPair(l.confFile(certFile), l.confFile(keyFile), passwords)
}

// LoadPair loads a certificate and its key (files, or "data:" text), the
// key decrypted with the first of passwords that opens it; the errors name
// the files as nginx's.
func LoadPair(certFile, keyFile string, passwords []string) (tls.Certificate, error) {
	return LoadPairWith(readPEM, certFile, keyFile, passwords)
}

// LoadPairWith is LoadPair reading the files with read (a cache).
func LoadPairWith(read func(string) ([]byte, error), certFile, keyFile string, passwords []string) (tls.Certificate, error) {
	certPEM, err := read(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cannot load certificate \"%s\": %v", certFile, err)
	}
	keyPEM, err := read(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cannot load certificate key \"%s\": %v", keyFile, err)
	}
	if keyPEM, err = decryptKeyPEM(keyPEM, passwords); err != nil {
		return tls.Certificate{}, fmt.Errorf("cannot load certificate key \"%s\": %v", keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cannot load certificate \"%s\" with key \"%s\": %v", certFile, keyFile, err)
	}
	return cert, nil
}

var curveIDs = map[string]tls.CurveID{
	"X25519": tls.X25519, "x25519": tls.X25519,
	"prime256v1": tls.CurveP256, "secp256r1": tls.CurveP256, "P-256": tls.CurveP256,
	"secp384r1": tls.CurveP384, "P-384": tls.CurveP384,
	"secp521r1": tls.CurveP521, "P-521": tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// parseCerts returns the certificates of PEM data.
func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return out
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, cert)
		}
	}
}

// loadCRLs reads the PEM certificate revocation lists in file (ssl_crl).
func loadCRLs(file string) ([]*x509.RevocationList, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot open \"%s\": %v", file, err)
	}
	var out []*x509.RevocationList
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cannot load CRL \"%s\": %v", file, err)
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRL in \"%s\"", file)
	}
	return out, nil
}

// Revoked reports whether a CRL lists c as revoked (by its issuer).
func Revoked(c *x509.Certificate, crls []*x509.RevocationList) bool {
	for _, crl := range crls {
		if crl.Issuer.String() != c.Issuer.String() {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return true
			}
		}
	}
	return false
}

// readPEM reads a file, or the text of a "data:" value (nginx 1.15.10+).
func readPEM(name string) ([]byte, error) {
	if text, ok := strings.CutPrefix(name, "data:"); ok {
		return []byte(text), nil
	}
	return os.ReadFile(name)
}

// confFile is a file named in the config: relative to the main config's
// directory, as nginx's conf prefix.
func (l *loader) confFile(name string) string {
	if filepath.IsAbs(name) || strings.HasPrefix(name, "data:") {
		return name
	}
	return filepath.Join(l.prefix, name)
}

// cipherSuites maps an OpenSSL cipher string to the TLS 1.2 suites
// crypto/tls offers: nil (Go's own secure list) unless the string names
// suites Go knows by their OpenSSL names, in which case only those. TLS 1.3
// suites are not configurable in crypto/tls.
func cipherSuites(s string) []uint16 {
	var out []uint16
	for _, name := range strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		if id, ok := opensslSuites[name]; ok {
			out = append(out, id)
		}
	}
	return out
}

var opensslSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// OpenSSLCipherName is a cipher suite as OpenSSL (and nginx's $ssl_cipher)
// names it: "ECDHE-RSA-AES128-GCM-SHA256", or for TLS 1.3 its IANA name.
func OpenSSLCipherName(id uint16) string {
	for name, v := range opensslSuites {
		if v == id {
			return name
		}
	}
	return tls.CipherSuiteName(id)
}
