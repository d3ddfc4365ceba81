package lookup

import (
	"regexp"
	"slices"

	"github.com/batonproxy/baton/config"
)

// stackKey is the longest key Map.Find lower-cases on the stack; a longer
// one costs an allocation.
const stackKey = 256

// Map is the lookup table of a "map" block, nginx's ngx_stream_map_t.
type Map struct {
	hostnames bool
	exact     map[string]int32 // lower-cased key: entry
	head      *wildcards       // "*.example.com", ".example.com"; nil if none
	tail      *wildcards       // "www.example.*"; nil if none
	regexes   []mapRegex       // in the order written
}

type mapRegex struct {
	re     *regexp.Regexp
	entry  int32
	groups bool // the regex has submatches to report
}

// NewMap builds the table of cm, sharing the regular expressions config
// compiled (a *regexp.Regexp is safe for concurrent use) and copying the
// rest. Entry indexes are cm.Entries'.
func NewMap(cm *config.Map) *Map {
	m := &Map{hostnames: cm.Hostnames, exact: map[string]int32{}}
	var head, tail []wcName
	for i, e := range cm.Entries {
		switch {
		case e.Regex != nil:
			m.regexes = append(m.regexes, mapRegex{re: e.Regex, entry: int32(i), groups: e.Regex.NumSubexp() > 0})
		case !e.Wildcard:
			m.exact[e.Key] = int32(i)
		case e.Key[0] == '.' || e.Key[0] == '*':
			head = append(head, wcName{headKey(e.Key), int32(i)})
		default:
			tail = append(tail, wcName{e.Key[:len(e.Key)-2], int32(i)})
		}
	}
	if len(head) > 0 {
		m.head = newWildcards(head)
	}
	if len(tail) > 0 {
		m.tail = newWildcards(tail)
	}
	return m
}

// Find returns the index, in the config's Entries, of the entry key
// selects, or -1 for the default. It looks as ngx_stream_map_find does:
// first the exact keys (ASCII case-insensitively), then, if key is not
// empty, the "*.example.com"/".example.com" wildcards, the "www.example.*"
// ones, and each regular expression in order. In a "hostnames" map a
// trailing dot of key is ignored.
//
// When a regular expression with groups matched, Find appends its
// submatch index pairs (as regexp's FindSubmatchIndex: pair 0 is the whole
// match, -1 an unset group; $1 is pair 1) into key to caps[:0] and returns
// that; otherwise it returns caps[:0]. Only that case allocates.
func (m *Map) Find(key []byte, caps []int) (entry int, capsOut []int) {
	caps = caps[:0]
	if m.hostnames && len(key) > 0 && key[len(key)-1] == '.' {
		key = key[:len(key)-1]
	}
	var buf [stackKey]byte
	var low []byte
	if len(key) <= len(buf) {
		low = buf[:len(key)]
	} else {
		low = make([]byte, len(key))
	}
	for i, c := range key {
		if c >= 'A' && c <= 'Z' {
			c |= 0x20
		}
		low[i] = c
	}
	if e, ok := m.exact[string(low)]; ok {
		return int(e), caps
	}
	if len(key) == 0 {
		return -1, caps
	}
	if m.head != nil {
		if e := m.head.findHead(low); e >= 0 {
			return int(e), caps
		}
	}
	if m.tail != nil {
		if e := m.tail.findTail(low); e >= 0 {
			return int(e), caps
		}
	}
	for _, r := range m.regexes {
		if !r.groups {
			if r.re.Match(key) {
				return int(r.entry), caps
			}
			continue
		}
		if loc := r.re.FindSubmatchIndex(key); loc != nil {
			return int(r.entry), append(caps, loc...)
		}
	}
	return -1, caps
}

// headKey turns "*.example.com" into "com.example." and ".example.com" into
// "com.example", as ngx_hash_add_key: labels reversed, the trailing dot
// marking a wildcard that does not match "example.com" itself.
func headKey(key string) string {
	p := make([]byte, 0, len(key))
	n := 0 // length of the label being passed
	for i := len(key) - 1; i > 0; i-- {
		if key[i] == '.' {
			p = append(p, key[i+1:i+1+n]...)
			p = append(p, '.')
			n = 0
			continue
		}
		n++
	}
	if n > 0 {
		p = append(p, key[1:1+n]...)
	}
	return string(p)
}

// wcName is a wildcard key in ngx_hash_wildcard_init's form ("com.example."
// or "www.example") with its entry.
type wcName struct {
	key   string
	entry int32
}

// wildcards is one level of nginx's wildcard hash (ngx_hash_wildcard_t):
// a table by label, and the value of the name that ends at this level.
type wildcards struct {
	value  int32 // hwc->value; -1 for none
	labels map[string]wcValue
}

// wcValue is what a label leads to: an entry, or the next level. nginx
// keeps these in the two low bits of a pointer.
type wcValue struct {
	entry int32
	next  *wildcards // bit 2: a deeper level
	only  bool       // bit 1: "*.example.com" only, not "example.com"
}

// newWildcards is ngx_hash_wildcard_init over names sorted as nginx sorts
// them (ngx_dns_strcmp), ported step by step so that every corner of
// nginx's matching is kept.
func newWildcards(names []wcName) *wildcards {
	slices.SortFunc(names, func(a, b wcName) int { return dnsStrcmp(a.key, b.key) })
	return wildcardInit(names)
}

func wildcardInit(names []wcName) *wildcards {
	w := &wildcards{value: -1, labels: make(map[string]wcValue, len(names))}
	for n, i := 0, 0; n < len(names); n = i {
		key := names[n].key
		l, dot := 0, false
		for l < len(key) {
			if key[l] == '.' {
				dot = true
				break
			}
			l++
		}
		label := key[:l]
		v := wcValue{entry: names[n].entry}
		dotLen := l + 1
		if dot {
			l++
		}
		var next []wcName
		if len(key) != l {
			next = append(next, wcName{key[l:], names[n].entry})
		}
		for i = n + 1; i < len(names); i++ {
			k := names[i].key
			if !strncmpEqual(key, k, l) {
				break
			}
			if !dot && len(k) > l && k[l] != '.' {
				break
			}
			rest := ""
			if dotLen <= len(k) {
				rest = k[dotLen:]
			}
			next = append(next, wcName{rest, names[i].entry})
		}
		if len(next) > 0 {
			sub := wildcardInit(next)
			if len(key) == l {
				sub.value = names[n].entry
			}
			v = wcValue{entry: -1, next: sub, only: dot}
		} else if dot {
			v.only = true
		}
		w.labels[label] = v
	}
	return w
}

// findHead is ngx_hash_find_wc_head: name's last label, then the ones
// before it, down the levels.
func (w *wildcards) findHead(name []byte) int32 {
	n := len(name)
	for n > 0 && name[n-1] != '.' {
		n--
	}
	v, ok := w.labels[string(name[n:])]
	if !ok {
		return w.value
	}
	if v.next != nil {
		if n == 0 { // name is "example.com" itself
			if v.only {
				return -1
			}
			return v.next.value
		}
		if e := v.next.findHead(name[:n-1]); e >= 0 {
			return e
		}
		return v.next.value
	}
	if v.only && n == 0 {
		return -1
	}
	return v.entry
}

// findTail is ngx_hash_find_wc_tail: name's first label, then the next.
func (w *wildcards) findTail(name []byte) int32 {
	i := 0
	for i < len(name) && name[i] != '.' {
		i++
	}
	if i == len(name) {
		return -1
	}
	v, ok := w.labels[string(name[:i])]
	if !ok {
		return w.value
	}
	if v.next != nil {
		if e := v.next.findTail(name[i+1:]); e >= 0 {
			return e
		}
		return v.next.value
	}
	return v.entry
}

// dnsStrcmp is ngx_dns_strcmp on NUL-terminated strings: ASCII
// case-insensitive, with "." below every other character.
func dnsStrcmp(a, b string) int {
	for i := 0; ; i++ {
		c1, c2 := byteAt(a, i), byteAt(b, i)
		if c1 >= 'A' && c1 <= 'Z' {
			c1 |= 0x20
		}
		if c2 >= 'A' && c2 <= 'Z' {
			c2 |= 0x20
		}
		if c1 == c2 {
			if c1 == 0 {
				return 0
			}
			continue
		}
		if c1 == '.' {
			c1 = ' '
		}
		if c2 == '.' {
			c2 = ' '
		}
		return int(c1) - int(c2)
	}
}

// strncmpEqual is ngx_strncmp(a, b, n) == 0 on NUL-terminated strings.
func strncmpEqual(a, b string, n int) bool {
	for i := 0; i < n; i++ {
		c1, c2 := byteAt(a, i), byteAt(b, i)
		if c1 != c2 {
			return false
		}
		if c1 == 0 {
			return true
		}
	}
	return true
}

func byteAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}
