package proxy

import (
	"strings"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/lookup"
	"github.com/batonproxy/baton/internal/tlshello"
)

// defineLookups defines the variables of the config's map, geo and
// split_clients blocks. Each is evaluated when read (nginx caches a value
// per session unless "volatile"; baton does not cache, which differs only
// for a source that changes during a session, such as a "set" variable
// written after the map was read).
func defineLookups(cfg *config.Config, vt *varTable) error {
	st := cfg.Stream
	// Named captures ((?P<name>...)) of map regexes are variables too.
	for _, m := range st.Maps {
		for _, e := range m.Entries {
			if e.Regex == nil {
				continue
			}
			for _, name := range e.Regex.SubexpNames() {
				if name != "" && vt.defs[strings.ToLower(name)] == nil {
					vt.define(name, namedCapture(name))
				}
			}
		}
	}
	// And those of server_name regexes.
	for _, srv := range st.Servers {
		for _, sn := range srv.ServerNames {
			if sn.Regexp == nil {
				continue
			}
			for _, name := range sn.Regexp.SubexpNames() {
				if name != "" && vt.defs[strings.ToLower(name)] == nil {
					vt.define(name, namedCapture(name))
				}
			}
		}
	}
	// Define every name first, then compile: a map's value or source may
	// read another map's variable, defined later in the file.
	for _, m := range st.Maps {
		if err := vt.define(m.Var, nil); err != nil {
			return posError(m.Pos, err)
		}
	}
	for _, g := range st.Geos {
		if err := vt.define(g.Var, nil); err != nil {
			return posError(g.Pos, err)
		}
	}
	for _, sc := range st.SplitClients {
		if err := vt.define(sc.Var, nil); err != nil {
			return posError(sc.Pos, err)
		}
	}
	for _, m := range st.Maps {
		get, err := mapVar(m, vt)
		if err != nil {
			return err
		}
		vt.define(m.Var, get)
	}
	for _, g := range st.Geos {
		get, err := geoVar(g, vt)
		if err != nil {
			return err
		}
		vt.define(g.Var, get)
	}
	for _, sc := range st.SplitClients {
		src, err := vt.compile(sc.Source)
		if err != nil {
			return posError(sc.Pos, err)
		}
		sp := lookup.NewSplit(sc)
		vt.define(sc.Var, func(b []byte, r *record) []byte {
			return append(b, sp.Find(src.appendTo(nil, r))...)
		})
	}
	return nil
}

// mapVar is a map's variable: its source evaluated, looked up, and the
// entry's value evaluated (with the captures of a regex that matched).
func mapVar(m *config.Map, vt *varTable) (variable, error) {
	src, err := vt.compile(m.Source)
	if err != nil {
		return nil, posError(m.Pos, err)
	}
	values := make([]template, len(m.Entries))
	names := make([][]string, len(m.Entries))
	for i, e := range m.Entries {
		if values[i], err = vt.compile(e.Value); err != nil {
			return nil, posError(e.Pos, err)
		}
		if e.Regex != nil {
			names[i] = e.Regex.SubexpNames()
		}
	}
	var def template
	if m.Default != nil {
		if def, err = vt.compile(m.Default.Value); err != nil {
			return nil, posError(m.Default.Pos, err)
		}
	}
	lm := lookup.NewMap(m)
	return func(b []byte, r *record) []byte {
		key := src.appendTo(nil, r)
		i, caps := lm.Find(key, nil)
		if i < 0 {
			return def.appendTo(b, r)
		}
		if len(caps) > 0 {
			// Captures belong to the session from here on, as nginx's.
			r.capSrc, r.caps, r.capNames = key, caps, names[i]
		}
		return values[i].appendTo(b, r)
	}, nil
}

// geoVar is a geo block's variable: the client's address (or the source
// variable's value, parsed as nginx does) looked up.
func geoVar(g *config.Geo, vt *varTable) (variable, error) {
	lg := lookup.NewGeo(g)
	if g.Source == "" {
		return func(b []byte, r *record) []byte {
			if !r.client.IsValid() { // a unix: client: 255.255.255.255, as nginx's
				return append(b, lg.FindValue(nil)...)
			}
			return append(b, lg.Find(r.client.Addr())...)
		}, nil
	}
	src, err := vt.compile("$" + g.Source)
	if err != nil {
		return nil, posError(g.Pos, err)
	}
	return func(b []byte, r *record) []byte {
		return append(b, lg.FindValue(src.appendTo(nil, r))...)
	}, nil
}

// namedCapture is the variable of a named capture group: its text in the
// last regex match, if that regex has the group.
func namedCapture(name string) variable {
	return func(b []byte, r *record) []byte {
		for i, n := range r.capNames {
			if n == name && 2*i+1 < len(r.caps) && r.caps[2*i] >= 0 {
				return append(b, r.capSrc[r.caps[2*i]:r.caps[2*i+1]]...)
			}
		}
		return b
	}
}

// parseHello runs the ssl_preread parser over what the client sent so far
// (b holds every byte since the start). done reports the phase over for
// the parser: a ClientHello read, or what nginx declines (not TLS): either
// way the session goes on, with what was found. err is never set: nginx's
// ssl_preread has no error that ends a session.
func parseHello(b []byte, sv *sessVars) (done bool, err error) {
	if sv.hello == nil {
		sv.hello = new(tlshello.Parser)
	}
	done, _ = sv.hello.Parse(b) // declined: on, with what was found
	r := sv.hello.Result()
	sv.sni, sv.alpn, sv.proto = r.ServerName, r.ALPN, []byte(r.Version)
	sv.prereadRan = r.Found // declined (not TLS): nginx drops its context, the variables are not found
	if done {
		sv.helloFound = r.Found && !r.SSLv2Hello && len(r.ServerName) > 0
		sv.sni = append([]byte(nil), sv.sni...)
		sv.alpn = append([]byte(nil), sv.alpn...)
		sv.hello = nil // 256 bytes and more: not kept for the session's life
	}
	return done, nil
}
