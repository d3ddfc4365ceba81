package config

import "math"

// SplitClients is a "split_clients SOURCE $VAR { ... }" block
// (ngx_stream_split_clients_module): SOURCE's value is hashed with
// MurmurHash2, and the hash picks a part by the parts' percentages, in the
// order written. A key no part takes (the percentages sum to less than 100
// and there is no "*") gets the empty string.
type SplitClients struct {
	Pos Pos

	// Source is the template whose value is hashed, as written (e.g.
	// "${remote_addr}AAA").
	Source string

	// Var is the variable the block defines, without the "$".
	Var string

	// Parts in the order written; together they take at most 100%.
	Parts []SplitPart
}

// SplitPart is one "PERCENT VALUE;" line of split_clients.
type SplitPart struct {
	Pos Pos

	// Percent is the percentage in hundredths of a percent, nginx's unit
	// ("0.5%" is 50, "100%" is 10000), as nginx stores it: a 32-bit
	// number, so an absurdly large percentage wraps. 0 with Star.
	Percent uint32

	// Star is "*": the rest of the keys.
	Star bool

	// Value is plain text: nginx does not expand variables in it.
	Value string
}

// splitClients reads "split_clients SOURCE $VAR { ... }" as
// ngx_conf_split_clients_block.
func (l *loader) splitClients(d *directive) {
	src, name, ok := l.lookupHead(d)
	if !ok {
		return
	}
	sc := &SplitClients{Pos: d.pos, Source: src, Var: name}
	nerrs := len(l.errs)
	l.each(d.block, ctxEntries, func(e *directive) { l.splitPart(e, sc) })
	if len(l.errs) > nerrs {
		return
	}
	// As nginx, after the block: "*" (or a zero after wrapping) takes the
	// rest, and the sum is 32-bit. The error is nginx's, at the block's "}".
	var sum uint32
	for _, p := range sc.Parts {
		if p.Percent != 0 {
			sum += p.Percent
		} else {
			sum = 10000
		}
		if sum > 10000 {
			l.errAt(d.end, d.name, "percent total is greater than 100%%")
			return
		}
	}
	l.st.s.SplitClients = append(l.st.s.SplitClients, sc)
}

// splitPart reads one line as ngx_stream_split_clients. nginx reads no
// "include" here: "include" is an invalid percentage like any other word.
func (l *loader) splitPart(e *directive, sc *SplitClients) {
	if e.hasBlock {
		l.errAt(e.pos, "split_clients", "unexpected \"{\"")
		return
	}
	args := append([]string{e.name}, e.args...)
	if len(args) < 2 {
		// nginx does not check, and takes the value from the previous line.
		l.errAt(e.pos, "split_clients", "invalid number of the split_clients parameters")
		return
	}
	if len(args) > 2 {
		l.warnf(e.pos, "\"split_clients\" ignores the parameters after \"%s\", as nginx does", args[1])
	}
	p := SplitPart{Pos: e.pos, Value: args[1]}
	if pc := args[0]; pc == "*" {
		p.Star = true
	} else {
		n, ok := int64(0), false
		if pc != "" && pc[len(pc)-1] == '%' {
			n, ok = atofp(pc[:len(pc)-1], 2)
		}
		if !ok || n == 0 {
			l.errAt(e.pos, "split_clients", "invalid percent value \"%s\"", pc)
			return
		}
		p.Percent = uint32(n) // as nginx's (uint32_t) cast
	}
	sc.Parts = append(sc.Parts, p)
}

// atofp is nginx's ngx_atofp: a decimal with at most point digits after the
// dot, as an integer scaled by 10^point ("12.5" with point 2 is 1250).
func atofp(s string, point int) (int64, bool) {
	if s == "" {
		return 0, false
	}
	const cutoff, cutlim = math.MaxInt64 / 10, math.MaxInt64 % 10
	var value int64
	dot := false
	for i := 0; i < len(s); i++ {
		if point == 0 {
			return 0, false
		}
		c := s[i]
		if c == '.' {
			if dot {
				return 0, false
			}
			dot = true
			continue
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		if value >= cutoff && (value > cutoff || int64(c-'0') > cutlim) {
			return 0, false
		}
		value = value*10 + int64(c-'0')
		if dot {
			point--
		}
	}
	for ; point > 0; point-- {
		if value > cutoff {
			return 0, false
		}
		value *= 10
	}
	return value, true
}
