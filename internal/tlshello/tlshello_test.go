package tlshello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// outcome is everything a caller can see after feeding a Parser.
type outcome struct {
	done    bool
	err     error
	found   bool
	sni     string
	alpn    string
	version string
	v2      bool
}

func (o outcome) String() string {
	return fmt.Sprintf("{done:%v err:%v found:%v sni:%q alpn:%q version:%q v2:%v}",
		o.done, o.err, o.found, o.sni, o.alpn, o.version, o.v2)
}

func outcomeOf(p *Parser, done bool, err error) outcome {
	r := p.Result()
	return outcome{done, err, r.Found, string(r.ServerName), string(r.ALPN), r.Version, r.SSLv2Hello}
}

// feed runs a new Parser over in as a connection would see it: Parse gets in[:c] for each cut c and
// then all of in, and is not called again once done.
func feed(in []byte, cuts ...int) outcome {
	var p Parser
	var done bool
	var err error
	for _, c := range append(cuts, len(in)) {
		if done, err = p.Parse(in[:c]); done {
			break
		}
	}
	return outcomeOf(&p, done, err)
}

// feedBytes feeds in one byte at a time.
func feedBytes(in []byte) outcome {
	cuts := make([]int, 0, len(in))
	for i := 1; i < len(in); i++ {
		cuts = append(cuts, i)
	}
	return feed(in, cuts...)
}

// ok is the outcome of a ClientHello nginx reads to its end.
func ok(sni, alpn, version string) outcome {
	return outcome{done: true, found: true, sni: sni, alpn: alpn, version: version}
}

// no is the outcome of an input nginx declines.
func no(err error) outcome { return outcome{done: true, err: err} }

// checkFramings checks that the handshake message msg gives want however it is split into records
// and however those arrive.
func checkFramings(t *testing.T, msg []byte, want outcome) {
	t.Helper()
	one := frame(msg, 1)
	ways := map[string]func() outcome{
		"whole":              func() outcome { return feed(one) },
		"byte by byte":       func() outcome { return feedBytes(one) },
		"record version 3.0": func() outcome { return feed(frame(msg, 0)) },
		"then application data": func() outcome {
			return feed(append(bytes.Clone(one), 23, 3, 3, 0, 2, 'h', 'i'))
		},
		"records of 7 bytes, byte by byte": func() outcome { return feedBytes(frameEvery(msg, 7)) },
	}
	for _, n := range []int{1, 2, 3, 4, 5, 16, 33, 100, 255, 1000} {
		ways[fmt.Sprintf("records of %d bytes", n)] = func() outcome { return feed(frameEvery(msg, n)) }
	}
	for name, run := range ways {
		if got := run(); got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
}

var tlsVersions = []struct {
	v    uint16
	name string
	// hello is the name of the ClientHello's client_version, which crypto/tls caps at TLS 1.2.
	hello string
}{
	{tls.VersionTLS10, "TLS 1.0", "TLSv1"},
	{tls.VersionTLS11, "TLS 1.1", "TLSv1.1"},
	{tls.VersionTLS12, "TLS 1.2", "TLSv1.2"},
	{tls.VersionTLS13, "TLS 1.3", "TLSv1.2"},
}

// TestGoClientHellos reads what crypto/tls clients send.
func TestGoClientHellos(t *testing.T) {
	configs := []struct {
		name       string
		serverName string
		protos     []string
	}{
		{"sni and alpn", "example.com", []string{"h2", "http/1.1"}},
		{"sni only", "www.example.org", nil},
		{"alpn only", "", []string{"h2"}},
		{"neither", "", nil},
		{"upper case", "Mixed.Example.COM", []string{"x"}},
		{"long", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".example",
			[]string{strings.Repeat("p", 255), "h2", "http/1.1", "acme-tls/1"}},
	}
	for _, v := range tlsVersions {
		for _, c := range configs {
			t.Run(v.name+"/"+c.name, func(t *testing.T) {
				cfg := &tls.Config{ServerName: c.serverName, NextProtos: c.protos, MinVersion: tls.VersionTLS10, MaxVersion: v.v}
				msg := handshake(t, goHello(t, cfg))
				alpn := strings.Join(c.protos, ",")
				// crypto/tls sends supported_versions whatever MaxVersion is, and nginx
				// takes any supported_versions extension for TLS 1.3.
				checkFramings(t, msg, ok(c.serverName, alpn, "TLSv1.3"))
				// Without it nginx reports client_version.
				checkFramings(t, withoutExt(t, msg, 43), ok(c.serverName, alpn, v.hello))
			})
		}
	}
}

// TestNginxTests mirrors the cases of nginx's stream_ssl_preread.t, stream_ssl_preread_alpn.t and
// stream_ssl_preread_protocol.t.
func TestNginxTests(t *testing.T) {
	foof := clientHello(0x0303, sni("foof"))
	short := clientHello(0x0303, sni("foo"))
	putLen24(short[1:], len(short)-4-1)

	tests := []struct {
		name string
		in   []byte
		cuts []int
		want outcome
	}{
		// stream_ssl_preread.t
		{"sni", frame(clientHello(0x0303, sni("foo")), 1), nil, ok("foo", "", "TLSv1.2")},
		{"no sni", frame(clientHello(0x0303, alpn("h2")), 1), nil, ok("", "h2", "TLSv1.2")},
		{"not a handshake", bytes.Repeat([]byte("x"), 1000), nil, no(errNotHandshake)},
		{"not a handshake, 8-byte buffer", bytes.Repeat([]byte("x"), 8), nil, no(errNotHandshake)},
		{"short client hello", frame(short, 1), nil, no(errHandshakeFormat)},
		{"older version in ssl record", frame(clientHello(0x0303, sni("foo")), 0), nil, ok("foo", "", "TLSv1.2")},
		{"handshake fragment split on SNI", frame(foof, 1, len(foof)-1), nil, ok("foof", "", "TLSv1.2")},
		{"handshake fragment split on SNI, apart", frame(foof, 1, len(foof)-1), []int{len(foof) + 5 - 1}, ok("foof", "", "TLSv1.2")},
		// stream_ssl_preread_alpn.t
		{"alpn", frame(clientHello(0x0303, alpn("foo")), 1), nil, ok("", "foo", "TLSv1.2")},
		{"alpn 2", frame(clientHello(0x0303, alpn("bar")), 1), nil, ok("", "bar", "TLSv1.2")},
		{"alpn many", frame(clientHello(0x0303, alpn("foo", "bar")), 1), nil, ok("", "foo,bar", "TLSv1.2")},
		// stream_ssl_preread_protocol.t
		{"client hello SSLv3", frame(clientHello(0x0300, sni("foo")), 0), nil, ok("foo", "", "SSLv3")},
		{"client hello TLSv1", frame(clientHello(0x0301, sni("foo")), 1), nil, ok("foo", "", "TLSv1")},
		{"client hello TLSv1.1", frame(clientHello(0x0302, sni("foo")), 1), nil, ok("foo", "", "TLSv1.1")},
		{"client hello TLSv1.2", frame(clientHello(0x0303, sni("foo")), 1), nil, ok("foo", "", "TLSv1.2")},
		{"client hello supported_versions", frame(clientHello(0x0303, supportedVersions(0x7f1c)), 1), nil, ok("", "", "TLSv1.3")},
		{"client hello version 2", sslv2Hello(0x0002), nil, outcome{done: true, found: true, version: "SSLv2", v2: true}},
		{"client hello version 2 - TLSv1", sslv2Hello(0x0301), nil, outcome{done: true, found: true, version: "TLSv1", v2: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := feed(tt.in, tt.cuts...); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got := feedBytes(tt.in); got != tt.want {
				t.Errorf("byte by byte: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAsNginx pins what nginx does with inputs a careful TLS parser would treat otherwise.
func TestAsNginx(t *testing.T) {
	h := func(exts ...[]byte) []byte { return frame(clientHello(0x0303, exts...), 1) }
	withSNI := clientHello(0x0303, sni("a.example"), alpn("h2", "http/1.1"))
	sniEnd := len(withSNI) - len(alpn("h2", "http/1.1"))
	sniBad := sni("foo")
	sniBad[4+2] = 1 // name_type
	sniShort := sni("foo")
	sniShort[4+1]-- // server_name_list length
	alpnShort := alpn("h2", "http/1.1")
	alpnShort[4+1]--
	hsShort := clientHello(0x0303, sni("foo"))
	putLen24(hsShort[1:], len(hsShort)-4-3)
	serverHello := clientHello(0x0303)
	serverHello[0] = 2
	recordV4 := frame(clientHello(0x0303), 1)
	recordV4[1] = 4

	tests := []struct {
		name string
		in   []byte
		want outcome
	}{
		{"supported_versions listing TLS 1.2 only", h(supportedVersions(0x0303)), ok("", "", "TLSv1.3")},
		{"empty supported_versions", h(supportedVersions()), ok("", "", "TLSv1.3")},
		{"supported_versions listing TLS 1.0 only", h(supportedVersions(0x0301), sni("x")), ok("x", "", "TLSv1.3")},
		{"second server_name extension ignored", h(sni("first"), sni("second")), ok("first", "", "TLSv1.2")},
		{"first name of several", h(sni("one", "two")), ok("one", "", "TLSv1.2")},
		{"name as sent", h(sni("Foo.Example.COM.")), ok("Foo.Example.COM.", "", "TLSv1.2")},
		{"empty name", h(sni("")), ok("", "", "TLSv1.2")},
		{"bytes DNS forbids", h(sni("a b/\x00\xff")), ok("a b/\x00\xff", "", "TLSv1.2")},
		{"second alpn extension ignored", h(alpn("a", "b"), alpn("c")), ok("", "a,b", "TLSv1.2")},
		{"unknown extensions skipped", h(ext(0xff01, []byte{0}), ext(23, nil), sni("s"), ext(0xfe0d, make([]byte, 300)), alpn("a")), ok("s", "a", "TLSv1.2")},
		{"no extensions", h(), ok("", "", "TLSv1.2")},
		{"empty extensions block", h([]byte{}), ok("", "", "TLSv1.2")},
		{"empty records", frame(withSNI, 1, 0, 0, 10, 10, len(withSNI)), ok("a.example", "h2,http/1.1", "TLSv1.2")},
		{"SSLv2 header after a record", append(frame(withSNI[:sniEnd], 1), sslv2Hello(0x0301)...),
			outcome{done: true, found: true, sni: "a.example", version: "TLSv1", v2: true}},
		{"alert after a record", append(frame(withSNI[:sniEnd], 1), 21, 3, 1, 0, 2, 2, 40), no(errNotHandshake)},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), no(errNotHandshake)},
		{"proxy protocol", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), no(errNotHandshake)},
		{"record version 2.0", []byte{22, 2, 0, 0, 1, 1}, no(errRecordVersion)},
		{"record version 4.0", recordV4, no(errRecordVersion)},
		{"server hello", frame(serverHello, 1), no(errNotClientHello)},
		{"empty handshake message", frame([]byte{1, 0, 0, 0}, 1), no(errHandshakeFormat)},
		{"handshake shorter than its extensions", frame(hsShort, 1), no(errHandshakeFormat)},
		{"SNI name type not host_name", h(sniBad), no(errSNINotDNS)},
		{"SNI list shorter than its name", h(sniShort), no(errSNIFormat)},
		{"ALPN empty protocol", h(alpn("h2", "")), no(errALPNEmpty)},
		{"ALPN list shorter than its protocols", h(alpnShort), no(errALPNFormat)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := feed(tt.in); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got := feedBytes(tt.in); got != tt.want {
				t.Errorf("byte by byte: got %v, want %v", got, tt.want)
			}
			if tt.want.err != nil && !errors.Is(tt.want.err, ErrDeclined) {
				t.Errorf("%v does not match ErrDeclined", tt.want.err)
			}
		})
	}
}

// TestNeedMore checks that no proper prefix of a ClientHello finishes the parse.
func TestNeedMore(t *testing.T) {
	in := goHello(t, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2"}})
	var p Parser
	for i := range len(in) {
		if done, err := p.Parse(in[:i]); done || err != nil {
			t.Fatalf("%d of %d bytes: done %v, err %v", i, len(in), done, err)
		}
	}
	if done, err := p.Parse(in); !done || err != nil {
		t.Fatalf("all: done %v, err %v", done, err)
	}
	if got, want := outcomeOf(&p, true, nil), ok("example.com", "h2", "TLSv1.3"); got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Short plain text too: nginx waits for 5 bytes before it looks.
	if got := feed([]byte("GET ")); got != (outcome{found: true}) {
		t.Fatalf("4 bytes: got %v", got)
	}
}

// TestResultBeforeDone pins what the variables read when the preread ends before the parse does
// (preread_timeout, EOF, a full buffer): nginx logs what it has stored so far.
func TestResultBeforeDone(t *testing.T) {
	msg := clientHello(0x0303, sni("a.example"), alpn("h2", "http/1.1"), sni("late"))
	at := func(s string) int { return bytes.Index(msg, []byte(s)) }
	tests := []struct {
		name string
		cut  int // the first record ends here; the rest never comes
		want outcome
	}{
		{"in the header", 2, outcome{found: true}},
		{"half the version", 5, outcome{found: true, version: "SSLv3"}}, // {3, 0} so far
		{"in the server name", at("a.ex"), outcome{found: true, version: "TLSv1.2"}},
		{"after the server name", at("a.example") + 9, outcome{found: true, sni: "a.example", version: "TLSv1.2"}},
		{"in the first protocol", at("h2") + 1, outcome{found: true, sni: "a.example", version: "TLSv1.2"}},
		{"after the first protocol", at("h2") + 2, outcome{found: true, sni: "a.example", alpn: "h2,", version: "TLSv1.2"}},
		{"after the protocols", at("late"), outcome{found: true, sni: "a.example", alpn: "h2,http/1.1", version: "TLSv1.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := frame(msg, 1, tt.cut)
			in = in[:5+tt.cut+4] // the second record never completes
			if got := feed(in); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	var p Parser
	if got := outcomeOf(&p, false, nil); got != (outcome{}) {
		t.Errorf("before Parse: got %v, want nothing found", got)
	}
}

func TestDoneIsFinal(t *testing.T) {
	in := frame(clientHello(0x0303, sni("x")), 1)
	var p Parser
	if done, err := p.Parse(in); !done || err != nil {
		t.Fatalf("done %v, err %v", done, err)
	}
	// Later bytes change nothing, even ones nginx would decline.
	if done, err := p.Parse(append(bytes.Clone(in), "GET / HTTP/1.0\r\n"...)); !done || err != nil {
		t.Fatalf("again: done %v, err %v", done, err)
	}
	p.Reset()
	if done, err := p.Parse([]byte("GET / HTTP/1.0\r\n")); !done || err != errNotHandshake {
		t.Fatalf("after Reset: done %v, err %v", done, err)
	}
	if done, err := p.Parse(in); !done || err != errNotHandshake {
		t.Fatalf("after decline: done %v, err %v", done, err)
	}
	if r := p.Result(); r.Found {
		t.Fatalf("declined, but found %+v", r)
	}
}

// TestNoAllocs checks that a reused Parser does not allocate, and that a new one does not for
// ordinary names and protocol lists.
func TestNoAllocs(t *testing.T) {
	small := goHello(t, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2", "http/1.1"}})
	big := goHello(t, &tls.Config{ServerName: strings.Repeat("a", 200) + ".example", NextProtos: []string{strings.Repeat("p", 200)}})
	if n := testing.AllocsPerRun(100, func() {
		var p Parser
		p.Parse(small)
		if len(p.Result().ALPN) == 0 {
			t.Fatal("no ALPN")
		}
	}); n != 0 {
		t.Errorf("new Parser: %v allocations", n)
	}
	var p Parser
	p.Parse(big)
	if n := testing.AllocsPerRun(100, func() {
		p.Reset()
		p.Parse(big)
	}); n != 0 {
		t.Errorf("reused Parser: %v allocations", n)
	}
}
