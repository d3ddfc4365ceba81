package config

import (
	"reflect"
	"testing"
)

func TestSplitClients(t *testing.T) {
	c := mustParse(t, inStream(`split_clients "${remote_addr}AAA" $variant {
    0.5%    .one;
    2.0%    .two;
    .5%     "$not_expanded";
    5.%     five;
    *       "";
    *       never;
}`))
	sc := c.Stream.SplitClients[0]
	if sc.Source != "${remote_addr}AAA" || sc.Var != "variant" || sc.Pos.Line != 2 {
		t.Errorf("split %+v", sc)
	}
	want := []SplitPart{
		{Pos{"a.conf", 3}, 50, false, ".one"},
		{Pos{"a.conf", 4}, 200, false, ".two"},
		{Pos{"a.conf", 5}, 50, false, "$not_expanded"},
		{Pos{"a.conf", 6}, 500, false, "five"},
		{Pos{"a.conf", 7}, 0, true, ""},
		{Pos{"a.conf", 8}, 0, true, "never"},
	}
	if !reflect.DeepEqual(sc.Parts, want) {
		t.Errorf("parts\n got %+v\nwant %+v", sc.Parts, want)
	}
}

func TestSplitClientsErrors(t *testing.T) {
	s := func(body string) string { return inStream("split_clients $remote_addr $s {\n" + body + "\n}") }
	runErrCases(t, []errCase{
		// nginx checks the total after the block, and names the "}" line
		{"over 100", s("50% a;\n50.5% b;"), `percent total is greater than 100% in a.conf:5`},
		{"after star", s("50% a;\n* b;\n1% c;"), `percent total is greater than 100% in a.conf:6`},
		{"wraps to zero, then over", s("4294967296% a;\n50% b;"), `percent total is greater than 100% in a.conf:5`},
		{"zero", s("0% a;"), `invalid percent value "0%" in a.conf:3`},
		{"three decimals", s("1.555% a;"), `invalid percent value "1.555%" in a.conf:3`},
		{"no number", s("% a;"), `invalid percent value "%" in a.conf:3`},
		{"no percent sign", s("50 a;"), `invalid percent value "50" in a.conf:3`},
		{"two dots", s("1.2.3% a;"), `invalid percent value "1.2.3%" in a.conf:3`},
		{"include is a percentage", s("include a;"), `invalid percent value "include" in a.conf:3`},
		{"block", s("10% a {\n}"), `unexpected "{" in a.conf:3`},
		// nginx reads a value from the previous line here
		{"one word", s("10%;"), `invalid number of the split_clients parameters in a.conf:3`},
		{"var name", inStream("split_clients $remote_addr s { }"), `invalid variable name "s" in a.conf:2`},
		{"source", inStream("split_clients ${a $s { }"), `the closing bracket in "a" variable is missing in a.conf:2`},
		{"arguments", inStream("split_clients $a { }"), `invalid number of arguments in "split_clients" directive in a.conf:2`},
	})
}

func TestSplitClientsExtraWordsWarn(t *testing.T) {
	c := mustParse(t, inStream("split_clients $remote_addr $s {\n10% a b c;\n}"))
	want := []string{`"split_clients" ignores the parameters after "a", as nginx does in a.conf:3`}
	if got := warnings(c); !reflect.DeepEqual(got, want) || c.Stream.SplitClients[0].Parts[0].Value != "a" {
		t.Errorf("warnings %q parts %+v", got, c.Stream.SplitClients[0].Parts)
	}
}

func TestAtofp(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"50", 5000, true},
		{"0.5", 50, true},
		{".5", 50, true},
		{"5.", 500, true},
		{"33.33", 3333, true},
		{"100.00", 10000, true},
		{"1.555", 0, false},
		{"", 0, false},
		{"1..5", 0, false},
		{"-1", 0, false},
		{"922337203685477581", 0, false}, // overflows when scaled
		{"92233720368547758", 9223372036854775800, true},
	} {
		got, ok := atofp(tt.in, 2)
		if got != tt.want || ok != tt.ok {
			t.Errorf("atofp(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
