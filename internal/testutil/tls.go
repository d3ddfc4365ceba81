package testutil

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/batonproxy/baton/internal/tlsrec"
)

// TLSClient is a TLS client connection whose record layer is baton's own
// (tlsrec: it can send KeyUpdate, which crypto/tls's client never does) or
// crypto/tls's. Reads and writes go through whichever carries it.
type TLSClient struct {
	io.ReadWriter
	Raw net.Conn
	TC  *tls.Conn
	Rec *tlsrec.Conn // nil on crypto/tls's record layer
}

// DialTLS dials addr and runs crypto/tls's client handshake with cfg
// (certificates not verified); with own, baton's record layer carries the
// connection after it.
func DialTLS(addr string, cfg *tls.Config, own bool) (*TLSClient, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	var kl tlsrec.KeyLog
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify, cfg.KeyLogWriter = true, &kl
	hc := tlsrec.NewHandshakeConn(raw, nil)
	tc := tls.Client(hc, cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	c := &TLSClient{ReadWriter: tc, Raw: raw, TC: tc}
	if own {
		if c.Rec, err = tlsrec.FromHandshake(raw, hc, tc.ConnectionState(), &kl, false); err != nil {
			raw.Close()
			return nil, err
		}
		c.ReadWriter = c.Rec
	}
	return c, nil
}

// RoundTrip writes p and reads it back (from an echo), within 20 s.
func (c *TLSClient) RoundTrip(p []byte) error {
	c.Raw.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(p); errc <- err }()
	got := make([]byte, len(p))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, p) {
		return errors.New("the echo differs")
	}
	return <-errc
}

// Close sends close_notify and closes the connection.
func (c *TLSClient) Close() error {
	if c.Rec != nil {
		return c.Rec.Close()
	}
	return c.TC.Close()
}
