package config

import (
	"fmt"
	"regexp"
)

// Map is a "map SOURCE $VAR { ... }" block (ngx_stream_map_module): VAR's
// value is the Value of the entry SOURCE's value selects, found as nginx's
// ngx_stream_map_find does: an exact key (ASCII case-insensitively), then
// the wildcard keys of a "hostnames" map, then each regular expression in
// the order written; if none matches, Default.
type Map struct {
	Pos Pos

	// Source is the template whose value is looked up, as written (e.g.
	// "$ssl_preread_server_name"); it may mix text and variables.
	Source string

	// Var is the variable the map defines, without the "$", as written
	// (nginx matches variable names case-insensitively). Whether it clashes
	// with a built-in variable ("the duplicate ... variable") is proxy's to
	// check.
	Var string

	// Hostnames is "hostnames": keys written after it may be wildcards, and
	// a trailing dot is dropped from the looked-up value (wherever in the
	// block the word is written).
	Hostnames bool

	// Volatile is "volatile": the value is not cached for the session.
	Volatile bool

	// Default is the "default" entry; nil means the empty string.
	Default *MapEntry

	// Entries are every other entry in the order written (included files
	// read in place).
	Entries []MapEntry
}

// MapEntry is one "KEY VALUE;" line of a map.
type MapEntry struct {
	Pos Pos

	// Key is what nginx stores: for an exact or wildcard key, the key
	// without a leading "\" and with ASCII letters lower-cased; for a regular
	// expression, the pattern after "~" or "~*".
	Key string

	// Wildcard marks a key of a "hostnames" map that is a wildcard:
	// "*.example.com" or ".example.com" (the latter matches example.com too),
	// or "www.example.*". Keys written before "hostnames" are exact.
	Wildcard bool

	// Regex is the compiled "~" or "~*" (caseless) key; nil for the others.
	Regex *regexp.Regexp

	// Value is the entry's value template as written: it may hold
	// variables, and $1..$9 for a regular expression's captures.
	Value string
}

// mapState is what one map block collects: the key sets of nginx's
// ngx_hash_add_key, for its "conflicting parameter" check.
type mapState struct {
	m     *Map
	exact map[string]bool // keys_hash: exact keys, and "example.com" for ".example.com"
	head  map[string]bool // dns_wc_head_hash: "example.com" for "*.example.com" and ".example.com"
	tail  map[string]bool // dns_wc_tail_hash: "www.example." for "www.example.*"
}

// mapBlock reads "map SOURCE $VAR { ... }" as ngx_stream_map_block.
func (l *loader) mapBlock(d *directive) {
	src, name, ok := l.lookupHead(d)
	if !ok {
		return
	}
	m := &Map{Pos: d.pos, Source: src, Var: name}
	ms := &mapState{m: m, exact: map[string]bool{}, head: map[string]bool{}, tail: map[string]bool{}}
	var entry func(e *directive)
	entry = func(e *directive) { l.mapEntry(e, ms, entry) }
	l.each(d.block, ctxEntries, entry)
	l.st.s.Maps = append(l.st.s.Maps, m)
}

// lookupHead reads the head of a map or split_clients block, "SOURCE $VAR":
// the source template (syntax checked) and the variable's name.
func (l *loader) lookupHead(d *directive) (src, name string, ok bool) {
	if !l.check(d, true, take(2)) {
		return "", "", false
	}
	if msg := complexValueError(d.args[0]); msg != "" {
		l.errorf(d, "%s", msg)
		return "", "", false
	}
	name, ok = l.newVarName(d, d.args[1])
	return d.args[0], name, ok
}

// newVarName checks the name of the variable a map, geo or split_clients
// block defines, and returns it without the "$".
func (l *loader) newVarName(d *directive, name string) (string, bool) {
	if len(name) < 2 || name[0] != '$' {
		l.errorf(d, "invalid variable name \"%s\"", name)
		return "", false
	}
	return name[1:], true
}

// mapEntry reads one line of a map block as ngx_stream_map.
func (l *loader) mapEntry(e *directive, ms *mapState, self func(*directive)) {
	m := ms.m
	errorf := func(format string, a ...any) { l.errAt(e.pos, "map", format, a...) }
	if e.hasBlock {
		errorf("unexpected \"{\"")
		return
	}
	args := append([]string{e.name}, e.args...)
	switch {
	case len(args) == 1 && args[0] == "hostnames":
		m.Hostnames = true
		return
	case len(args) == 1 && args[0] == "volatile":
		m.Volatile = true
		return
	case len(args) != 2:
		errorf("invalid number of the map parameters")
		return
	case args[0] == "include":
		l.include(e, ctxEntries, self)
		return
	}
	key, value := args[0], args[1]
	// nginx reports a bad value of an included entry at the "include"
	// line (it compiles values with the map block's saved conf); baton
	// names the entry's own file and line.
	if msg := complexValueError(value); msg != "" {
		errorf("%s", msg)
		return
	}
	if key == "default" {
		if m.Default != nil {
			errorf("duplicate default map parameter")
			return
		}
		m.Default = &MapEntry{Pos: e.pos, Key: key, Value: value}
		return
	}
	if key != "" && key[0] == '~' {
		pattern, caseless := key[1:], false
		if pattern != "" && pattern[0] == '*' {
			pattern, caseless = pattern[1:], true
		}
		re, msg := compileRegex(pattern, caseless)
		if msg != "" {
			errorf("%s", msg)
			return
		}
		m.Entries = append(m.Entries, MapEntry{Pos: e.pos, Key: pattern, Regex: re, Value: value})
		return
	}
	if key != "" && key[0] == '\\' {
		key = key[1:]
	}
	stored, wildcard, rc := ms.addKey(key, m.Hostnames)
	switch rc {
	case keyDeclined:
		errorf("invalid hostname or wildcard \"%s\"", key)
		return
	case keyBusy:
		errorf("conflicting parameter \"%s\"", stored)
		return
	}
	m.Entries = append(m.Entries, MapEntry{Pos: e.pos, Key: stored, Wildcard: wildcard, Value: value})
}

// What ngx_hash_add_key returns.
const (
	keyOK       = iota // NGX_OK
	keyDeclined        // NGX_DECLINED: not a valid wildcard
	keyBusy            // NGX_BUSY: the key conflicts with one added before
)

// addKey is ngx_hash_add_key with NGX_HASH_WILDCARD_KEY when hostnames: it
// checks key against those added before and records it. It returns the key
// as nginx stores it (ASCII lower-cased) and whether it is a wildcard.
func (ms *mapState) addKey(key string, hostnames bool) (stored string, wildcard bool, rc int) {
	skip, tail := 0, false
	if hostnames {
		// supported wildcards: "*.example.com", ".example.com", "www.example.*"
		stars := 0
		for i := 0; i < len(key); i++ {
			switch {
			case key[i] == '*':
				if stars++; stars > 1 {
					return "", false, keyDeclined
				}
			case key[i] == '.' && i+1 < len(key) && key[i+1] == '.', key[i] == 0:
				return "", false, keyDeclined
			}
		}
		n := len(key)
		switch {
		case n > 1 && key[0] == '.':
			skip = 1
		case n > 2 && key[0] == '*' && key[1] == '.':
			skip = 2
		case n > 2 && key[n-2] == '.' && key[n-1] == '*':
			tail = true
		case stars > 0:
			return "", false, keyDeclined
		}
	}
	low := asciiLower(key)
	switch {
	case tail:
		// "www.example.*" is checked as "www.example."
		name := low[:len(low)-1]
		if ms.tail[name] {
			return low, true, keyBusy
		}
		ms.tail[name] = true
		return low, true, keyOK
	case skip > 0:
		name := low[skip:]
		if skip == 1 { // ".example.com" also takes "example.com" itself
			if ms.exact[name] {
				return low, true, keyBusy
			}
			ms.exact[name] = true
		}
		if ms.head[name] {
			return low, true, keyBusy
		}
		ms.head[name] = true
		return low, true, keyOK
	}
	if ms.exact[low] {
		return low, false, keyBusy
	}
	ms.exact[low] = true
	return low, false, keyOK
}

// asciiLower lower-cases ASCII letters only, as ngx_tolower.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c | 0x20
				}
			}
			return string(b)
		}
	}
	return s
}

// mapHashSize accepts "map_hash_bucket_size N" and "map_hash_max_size N"
// (and server_names_hash_*) with nginx's checks (ngx_conf_set_num_slot)
// and ignores them: baton's tables are Go maps, with no bucket or size
// limit to tune.
func (l *loader) mapHashSize(d *directive) {
	if !l.check(d, false, take(1)) {
		return
	}
	st := l.st
	if st.mapHash == nil {
		st.mapHash = map[string]bool{}
	}
	if st.mapHash[d.name] {
		l.errorf(d, "\"%s\" directive is duplicate", d.name)
		return
	}
	st.mapHash[d.name] = true
	if _, ok := atoi(d.args[0]); !ok {
		l.errorf(d, "\"%s\" directive invalid number", d.name)
	}
}

// complexValueError checks the variable syntax of a template (a map's
// source and values, a split_clients source) as
// ngx_stream_script_compile does, and returns nginx's message or "".
// Whether each variable exists is checked later, by proxy.
func complexValueError(s string) string {
	for i := 0; i < len(s); {
		if s[i] != '$' {
			i++
			continue
		}
		if i++; i == len(s) {
			return "invalid variable name"
		}
		if s[i] >= '1' && s[i] <= '9' { // a capture, $1..$9
			i++
			continue
		}
		bracket := false
		if s[i] == '{' {
			bracket = true
			if i++; i == len(s) {
				return "invalid variable name"
			}
		}
		start, end := i, i
		for ; i < len(s); i++ {
			c := s[i]
			if c == '}' && bracket {
				end = i
				i++
				bracket = false
				break
			}
			if !isVarChar(c) {
				break
			}
			end = i + 1
		}
		if bracket {
			return fmt.Sprintf("the closing bracket in \"%s\" variable is missing", s[start:end])
		}
		if end == start {
			return "invalid variable name"
		}
	}
	return ""
}

func isVarChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
