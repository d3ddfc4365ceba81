package lookup

import (
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/batonproxy/baton/config"
)

// streamGeoT is the stream block of nginx's stream_geo.t, with its two
// included files.
const streamGeoT = `
    geo $geo {
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
        0.0.0.0/0     world;
    }
    geo $geo_include {
        include       geo.conf;
        192.0.2.0/24  test;
        0.0.0.0/0     world;
    }
    geo $geo_delete {
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
        0.0.0.0/0     world;
        delete        127.0.0.0/8;
    }
    geo $remote_addr $geo_from_addr {
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
    }
    geo $var $geo_from_var {
        default       default;
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
    }
    geo $var $geo_var_ranges {
        ranges;
        default                default;
        127.0.0.0-127.0.0.1    loopback;
        10.10.3.0-10.11.2.255  foo;
        10.12.3.0-10.13.2.255  foo2;
        delete                 10.10.3.0-10.11.2.255;
    }
    geo $var $geo_world {
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
        0.0.0.0/0     world;
    }
    geo $geo_ranges {
        ranges;
        default                    default;
        127.0.0.0-127.255.255.255  loopback;
        192.0.2.0-192.0.2.255      test;
    }
    geo $geo_ranges_include {
        ranges;
        default                default;
        include                geo-ranges.conf;
        192.0.2.0-192.0.2.255  test;
    }
    geo $geo_ranges_delete {
        ranges;
        default                default;
        127.0.0.0-127.0.0.255  test;
        127.0.0.1-127.0.0.1    loopback;
        delete                 127.0.0.0-127.0.0.0;
        delete                 127.0.0.2-127.0.0.255;
        delete                 127.0.0.1-127.0.0.1;
    }
    geo $geo_ranges_delete_2 {
        ranges;
        default              default;
        127.0.0.0-127.1.0.0  loopback;
        delete               127.0.0.0-127.1.0.0;
    }
    geo $geo_before {
        ranges;
        default                default;
        127.0.0.1-127.0.0.255  loopback;
        127.0.0.0-127.0.0.0    test;
    }
    geo $geo_after {
        ranges;
        default                default;
        127.0.0.0-127.0.0.1    loopback;
        127.0.0.2-127.0.0.255  test;
    }
    geo $geo_insert {
        ranges;
        default                default;
        127.0.0.0-127.0.0.255  test;
        127.0.0.1-127.0.0.2    test2;
        127.0.0.1-127.0.0.1    loopback;
    }
    geo $geo_insert_before {
        ranges;
        default                default;
        127.0.0.0-127.0.0.255  test;
        127.0.0.0-127.0.0.1    loopback;
    }
    geo $geo_insert_after {
        ranges;
        default                default;
        127.0.0.0-127.0.0.255  test;
        127.0.0.1-127.0.0.255  loopback;
     }
`

// TestGeoStreamGeoT makes every lookup of nginx's stream_geo.t: the client
// is 127.0.0.1, and $var is what the test's map gives each port ("" for a
// port the map does not name).
func TestGeoStreamGeoT(t *testing.T) {
	files := map[string]string{
		"geo.conf":        "127.0.0.0/8  loopback;",
		"geo-ranges.conf": "127.0.0.0-127.255.255.255  loopback;",
		"t.conf":          "stream {\n" + streamGeoT + "\nserver { listen 9; proxy_pass 10.0.0.1:9; }\n}\n",
	}
	ld := &config.Loader{ReadFile: func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}}
	c, err := ld.Load("t.conf")
	if err != nil {
		t.Fatal(err)
	}
	geos := map[string]*Geo{}
	for _, g := range c.Stream.Geos {
		geos[g.Var] = NewGeo(g)
	}
	client := netip.MustParseAddr("127.0.0.1")
	for _, tt := range []struct {
		name, geo string
		varValue  string // "" with fromVar false: the client address
		fromVar   bool
		want      string
	}{
		{"geo", "geo", "", false, "loopback"},
		{"geo include", "geo_include", "", false, "loopback"},
		{"geo delete", "geo_delete", "", false, "world"},
		{"geo ranges", "geo_ranges", "", false, "loopback"},
		{"geo ranges include", "geo_ranges_include", "", false, "loopback"},
		{"geo ranges delete", "geo_ranges_delete", "", false, "default"},
		{"geo ranges delete 2", "geo_ranges_delete_2", "", false, "default"},
		{"geo ranges add before", "geo_before", "", false, "loopback"},
		{"geo ranges add after", "geo_after", "", false, "loopback"},
		{"geo ranges insert", "geo_insert", "", false, "loopback"},
		{"geo ranges insert before", "geo_insert_before", "", false, "loopback"},
		{"geo ranges insert after", "geo_insert_after", "", false, "loopback"},
		{"geo from addr", "geo_from_addr", "127.0.0.1", true, "loopback"}, // $remote_addr
		{"geo from var", "geo_from_var", "192.0.2.1", true, "test"},
		{"geo delete range from variable", "geo_var_ranges", "10.11.2.1", true, "default"},
		{"geo default", "geo_from_var", "10.0.0.1", true, "default"},
		{"geo world", "geo_world", "", true, "world"}, // not an address: 255.255.255.255
		{"geo ranges default", "geo_var_ranges", "loopback", true, "default"},
		{"geo ranges add", "geo_var_ranges", "10.13.2.1", true, "foo2"},
	} {
		g := geos[tt.geo]
		got := g.Find(client)
		if tt.fromVar {
			got = g.FindValue([]byte(tt.varValue))
		}
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func newTestGeo(t *testing.T, body string) *Geo {
	t.Helper()
	return NewGeo(parse(t, "geo $k $g {\n"+body+"\n}").Stream.Geos[0])
}

func TestGeoCIDR(t *testing.T) {
	g := newTestGeo(t, `
		10.0.0.0/8          ten;
		10.1.0.0/16         ten-one;
		10.1.2.0/24         ten-one-two;
		10.1.2.3            host;
		0.0.0.0/0           v4-default;
		2001:db8::/32       doc;
		2001:db8:1::/48     doc-one;
		::ffff:0:0/96       never; # IPv4-mapped addresses go to the IPv4 tree
		255.255.255.255     none;`)
	for _, tt := range []struct{ addr, want string }{
		{"10.1.2.3", "host"},
		{"10.1.2.4", "ten-one-two"},
		{"10.1.3.0", "ten-one"},
		{"10.2.0.0", "ten"},
		{"9.255.255.255", "v4-default"},
		{"11.0.0.0", "v4-default"},
		{"::ffff:10.1.2.3", "host"},
		{"2001:db8:1::5", "doc-one"},
		{"2001:db8:2::", "doc"},
		{"2001:db9::", ""}, // ::/0 is nginx's empty value: no "default" line
		{"::", ""},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""},
		{"fe80::1%eth0", ""},
		{"255.255.255.255", "none"},
	} {
		if got := g.Find(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Find(%s) = %q, want %q", tt.addr, got, tt.want)
		}
		if got := g.FindValue([]byte(tt.addr)); got != tt.want && tt.addr != "fe80::1%eth0" {
			t.Errorf("FindValue(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	// what is not an address is looked up as 255.255.255.255
	for _, v := range []string{"", "junk", "fe80::1%eth0", "1.2.3", "1:2:3:4:5:6:7::"} {
		if got := g.FindValue([]byte(v)); got != "none" {
			t.Errorf("FindValue(%q) = %q, want none", v, got)
		}
	}
	if got := g.FindValue(nil); got != "none" {
		t.Errorf("FindValue(nil) = %q", got)
	}
	if got := g.Find(netip.Addr{}); got != "none" {
		t.Errorf("Find(invalid) = %q", got)
	}
}

// "default" sets both families; without it an unmatched address is "".
func TestGeoDefault(t *testing.T) {
	g := newTestGeo(t, "default d; 10.0.0.0/8 ten;")
	for addr, want := range map[string]string{"1.1.1.1": "d", "::1": "d", "10.0.0.1": "ten"} {
		if got := g.Find(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
	g = newTestGeo(t, "0.0.0.0/0 world;")
	if got := g.Find(netip.MustParseAddr("::1")); got != "" {
		t.Errorf("::1 got %q: 0.0.0.0/0 is IPv4 only", got)
	}
}

func TestGeoRanges(t *testing.T) {
	g := newTestGeo(t, `ranges; default d;
		10.0.0.0-10.0.0.255    a;
		10.0.0.10-10.0.0.20    inside;  # splits a
		10.0.255.0-10.2.0.5    across;  # three /16 pieces
		0.0.0.0-0.0.0.0        zero;
		255.255.255.0-255.255.255.254 top;`)
	for _, tt := range []struct{ addr, want string }{
		{"10.0.0.9", "a"},
		{"10.0.0.10", "inside"},
		{"10.0.0.20", "inside"},
		{"10.0.0.21", "a"},
		{"10.0.1.0", "d"},
		{"10.0.255.0", "across"},
		{"10.1.128.0", "across"},
		{"10.2.0.5", "across"},
		{"10.2.0.6", "d"},
		{"0.0.0.0", "zero"},
		{"255.255.255.254", "top"},
		{"255.255.255.255", "d"}, // no range can hold it
		{"::ffff:10.0.0.15", "inside"},
		{"2001:db8::1", "d"}, // ranges are IPv4 only
	} {
		if got := g.Find(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Find(%s) = %q, want %q", tt.addr, got, tt.want)
		}
		if got := g.FindValue([]byte(tt.addr)); got != tt.want {
			t.Errorf("FindValue(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if got := g.FindValue([]byte("junk")); got != "d" {
		t.Errorf("junk: %q", got)
	}
}

// TestFlattenIsLongestPrefixMatch compares the flattened table with a
// brute-force longest-prefix match over random nested networks.
func TestFlattenIsLongestPrefixMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		// few distinct high bits, so that networks nest
		if v6 {
			var b [16]byte
			b[0], b[1], b[15] = 0x20, byte(r.IntN(3)), byte(r.IntN(256))
			b[2] = byte(r.IntN(2) * 0x80)
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	for round := 0; round < 50; round++ {
		cg := &config.Geo{}
		set := map[netip.Prefix]string{}
		for i := 0; i < 40; i++ {
			v6 := r.IntN(3) == 0
			a := randAddr(v6)
			bits := r.IntN(a.BitLen() + 1)
			p := netip.PrefixFrom(a, bits).Masked()
			v := "v" + itoa(i)
			set[p] = v
			cg.Entries = append(cg.Entries, config.GeoEntry{Prefix: p, Value: v})
		}
		// later duplicates win in set; keep the config's entries unique as config does
		cg.Entries = cg.Entries[:0]
		for p, v := range set {
			cg.Entries = append(cg.Entries, config.GeoEntry{Prefix: p, Value: v})
		}
		g := NewGeo(cg)
		for i := 0; i < 500; i++ {
			a := randAddr(r.IntN(2) == 0)
			want := ""
			for bits := a.BitLen(); bits >= 0; bits-- {
				if v, ok := set[netip.PrefixFrom(a, bits).Masked()]; ok {
					want = v
					break
				}
			}
			if got := g.Find(a); got != want {
				t.Fatalf("round %d: Find(%s) = %q, want %q (networks %v)", round, a, got, want, set)
			}
		}
	}
}

func TestGeoFindDoesNotAllocate(t *testing.T) {
	g := newTestGeo(t, "10.0.0.0/8 a; 2001:db8::/32 b; default c;")
	for _, v := range []string{"10.1.2.3", "2001:db8::1", "::ffff:10.0.0.1", "junk"} {
		b := []byte(v)
		if n := testing.AllocsPerRun(100, func() { g.FindValue(b) }); n != 0 {
			t.Errorf("%s: %v allocations", v, n)
		}
	}
}
