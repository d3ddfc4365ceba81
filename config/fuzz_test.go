package config

import (
	"errors"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that it returns
// either a Config or a non-empty ErrorList of positioned errors.
func FuzzParse(f *testing.F) {
	f.Add(realistic)
	f.Add("stream { upstream u { server 1.1.1.1:1 backup; hash $x consistent; hash_balance_factor 150; } " + okServer + " }")
	f.Add("a \"b\\\"c\" 'd' ${e}f{ g; } # h\n")
	f.Add("include *.conf; http { include x; } baton { metrics x; }")
	f.Add("stream { server { listen [::1]:80 so_keepalive=1m:: backlog=9; proxy_pass db.internal:5; } }")
	f.Add("baton { metrics [::1]:9; control_socket /s; } stream { limit_conn_zone $binary_remote_addr zone=z:1m; " +
		"set_real_ip_from 10.0.0.1/8; allow ::/0; deny all; limit_conn z 1; match m { send \"\\x00\"; expect ~* \"^a\"; } " +
		"upstream u { zone u 64k; server 1.1.1.1:1 slow_start=1s; } server { listen 53 udp; listen 54 proxy_protocol; " +
		"proxy_pass u; proxy_protocol v2; proxy_responses 1; health_check match=m udp; limit_conn_dry_run on; } }")
	f.Add("stream { map $a $b { hostnames; *.x y; ~^(a)$ $1; include m.conf; default d; } map_hash_max_size 1; " +
		"geo $a $g { ranges; 1.0.0.0-1.0.1.0 a; delete 1.0.0.0-1.0.1.0; default b; } geo $h { 10.0.0.0/8 a; ::/0 b; } " +
		"split_clients $a $s { 10% a; * b; } " + okServer + " }")
	f.Add("stream { ssl_preread on; preread_timeout 1s; server { listen 127.0.0.1:80-82 default_server fastopen=3 so_keepalive=1m:2:3; " +
		"server_name *.a .b c.* ~^d$; set $x $remote_addr; proxy_pass $x; proxy_bind $x transparent; proxy_download_rate 1k; } " +
		"server { listen 127.0.0.1:80; return \"$server_name\"; access_log /l/$pid f if=$x; } " +
		"server { listen 81; pass 127.0.0.1:80; access_log /l f buffer=4k flush=1s gzip=5; open_log_file_cache max=1; } log_format f x; }")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := testLoader().Parse("f.conf", []byte(src))
		if err == nil {
			if c == nil {
				t.Fatal("nil config and nil error")
			}
			return
		}
		if c != nil {
			t.Fatal("config with an error")
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.Pos.File != "f.conf" || e.Pos.Line < 1 {
				t.Fatalf("error without position: %+v", e)
			}
		}
	})
}
