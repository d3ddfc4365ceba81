package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/config"
	"golang.org/x/crypto/ocsp"
)

// OCSP stapling (ssl_stapling), as nginx's ngx_ssl_stapling: each
// certificate's OCSP response is fetched from its responder (or
// ssl_stapling_responder) when a handshake first needs it and again when it
// is due, off the handshake's path (the handshake that starts a fetch
// staples nothing yet); a response that is not "good", or that fails
// ssl_stapling_verify, is not stapled, and is asked again in 5 minutes. An
// ssl_stapling_file response is stapled as it is.

const (
	staplingRetry   = 5 * time.Minute // after an error or a bad status, as nginx's 300 s
	staplingRefresh = time.Hour       // a response without nextUpdate is asked again after this
	staplingTimeout = 10 * time.Second
)

// stapler is one certificate's stapled response.
type stapler struct {
	leaf, issuer *x509.Certificate
	url          string
	verify       bool
	roots        *x509.CertPool // ssl_ocsp: the CAs a responder's certificate must chain to
	log          *Logger

	mu       sync.Mutex
	staple   []byte
	due      time.Time
	fetching bool
}

// newStaplers makes the staplers of t's certificates; nil without
// ssl_stapling.
func newStaplers(t *config.TLS, log *Logger) []*stapler {
	if !t.Stapling {
		return nil
	}
	out := make([]*stapler, len(t.Certs))
	for i := range t.Certs {
		c := &t.Certs[i]
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			continue
		}
		st := &stapler{leaf: leaf, verify: t.StaplingVerify, log: log}
		if t.StaplingFile != nil {
			st.staple, st.due = t.StaplingFile, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
			out[i] = st
			continue
		}
		if len(c.Certificate) > 1 {
			st.issuer, _ = x509.ParseCertificate(c.Certificate[1])
		}
		for _, cand := range t.TrustedList {
			if st.issuer == nil && bytes.Equal(cand.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(cand) == nil {
				st.issuer = cand
			}
		}
		st.url = t.StaplingResponder
		if st.url == "" && len(leaf.OCSPServer) > 0 {
			st.url = leaf.OCSPServer[0]
		}
		if st.issuer == nil || st.url == "" {
			log.Logf(LevelWarn, "\"ssl_stapling\" ignored, no OCSP responder URL or issuer certificate for certificate \"%s\"", leaf.Subject)
			continue
		}
		out[i] = st
	}
	return out
}

// current is the response to staple now, nil for none; a fetch starts
// when one is due.
func (st *stapler) current() []byte {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.fetching && time.Now().After(st.due) && st.url != "" {
		st.fetching = true
		go st.fetch()
	}
	return st.staple
}

// fetch asks the responder and keeps a good response.
func (st *stapler) fetch() {
	staple, next, err := st.ask()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.fetching = false
	if err != nil {
		st.log.Logf(LevelError, "OCSP response for certificate \"%s\": %v", st.leaf.Subject, err)
		st.staple, st.due = nil, time.Now().Add(staplingRetry)
		return
	}
	st.staple, st.due = staple, next
}

func (st *stapler) ask() ([]byte, time.Time, error) {
	req, err := ocsp.CreateRequest(st.leaf, st.issuer, nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), staplingTimeout)
	defer cancel()
	u := strings.TrimSuffix(st.url, "/") + "/" + neturl.PathEscape(base64.StdEncoding.EncodeToString(req))
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, errors.New("responder answered " + resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, time.Time{}, err
	}
	var r *ocsp.Response
	switch {
	case st.roots != nil:
		// ssl_ocsp: signed by the issuer, or by a responder certificate
		// that chains to the trusted CAs (OpenSSL's OCSP_basic_verify).
		if r, err = ocsp.ParseResponse(body, nil); err == nil {
			err = trustedSigner(r, st.issuer, st.roots)
		}
	case st.verify:
		r, err = ocsp.ParseResponseForCert(body, st.leaf, st.issuer)
	default:
		r, err = ocsp.ParseResponse(body, nil)
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	if r.SerialNumber == nil || r.SerialNumber.Cmp(st.leaf.SerialNumber) != 0 {
		return nil, time.Time{}, errors.New("the response is for another certificate")
	}
	if r.Status != ocsp.Good {
		return nil, time.Time{}, errors.New("certificate status \"" + ocspStatus(r.Status) + "\"")
	}
	next := time.Now().Add(staplingRefresh)
	if !r.NextUpdate.IsZero() && r.NextUpdate.Before(next) {
		next = r.NextUpdate
	}
	return body, next, nil
}

// trustedSigner checks who signed an OCSP response, as OpenSSL's
// OCSP_basic_verify (ocsp_check_issuer): the issuer itself (its name and
// key), or a responder the issuer issued for OCSP signing (RFC 6960
// 4.2.2.2) that chains to roots. Another certificate that chains to roots
// (the root CA itself, say) is not trusted to speak for the issuer.
func trustedSigner(r *ocsp.Response, issuer *x509.Certificate, roots *x509.CertPool) error {
	signer := r.Certificate
	if signer == nil {
		return r.CheckSignatureFrom(issuer)
	}
	if bytes.Equal(signer.RawSubject, issuer.RawSubject) && bytes.Equal(signer.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
		return nil
	}
	if !bytes.Equal(signer.RawIssuer, issuer.RawSubject) || signer.CheckSignatureFrom(issuer) != nil {
		return errors.New("the OCSP response is signed by neither the issuer nor a responder of the issuer's")
	}
	if !slices.Contains(signer.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("the OCSP responder's certificate is not for OCSP signing")
	}
	inter := x509.NewCertPool()
	inter.AddCert(issuer)
	_, err := signer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func ocspStatus(s int) string {
	switch s {
	case ocsp.Revoked:
		return "revoked"
	case ocsp.Unknown:
		return "unknown"
	}
	return "good"
}

// staplingCertificate is a GetCertificate that picks, as crypto/tls would,
// the first certificate the client supports, with its staple.
func staplingCertificate(certs []tls.Certificate, staplers []*stapler) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		i := 0
		for k := range certs {
			if hello.SupportsCertificate(&certs[k]) == nil {
				i = k
				break
			}
		}
		c := certs[i]
		if i < len(staplers) {
			c.OCSPStaple = staplers[i].current()
		}
		return &c, nil
	}
}

// ocspChecker is ssl_ocsp: the status of the client's certificates asked
// of their responders (or ssl_ocsp_responder), kept with ssl_ocsp_cache.
type ocspChecker struct {
	leafOnly    bool
	responder   string
	roots       *x509.CertPool
	known       []*x509.Certificate // where a chain that ends at a trusted intermediate goes on
	hasResolver bool
	log         *Logger
	cache       map[string]ocspAnswer // by issuer and serial; nil without ssl_ocsp_cache
	mu          sync.Mutex
}

type ocspAnswer struct {
	verdict string
	until   time.Time
}

func newOCSPChecker(t *config.TLS, log *Logger) *ocspChecker {
	if t.OCSP == "" {
		return nil
	}
	c := &ocspChecker{leafOnly: t.OCSP == "leaf", responder: t.OCSPResponder, roots: t.TrustedCAs,
		known: t.TrustedList, hasResolver: t.HasResolver, log: log}
	if t.OCSPCache {
		c.cache = map[string]ocspAnswer{}
	}
	return c
}

// check returns $ssl_client_verify for a verified chain (leaf first, root
// last): SUCCESS, or FAILED with nginx's reason.
func (c *ocspChecker) check(chain []*x509.Certificate) string {
	// Go's chain ends at the first trusted certificate; OpenSSL's (and so
	// nginx's) goes on to a self-signed root through the trusted ones.
	chain = slices.Clone(chain)
	for len(chain) < 10 {
		last := chain[len(chain)-1]
		if bytes.Equal(last.RawIssuer, last.RawSubject) {
			break
		}
		var next *x509.Certificate
		for _, k := range c.known {
			if bytes.Equal(k.RawSubject, last.RawIssuer) && last.CheckSignatureFrom(k) == nil {
				next = k
				break
			}
		}
		if next == nil {
			break
		}
		chain = append(chain, next)
	}
	for i := 0; i+1 < len(chain); i++ {
		if v := c.status(chain[i], chain[i+1]); v != "SUCCESS" {
			return v
		}
		if c.leafOnly {
			break
		}
	}
	return "SUCCESS"
}

// status asks (or remembers) one certificate's status.
func (c *ocspChecker) status(cert, issuer *x509.Certificate) string {
	key := string(issuer.RawSubject) + "\x00" + cert.SerialNumber.String()
	now := time.Now()
	if c.cache != nil {
		c.mu.Lock()
		a, ok := c.cache[key]
		c.mu.Unlock()
		if ok && now.Before(a.until) {
			return a.verdict
		}
	}
	url := c.responder
	if url == "" && len(cert.OCSPServer) > 0 {
		url = cert.OCSPServer[0]
	}
	verdict, until := "FAILED:certificate status request failed", now.Add(staplingRetry)
	if u, err := neturl.Parse(url); err == nil && net.ParseIP(u.Hostname()) == nil && !c.hasResolver {
		c.log.Logf(LevelError, "no resolver defined to resolve %s while requesting certificate status", u.Hostname())
		url = "" // as nginx: a responder's host name needs a resolver
	}
	if url != "" {
		st := &stapler{leaf: cert, issuer: issuer, url: url, roots: c.roots}
		_, next, err := st.ask()
		switch {
		case err == nil:
			verdict, until = "SUCCESS", next
		case strings.Contains(err.Error(), "\"revoked\""):
			verdict = "FAILED:certificate revoked"
		default:
			c.log.Logf(LevelError, "OCSP check of client certificate \"%s\": %v", cert.Subject, err)
		}
	}
	if c.cache != nil {
		c.mu.Lock()
		if len(c.cache) > 10000 {
			clear(c.cache)
		}
		c.cache[key] = ocspAnswer{verdict, until}
		c.mu.Unlock()
	}
	return verdict
}
