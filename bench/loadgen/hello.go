package main

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// clientHello returns the first TLS record a crypto/tls client sends for
// serverName and alpn (nil for none): its ClientHello, exactly as a Go client
// would put it on the wire, so that a proxy with ssl_preread sees a real
// hello (SNI, ALPN, the usual extensions and key shares). It is made once and
// then sent on every connection; no handshake ever completes.
//
// The client runs over a net.Pipe; its first write is captured and the pipe
// closed, which ends the handshake with an error we ignore.
func clientHello(serverName string, alpn []string) ([]byte, error) {
	if serverName == "" || net.ParseIP(serverName) != nil {
		// crypto/tls sends no server_name extension for an IP address.
		return nil, fmt.Errorf("server name %q: want a DNS name", serverName)
	}
	cli, srv := net.Pipe()
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cli.Close()
		c := tls.Client(cli, &tls.Config{ServerName: serverName, NextProtos: alpn, MinVersion: tls.VersionTLS12})
		c.Handshake() // fails once srv is closed
	}()
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(srv, hdr[:]); err != nil {
		return nil, fmt.Errorf("capture ClientHello: %w", err)
	}
	// A handshake record (22), TLS 1.0-1.2 record version, one ClientHello.
	n := int(binary.BigEndian.Uint16(hdr[3:5]))
	if hdr[0] != 22 || hdr[1] != 3 || n < 4 || n > 1<<14 {
		return nil, fmt.Errorf("capture ClientHello: unexpected record header % x", hdr)
	}
	rec := make([]byte, 5+n)
	copy(rec, hdr[:])
	if _, err := io.ReadFull(srv, rec[5:]); err != nil {
		return nil, fmt.Errorf("capture ClientHello: %w", err)
	}
	if rec[5] != 1 { // handshake type client_hello
		return nil, errors.New("capture ClientHello: first handshake message is not a ClientHello")
	}
	srv.Close()
	<-done
	return rec, nil
}

// splitALPN turns "h2,http/1.1" into its protocols; "" gives none.
func splitALPN(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	ps := strings.Split(s, ",")
	for _, p := range ps {
		if p == "" || len(p) > 255 {
			return nil, fmt.Errorf("-alpn %q: empty or over-long protocol name", s)
		}
	}
	return ps, nil
}
