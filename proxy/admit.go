package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/batonproxy/baton/config"
	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// What happens between accept and the first connect, in nginx's phase
// order (ngx_stream_core_module.c): read the PROXY header of a
// "listen ... proxy_protocol" client, trust its address for $remote_addr
// only from a set_real_ip_from peer (realip, POST_ACCEPT phase), then
// limit_conn (PREACCESS), then allow/deny (ACCESS).

// maxProxyHeader bounds a PROXY header (nginx's NGX_PROXY_PROTOCOL_MAX_HEADER).
const maxProxyHeader = 4096

var (
	sigV1 = []byte("PROXY ")
	sigV2 = proxyproto.SIGV2

	errNoHeader     = errors.New("no PROXY protocol header")
	errHeaderTooBig = errors.New("PROXY protocol header too long")
	errV1LF         = errors.New("PROXY protocol v1 line must end with CRLF")
	errV2Version    = errors.New("unknown PROXY protocol version")
)

// proxyHeaderLen returns the length of the complete PROXY header (v1 or v2)
// at the start of b, 0 when more bytes are needed to tell, or an error when
// b cannot start a header.
func proxyHeaderLen(b []byte) (int, error) {
	switch {
	case len(b) >= len(sigV2) && bytes.Equal(b[:len(sigV2)], sigV2):
		if len(b) < 16 {
			return 0, nil
		}
		n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
		if n > maxProxyHeader {
			return 0, errHeaderTooBig
		}
		if len(b) < n {
			return 0, nil
		}
		return n, nil
	case bytes.HasPrefix(sigV2, b) && len(b) < len(sigV2):
		return 0, nil // a prefix of the v2 signature: wait for the rest
	case bytes.HasPrefix(b, sigV1) || bytes.HasPrefix(sigV1, b):
		const v1Max = 107 // the spec's longest v1 line, CRLF included
		if i := bytes.IndexByte(b[:min(len(b), v1Max)], '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' {
				return 0, errV1LF // no CR will come: refuse now, not at the timeout
			}
			return i + 1, nil
		}
		if len(b) >= v1Max {
			return 0, errHeaderTooBig
		}
		return 0, nil
	}
	return 0, errNoHeader
}

// parseProxyHeader parses exactly one complete header. A v2 header whose
// command, address family or transport baton does not take addresses from
// is accepted without them, as nginx's ngx_proxy_protocol_v2_read does
// (it skips such a header by its length): go-proxyproto refuses UNSPEC and
// UNIX families with a PROXY command, which nginx accepts.
func parseProxyHeader(b []byte) (*proxyproto.Header, error) {
	if len(b) >= 16 && bytes.HasPrefix(b, sigV2) {
		if b[12]>>4 != 2 {
			return nil, errV2Version
		}
		family, transport := b[13]>>4, b[13]&0x0f
		if b[12]&0x0f != 1 || (family != 1 && family != 2) || (transport != 1 && transport != 2) {
			return &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}, nil
		}
	}
	return proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(b), max(len(b), 16)))
}

// readProxyHeader reads what the client has sent and, once the header is
// complete, applies it and admits the session. It never blocks: a partial
// header waits for more bytes or for proxy_protocol_timeout.
func (s *session) readProxyHeader() {
	if s.hdr == nil {
		s.hdr = make([]byte, 0, 256)
	} else if len(s.hdr) > 0 && s.headerStep() {
		return // complete already (bytes a "pass" brought)
	}
	for {
		if len(s.hdr) == cap(s.hdr) {
			if cap(s.hdr) >= maxProxyHeader {
				s.brokenHeader(errHeaderTooBig)
				return
			}
			s.hdr = append(make([]byte, 0, min(2*cap(s.hdr), maxProxyHeader)), s.hdr...)
		}
		n, err := s.readClient(s.hdr[len(s.hdr):cap(s.hdr)]) // opened, when a TLS server passed it here
		if n > 0 {
			s.hdr = s.hdr[:len(s.hdr)+n]
			if s.headerStep() {
				return
			}
			continue // read on; EAGAIN ends the loop
		}
		switch err {
		case nil: // EOF before a complete header
			s.srv.log.Logf(LevelInfo, "*%d client closed connection while reading PROXY protocol, client: %s, server: %s", s.id, s.peerAddr.Addr(), s.srv.name)
			s.finish(400)
			return
		case unix.EAGAIN:
			return
		case unix.EINTR:
			continue
		default:
			s.ioError("recv()", err, s.cfd)
			return
		}
	}
}

// headerStep parses what s.hdr holds. It reports whether reading is over:
// the header is applied and the session admitted, or it ended.
func (s *session) headerStep() bool {
	hl, herr := proxyHeaderLen(s.hdr)
	if herr != nil {
		s.brokenHeader(herr)
		return true
	}
	if hl == 0 {
		return false
	}
	h, perr := parseProxyHeader(s.hdr[:hl])
	if perr != nil {
		s.brokenHeader(perr)
		return true
	}
	s.applyProxyHeader(h)
	if rest := s.hdr[hl:]; len(rest) > 0 {
		s.early = append([]byte(nil), rest...) // payload that came with the header
	}
	s.hdr = nil
	// The client stays in the set: clientWhileConnecting watches it.
	s.admit()
	return true
}

func (s *session) brokenHeader(err error) {
	shown := s.hdr
	if len(shown) > 64 {
		shown = shown[:64]
	}
	s.srv.log.Logf(LevelError, "*%d broken header: %q (%v) while reading PROXY protocol, client: %s, server: %s",
		s.id, shown, err, s.peerAddr.Addr(), s.srv.name)
	s.finish(400)
}

// applyProxyHeader records what the header says ($proxy_protocol_addr) and,
// when the peer is trusted (set_real_ip_from), makes its source the
// session's $remote_addr, for balancing, access, limits and logs.
func (s *session) applyProxyHeader(h *proxyproto.Header) {
	if h.Command != proxyproto.PROXY {
		return // LOCAL: a health check from the proxy in front; the peer stays
	}
	src, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok {
		if u, isUDP := h.SourceAddr.(*net.UDPAddr); isUDP {
			src = &net.TCPAddr{IP: u.IP, Port: u.Port}
		} else {
			return // UNKNOWN or unix: nothing to take
		}
	}
	a, ok := netip.AddrFromSlice(src.IP)
	if !ok {
		return
	}
	s.ppAddr = netip.AddrPortFrom(a.Unmap(), uint16(src.Port))
	if dst, ok := h.DestinationAddr.(*net.TCPAddr); ok {
		s.ext().ppDst = dst.AddrPort()
	} else if dst, ok := h.DestinationAddr.(*net.UDPAddr); ok {
		s.ext().ppDst = dst.AddrPort()
	}
	if tlvs, err := h.TLVs(); err == nil && len(tlvs) > 0 {
		s.ext().ppTLV, _ = proxyproto.JoinTLVs(tlvs)
	}
	if s.srv.trusted(s.peerAddr.Addr()) {
		s.client = s.ppAddr
	}
}

// trusted reports whether a PROXY header from addr may set $remote_addr.
func (srv *server) trusted(addr netip.Addr) bool {
	if !addr.IsValid() {
		return srv.cfg.SetRealIPFromUnix // a client of a unix: listener
	}
	addr = addr.Unmap()
	for _, p := range srv.cfg.SetRealIPFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// admit runs nginx's phases from preaccess on: "set" and limit_conn,
// allow/deny, the preread phase (ssl_preread), then the content phase
// (return, or connecting to the upstream).
func (s *session) admit() {
	s.runSets()
	if !s.takeLimits() {
		return
	}
	if rule := s.srv.accessDenied(s.client.Addr()); rule != nil {
		s.srv.log.Logf(LevelError, "*%d access forbidden by rule (%s:%d), client: %s, server: %s",
			s.id, rule.Pos.File, rule.Pos.Line, s.client.Addr(), s.srv.name)
		s.finish(403)
		return
	}
	s.afterAccess()
}

// afterAccess goes on with an admitted session: its TLS handshake on an
// "ssl" listener, then the preread and content phases.
func (s *session) afterAccess() {
	if s.ln != nil && s.lcfg.SSL && (s.x == nil || s.x.tls == nil) {
		s.startTLS()
		return
	}
	if s.srv.preread {
		s.startPreread()
		return
	}
	s.content()
}

// accessDenied evaluates allow/deny in order, as nginx: the first rule that
// matches decides; no match allows. It returns the deny rule that matched.
func (srv *server) accessDenied(addr netip.Addr) *config.AccessRule {
	addr = addr.Unmap()
	for _, r := range srv.cfg.Access {
		// A client of a unix: listener has no address: "unix:" rules
		// (and "all") are its own, as nginx's.
		if r.All || (addr.IsValid() && r.Prefix.Contains(addr)) || (!addr.IsValid() && r.Unix) {
			if r.Allow {
				return nil
			}
			return r
		}
	}
	return nil
}

// connZone is a limit_conn_zone: live sessions per evaluated key, shared by
// every server and loop that uses it.
type connZone struct {
	name   string
	keySrc string
	key    template
	max    int // entries the zone's size holds, as nginx's slab would roughly
	mu     sync.Mutex
	counts map[string]int32
}

// heldLimit is one limit_conn count a session holds until it ends.
type heldLimit struct {
	zone *connZone
	key  string
}

// takeLimits applies the server's limit_conn directives (nginx's PREACCESS
// phase). On a refusal it releases what it took, logs, ends the session
// with 503 and returns false.
func (s *session) takeLimits() bool {
	if len(s.srv.limits) == 0 {
		return true
	}
	held, st, ok := s.srv.takeLimits(s.loop, s.record(&s.loop.rec), s.id, "client")
	s.limits, s.limitStatus = held, st
	if !ok {
		s.finish(503)
	}
	return ok
}

// takeLimits counts a new session, r, in each of srv's limit_conn zones.
// It returns the counts taken, or, refused, false with nothing held.
// peer names the client in the log line ("client", "udp client").
func (srv *server) takeLimits(l *loop, r *record, id uint64, peer string) ([]heldLimit, uint8, bool) {
	var held []heldLimit
	status := limitPassed
	for _, lim := range srv.limits {
		key := string(lim.zone.key.appendTo(l.keyBuf[:0], r))
		if key == "" || len(key) > 255 {
			continue // nginx skips empty and over-long keys
		}
		z := lim.zone
		z.mu.Lock()
		n := z.counts[key]
		full := n >= int32(lim.n) || (n == 0 && len(z.counts) >= z.max)
		if !full || srv.limitDryRun {
			z.counts[key] = n + 1
		}
		z.mu.Unlock()
		if full {
			srv.log.Logf(srv.limitLogLevel, "*%d limiting connections%s by zone %q, %s: %s, server: %s",
				id, map[bool]string{true: ", dry run,"}[srv.limitDryRun], z.name, peer, r.client.Addr(), srv.name)
			if !srv.limitDryRun {
				releaseLimits(held)
				return nil, limitRejected, false
			}
			status = limitRejectedDryRun
		}
		held = append(held, heldLimit{z, key})
	}
	return held, status, true
}

// $limit_conn_status: none (no limit_conn applied: "-"), or what the
// limits decided.
const (
	limitNone uint8 = iota
	limitPassed
	limitRejected
	limitRejectedDryRun
)

// releaseLimits gives back every limit_conn count the session holds.
func (s *session) releaseLimits() {
	releaseLimits(s.limits)
	s.limits = nil
}

// retakeLimits counts, in srv's zones, the limit_conn counts a session
// held in an old process (an upgrade), by zone name; a zone this config
// does not have is dropped.
func (srv *server) retakeLimits(held []heldLimitState) []heldLimit {
	var out []heldLimit
	for _, h := range held {
		for _, ref := range srv.limits {
			if ref.zone.name == h.zone {
				ref.zone.mu.Lock()
				ref.zone.counts[h.key]++
				ref.zone.mu.Unlock()
				out = append(out, heldLimit{ref.zone, h.key})
			}
		}
	}
	return out
}

// releaseLimits gives back the limit_conn counts held.
func releaseLimits(held []heldLimit) {
	for _, h := range held {
		h.zone.mu.Lock()
		if n := h.zone.counts[h.key] - 1; n > 0 {
			h.zone.counts[h.key] = n
		} else {
			delete(h.zone.counts, h.key)
		}
		h.zone.mu.Unlock()
	}
}

// limitRef is one limit_conn directive of a server.
type limitRef struct {
	zone *connZone
	n    int
}

// buildZones makes the limit_conn zones of cfg, reusing those of p with the
// same name and key (a reload keeps their counts).
func (p *Proxy) buildZones(cfg *config.Config, vt *varTable) (map[string]*connZone, error) {
	zones := map[string]*connZone{}
	for name, z := range cfg.Stream.LimitConnZones {
		if old := p.zones[name]; old != nil && old.keySrc == z.Key {
			zones[name] = old
			continue
		}
		t, err := vt.compile(z.Key)
		if err != nil {
			return nil, posError(z.Pos, err)
		}
		// nginx keeps a node of about 64 bytes plus the key per entry.
		zones[name] = &connZone{name: name, keySrc: z.Key, key: t, max: int(max(z.Size/128, 1)), counts: map[string]int32{}}
	}
	return zones, nil
}

// proxyHeaderOut builds the PROXY header baton sends upstream
// ("proxy_protocol on|v2"): the client ($remote_addr, after realip) and the
// address it connected to. Mixed address families are sent as UNKNOWN (v1)
// or LOCAL (v2), as nginx does for what it cannot express.
func (s *session) proxyHeaderOut(version int) []byte {
	src, dst := s.client, s.localAddr()
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	h := &proxyproto.Header{Version: byte(version), Command: proxyproto.PROXY}
	switch {
	case sa.Is4() && da.Is4():
		h.TransportProtocol = proxyproto.TCPv4
	case sa.Is6() && da.Is6():
		h.TransportProtocol = proxyproto.TCPv6
	default:
		if version == 1 {
			return []byte("PROXY UNKNOWN\r\n")
		}
		h.Command, h.TransportProtocol = proxyproto.LOCAL, proxyproto.UNSPEC
	}
	if h.Command == proxyproto.PROXY {
		h.SourceAddr = &net.TCPAddr{IP: sa.AsSlice(), Port: int(src.Port())}
		h.DestinationAddr = &net.TCPAddr{IP: da.AsSlice(), Port: int(dst.Port())}
	}
	b, err := h.Format()
	if err != nil {
		s.srv.log.Logf(LevelAlert, "*%d PROXY header for upstream: %v", s.id, err)
		return []byte("PROXY UNKNOWN\r\n")
	}
	return b
}
