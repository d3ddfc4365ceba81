package lookup

import (
	"net/netip"
	"testing"
)

// TestInetAddr checks the ports of ngx_inet_addr and ngx_inet6_addr
// against nginx's functions, copied out of src/core/ngx_inet.c into a C
// file, compiled with gcc 12 and run on each input. want4 and want6 are
// the results ("" where nginx fails).
func TestInetAddr(t *testing.T) {
	for _, tt := range []struct{ in, want4, want6 string }{
		{"1.2.3.4", "1.2.3.4", ""},
		{"1..2.3", "1.0.2.3", ""},
		{"1.2.3.", "1.2.3.0", ""},
		{".1.2.3", "0.1.2.3", ""},
		{"01.002.0003.4", "1.2.3.4", ""},
		{"256.1.1.1", "", ""},
		{"1.2.3.4.5", "", ""},
		{"1.2.3", "", ""},
		{"255.255.255.255", "", ""},
		{"", "", ""},
		{"::", "", "::"},
		{"::1", "", "::1"},
		{"1::", "", "1::"},
		{":1:2:3:4:5:6:7", "", ""},
		{"1:2:3:4:5:6:7:8", "", "1:2:3:4:5:6:7:8"},
		{"1:2:3:4:5:6:7:8:", "", ""},
		{"1:2:3:4:5:6:7::", "", ""},
		{"::1:2:3:4:5:6:7", "", "0:1:2:3:4:5:6:7"},
		{"1::2::3", "", ""},
		{"::ffff:1.2.3.4", "", "::ffff:1.2.3.4"},
		{"::1.2.3.4", "", "::1.2.3.4"},
		{"1:2:3:4:5:6:1.2.3.4", "", "1:2:3:4:5:6:102:304"},
		{"1:2:3:4:5:6:7:1.2.3.4", "", ""},
		{"12345::", "", ""},
		{"fe80::1%eth0", "", ""},
		{"FE80::AbCd", "", "fe80::abcd"},
		{":", "", ""},
		{":::", "", ""},
		{"1:", "", ""},
		{"::ffff:1.2.3", "", ""},
		{"1.2.3.4::", "", ""},
	} {
		a4, ok4 := inetAddr([]byte(tt.in))
		got4 := ""
		if ok4 {
			got4 = netip.AddrFrom4([4]byte{byte(a4 >> 24), byte(a4 >> 16), byte(a4 >> 8), byte(a4)}).String()
		}
		if got4 != tt.want4 {
			t.Errorf("inetAddr(%q) = %q, want %q", tt.in, got4, tt.want4)
		}
		a6, ok6 := inet6Addr([]byte(tt.in))
		switch {
		case ok6 != (tt.want6 != ""):
			t.Errorf("inet6Addr(%q) ok %v, want %q", tt.in, ok6, tt.want6)
		case ok6 && a6 != netip.MustParseAddr(tt.want6).As16():
			t.Errorf("inet6Addr(%q) = %v, want %s", tt.in, netip.AddrFrom16(a6), tt.want6)
		}
	}
}

func FuzzInet6Addr(f *testing.F) {
	for _, s := range []string{"::", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1::2", ":1::", "1:2:3:4:5:6:7:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := inet6Addr([]byte(s)) // must not panic
		if !ok {
			return
		}
		// nginx and netip disagree on what to accept ("1:2:3:4:5:6:7::"),
		// but where both read an address they must read the same one.
		if b, err := netip.ParseAddr(s); err == nil && b.Zone() == "" && b.Is6() && b.As16() != a {
			t.Errorf("%q: nginx %v, netip %v", s, netip.AddrFrom16(a), b)
		}
	})
}
