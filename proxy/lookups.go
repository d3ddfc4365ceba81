package proxy

import (
	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/tlshello"
)

// defineLookups defines the variables of the config's map, geo and
// split_clients blocks.
func defineLookups(cfg *config.Config, vt *varTable) error {
	return nil
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
	if done {
		sv.helloFound = r.Found && !r.SSLv2Hello && len(r.ServerName) > 0
		sv.sni = append([]byte(nil), sv.sni...)
		sv.alpn = append([]byte(nil), sv.alpn...)
		sv.hello = nil // 256 bytes and more: not kept for the session's life
	}
	return done, nil
}
