package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ssl_ocsp asks the client certificate's status of the responder after the
// handshake: "good" goes on, "revoked" ends the session with 500 and
// FAILED:certificate revoked in $ssl_client_verify.
func TestTLSOCSPClientCertificate(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliTmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	cliDER, _ := x509.CreateCertificate(rand.Reader, cliTmpl, ca, &cliKey.PublicKey, caKey)
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)

	var revoked atomic.Bool
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc, _ := url.PathUnescape(strings.TrimPrefix(r.URL.Path, "/"))
		der, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			http.Error(w, "bad request", 400)
			return
		}
		req, err := ocsp.ParseRequest(der)
		if err != nil {
			http.Error(w, "bad request", 400)
			return
		}
		status := ocsp.Good
		if revoked.Load() {
			status = ocsp.Revoked
		}
		resp, _ := ocsp.CreateResponse(ca, ca, ocsp.Response{Status: status, SerialNumber: req.SerialNumber,
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), RevokedAt: time.Now()}, caKey)
		w.Write(resp)
	}))
	defer responder.Close()

	crt, key := selfSigned(t, dir, "srv", "srv.test")
	log := filepath.Join(dir, "a.log")
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    log_format v "$status $ssl_client_verify";
    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s;
             ssl_verify_client on; ssl_client_certificate %s; ssl_ocsp leaf; ssl_ocsp_responder %s;
             return "$ssl_client_verify"; access_log %s v; }
}`, crt, key, caFile, responder.URL, log))
	pair := tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	dial := func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addrs[0],
			&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
		if err != nil {
			return "handshake: " + err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := dial(); got != "SUCCESS" {
		t.Fatalf("a good certificate: %q", got)
	}
	revoked.Store(true)
	if got := dial(); got != "" {
		t.Fatalf("a revoked certificate was served: %q", got)
	}
	waitFor(t, func() bool {
		data, _ := os.ReadFile(log)
		return string(data) == "200 SUCCESS\n500 FAILED:certificate revoked\n"
	})
}

// ssl_ocsp trusts a response signed by the certificate's issuer, or by a
// responder the issuer made for OCSP signing, as OpenSSL; not one signed by
// another certificate that chains to the trusted CAs, such as the root
// (nginx-tests stream_ssl_ocsp.t "root ca not trusted").
func TestOCSPTrustedSigner(t *testing.T) {
	mk := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool, eku []x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: eku}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k
	}
	root, rootKey := mk("root", nil, nil, true, nil)
	inter, interKey := mk("int", root, rootKey, true, nil)
	leaf, _ := mk("leaf", inter, interKey, false, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	delegated, delegatedKey := mk("responder", inter, interKey, false, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning})
	notForOCSP, notForOCSPKey := mk("other", inter, interKey, false, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	roots := x509.NewCertPool()
	roots.AddCert(root)
	for _, tc := range []struct {
		name   string
		signer *x509.Certificate
		key    *ecdsa.PrivateKey
		ok     bool
	}{
		{"issuer", inter, interKey, true},
		{"delegated responder", delegated, delegatedKey, true},
		{"responder not for OCSP signing", notForOCSP, notForOCSPKey, false},
		{"root CA", root, rootKey, false},
	} {
		der, err := ocsp.CreateResponse(inter, tc.signer, ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.SerialNumber,
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), Certificate: tc.signer}, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ocsp.ParseResponse(der, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := trustedSigner(r, inter, roots); (err == nil) != tc.ok {
			t.Errorf("%s: trusted %v (%v), want %v", tc.name, err == nil, err, tc.ok)
		}
	}
}
