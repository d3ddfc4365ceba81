package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
)

// TLS sessions move in "baton upgrade" (issue 19). The loop runs a TLS
// side's record layer on the peer's own socket (tlsloop.go), so a TLS
// session moves as a plain one does, its sockets and flows, plus each TLS
// side's record state (tlsrec.State): suite, both directions' traffic
// secrets and sequence numbers, a partly received record, what was opened
// and not yet read, what was sealed and not yet written. The new process
// goes on with the same record layer over the same socket; the peer sees
// one record stream. The $ssl_* variables move too. TLS to the upstream
// (proxy_ssl) travels as state version 6. A session that cannot move stays
// and ends here: one whose handshake is still under way after the wait
// (Quiesce), one with a direction that ended (a close_notify read or
// sent, which the state does not carry), or one whose suite crypto/tls
// carries (TLS 1.2 CBC). One whose handshake has not begun moves as a
// plain session (tlsPending).
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
// it is on baton's record layer with all of it in its state, neither is
// in its handshake, and no direction ended.
func (s *session) tlsMovable() bool {
	x := s.x
	if s.state == stateHandshake || s.state == stateUpHandshake || x == nil || x.tls == nil && x.upTLS == nil {
		return false
	}
	for _, t := range []*tlsInfo{x.tls, x.upTLS} {
		if t != nil && (t.rec == nil || !t.rec.Movable()) {
			return false
		}
	}
	return !s.c2u.eof && !s.u2c.eof && !s.c2u.shut && !s.u2c.shut
}

// takeSockets returns duplicates of the sockets s sends, the client's and
// the upstream's if it has one, and each TLS side's record state, encoded
// (mt for the client's side, up for the upstream's). On an error nothing
// is taken.
func (s *session) takeSockets() (files []*os.File, mt *movedTLS, up []byte, err error) {
	names := [2]string{"conn/client/", "conn/upstream/"}
	for i, fd := range [2]int{s.cfd, s.ufd} {
		if fd < 0 {
			continue
		}
		f, err := sock.DupFile(fd, names[i]+s.client.String())
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, nil, err
		}
		files = append(files, f)
	}
	x := s.x
	if x == nil {
		return files, nil, nil, nil
	}
	if x.upTLS != nil {
		up = encodeRec(x.upTLS.rec)
	}
	if info := x.tls; info != nil {
		cs := &info.state
		mt = &movedTLS{
			rec: encodeRec(info.rec), serverName: cs.ServerName, alpn: cs.NegotiatedProtocol, verify: info.verify,
			resumed: cs.DidResume, curve: uint16(cs.CurveID), suites: info.suites,
		}
		for _, c := range info.curves {
			mt.curves = append(mt.curves, uint16(c))
		}
		for _, c := range cs.PeerCertificates {
			mt.certs = append(mt.certs, c.Raw)
		}
	}
	return files, mt, up, nil
}

// encodeRec returns rec's record state, encoded.
func encodeRec(rec *tlsrec.Conn) []byte {
	st := rec.State(nil)
	b, _ := st.MarshalBinary()
	st.Wipe()
	return b
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
// client, up for the upstream) continues over its socket. It returns why
// not, or "".
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
		if why := importSide(s.cfd, t.rec, info); why != "" {
			return why
		}
	}
	if up != nil {
		upInfo := &tlsInfo{}
		if why := importSide(s.ufd, up, upInfo); why != "" {
			if info != nil {
				info.rec.Wipe()
			}
			return why
		}
		s.ext().upTLS = upInfo
		s.attachRec(upInfo.rec, false)
	}
	if info != nil {
		s.ext().tls = info
		s.attachRec(info.rec, true)
	}
	return ""
}

// importSide continues the record state rec over the socket fd: info
// gets its version, suite and record layer.
func importSide(fd int, rec []byte, info *tlsInfo) string {
	var st tlsrec.State
	defer st.Wipe()
	defer clear(rec)
	if err := st.UnmarshalBinary(rec); err != nil {
		return err.Error()
	}
	info.state.Version, info.state.CipherSuite = st.Version, st.Suite
	rc, err := tlsrec.NewConn(&sock.Conn{FD: fd}, &st)
	if err != nil {
		return err.Error()
	}
	info.rec = rc
	return ""
}

// settleTLS ends the move of a TLS session, quiesced or imported: the
// state a quiesce encoded is cleared, and the record layers go on here (a
// restored or an adopted session) or are forgotten (a released one: its
// sockets are closed here with nothing sent).
func (s *session) settleTLS(here bool) {
	if s.x == nil {
		return
	}
	clear(s.x.sent)
	s.x.sent = nil
	if !here {
		s.wipeTLS()
	}
}
