package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// streamEcho keeps c busy until stop is closed: it writes numbered chunks
// and checks every byte comes back, in order.
func streamEcho(c net.Conn, stop <-chan struct{}) error {
	defer c.Close()
	buf := make([]byte, 4096)
	got := make([]byte, 4096)
	for i := 0; i < 100000; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for j := range buf {
			buf[j] = byte(i + j)
		}
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		if !bytes.Equal(got, buf) {
			return fmt.Errorf("chunk %d came back different", i)
		}
	}
	return nil
}

func TestReloadUnderLoadLosesNothing(t *testing.T) {
	b1 := startBackend(t, "b1", func(c net.Conn) {
		if _, err := io.WriteString(c, "b1\n"); err == nil {
			io.Copy(c, c)
		}
	})
	b2 := startBackend(t, "b2", greet("b2"))
	cfg := testConfig([]upstreamSpec{{addr: b1.addr()}}, nil)
	p, addr, _ := startProxy(t, cfg)
	ap := netip.MustParseAddrPort(addr)

	// Hundreds of live connections streaming through the reload.
	const live = 200
	stop := make(chan struct{})
	errs := make(chan error, live)
	var ready sync.WaitGroup
	for i := 0; i < live; i++ {
		ready.Add(1)
		go func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				ready.Done()
				errs <- err
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			greeting := make([]byte, 3)
			_, err = io.ReadFull(c, greeting)
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			errs <- streamEcho(c, stop)
		}()
	}
	ready.Wait()

	// New connections keep arriving during the reload; none may be refused.
	var refused, dials atomic.Int64
	dialStop := make(chan struct{})
	dialDone := make(chan struct{})
	go func() {
		defer close(dialDone)
		for i := 0; i < 100000; i++ {
			select {
			case <-dialStop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			dials.Add(1)
			if err != nil {
				refused.Add(1)
				continue
			}
			c.Close()
		}
	}()

	// The new config: the same listen address (kept socket) now going to
	// b2, plus a second listener.
	cfg2 := testConfig([]upstreamSpec{{addr: b2.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = ap
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "127.0.0.1:0", Backlog: 511})
	})
	ch, err := p.Reload(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.ListenersKept) != 1 || len(ch.ListenersAdded) != 1 || len(ch.UpstreamsChanged) != 1 {
		t.Errorf("changes: %+v", ch)
	}
	// New connections go to the new upstream.
	c := dial(t, addr)
	if got := readLine(t, c); got != "b2" {
		t.Fatalf("after reload a new connection reached %q, want b2", got)
	}
	c.Close()
	if len(p.Addrs()) != 2 {
		t.Fatalf("addrs after reload: %v", p.Addrs())
	}
	c = dial(t, p.Addrs()[1].String())
	if got := readLine(t, c); got != "b2" {
		t.Fatalf("the added listener: %q", got)
	}
	c.Close()

	close(dialStop)
	<-dialDone
	close(stop)
	for i := 0; i < live; i++ {
		if err := <-errs; err != nil {
			t.Errorf("a live connection broke across the reload: %v", err)
		}
	}
	if refused.Load() > 0 {
		t.Errorf("%d of %d connections were refused during the reload", refused.Load(), dials.Load())
	}
}

func TestReloadRefusesBadConfigAndKeepsRunning(t *testing.T) {
	b := startBackend(t, "b", greet("b"))
	p, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	// An address that is taken: the bind fails, so the reload must too.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		ap := taken.Addr().(*net.TCPAddr).AddrPort()
		s.Listen[0].Addr = ap
		s.Listen[0].Text = ap.String()
		s.Listen[0].Pos = config.Pos{File: "new.conf", Line: 7}
		// Nothing of a refused config is applied, its health check
		// included (it used to be attached to the live, reused upstream).
		s.HealthCheck = &config.HealthCheck{Interval: time.Hour, Fails: 1, Passes: 1, Mandatory: true, Timeout: time.Second}
	})
	_, err = p.Reload(bad)
	if err == nil || !strings.Contains(err.Error(), "Address already in use") || !strings.Contains(err.Error(), "new.conf:7") {
		t.Fatalf("Reload = %v, want a bind error naming new.conf:7", err)
	}
	if p.groups[0].monitor.Load() != nil {
		t.Fatal("a refused reload attached its health check to the live upstream")
	}
	c := dial(t, addr)
	defer c.Close()
	if got := readLine(t, c); got != "b" {
		t.Fatalf("after a refused reload: %q", got)
	}
}

func TestReloadRemovesListenerAndDrains(t *testing.T) {
	b := startBackend(t, "echo", echo)
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "second", Backlog: 511})
	})
	p, _, _ := startProxy(t, cfg)
	first, second := p.Addrs()[0].String(), p.Addrs()[1].String()
	live := dial(t, second)
	defer live.Close()
	io.WriteString(live, "before\n")
	readLine(t, live)

	keepFirst := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(first)
	})
	ch, err := p.Reload(keepFirst)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.ListenersRemoved) != 1 || ch.ListenersRemoved[0] != "second" {
		t.Fatalf("changes: %+v", ch)
	}
	if _, err := net.DialTimeout("tcp", second, time.Second); err == nil {
		t.Fatal("the removed listener still accepts")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial the removed listener: %v", err)
	}
	// The connection accepted by the removed listener still works.
	io.WriteString(live, "after\n")
	if got := readLine(t, live); got != "after" {
		t.Fatalf("live connection after its listener was removed: %q", got)
	}
}
