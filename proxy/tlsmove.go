package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"syscall"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

// Terminated TLS sessions move in "baton upgrade" (issue 19). The session
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
// variables move too. A session that cannot move stays and ends here:
// one still in its handshake, one whose client has closed a direction,
// one with TLS to its upstream, or one whose suite crypto/tls carries
// (TLS 1.2 CBC).
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

// tlsMovable reports whether s's TLS can move with it.
func (s *session) tlsMovable() bool {
	x := s.x
	return s.state != stateHandshake && s.state != stateUpHandshake && x != nil && x.upTLS == nil &&
		x.tls != nil && x.tls.link != nil && x.tls.link.pump != nil
}

// quiesceTLS stops s's pump and takes its part of the session: the bytes
// towards the upstream go to c2u, the rest into the record state. It
// returns a duplicate of the client's socket and what travels with it;
// ok false when the session stays (a direction ended meanwhile: it goes on
// here). s's splice pipes must be drained before.
func (s *session) quiesceTLS() (f *os.File, mt *movedTLS, ok bool, err error) {
	info := s.x.tls
	p := info.link.pump
	p.stop()
	defer func() {
		if !ok {
			p.resume()
		}
	}()
	if !p.movable() {
		return nil, nil, false, nil
	}
	if err := p.takeToClient(); err != nil {
		return nil, nil, false, err
	}
	sc, ok2 := p.rc.NetConn().(syscall.Conn)
	if !ok2 {
		return nil, nil, false, errors.New("the client's socket has no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil, false, err
	}
	var derr error
	if err := rc.Control(func(fd uintptr) { f, derr = sock.DupFile(int(fd), "conn/client/"+s.client.String()) }); err != nil {
		return nil, nil, false, err
	}
	if derr != nil {
		return nil, nil, false, derr
	}
	// From here nothing fails: the loop's bytes are taken in order.
	l := s.loop
	for {
		n, err := sock.Read(s.cfd, l.buf)
		if n <= 0 || err != nil {
			break
		}
		s.c2u.hold(l.buf[:n])
	}
	s.c2u.hold(p.toLoop)
	p.toLoop = nil
	st := p.rc.State(nil)
	rec, _ := st.MarshalBinary()
	st.Wipe()
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
	return f, mt, true, nil
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

// importTLS makes s, imported with the client's socket as s.cfd, a TLS
// session again: the record state continues over that socket in a pump of
// this process (started with the session), and the loop gets a socketpair
// end as s.cfd. It returns why not, or "".
func (p *Proxy) importTLS(s *session, t *movedTLS) string {
	var st tlsrec.State
	defer st.Wipe()
	defer clear(t.rec)
	if err := st.UnmarshalBinary(t.rec); err != nil {
		return err.Error()
	}
	info := &tlsInfo{verify: t.verify, suites: t.suites}
	info.state = tls.ConnectionState{
		Version: st.Version, CipherSuite: st.Suite, HandshakeComplete: true, DidResume: t.resumed,
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
	if !p.fds.take(tlsFDs) {
		return p.fds.capReason()
	}
	f := os.NewFile(uintptr(s.cfd), "tls client")
	raw, err := net.FileConn(f)
	f.Close()
	s.cfd = -1
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
	fd, pc, err := socketPair()
	if err != nil {
		raw.Close()
		rc.Wipe()
		p.fds.give(tlsFDs)
		return err.Error()
	}
	info.link = p.recLink(rc, pc, s.srv.halfClose)
	s.cfd = fd
	s.ext().tls = info
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

// movedPump is the pump of a session that moved in or out, nil for one
// without (plain, or TLS on crypto/tls's pump).
func (s *session) movedPump() *recPump {
	if x := s.x; x != nil && x.tls != nil && x.tls.link != nil {
		return x.tls.link.pump
	}
	return nil
}

// settleTLS ends the move of a TLS session, quiesced or imported: the
// state a quiesce encoded is cleared, and the pump goes on here (a
// restored or an adopted session: sealed bytes first) or is discarded (a
// released one: its sockets closed here with nothing sent).
func (s *session) settleTLS(here bool) {
	p := s.movedPump()
	if p == nil {
		return
	}
	clear(s.x.sent)
	s.x.sent = nil
	if here {
		p.resume()
	} else {
		p.discard()
	}
}
