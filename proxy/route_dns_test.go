package proxy

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/dnstest"
)

// proxy_pass $var with a host name is resolved at run time through the
// server's resolver, as nginx: the session waits for the answer without
// holding up its loop, an answer is cached for its TTL, and a name that
// does not resolve ends the session with 502 and nginx's log line.
func TestProxyPassVarResolves(t *testing.T) {
	port := startIPBackends(t, "127.0.0.41")
	d := dnstest.Start(t)
	d.SetA("svc.test", 30, "127.0.0.41")
	release := d.Hold()
	_, addrs, logs := startConf(t, fmt.Sprintf(`stream {
    resolver %s;
    server { listen 127.0.0.1:0; set $to svc.test:%d; proxy_pass $to; }
    server { listen 127.0.0.1:0; set $to nosuch.test:%d; proxy_pass $to; }
    server { listen 127.0.0.1:0; proxy_pass 127.0.0.41:%d; }
}`, d.Addr(), port, port, port))
	// The first session waits for the answer; meanwhile the loops serve
	// others.
	type result struct {
		who string
	}
	first := make(chan result, 1)
	go func() {
		c, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
		if err != nil {
			first <- result{err.Error()}
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		first <- result{strings.TrimSpace(string(buf[:n]))}
	}()
	waitFor(t, func() bool { return d.QueriesFor("svc.test", 1) >= 1 })
	if w, _ := whoAnswers(t, addrs[2], false); w != "127.0.0.41" {
		t.Fatalf("while DNS was silent, a plain session reached %q", w)
	}
	select {
	case r := <-first:
		t.Fatalf("the session was served (%q) before DNS answered", r.who)
	default:
	}
	release()
	if r := <-first; r.who != "127.0.0.41" {
		t.Fatalf("the session reached %q, want 127.0.0.41", r.who)
	}
	// Cached: the next session asks nothing.
	before := d.Queries()
	if w, _ := whoAnswers(t, addrs[0], false); w != "127.0.0.41" {
		t.Fatalf("second session reached %q", w)
	}
	if n := d.Queries(); n != before {
		t.Errorf("%d more queries for a cached name", n-before)
	}
	if w, _ := whoAnswers(t, addrs[1], false); w != "" {
		t.Fatalf("a name that does not resolve reached %q", w)
	}
	waitFor(t, func() bool {
		return strings.Contains(logs.String(), "nosuch.test could not be resolved (3: Host not found)")
	})
}

// Without a resolver, a host name is refused as nginx: "no resolver
// defined to resolve NAME".
func TestProxyPassVarNoResolver(t *testing.T) {
	_, addrs, logs := startConf(t, `stream {
    server { listen 127.0.0.1:0; set $to svc.test:80; proxy_pass $to; }
}`)
	if w, _ := whoAnswers(t, addrs[0], false); w != "" {
		t.Fatalf("reached %q", w)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "no resolver defined to resolve svc.test") })
}

// A UDP client whose proxy_pass names a host: its datagrams wait for the
// answer and then all go upstream, in order.
func TestProxyPassVarResolvesUDP(t *testing.T) {
	up, err := net.ListenPacket("udp", "127.0.0.42:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
			up.WriteTo([]byte("re:"+string(buf[:n])), from)
		}
	}()
	port := up.LocalAddr().(*net.UDPAddr).Port
	d := dnstest.Start(t)
	d.SetA("udp.test", 30, "127.0.0.42")
	release := d.Hold()
	free := deadAddr(t)
	_, _, _ = startConf(t, fmt.Sprintf(`stream {
    resolver %s;
    server { listen %s udp; set $to udp.test:%d; proxy_pass $to; proxy_responses 3; }
}`, d.Addr(), free, port))
	c, err := net.Dial("udp", free.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"a", "b", "c"} {
		c.Write([]byte(m))
	}
	waitFor(t, func() bool { return d.QueriesFor("udp.test", 1) >= 1 })
	release()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for _, want := range []string{"re:a", "re:b", "re:c"} {
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("reply %q, %v; want %q", buf[:n], err, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "") != "abc" {
		t.Fatalf("upstream got %q, want the held datagrams in order", got)
	}
}

// A session still waiting for DNS when the process hands over moves, and
// is routed again in the new process.
func TestHandoffMovesResolvingSession(t *testing.T) {
	port := startIPBackends(t, "127.0.0.43")
	d := dnstest.Start(t)
	d.SetA("svc.test", 30, "127.0.0.43")
	release := d.Hold()
	defer release()
	text := `stream {
    resolver %s;
    server { listen %s; set $to svc.test:%d; proxy_pass $to; }
}`
	free := deadAddr(t)
	old, _, _ := startConf(t, fmt.Sprintf(text, d.Addr(), free, port))
	c, err := net.DialTimeout("tcp", free.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, func() bool { return d.QueriesFor("svc.test", 1) >= 1 })
	cfg, err := config.Parse("n.conf", []byte(fmt.Sprintf(text, d.Addr(), free, port)))
	if err != nil {
		t.Fatal(err)
	}
	nw, _ := newProxyFor(t, cfg, 1)
	if moved := handOver(t, old, nw); moved != 1 {
		t.Fatalf("moved %d sessions, want the resolving one", moved)
	}
	old.Close()
	release()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || strings.TrimSpace(string(buf[:n])) != "127.0.0.43" {
		t.Fatalf("the moved session got %q, %v", buf[:n], err)
	}
}
