package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"
)

// helloInfo hands hello to a crypto/tls server and returns what it saw.
func helloInfo(t *testing.T, hello []byte) *tls.ClientHelloInfo {
	t.Helper()
	cli, srv := net.Pipe()
	defer cli.Close()
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	errStop := errors.New("seen")
	var got *tls.ClientHelloInfo
	done := make(chan error, 1)
	go func() {
		s := tls.Server(srv, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			got = h
			return nil, errStop
		}})
		done <- s.Handshake()
		srv.Close()
	}()
	go cli.Write(hello)         // the server may stop reading before the end: its error closes the pipe
	go io.Copy(io.Discard, cli) // the alert the server sends when it stops
	if err := <-done; !errors.Is(err, errStop) {
		t.Fatalf("server handshake: %v, want the stop after reading the hello", err)
	}
	return got
}

func TestClientHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		alpn []string
	}{
		{"db.example.com", nil},
		{"web.example.com", []string{"h2", "http/1.1"}},
	} {
		hello, err := clientHello(tc.name, tc.alpn)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if hello[0] != 22 || len(hello) != 5+int(hello[3])<<8+int(hello[4]) {
			t.Fatalf("%s: not one handshake record: % x... (%d bytes)", tc.name, hello[:5], len(hello))
		}
		h := helloInfo(t, hello)
		if h.ServerName != tc.name || !reflect.DeepEqual(h.SupportedProtos, tc.alpn) {
			t.Errorf("server saw name %q alpn %q, want %q %q", h.ServerName, h.SupportedProtos, tc.name, tc.alpn)
		}
	}
	for _, bad := range []string{"", "127.0.0.1", "::1"} {
		if _, err := clientHello(bad, nil); err == nil {
			t.Errorf("clientHello(%q): no error, want one (no SNI for an address)", bad)
		}
	}
}

func TestConnRateHello(t *testing.T) {
	hello, err := clientHello("mq.example.com", []string{"h2"})
	if err != nil {
		t.Fatal(err)
	}
	echo := startSink(t, modeEcho)
	r := runConnRate(connrateConfig{addr: echo, workers: 2, duration: 200 * time.Millisecond,
		maxIters: 1_000_000, opTimeout: 2 * time.Second, maxErrors: 10, payload: hello})
	if r.errors() != 0 || r.ok == 0 || r.ok != r.attempts {
		t.Fatalf("ok=%d attempts=%d errors=%d, first %v", r.ok, r.attempts, r.errors(), r.firstErr)
	}
	// A peer that answers something else than the hello: every attempt fails.
	r = runConnRate(connrateConfig{addr: startSink(t, modeGreet), workers: 1, duration: time.Minute,
		maxIters: 1_000_000, opTimeout: 2 * time.Second, maxErrors: 5, payload: hello})
	if r.ok != 0 || r.errRead < 5 || r.stopped != "max-errors" {
		t.Fatalf("greet peer: ok=%d errRead=%d stopped=%q first %v", r.ok, r.errRead, r.stopped, r.firstErr)
	}
}

func TestSplitALPN(t *testing.T) {
	for in, want := range map[string][]string{"": nil, "h2": {"h2"}, "h2,http/1.1": {"h2", "http/1.1"}} {
		if got, err := splitALPN(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("splitALPN(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{",", "h2,", ",h2"} {
		if _, err := splitALPN(in); err == nil {
			t.Errorf("splitALPN(%q): no error", in)
		}
	}
}
