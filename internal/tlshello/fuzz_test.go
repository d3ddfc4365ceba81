package tlshello

import (
	"crypto/tls"
	"testing"
)

// FuzzParse checks that Parse never panics, that how the input arrives does not change the outcome
// (nor what the variables read when it is not done), and that the Parser keeps no more than it was
// given.
func FuzzParse(f *testing.F) {
	for _, v := range tlsVersions {
		cfg := &tls.Config{ServerName: "example.com", NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS10, MaxVersion: v.v}
		hello := goHello(f, cfg)
		f.Add(hello, []byte{7})
		f.Add(frameEvery(handshake(f, hello), 13), []byte{1, 200, 3})
	}
	foof := clientHello(0x0303, sni("foof"), alpn("a", "bc"), supportedVersions(0x0304))
	f.Add(frame(foof, 1, len(foof)-1), []byte{0, 3})
	f.Add(frame(foof, 0, 5, 40, 41, 60), []byte{2})
	f.Add(sslv2Hello(0x0002), []byte{1})
	f.Add(append(frame(foof[:50], 1), sslv2Hello(0x0301)...), []byte{9, 9})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), []byte{4})
	f.Add([]byte{22, 3, 1, 0, 0}, []byte{})

	f.Fuzz(func(t *testing.T, in, steps []byte) {
		whole := feed(in)

		// Cut in at offsets that step by the values of steps, in turn.
		var cuts []int
		for c, i := 0, 0; len(steps) > 0; i++ {
			c += int(steps[i%len(steps)])
			if c >= len(in) || i > 4*len(in) {
				break
			}
			cuts = append(cuts, c)
		}
		if got := feed(in, cuts...); got != whole {
			t.Fatalf("cut at %v: got %v, whole %v", cuts, got, whole)
		}
		if len(in) <= 4096 {
			if got := feedBytes(in); got != whole {
				t.Fatalf("byte by byte: got %v, whole %v", got, whole)
			}
		}

		var p Parser
		done, err := p.Parse(in)
		if done != whole.done || err != whole.err {
			t.Fatalf("second run: done %v, err %v; first %v", done, err, whole)
		}
		if err != nil && !whole.done {
			t.Fatalf("error %v without done", err)
		}
		if n := len(p.mem()); n > len(in) {
			t.Fatalf("kept %d bytes of %d", n, len(in))
		}
		if err != nil && whole != no(err) {
			t.Fatalf("declined, but the variables read %v", whole)
		}
		switch whole.version {
		case "", "SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3":
		default:
			t.Fatalf("version %q", whole.version)
		}
	})
}
