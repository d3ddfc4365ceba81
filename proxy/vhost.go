package proxy

import (
	"strings"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/lookup"
)

// vhosts chooses among the servers that listen on one TCP address by the
// client's TLS server name (server_name, once ssl_preread has read it), as
// nginx's ngx_stream_find_virtual_server: an exact name first, then the
// longest wildcard starting with "*." (or "."), then the longest ending
// with ".*", then the regexes in order. That is a "hostnames" map's lookup
// (internal/lookup), whose entries are the names and whose values are the
// servers. No match keeps the default server.
type vhosts struct {
	names    *lookup.Map
	srvs     []*server  // by entry
	capNames [][]string // by entry: its regex's group names (nil: not a regex)
}

// newVhosts builds the table of the servers on one address; byCfg maps
// their configs to what build made of them. The first server naming a
// name keeps it (nginx warns of the conflict and ignores the later one).
func newVhosts(servers []*config.Server, byCfg map[*config.Server]*server) *vhosts {
	v := &vhosts{}
	cm := &config.Map{Hostnames: true}
	seen := map[string]bool{}
	for _, cs := range servers {
		for _, sn := range cs.ServerNames {
			n := sn.Name
			if sn.Regexp == nil {
				if seen[n] {
					continue
				}
				seen[n] = true
			}
			cm.Entries = append(cm.Entries, config.MapEntry{
				Key: n, Regex: sn.Regexp,
				Wildcard: sn.Regexp == nil && (strings.HasPrefix(n, "*.") || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".*")),
			})
			v.srvs = append(v.srvs, byCfg[cs])
			var names []string
			if sn.Regexp != nil {
				names = sn.Regexp.SubexpNames()
			}
			v.capNames = append(v.capNames, names)
		}
	}
	v.names = lookup.NewMap(cm)
	return v
}

// find returns the server for host, or nil.
func (v *vhosts) find(host string) *server {
	srv, _, _ := v.findCaps(host)
	return srv
}

// findCaps is find with the captures of the server_name regex that
// matched, if one did, and its group names.
func (v *vhosts) findCaps(host string) (*server, []int, []string) {
	i, caps := v.names.Find([]byte(host), nil)
	if i < 0 {
		return nil, nil, nil
	}
	return v.srvs[i], caps, v.capNames[i]
}

// chose records the captures of the server_name regex that chose the
// session's virtual server for host.
func (s *session) chose(host string, caps []int, names []string) {
	if len(caps) == 0 {
		return
	}
	if s.sv == nil {
		s.sv = &sessVars{set: make([][]byte, s.srv.vt.slots)}
	}
	s.sv.capSrc, s.sv.caps, s.sv.capNames = []byte(host), caps, names
}

// validHost is nginx's ngx_stream_validate_host: the name lower-cased,
// without a trailing dot or a ":port"; ok false for what is no host name.
func validHost(h []byte) (string, bool) {
	s := string(h)
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false
		}
		return strings.ToLower(s[:end+1]), true
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	if strings.Contains(s, "..") || strings.HasPrefix(s, ".") {
		return "", false
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=%", c) >= 0:
		default:
			return "", false
		}
	}
	return strings.ToLower(s), true
}

// switchServer makes srv, a virtual server of the session's address that
// its TLS server name chose, the session's server from the content phase
// on, as nginx switches a session's configuration.
func (s *session) switchServer(srv *server) {
	if srv == s.srv {
		return
	}
	s.srv, s.group = srv, srv.group.current()
	if s.sv != nil && len(s.sv.set) < srv.vt.slots {
		s.sv.set = append(s.sv.set, make([][]byte, srv.vt.slots-len(s.sv.set))...)
	}
}

// chooseVhost switches s to the virtual server its ClientHello names, if
// its address has several.
func (s *session) chooseVhost() {
	if s.ln == nil || s.sv == nil || !s.sv.helloFound {
		return
	}
	v := s.vh
	if v == nil {
		return
	}
	host, ok := validHost(s.sv.sni)
	if !ok {
		return
	}
	if srv, caps, names := v.findCaps(host); srv != nil {
		s.switchServer(srv)
		s.chose(host, caps, names)
		s.ext().vhost = host
	}
}

// vhostsOf builds, for every address several servers listen on, the
// table of those servers, kept by the server that owns the socket.
func vhostsOf(servers []*server) {
	byCfg := map[*config.Server]*server{}
	for _, srv := range servers {
		byCfg[srv.cfg] = srv
	}
	for _, srv := range servers {
		for _, cl := range srv.listens {
			if len(cl.Vhosts) > 1 && !cl.Vhost {
				if srv.vhosts == nil {
					srv.vhosts = map[string]*vhosts{}
				}
				srv.vhosts[listenKey(cl)] = newVhosts(cl.Vhosts, byCfg)
			}
		}
	}
}
