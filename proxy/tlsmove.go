package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

// TLS sessions move in "baton upgrade" (issue 19). A terminated session
// is two parts: the loop's, a plain session whose client socket is one end
// of a socketpair, and the pump's (recPump), baton's record layer over the
// client's socket. To move it, the loop stops the pump (both directions
// return where nothing is lost), takes every byte in between in order, and
// sends the client's socket itself with the record state:
//
//   - towards the upstream: what the loop read from the pair and has not
//     written (c2u, as any session), then what is still queued in the pair,
//     then what the pump opened and had not written to the pair; all of it
//     becomes c2u's pending bytes;
//   - towards the client: what the loop has not written to the pair (u2c,
//     as any session) stays the loop's; what is queued in the pair is
//     sealed into the record state, after what the pump had sealed and not
//     written;
//   - the record state (tlsrec.State): suite, both directions' traffic
//     secrets and sequence numbers, a partly received record.
//
// The new process makes a socketpair of its own and a pump that writes
// the sealed bytes first; the peer sees one record stream. The $ssl_*
// variables move too. TLS to the upstream (proxy_ssl) moves the same way,
// with the directions swapped (u2c gets what the upstream's pump opened),
// and the upstream's socket and record state (state version 6). A
// session that cannot move stays and ends here: one whose handshake is
// still under way after the wait (Quiesce), one whose TLS peer has closed
// a direction, or one whose suite crypto/tls carries (TLS 1.2 CBC). One
// whose handshake has not begun moves as a plain session (tlsPending).
//
// An upstream's TLS 1.3 session tickets come after the handshake, on the
// record layer, which hands them to crypto/tls (tlsrec.Conn.TicketsTo)
// for proxy_ssl_session_reuse; tickets that come after a move, or after
// the first application data, are dropped (the next session makes a full
// handshake).
//
// Secrets cross the handoff socketpair only, which only the two processes
// share; they are never logged, and the buffers that held them are
// cleared once used (here after the handoff, there after the import).

// movedTLS is what a terminated TLS session carries (state version 5).
type movedTLS struct {
	rec                      []byte // tlsrec.State, encoded
	serverName, alpn, verify string
	resumed                  bool
	curve                    uint16
	curves, suites           []uint16
	certs                    [][]byte // the client's chain, DER
}

// tlsMovable reports whether s's TLS can move with it: every TLS side of
// it is on baton's record layer, and neither is in its handshake.
func (s *session) tlsMovable() bool {
	x := s.x
	if s.state == stateHandshake || s.state == stateUpHandshake || x == nil || x.tls == nil && x.upTLS == nil {
		return false
	}
	for _, t := range []*tlsInfo{x.tls, x.upTLS} {
		if t != nil && (t.link == nil || t.link.pump == nil) {
			return false
		}
	}
	return true
}

// takeSockets returns duplicates of the sockets s sends: the client's, and
// the upstream's if it has one. A TLS side sends its peer's socket (not
// the loop's socketpair end): its pump is stopped, the bytes towards that
// peer sealed into its record state, the bytes from it added to the flow
// away from it, and the record state encoded (mt for the client's side,
// up for the upstream's). ok is false when s stays (a TLS direction ended
// meanwhile: it goes on here); on an error too, nothing is taken. A TLS
// session's splice pipes must be drained before.
func (s *session) takeSockets() (files []*os.File, mt *movedTLS, up []byte, ok bool, err error) {
	var legs [2]*tlsInfo
	if x := s.x; x != nil {
		legs = [2]*tlsInfo{x.tls, x.upTLS}
	}
	fds := [2]int{s.cfd, s.ufd}
	names := [2]string{"conn/client/", "conn/upstream/"}
	var stopped []*recPump
	defer func() {
		if !ok {
			for _, p := range stopped {
				p.resume()
			}
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	for i, info := range legs {
		name := names[i] + s.client.String()
		var f *os.File
		switch {
		case info != nil:
			p := info.link.pump
			p.stop()
			stopped = append(stopped, p)
			if !p.movable() {
				return
			}
			if err = p.takeToPeer(); err == nil {
				f, err = p.dupPeer(name)
			}
		case fds[i] >= 0:
			f, err = sock.DupFile(fds[i], name)
		default:
			continue
		}
		if err != nil {
			return
		}
		files = append(files, f)
	}
	// From here nothing fails: the loop's bytes are taken in order.
	flows := [2]*flow{&s.c2u, &s.u2c}
	for i, info := range legs {
		if info == nil {
			continue
		}
		rec := s.takeFromPair(info.link.pump, fds[i], flows[i])
		if i == 1 {
			up = rec
			continue
		}
		cs := &info.state
		mt = &movedTLS{
			rec: rec, serverName: cs.ServerName, alpn: cs.NegotiatedProtocol, verify: info.verify,
			resumed: cs.DidResume, curve: uint16(cs.CurveID), suites: info.suites,
		}
		for _, c := range info.curves {
			mt.curves = append(mt.curves, uint16(c))
		}
		for _, c := range cs.PeerCertificates {
			mt.certs = append(mt.certs, c.Raw)
		}
	}
	return files, mt, up, true, nil
}

// takeFromPair takes, in order, what is queued in the loop's end of a
// stopped pump's socketpair (fd) and what the pump opened and had not
// written to it, as pending bytes of fl (the flow away from the pump's
// peer), and returns the pump's record state, encoded.
func (s *session) takeFromPair(p *recPump, fd int, fl *flow) []byte {
	buf := s.loop.buf
	for {
		n, err := sock.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		fl.hold(buf[:n])
	}
	fl.hold(p.toLoop)
	p.toLoop = nil
	st := p.rc.State(nil)
	rec, _ := st.MarshalBinary()
	st.Wipe()
	return rec
}

// putTLS writes a movedTLS; stateDecoder.movedTLS reads it.
func putTLS(e *fdpass.Encoder, t *movedTLS) {
	e.Bytes(t.rec)
	putStr(e, t.serverName)
	putStr(e, t.alpn)
	putStr(e, t.verify)
	e.Bool(t.resumed)
	e.Uint64(uint64(t.curve))
	for _, l := range [][]uint16{t.curves, t.suites} {
		e.Uint64(uint64(len(l)))
		for _, v := range l {
			e.Uint64(uint64(v))
		}
	}
	e.Uint64(uint64(len(t.certs)))
	for _, c := range t.certs {
		e.Bytes(c)
	}
}

func (d *stateDecoder) movedTLS() *movedTLS {
	t := &movedTLS{rec: d.bytes(), serverName: d.str(), alpn: d.str(), verify: d.str(), resumed: d.Bool(), curve: uint16(d.Uint64())}
	for _, l := range []*[]uint16{&t.curves, &t.suites} {
		for n := d.count(1 << 12); n > 0 && d.Err() == nil; n-- {
			*l = append(*l, uint16(d.Uint64()))
		}
	}
	for n := d.count(64); n > 0 && d.Err() == nil; n-- {
		t.certs = append(t.certs, d.bytes())
	}
	return t
}

// importTLS makes s, imported with its peers' sockets as s.cfd and
// s.ufd, a TLS session again: each side with a record state (t's for the
// client, up for the upstream) continues over its socket in a pump of this
// process (started with the session), and the loop gets a socketpair end
// in its place. It returns why not, or "" (nothing is left taken then).
func (p *Proxy) importTLS(s *session, t *movedTLS, up []byte) string {
	var info *tlsInfo
	if t != nil {
		defer clear(t.rec)
		info = &tlsInfo{verify: t.verify, suites: t.suites}
		info.state = tls.ConnectionState{
			HandshakeComplete: true, DidResume: t.resumed,
			ServerName: t.serverName, NegotiatedProtocol: t.alpn, CurveID: tls.CurveID(t.curve),
		}
		for _, c := range t.curves {
			info.curves = append(info.curves, tls.CurveID(c))
		}
		for _, der := range t.certs {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return "the client's certificate: " + err.Error()
			}
			info.state.PeerCertificates = append(info.state.PeerCertificates, c)
		}
		if why := p.importSide(&s.cfd, t.rec, info, s.srv.halfClose); why != "" {
			return why
		}
	}
	if up != nil {
		upInfo := &tlsInfo{}
		if why := p.importSide(&s.ufd, up, upInfo, s.srv.halfClose); why != "" {
			if info != nil {
				info.link.pump.discard() // the client's socket with it; s.cfd is the pair's end
			}
			return why
		}
		s.ext().upTLS = upInfo
	}
	if info != nil {
		s.ext().tls = info
	}
	return ""
}

// importSide continues the record state rec over the socket *fd: info gets
// its version, suite and pump, and *fd becomes the loop's end of the
// pump's socketpair. On failure the socket is closed and *fd is -1, or
// it is as it was.
func (p *Proxy) importSide(fd *int, rec []byte, info *tlsInfo, halfClose bool) string {
	var st tlsrec.State
	defer st.Wipe()
	defer clear(rec)
	if err := st.UnmarshalBinary(rec); err != nil {
		return err.Error()
	}
	info.state.Version, info.state.CipherSuite = st.Version, st.Suite
	if !p.fds.take(tlsFDs) {
		return p.fds.capReason()
	}
	f := os.NewFile(uintptr(*fd), "tls peer")
	raw, err := net.FileConn(f)
	f.Close()
	*fd = -1
	if err != nil {
		p.fds.give(tlsFDs)
		return err.Error()
	}
	rc, err := tlsrec.NewConn(raw, &st)
	if err != nil {
		raw.Close()
		p.fds.give(tlsFDs)
		return err.Error()
	}
	pfd, pc, err := socketPair()
	if err != nil {
		raw.Close()
		rc.Wipe()
		p.fds.give(tlsFDs)
		return err.Error()
	}
	*fd = pfd
	info.link = p.recLink(rc, pc, halfClose)
	return ""
}

// socketPair makes a TLS session's socketpair: fd, the loop's end, and pc,
// the pump's.
func socketPair() (int, *net.UnixConn, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	pf := os.NewFile(uintptr(pair[0]), "tls pump")
	pc, err := net.FileConn(pf)
	pf.Close()
	if err != nil {
		unix.Close(pair[1])
		return -1, nil, err
	}
	return pair[1], pc.(*net.UnixConn), nil
}

// movedPumps are the pumps of a session that moved in or out: none for a
// plain one (or TLS on crypto/tls's pump), one for each TLS side.
func (s *session) movedPumps() []*recPump {
	var ps []*recPump
	if x := s.x; x != nil {
		for _, t := range []*tlsInfo{x.tls, x.upTLS} {
			if t != nil && t.link != nil && t.link.pump != nil {
				ps = append(ps, t.link.pump)
			}
		}
	}
	return ps
}

// settleTLS ends the move of a TLS session, quiesced or imported: the
// state a quiesce encoded is cleared, and the pumps go on here (a
// restored or an adopted session: sealed bytes first) or are discarded (a
// released one: their sockets closed here with nothing sent).
func (s *session) settleTLS(here bool) {
	ps := s.movedPumps()
	if len(ps) == 0 {
		return
	}
	clear(s.x.sent)
	s.x.sent = nil
	for _, p := range ps {
		if here {
			p.resume()
		} else {
			p.discard()
		}
	}
}
