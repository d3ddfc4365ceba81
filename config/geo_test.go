package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// geoEntries flattens g's entries as "NET VALUE :LINE".
func geoEntries(g *Geo) []string {
	var out []string
	for _, e := range g.Entries {
		net := e.Prefix.String()
		if g.Ranges {
			net = e.Start.String() + "-" + e.End.String()
		}
		out = append(out, net+" "+e.Value+" :"+itoa(e.Pos.Line))
	}
	return out
}

func TestGeoCIDR(t *testing.T) {
	c := mustParse(t, inStream(`geo $geo {
        127.0.0.0/8      loopback;
        192.0.2.0/24     test;
        0.0.0.0/0        world;
        2001:db8::/32    doc6;
        ::ffff:0:0/96    mapped;
        10.0.0.0/8       ten;
        delete           10.0.0.0/8;
        255.255.255.255  bcast;
        volatile;
    }
    geo $remote_addr $from_addr { }`))
	g := c.Stream.Geos[0]
	if g.Source != "" || g.Var != "geo" || g.Ranges || !g.Volatile || g.Default != "" {
		t.Errorf("geo %+v", g)
	}
	want := []string{
		"0.0.0.0/0 world :5",
		"127.0.0.0/8 loopback :3",
		"192.0.2.0/24 test :4",
		"255.255.255.255/32 bcast :10",
		"::/0  :2", // nginx gives ::/0 the empty value when no line does
		"::ffff:0.0.0.0/96 mapped :7",
		"2001:db8::/32 doc6 :6",
	}
	if got := geoEntries(g); !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n got %q\nwant %q", got, want)
	}
	g = c.Stream.Geos[1]
	want = []string{"0.0.0.0/0  :13", "::/0  :13"}
	if got := geoEntries(g); g.Source != "remote_addr" || g.Var != "from_addr" || !reflect.DeepEqual(got, want) {
		t.Errorf("geo %+v entries %q", g, got)
	}
}

// TestGeoStreamGeoT reads the geo blocks of nginx's stream_geo.t, whose
// lookups internal/lookup's tests check.
func TestGeoStreamGeoT(t *testing.T) {
	ld := memLoader(map[string]string{
		"geo.conf":        "127.0.0.0/8  loopback;",
		"geo-ranges.conf": "127.0.0.0-127.255.255.255  loopback;",
		"a.conf": inStream(`geo $geo_include {
        include       geo.conf;
        192.0.2.0/24  test;
        0.0.0.0/0     world;
    }
    geo $var $geo_var_ranges {
        ranges;
        default                default;
        127.0.0.0-127.0.0.1    loopback;
        10.10.3.0-10.11.2.255  foo;
        10.12.3.0-10.13.2.255  foo2;
        delete                 10.10.3.0-10.11.2.255;
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
    geo $geo_insert {
        ranges;
        default                default;
        127.0.0.0-127.0.0.255  test;
        127.0.0.1-127.0.0.2    test2;
        127.0.0.1-127.0.0.1    loopback;
    }`),
	})
	c, err := ld.Load("a.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", warnings(c))
	}
	gs := c.Stream.Geos
	for i, want := range [][]string{
		{"0.0.0.0/0 world :5", "127.0.0.0/8 loopback :1", "192.0.2.0/24 test :4", "::/0  :2"},
		{"10.12.3.0-10.12.255.255 foo2 :12", "10.13.0.0-10.13.2.255 foo2 :12", "127.0.0.0-127.0.0.1 loopback :10"},
		{"127.0.0.0-127.0.255.255 loopback :1" /* ... */},
		nil, // every range deleted
		{"127.0.0.0-127.0.0.0 test :33", "127.0.0.1-127.0.0.1 loopback :35", "127.0.0.2-127.0.0.2 test2 :34", "127.0.0.3-127.0.0.255 test :33"},
	} {
		got := geoEntries(gs[i])
		if i == 2 {
			// a /16 each: 127.0-127.255, then 192.0.2.0/24
			if len(got) != 257 || got[0] != want[0] || got[256] != "192.0.2.0-192.0.2.255 test :19" {
				t.Errorf("geo %d: %d entries, first %q, last %q", i, len(got), got[0], got[len(got)-1])
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("geo %d\n got %q\nwant %q", i, got, want)
		}
	}
	if g := gs[1]; g.Source != "var" || !g.Ranges || g.Default != "default" {
		t.Errorf("geo %+v", g)
	}
}

func TestGeoWarnings(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"duplicate", "10.0.0.0/8 a;\n10.0.0.0/8 b;", []string{`duplicate network "10.0.0.0/8", value: "b", old value: "a" in a.conf:4`}},
		{"duplicate's old value is the tree's", "10.0.0.0/24 a;\n10.0.0.0/8 b;\n10.0.0.0/8 c;",
			[]string{`duplicate network "10.0.0.0/8", value: "c", old value: "a" in a.conf:5`}},
		{"default twice warns for each family", "default a;\ndefault b;", []string{
			`duplicate network "default", value: "b", old value: "a" in a.conf:4`,
			`duplicate network "default", value: "b", old value: "a" in a.conf:4`}},
		{"default after 0.0.0.0/0", "0.0.0.0/0 w;\ndefault b;", []string{`duplicate network "default", value: "b", old value: "w" in a.conf:4`}},
		{"low bits", "10.0.0.1/8 a;", []string{`low address bits of 10.0.0.1/8 are meaningless in a.conf:3`}},
		{"delete missing", "delete 10.0.0.0/8;", []string{`no network "10.0.0.0/8" to delete in a.conf:3`}},
		{"delete twice", "10.0.0.0/8 a;\ndelete 10.0.0.0/8;\ndelete 10.0.0.0/8;", []string{`no network "10.0.0.0/8" to delete in a.conf:5`}},
		{"delete a short prefix", "delete 0.0.0.0/3;", []string{`no network "0.0.0.0/3" to delete in a.conf:3`}},
		{"range duplicate", "ranges;\n10.0.0.0-10.0.0.255 a;\n10.0.0.0-10.0.0.255 b;",
			[]string{`duplicate range "10.0.0.0-10.0.0.255", value: "b", old value: "a" in a.conf:5`}},
		// nginx warns for each /16 piece, here twice
		{"range duplicate warns once", "ranges;\n10.0.255.0-10.1.0.255 a;\n10.0.255.0-10.1.0.255 b;", []string{
			`duplicate range "10.0.255.0-10.1.0.255", value: "b", old value: "a" in a.conf:5`}},
		{"range default twice", "ranges;\ndefault a;\ndefault b;", []string{`duplicate default geo range value: "b", old value: "a" in a.conf:5`}},
		{"range delete missing", "ranges;\ndelete 10.0.0.0-10.0.0.5;", []string{`no address range "10.0.0.0-10.0.0.5" to delete in a.conf:4`}},
		{"range delete across /16", "ranges;\n10.0.0.0-10.2.0.5 a;\ndelete 10.0.0.0-10.1.255.255;", nil},
		{"range delete of part", "ranges;\n10.0.0.0-10.2.0.5 a;\ndelete 10.0.0.0-10.0.0.5;", []string{`no address range "10.0.0.0-10.0.0.5" to delete in a.conf:5`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, inStream("geo $g {\n"+tt.body+"\n}"))
			if got := warnings(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestGeoErrors(t *testing.T) {
	g := func(body string) string { return inStream("geo $g {\n" + body + "\n}") }
	runErrCases(t, []errCase{
		{"bcast with mask", g("255.255.255.255 a;\n255.255.255.255/32 b;"), `invalid network "255.255.255.255/32" in a.conf:4`},
		{"mask 33", g("10.0.0.0/33 a;"), `invalid network "10.0.0.0/33" in a.conf:3`},
		{"mask 129", g("::1/129 a;"), `invalid network "::1/129" in a.conf:3`},
		{"zone", g("fe80::1%eth0 b;"), `invalid network "fe80::1%eth0" in a.conf:3`},
		{"three octets", g("1.2.3 a;"), `invalid network "1.2.3" in a.conf:3`},
		{"delete invalid", g("delete default;"), `invalid network "default" in a.conf:3`},
		{"ranges late", g("10.0.0.0/8 a;\nranges;"), `the "ranges" directive must be the first directive inside "geo" block in a.conf:4`},
		{"ranges after delete", g("delete 10.0.0.0/8;\nranges;"), `the "ranges" directive must be the first directive inside "geo" block in a.conf:4`},
		{"cidr in ranges", g("ranges;\n10.0.0.0/8 a;"), `invalid range "10.0.0.0/8" in a.conf:4`},
		{"reversed", g("ranges;\n10.0.0.5-10.0.0.1 a;"), `invalid range "10.0.0.5-10.0.0.1" in a.conf:4`},
		{"bcast end", g("ranges;\n10.0.0.0-255.255.255.255 a;"), `invalid range "10.0.0.0-255.255.255.255" in a.conf:4`},
		{"short end", g("ranges;\n1.2.3.4-1.2.3 a;"), `invalid range "1.2.3.4-1.2.3" in a.conf:4`},
		{"ipv6 range", g("ranges;\n::1-::2 a;"), `invalid range "::1-::2" in a.conf:4`},
		{"overlap", g("ranges;\n10.0.0.0-10.0.0.255 a;\n10.0.0.100-10.0.1.5 b;"),
			`range "10.0.0.100-10.0.1.5" overlaps "10.0.0.0-10.0.0.255" in a.conf:5`},
		{"overlap around", g("ranges;\n10.0.0.10-10.0.0.20 a;\n10.0.0.5-10.0.0.30 b;"),
			`range "10.0.0.5-10.0.0.30" overlaps "10.0.0.10-10.0.0.20" in a.conf:5`},
		{"overlap in a later /16", g("ranges;\n10.1.0.3-10.1.0.5 a;\n10.0.0.0-10.1.0.4 b;"),
			`range "10.0.0.0-10.1.0.4" overlaps "10.1.0.3-10.1.0.5" in a.conf:5`},
		{"sharing a start in a later /16 is no overlap", g("ranges;\n10.1.0.0-10.1.0.5 a;\n10.0.0.0-10.1.0.2 b;\nx;"),
			`invalid number of the geo parameters in a.conf:6`},
		{"three words", g("a b c;"), `invalid number of the geo parameters in a.conf:3`},
		{"one word", g("foo;"), `invalid number of the geo parameters in a.conf:3`},
		{"include alone", g("include;"), `invalid number of the geo parameters in a.conf:3`},
		{"block", g("a {\n}"), `unexpected "{" in a.conf:3`},
		{"var name", inStream("geo x { }"), `invalid variable name "x" in a.conf:2`},
		{"source $", inStream("geo $ $g { }"), `invalid variable name "$" in a.conf:2`},
		{"source name", inStream("geo remote_addr $g { }"), `invalid variable name "remote_addr" in a.conf:2`},
		{"arguments", inStream("geo $a $b $c { }"), `invalid number of arguments in "geo" directive in a.conf:2`},
	})
}

// geo_binary.t: nginx reads FILE.bin for an include in ranges mode when it
// is newer than FILE, and writes one for a big include. baton reads FILE,
// says so when a .bin is there, and writes nothing.
func TestGeoBinaryBaseIsNotRead(t *testing.T) {
	var base strings.Builder
	for i := 0; i <= 1000; i++ {
		a := "127." + itoa(i/256/256%256) + "." + itoa(i/256%256) + "." + itoa(i%256)
		v := "range" + itoa(i)
		if i == 1 {
			v = "loopback"
		}
		base.WriteString(a + "-" + a + " " + v + ";")
	}
	dir := writeFiles(t, map[string]string{
		"main.conf":     inStream("geo $a {\nranges;\ninclude base.conf;\n}\ngeo $b {\ninclude base.conf.bin;\n}"),
		"base.conf":     base.String(),
		"base.conf.bin": "127.0.0.1 not-binary;",
	})
	c, err := diskLoader().Load(filepath.Join(dir, "main.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`binary geo range base "` + dir + `/base.conf.bin" is not read: baton reads "` + dir + `/base.conf" instead in ` + dir + "/main.conf:4"}
	if got := warnings(c); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	if g := c.Stream.Geos[0]; len(g.Entries) != 1001 || g.Entries[1].Value != "loopback" {
		t.Errorf("%d entries, second %+v", len(g.Entries), g.Entries[1])
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("files written: %v", entries)
	}
}
