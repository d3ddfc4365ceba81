package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startMetrics starts a proxy serving /metrics on 127.0.0.1:0, with set
// adjusting the metrics server's limits before it starts.
func startMetrics(t *testing.T, set func(m *metrics)) (*Proxy, string) {
	t.Helper()
	cfg := testConfig([]upstreamSpec{{addr: deadAddr(t)}}, nil)
	cfg.Baton.Metrics = "127.0.0.1:0"
	p, _ := startProxyWith(t, cfg, Options{}, func(p *Proxy) {
		if set != nil {
			set(p.metrics)
		}
	})
	return p, p.MetricsAddr().String()
}

// scrape sends one keep-alive GET /metrics on c and reads the whole reply.
func scrape(c net.Conn, br *bufio.Reader) error {
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: baton\r\n\r\n"); err != nil {
		return err
	}
	return readScrape(br)
}

func readScrape(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "baton_pick_duration_seconds") {
		return errors.New("scrape: " + resp.Status)
	}
	return nil
}

// waitClosed reads from c until the server closes it; it fails the test if c
// is still open after within.
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	_, err := br.ReadByte()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the server still holds the connection after %s", within)
	case err == nil:
		t.Fatal("the server sent bytes nobody asked for")
	}
	return time.Since(start) // io.EOF, or a reset: closed
}

func TestMetricsServerDefaults(t *testing.T) {
	p, _ := startMetrics(t, nil)
	s := p.metrics.srv
	if s.IdleTimeout != defaultMetricsIdleTimeout || s.ReadHeaderTimeout != defaultMetricsHeaderTimeout ||
		s.ReadTimeout != defaultMetricsReadTimeout || s.WriteTimeout != defaultMetricsWriteTimeout ||
		s.MaxHeaderBytes != metricsMaxHeaderBytes {
		t.Errorf("metrics server limits: idle %s header %s read %s write %s max header %d",
			s.IdleTimeout, s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.MaxHeaderBytes)
	}
}

// Issue 12: after a scrape an idle keep-alive connection stayed open forever.
func TestMetricsIdleKeepAliveClosed(t *testing.T) {
	const idle = 200 * time.Millisecond
	_, addr := startMetrics(t, func(m *metrics) { m.idleTimeout = idle })
	c := dial(t, addr)
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ { // the connection is kept alive between scrapes
		if err := scrape(c, br); err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
	}
	if took := waitClosed(t, c, br, 5*time.Second); took < idle/2 {
		t.Errorf("closed %s after the scrape, before the idle timeout (%s)", took, idle)
	}
}

// A slow-loris client (half a header, then a byte now and then) is cut at
// the header timeout, which trickling does not extend.
func TestMetricsSlowHeaderCut(t *testing.T) {
	const header = 300 * time.Millisecond
	_, addr := startMetrics(t, func(m *metrics) { m.headerTimeout = header })
	for _, trickle := range []bool{false, true} {
		name := "half a header"
		if trickle {
			name = "a byte every 20ms"
		}
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			defer c.Close()
			if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: baton\r\nX-Slow: "); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				if !trickle {
					return
				}
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < 500; i++ { // 10s at most
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
				}
			}()
			took := waitClosed(t, c, bufio.NewReader(c), 5*time.Second)
			close(stop)
			<-wrote
			if took < header/2 {
				t.Errorf("cut after %s, before the header timeout (%s)", took, header)
			}
		})
	}
}

// Issue 12: 20,000 connections held 20,000 descriptors. Past the cap,
// connections wait in the kernel's backlog and hold no descriptor in baton;
// each is served once a slot frees.
func TestMetricsConnectionCap(t *testing.T) {
	const limit, extra = 4, 200
	_, addr := startMetrics(t, func(m *metrics) { m.maxConns = limit })
	base := openFDs(t, "")

	// limit connections, each served once and then idle (kept alive): every
	// slot is taken.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < limit; i++ {
		c := dial(t, addr)
		held = append(held, c)
		if err := scrape(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
	}

	// extra more, each sending a request at once.
	served := make(chan error, extra)
	release := make(chan struct{})
	for i := 0; i < extra; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("extra connection %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: baton\r\n\r\n"); err != nil {
			c.Close()
			t.Fatalf("extra connection %d: %v", i, err)
		}
		go func() {
			err := readScrape(bufio.NewReader(c))
			served <- err
			<-release
			c.Close()
		}()
	}
	defer close(release)

	// One slot frees: exactly one waiting connection can be served. Once one
	// is, count what the server holds: every descriptor above base that is
	// not one of this test's client ends.
	held[0].Close()
	held = held[1:]
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("the first waiting connection: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no waiting connection was served within 10s of a slot freeing")
	}
	clientEnds := len(held) + extra
	if server := openFDs(t, "") - base - clientEnds; server > limit+2 {
		t.Fatalf("with %d connections open the metrics server holds %d descriptors, cap %d", clientEnds, server, limit)
	}

	// Each served connection that closes lets the next one in: all are served.
	release <- struct{}{} // the first one
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.After(20 * time.Second)
	for i := 1; i < extra; i++ {
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("waiting connection: %v", err)
			}
			release <- struct{}{}
		case <-deadline:
			t.Fatalf("%d of %d waiting connections served within 20s", i, extra)
		}
	}
}
