package proxy

import (
	"io"
	"strings"
	"testing"

	"github.com/batonproxy/baton/config"
)

// FuzzBuild: whatever config the parser accepts, New builds or refuses
// with an error; it never panics (variables, maps, virtual servers and
// routing are checked here, past the parser).
func FuzzBuild(f *testing.F) {
	for _, s := range []string{
		"stream { map $ssl_preread_server_name $b { a.x u; ~^(?P<n>q)$ $n; default 127.0.0.1:9; } upstream u { hash $b consistent; server 127.0.0.1:1; } " +
			"server { listen 127.0.0.1:5; ssl_preread on; set $c $b$1; proxy_pass $b; } server { listen 127.0.0.1:5; server_name a.x; return $c; } }",
		"stream { geo $remote_addr $g { default 1; 10.0.0.0/8 2; } split_clients $remote_addr $s { 50% a; * b; } " +
			"server { listen 127.0.0.1:6 udp; return \"$g$s\"; limit_conn_zone $g zone=z:1m; } }",
		"stream { server { listen 127.0.0.1:7; pass $remote_addr:7; proxy_download_rate $remote_port; } }",
		"stream { log_format f '$upstream_addr $proxy_protocol_tlv_0x30'; server { listen 127.0.0.1:8 proxy_protocol; proxy_pass 127.0.0.1:1; set $x 1; } }",
	} {
		f.Add(s)
	}
	f.Chdir(f.TempDir())
	f.Fuzz(func(t *testing.T, src string) {
		if strings.Contains(src, "_log") || strings.Contains(src, "pid") || strings.Contains(src, "include") {
			return // New opens log and pid files: none is made anywhere by a fuzzed path
		}
		cfg, err := config.Parse("f.conf", []byte(src))
		if err != nil || cfg.Stream == nil {
			return
		}
		p, err := New(cfg, Options{Log: NewWriterLogger(io.Discard, LevelError)})
		if err == nil {
			p.Close()
		}
	})
}
