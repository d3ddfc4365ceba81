package proxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// startConf parses text (an nginx config) and starts it; the listen
// addresses are returned in config order. Each "127.0.0.1:0" in text
// becomes a free port (nginx refuses port 0).
func startConf(t *testing.T, text string) (*Proxy, []string, *logBuf) {
	t.Helper()
	for strings.Contains(text, "127.0.0.1:0;") || strings.Contains(text, "127.0.0.1:0 ") {
		free := deadAddr(t).String()
		text = strings.Replace(strings.Replace(text, "127.0.0.1:0;", free+";", 1), "127.0.0.1:0 ", free+" ", 1)
	}
	cfg, err := config.Parse("route.conf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p, lb := startProxyWith(t, cfg, Options{}, nil)
	var addrs []string
	for _, a := range p.Addrs() {
		addrs = append(addrs, a.String())
	}
	return p, addrs, lb
}

// readAll dials addr and returns all it answers before closing.
func readAll(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return string(b)
}

func TestSetAndReturn(t *testing.T) {
	_, addrs, _ := startConf(t, `stream {
		server {
			listen 127.0.0.1:0;
			set $a "x";
			set $B "$a-$remote_addr";
			return "$b|${A}|$nginx_version|$protocol|$bytes_sent";
		}
		server {
			listen 127.0.0.1:0;
			return $a;         # set elsewhere only: empty here
		}
		server {
			listen 127.0.0.1:0;
			return "";
		}
	}`)
	if got, want := readAll(t, addrs[0]), "x-127.0.0.1|x|"+nginxVersion+"|TCP|0"; got != want {
		t.Errorf("return = %q, want %q", got, want)
	}
	if got := readAll(t, addrs[1]); got != "" {
		t.Errorf("unset variable = %q, want empty", got)
	}
	if got := readAll(t, addrs[2]); got != "" {
		t.Errorf("empty return = %q", got)
	}
}

// A return text larger than the socket takes at once is sent as the client
// reads it (stateReturning), whole.
func TestReturnLargeText(t *testing.T) {
	chunk := strings.Repeat("0123456789abcdef", 64) // 1 KiB
	_, addrs, _ := startConf(t, `stream { server {
		listen 127.0.0.1:0;
		set $k "`+chunk+`";
		set $m "$k$k$k$k$k$k$k$k$k$k$k$k$k$k$k$k";
		set $g "$m$m$m$m$m$m$m$m$m$m$m$m$m$m$m$m";
		return "$g$g$g$g$g$g$g$g$g$g$g$g$g$g$g$g";
	} }`)
	c := dial(t, addrs[0])
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(b), err)
	}
	if want := strings.Repeat(chunk, 16*16*16); string(b) != want {
		t.Fatalf("got %d bytes, want %d", len(b), len(want))
	}
}

func TestReturnUDP(t *testing.T) {
	_, addrs, _ := startConf(t, `stream { server {
		listen 127.0.0.1:0 udp;
		set $x "$protocol";
		return "$x:$remote_addr";
	} }`)
	c, err := net.Dial("udp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(".")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[:n]); got != "UDP:127.0.0.1" {
		t.Errorf("UDP return = %q", got)
	}
}

func TestProxyPassVariable(t *testing.T) {
	a := startBackend(t, "a", greet("a"))
	b := startBackend(t, "b", greet("b"))
	c := startBackend(t, "c", greet("c"))
	d := startBackend(t, "d", greet("d"))
	_, addrs, lb := startConf(t, fmt.Sprintf(`stream {
		upstream UA { server %s; }
		upstream ub { server %s; }   # named by no server directly
		server { listen 127.0.0.1:0; set $t ua; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t Ub; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t %s; proxy_pass $t; }       # an address: its own upstream
		server { listen 127.0.0.1:0; proxy_pass %s; }                    # an implicit upstream
		server { listen 127.0.0.1:0; set $t %s; proxy_pass ${t}; }     # ... found by host:port
		server { listen 127.0.0.1:0; proxy_pass $t; }                   # empty
		server { listen 127.0.0.1:0; set $t nosuch; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t nosuch.invalid:80; proxy_pass $t; }
		server { listen 127.0.0.1:0; set $t 127.0.0.1:x; proxy_pass $t; }
	}`, a.addr(), b.addr(), c.addr(), d.addr(), d.addr()))
	for i, want := range []string{"a\n", "b\n", "c\n", "d\n", "d\n", "", "", "", ""} {
		if got := readAll(t, addrs[i]); got != want {
			t.Errorf("server %d: got %q, want %q", i, got, want)
		}
	}
	waitFor(t, func() bool { return strings.Count(lb.String(), "in upstream") >= 3 })
	for _, want := range []string{
		`no host in upstream ""`,
		`no port in upstream "nosuch"`,
		`no resolver defined to resolve nosuch.invalid`,
		`invalid port in upstream "127.0.0.1:x"`,
	} {
		waitFor(t, func() bool { return strings.Contains(lb.String(), want) })
	}
}

func TestRoutingConfigErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{`stream { server { listen 127.0.0.1:1; return $nosuch; } }`, `unknown "nosuch" variable`},
		{`stream { server { listen 127.0.0.1:1; set $remote_addr 1; return x; } }`, `the duplicate "remote_addr" variable in route.conf:1`},
		{`stream { server { listen 127.0.0.1:1; proxy_pass $nosuch; } }`, `unknown "nosuch" variable`},
	} {
		cfg, err := config.Parse("route.conf", []byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, Options{Log: NewWriterLogger(io.Discard, LevelError)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.conf, err, tc.want)
		}
	}
}
