package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlsrec"
	"golang.org/x/sys/unix"
)

// TLS termination ("listen ... ssl", ngx_stream_ssl_module), as nginx's ssl
// phase: after access, before preread and content. The handshake runs on a
// goroutine of the session's own, in crypto/tls, over the client's socket;
// the server it chooses by the client's server name (virtual servers of the
// address) takes the session on. Once it is done, the socket goes back to
// the loop with baton's record layer over it (internal/tlsrec): the loop
// opens and seals the records itself (tlsloop.go), and everything after
// (preread, return, proxying, limits, logs) is what a plain session has.
// The record state can be taken, so the session moves in "baton upgrade"
// (tlsmove.go). TLS to the upstream (proxy_ssl) is the same on the
// upstream's side, after the connect.
//
// For a suite the record layer does not carry (TLS 1.2 CBC), crypto/tls's
// connection goes on in a pump of two goroutines (pumpTLS) between the
// peer's socket and one end of a socketpair, whose other end the loop
// takes as the session's socket; that session stays in the old process
// in an upgrade, which serves it until it ends.

// tlsFDs are the descriptors a TLS side may hold beyond a plain one: one
// while its handshake's goroutine has the socket, two for crypto/tls's
// pump (a socketpair).
const tlsFDs = 2

// tlsInfo is what a terminated session knows of its TLS, for the $ssl_*
// variables, and its record layer.
type tlsInfo struct {
	state  tls.ConnectionState
	rec    *tlsrec.Conn   // baton's record layer, run by the loop (tlsloop.go)
	link   *tlsLink       // crypto/tls's pump instead (TLS 1.2 CBC); the session cannot move
	verify string         // $ssl_client_verify: NONE, SUCCESS or FAILED:reason
	curves []tls.CurveID  // the client's ($ssl_curves)
	suites []uint16       // the client's ($ssl_ciphers)
	local  netip.AddrPort // an upstream's: baton's address on the upstream socket
}

// tlsLink is shared by the loop's session and crypto/tls's pump.
type tlsLink struct {
	finished atomic.Bool // the session ended: the pump closes the client once the last bytes are out
}

// serverTLS is a server's crypto/tls configuration, nil without "ssl".
func newServerTLS(t *config.TLS, vt *varTable, log *Logger) (*serverTLS, error) {
	if t == nil {
		return nil, nil
	}
	c := &tls.Config{
		Certificates:           t.Certs,
		MinVersion:             t.MinVersion,
		MaxVersion:             t.MaxVersion,
		CipherSuites:           t.CipherSuites,
		NextProtos:             t.ALPN,
		SessionTicketsDisabled: !t.SessionTickets && !t.SessionCache,
	}
	if st := newStaplers(t, log); st != nil {
		c.GetCertificate = staplingCertificate(t.Certs, st)
		c.Certificates = nil
	}
	// Session tickets: keys of the server's own, so that the per-handshake
	// configurations (GetConfigForClient) share them and sessions resume
	// (crypto/tls would otherwise make keys for each outer configuration);
	// with a shared ssl_session_cache zone, the zone's, as nginx 1.23.2+
	// keeps them in the zone for every server that uses it.
	keys := t.TicketKeys // ssl_session_ticket_key: shared by a fleet that has the same files
	if len(keys) == 0 {
		keys = [][32]byte{zoneOf(t.SessionZone).key}
	}
	c.SetSessionTicketKeys(keys)
	// A session resumes only in a server of the same session id context,
	// as OpenSSL's: the session carries it (SessionState.Extra).
	var store *sessionStore
	if !t.SessionTickets && t.SessionCache {
		// ssl_session_cache without tickets: sessions stay here (in the
		// zone's store), and what the client holds is only their id
		// (stateful resumption, as OpenSSL's session cache).
		store = zoneOf(t.SessionZone).store
	}
	sid := sessionIDContext(t)
	timeout := t.SessionTimeout
	c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, sid)
		if store != nil {
			return store.wrap(ss, timeout)
		}
		return c.EncryptTicket(cs, ss)
	}
	c.UnwrapSession = func(id []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		var ss *tls.SessionState
		var err error
		if store != nil {
			ss, err = store.unwrap(id)
		} else {
			ss, err = c.DecryptTicket(id, cs)
		}
		if ss == nil || err != nil || !slices.ContainsFunc(ss.Extra, func(e []byte) bool { return bytes.Equal(e, sid) }) {
			return nil, err // another context's session, or none: a full handshake
		}
		return ss, nil
	}
	c.CurvePreferences = t.Curves
	if t.KeyLog != "" {
		c.KeyLogWriter = keyLogFile(t.KeyLog)
	}
	// Client certificates are verified here, not by crypto/tls, so that the
	// CAs named to the client are ssl_client_certificate's alone while
	// ssl_trusted_certificate's verify too, and so that optional_no_ca
	// can report a failure it lets through.
	switch t.VerifyClient {
	case "on":
		c.ClientAuth, c.ClientCAs = tls.RequireAnyClientCert, t.ClientCAs
	case "optional", "optional_no_ca":
		c.ClientAuth, c.ClientCAs = tls.RequestClientCert, t.ClientCAs
	}
	st := &serverTLS{cfg: c, verify: t.VerifyClient, trusted: t.TrustedCAs, depth: t.VerifyDepth, passwords: t.Passwords, crls: t.CRLs,
		cache: certCacheOf(t.CertCache), ocsp: newOCSPChecker(t, log)}
	for _, p := range t.CertVars {
		ct, err := vt.compile(p[0])
		if err != nil {
			return nil, err
		}
		kt, err := vt.compile(p[1])
		if err != nil {
			return nil, err
		}
		st.certVars = append(st.certVars, [2]template{ct, kt})
	}
	return st, nil
}

// sessionStore is a session cache (ssl_session_cache with
// ssl_session_tickets off), bounded in size and by ssl_session_timeout.
type sessionStore struct {
	mu sync.Mutex
	m  map[string]storedSession
}

// sessionZone is what an ssl_session_cache zone holds for the servers
// that use it: their ticket key and session cache. A server without a
// shared zone has its own.
type sessionZone struct {
	key   [32]byte
	store *sessionStore
}

var (
	zonesMu sync.Mutex
	zones   = map[string]*sessionZone{}
)

// zoneOf returns the zone of that name, made at its first use in this
// process (reloads keep it, as nginx keeps its zones); "" makes a zone of
// one server's own.
func zoneOf(name string) *sessionZone {
	zonesMu.Lock()
	defer zonesMu.Unlock()
	if z := zones[name]; z != nil && name != "" {
		return z
	}
	z := &sessionZone{store: &sessionStore{m: map[string]storedSession{}}}
	rand.Read(z.key[:])
	if name != "" {
		zones[name] = z
	}
	return z
}

// sessionIDContext is nginx's ngx_ssl_session_id_context: a digest of the
// module ("STREAM"), the server's certificates (or, when they are loaded
// by variables, their names as written) and the CAs named to clients, so
// that a session resumes only where the same certificates serve.
func sessionIDContext(t *config.TLS) []byte {
	h := sha1.New()
	h.Write([]byte("STREAM"))
	for _, c := range t.Certs {
		if len(c.Certificate) > 0 {
			d := sha1.Sum(c.Certificate[0])
			h.Write(d[:])
		}
	}
	if len(t.Certs) == 0 {
		for _, p := range t.CertVars {
			h.Write([]byte(p[0]))
		}
	}
	if t.ClientCAs != nil {
		//lint:ignore SA1019 the pool is ssl_client_certificate's alone, none from the system
		for _, s := range t.ClientCAs.Subjects() {
			h.Write(s)
		}
	}
	return append([]byte("baton-sid:"), h.Sum(nil)...)
}

type storedSession struct {
	state   []byte
	expires time.Time
}

// maxStoredSessions bounds a server's session cache.
const maxStoredSessions = 20000

func (st *sessionStore) wrap(ss *tls.SessionState, timeout time.Duration) ([]byte, error) {
	b, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 32)
	rand.Read(id)
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= maxStoredSessions {
		for k, v := range st.m {
			if now.After(v.expires) || len(st.m) >= maxStoredSessions {
				delete(st.m, k)
			}
		}
	}
	st.m[string(id)] = storedSession{state: b, expires: now.Add(timeout)}
	return id, nil
}

func (st *sessionStore) unwrap(id []byte) (*tls.SessionState, error) {
	st.mu.Lock()
	s, ok := st.m[string(id)]
	if ok && time.Now().After(s.expires) {
		delete(st.m, string(id))
		ok = false
	}
	st.mu.Unlock()
	if !ok {
		return nil, nil // not resumed: a full handshake
	}
	return tls.ParseSessionState(s.state)
}

// serverTLS is a server's TLS: crypto/tls's configuration and how client
// certificates are verified.
type serverTLS struct {
	cfg     *tls.Config
	verify  string // ssl_verify_client
	trusted *x509.CertPool
	depth   int

	crls []*x509.RevocationList // ssl_crl
	ocsp *ocspChecker           // ssl_ocsp; nil: off

	// Certificates whose names have variables: evaluated and loaded at
	// each handshake (ssl_certificate $ssl_server_name.crt), through the
	// ssl_certificate_cache when there is one.
	certVars  [][2]template
	passwords []string
	cache     *certCache
}

// tlsCert is a loaded certificate with its key.
type tlsCert = tls.Certificate

// hasCerts reports whether the server can answer a handshake.
func (st *serverTLS) hasCerts() bool {
	return len(st.cfg.Certificates) > 0 || st.cfg.GetCertificate != nil || len(st.certVars) > 0
}

// withVarCerts is cfg with the certificates whose names have variables
// loaded as the session's variables name them now (names holds them,
// evaluated on the session's loop).
func (st *serverTLS) withVarCerts(cfg *tls.Config, names [][2]string) (*tls.Config, error) {
	c := cfg.Clone()
	c.Certificates = slices.Clone(cfg.Certificates)
	for _, n := range names {
		pair, err := st.cache.loadPair(n[0], n[1], st.passwords)
		if err != nil {
			return nil, err
		}
		c.Certificates = append(c.Certificates, pair)
	}
	return c, nil
}

// forHandshake is the configuration of one handshake: s's, with the client
// certificate's verification reported into *verdict.
//
// Its key log is kl (which passes lines on to ssl_key_log's file): the
// record layer takes the traffic secrets from it.
func (st *serverTLS) forHandshake(verdict *string, kl *tlsrec.KeyLog) *tls.Config {
	*verdict = "NONE"
	c := st.cfg.Clone()
	kl.Next = c.KeyLogWriter
	c.KeyLogWriter = kl
	c.UnwrapSession = kl.UnwrapSession(c, c.UnwrapSession) // a TLS 1.2 resumption's secret
	if st.verify == "off" {
		return c
	}
	// VerifyConnection, not VerifyPeerCertificate: it runs for resumed
	// sessions too, whose certificate the session carries.
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		chains, err := certs[0].Verify(x509.VerifyOptions{Roots: st.trusted, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err == nil && len(chains[0]) > st.depth+1 {
			err = fmt.Errorf("certificate chain too long")
		}
		if err == nil && len(st.crls) > 0 {
			for _, c := range chains[0] {
				if config.Revoked(c, st.crls) {
					err = errors.New("certificate revoked")
				}
			}
		}
		if err != nil {
			*verdict = "FAILED:" + verifyReason(err)
			if st.verify == "optional_no_ca" {
				return nil // let through, reported in $ssl_client_verify
			}
			return err
		}
		*verdict = "SUCCESS"
		if st.ocsp != nil {
			// ssl_ocsp: a certificate whose status is not "good" fails the
			// verification after the handshake, as nginx's (the session
			// then ends with 500, its $ssl_client_verify saying why).
			*verdict = st.ocsp.check(chains[0])
		}
		return nil
	}
	return c
}

// keyLogFile is the writer of an ssl_key_log file: each line appended
// whole, the file opened for each (rare: a debugging aid).
type keyLogFile string

func (k keyLogFile) Write(b []byte) (int, error) {
	f, err := os.OpenFile(string(k), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Write(b)
}

// verifyReason is a verification failure as OpenSSL words the common ones.
func verifyReason(err error) string {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		if ua.Cert != nil && ua.Cert.Issuer.String() == ua.Cert.Subject.String() {
			return "self-signed certificate"
		}
		return "unable to get local issuer certificate"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "certificate has expired"
	}
	return err.Error()
}

// tlsServer is the server whose TLS settings a handshake uses: the virtual
// server the client's name chooses, when it has TLS of its own, else the
// address's default server.
func (s *session) tlsServer(sni string) *server {
	def := s.srv
	if v := s.vh; v != nil && sni != "" {
		if host, ok := validHost([]byte(sni)); ok {
			if srv := v.find(host); srv != nil {
				return srv
			}
		}
	}
	return def
}

// startTLS begins the handshake of a session accepted on an "ssl" listener:
// the client's socket goes to a goroutine, the session waits (stateHandshake)
// for it to come back with its record layer (tlsReady).
func (s *session) startTLS() {
	l := s.loop
	if !s.local.IsValid() {
		if sa, err := unix.Getsockname(s.cfd); err == nil {
			s.local = sock.AddrPort(sa) // $server_addr, before the socket leaves the loop
		}
	}
	fd, ok := s.detachForTLS(&s.cfd, &s.cEvents, "a TLS session")
	if !ok {
		return
	}
	early := s.early
	s.early = nil
	s.state = stateHandshake
	hc := tlsrec.NewHandshakeConn(nil, early)
	s.ext().hs = hc
	t := s.srv.cfg.TLS
	hsTimeout := 60 * time.Second
	if t != nil {
		hsTimeout = t.HandshakeTimeout
	}
	s.lastActive, s.timeout = l.now, int64(hsTimeout)+int64(time.Second)
	l.schedule(s)
	id := s.id
	halfClose := s.srv.halfClose
	handshakers.run(func() {
		f := os.NewFile(uintptr(fd), "tls client")
		raw, err := net.FileConn(f)
		f.Close()
		if err != nil {
			l.p.fds.give(tlsFDs)
			l.do(func() { s.tlsFailed(id, err) })
			return
		}
		if tc, ok := raw.(*net.TCPConn); ok {
			tc.SetNoDelay(!s.srv.noDelayOff)
		}
		var chosen *server
		var verdict string
		kl := &tlsrec.KeyLog{}
		var curves []tls.CurveID
		var suites []uint16
		cfg := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			chosen = s.tlsServer(hello.ServerName)
			curves, suites = hello.SupportedCurves, hello.CipherSuites
			st, reject := chosen.tls, chosen.tlsReject
			if st == nil && !reject {
				st, reject = s.srv.tls, s.srv.tlsReject
			}
			if reject || st == nil || !st.hasCerts() {
				// nginx's ssl_reject_handshake answers unrecognized_name;
				// crypto/tls would say internal_error: the alert goes
				// out first, as a TLS 1.0 record any client reads.
				raw.Write([]byte{21, 3, 1, 0, 2, 2, 112})
				raw.Close() // and nothing after it
				return nil, errors.New("the handshake is rejected (ssl_reject_handshake)")
			}
			c := st.forHandshake(&verdict, kl)
			if len(st.certVars) > 0 {
				// The names are the session's variables: evaluated on its
				// loop, with $ssl_server_name the client's name.
				var names [][2]string
				ok := l.call(func() {
					if s.id != id || s.state != stateHandshake {
						return
					}
					r := s.record(&l.rec)
					r.tls = &tlsInfo{state: tls.ConnectionState{ServerName: hello.ServerName}}
					for _, p := range st.certVars {
						names = append(names, [2]string{string(p[0].appendTo(nil, r)), string(p[1].appendTo(nil, r))})
					}
				})
				if !ok || len(names) != len(st.certVars) {
					return nil, errors.New("the session ended")
				}
				return st.withVarCerts(c, names)
			}
			return c, nil
		}}
		hc.SetConn(raw)
		conn := tls.Server(hc, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), hsTimeout)
		err = conn.HandshakeContext(ctx)
		cancel()
		fail := func(err error) {
			l.p.fds.give(tlsFDs)
			l.do(func() { s.tlsFailed(id, err) })
		}
		if err != nil {
			if hc.Stopped() {
				l.handBack(s, id, raw, hc.Taken()) // an upgrade takes it, not begun
				return
			}
			raw.Close()
			fail(err)
			return
		}
		cs := conn.ConnectionState()
		ready := func(fd int, rec *tlsrec.Conn, link *tlsLink) {
			info := &tlsInfo{state: cs, rec: rec, link: link, verify: verdict, curves: curves, suites: suites}
			s.tlsReady(id, fd, info, chosen)
		}
		l.pumpAfterHandshake(conn, raw, hc, kl, true, halfClose, fail, ready)
	})
}

// pumpAfterHandshake goes on with a connection whose handshake crypto/tls
// (conn) has just done over hc, on raw: the socket goes back to the loop
// (ready runs on it) with baton's record layer over it. server says which
// side this is. A suite the record layer does not carry (TLS 1.2 CBC)
// stays crypto/tls's, in a pump between raw and a socketpair whose other
// end the loop gets, and its session cannot move in an upgrade. fail runs
// here if it cannot go on (raw is closed then).
func (l *loop) pumpAfterHandshake(conn *tls.Conn, raw net.Conn, hc *tlsrec.HandshakeConn, kl *tlsrec.KeyLog,
	server, halfClose bool, fail func(error), ready func(fd int, rec *tlsrec.Conn, link *tlsLink)) {
	sc := &sock.Conn{FD: -1}
	if !server {
		sc.Local, sc.Remote = raw.LocalAddr(), raw.RemoteAddr() // crypto/tls's session cache key (TicketsTo)
	}
	rc, err := tlsrec.FromHandshake(sc, hc, conn.ConnectionState(), kl, server)
	if errors.Is(err, tlsrec.ErrUnsupported) {
		if fd, pc, ok := l.bridge(raw, fail); ok {
			l.pumpCrypto(conn, raw, fd, pc, halfClose, func(fd int, link *tlsLink) { ready(fd, nil, link) })
		}
		return
	}
	fd := -1
	if err == nil {
		fd, err = takeRaw(raw)
	} else {
		raw.Close()
	}
	if err != nil {
		if rc != nil {
			rc.Wipe()
		}
		fail(err)
		return
	}
	sc.FD = fd
	if !server {
		rc.TicketsTo(conn, hc) // proxy_ssl_session_reuse: TLS 1.3's tickets come after the handshake
	}
	l.p.fds.give(tlsFDs) // the socket is the session's own again
	if !l.do(func() { ready(fd, rc, nil) }) {
		rc.Wipe()
		unix.Close(fd)
	}
}

// handBack gives the loop back the client's socket (raw, and what it sent
// meanwhile, taken) of a session whose handshake an upgrade took back
// before it began: it moves as a plain session, and the handshake begins
// where it goes (tlsPending).
func (l *loop) handBack(s *session, id uint64, raw net.Conn, taken []byte) {
	l.p.fds.give(tlsFDs)
	fd, err := takeRaw(raw)
	taken = bytes.Clone(taken)
	if !l.do(func() { s.tlsPending(id, fd, taken, err) }) && fd >= 0 {
		unix.Close(fd)
	}
}

// takeRaw takes the socket of raw, a connection the runtime polls, back for
// the loop: a nonblocking duplicate, raw closed.
func takeRaw(raw net.Conn) (int, error) {
	defer raw.Close()
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return -1, errors.New("the socket has no descriptor")
	}
	return sock.DupConn(sc)
}

// tlsPending takes back the socket of a session whose handshake an upgrade
// took before it began: it waits, parked, for the upgrade to move it (or
// begins the handshake again here if the upgrade is over).
func (s *session) tlsPending(id uint64, fd int, taken []byte, err error) {
	if s.id != id || s.state != stateHandshake {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if fd < 0 {
		s.ioError("dup()", err, -1)
		return
	}
	s.cfd, s.cEvents = fd, parked
	s.loop.track(fd, s)
	s.early = taken
	s.x.hs = nil
	s.state = stateTLSPending
	if !s.loop.p.takingTLS.Load() {
		s.startTLS()
	}
}

// restartTLS begins again, on every loop, the handshakes an upgrade took
// back and did not move: it is over.
func (p *Proxy) restartTLS() {
	p.takingTLS.Store(false)
	p.eachLoop(func(l *loop) {
		for _, s := range slices.Clone(l.sessions) {
			if s.state == stateTLSPending {
				s.startTLS()
			}
		}
	})
}

// bridge makes the socketpair of a TLS connection whose handshake is done
// over raw: fd, the loop's end, and pc, the pump's. fail runs here if no
// pair can be made (raw is closed then).
func (l *loop) bridge(raw net.Conn, fail func(error)) (int, *net.UnixConn, bool) {
	fd, pc, err := socketPair()
	if err != nil {
		raw.Close()
		fail(err)
		return -1, nil, false
	}
	return fd, pc, true
}

// socketPair makes the socketpair of crypto/tls's pump: fd, the loop's end, and pc,
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

// pumpCrypto gives the loop fd (ready runs on the loop) and pumps conn,
// crypto/tls's connection, to and from pc until both directions end; the
// descriptors taken for the session (tlsFDs) go back then.
func (l *loop) pumpCrypto(conn *tls.Conn, raw net.Conn, fd int, pc *net.UnixConn, halfClose bool, ready func(fd int, link *tlsLink)) {
	link := &tlsLink{}
	if !l.do(func() { ready(fd, link) }) {
		unix.Close(fd)
	}
	pumpTLS(conn, raw, pc, link, halfClose)
	l.p.fds.give(tlsFDs)
}

// detachForTLS takes the descriptors a TLS session holds beyond a plain one
// and moves the socket *fdp out of the loop to the handshake's goroutine,
// which owns it from then on: it leaves the epoll set and the loop's
// table, and *fdp, *events are parked. ok is false when the session ended
// instead (no descriptors left).
func (s *session) detachForTLS(fdp *int, events *uint32, what string) (int, bool) {
	l := s.loop
	if !l.p.fds.take(tlsFDs) {
		s.srv.log.Logf(LevelAlert, "*%d %s: no descriptors left for %s, client: %s, server: %s",
			s.id, l.p.fds.capReason(), what, s.client.Addr(), s.srv.name)
		s.finish(503)
		return -1, false
	}
	fd := *fdp
	if *events&parked == 0 {
		// Out of the set: the goroutine's copy keeps the socket open, so
		// closing a number would not take it out.
		sock.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, &unix.EpollEvent{})
	}
	l.forget(fd)
	*fdp, *events = -1, parked
	return fd, true
}

// tlsFailed ends a session whose handshake failed, as nginx logs it.
func (s *session) tlsFailed(id uint64, err error) {
	if s.id != id || s.state != stateHandshake {
		return
	}
	s.srv.log.Logf(LevelInfo, "*%d SSL handshake failed (%v) while SSL handshaking, client: %s, server: %s",
		s.id, err, s.client.Addr(), s.srv.name)
	s.finish(500)
}

// tlsReady goes on with a session whose handshake is done: fd (the
// client's socket, or crypto/tls's socketpair end) is its client socket
// from now on, chosen the server the client's name chose.
func (s *session) tlsReady(id uint64, fd int, info *tlsInfo, chosen *server) {
	l := s.loop
	if s.id != id || s.state != stateHandshake {
		info.drop()
		unix.Close(fd)
		return
	}
	l.timers.remove(s)
	s.timeout = 0
	s.cfd = fd
	l.track(fd, s)
	s.ext().tls = info
	s.x.hs = nil
	if info.rec != nil {
		s.attachRec(info.rec, true)
	}
	if strings.HasPrefix(info.verify, "FAILED:") && s.srv.tls != nil && (s.srv.tls.verify == "on" || s.srv.tls.verify == "optional") {
		// A failure found after the handshake (ssl_ocsp): nginx's
		// ngx_stream_ssl_handler ends the session with 500.
		s.srv.log.Logf(LevelInfo, "*%d client SSL certificate verify error: (%s) while SSL handshaking, client: %s, server: %s",
			s.id, strings.TrimPrefix(info.verify, "FAILED:"), s.client.Addr(), s.srv.name)
		s.finish(500)
		return
	}
	if chosen != nil && chosen != s.srv {
		s.switchServer(chosen)
		if name := info.state.ServerName; name != "" {
			s.ext().vhost = name
			if v := s.vh; v != nil {
				if host, ok := validHost([]byte(name)); ok {
					_, caps, names := v.findCaps(host)
					s.chose(host, caps, names)
				}
			}
		}
	}
	s.state = stateConnecting // as the content phase starts it
	if s.srv.preread {
		s.startPreread()
		return
	}
	s.content()
}

// pumpTLS moves the decrypted stream between conn (the client's TLS) and
// pc (the loop's socketpair), until both directions end. The client's
// close or close_notify ends the way to the loop (a FIN on the pair); the
// loop's end of the session (link.finished, or without proxy_half_close
// its FIN) closes the client after the last bytes.
func pumpTLS(conn *tls.Conn, raw net.Conn, pc *net.UnixConn, link *tlsLink, halfClose bool) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pumpCopy(pc, conn)
		pc.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		pumpCopy(conn, pc)
		if halfClose && !link.finished.Load() {
			conn.CloseWrite()
			if tc, ok := raw.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
		conn.Close()
	}()
	wg.Wait()
	conn.Close()
	pc.Close()
}

// pumpBufs are the buffers pumps read bulk into, taken only while bytes
// flow: an idle pump waits in a read of its small buffer, so that an idle
// TLS session holds kilobytes, not io.Copy's 32 KiB a direction.
var pumpBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pumpCopy copies src to dst until EOF or an error, as io.Copy, and
// returns the read's error (io.EOF at the end) or the write's. An idle
// pump waits in a read of its small buffer; after a full read it moves
// bulk in a pooled one while more comes.
func pumpCopy(dst io.Writer, src io.Reader) (rerr, werr error) {
	var small [1 << 10]byte
	buf := small[:]
	var bp *[]byte
	defer func() {
		if bp != nil {
			pumpBufs.Put(bp)
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil, werr
			}
		}
		if err != nil {
			return err, nil
		}
		switch {
		case n == len(buf) && bp == nil:
			bp = pumpBufs.Get().(*[]byte)
			buf = *bp
		case n < len(buf) && bp != nil:
			pumpBufs.Put(bp)
			bp, buf = nil, small[:]
		}
	}
}

// The $ssl_* variables of ngx_stream_ssl_module.
var tlsVars = map[string]func(b []byte, t *tlsInfo) []byte{
	"ssl_protocol": func(b []byte, t *tlsInfo) []byte {
		return append(b, tlsVersionName(t.state.Version)...)
	},
	"ssl_cipher": func(b []byte, t *tlsInfo) []byte {
		return append(b, config.OpenSSLCipherName(t.state.CipherSuite)...)
	},
	"ssl_server_name": func(b []byte, t *tlsInfo) []byte {
		return append(b, t.state.ServerName...)
	},
	"ssl_alpn_protocol": func(b []byte, t *tlsInfo) []byte {
		return append(b, t.state.NegotiatedProtocol...)
	},
	"ssl_session_reused": func(b []byte, t *tlsInfo) []byte {
		if t.state.DidResume {
			return append(b, 'r')
		}
		return append(b, '.')
	},
	"ssl_client_verify": func(b []byte, t *tlsInfo) []byte {
		if t.verify == "" {
			return append(b, "NONE"...)
		}
		return append(b, t.verify...)
	},
	// crypto/tls shows no session id, and baton takes no early data.
	"ssl_session_id": func(b []byte, _ *tlsInfo) []byte { return b },
	"ssl_early_data": func(b []byte, _ *tlsInfo) []byte { return b },
	"ssl_curve": func(b []byte, t *tlsInfo) []byte {
		return append(b, curveName(t.state.CurveID)...)
	},
	"ssl_curves": func(b []byte, t *tlsInfo) []byte {
		for i, c := range t.curves {
			if i > 0 {
				b = append(b, ':')
			}
			b = append(b, curveName(c)...)
		}
		return b
	},
	"ssl_ciphers": func(b []byte, t *tlsInfo) []byte {
		for i, c := range t.suites {
			if i > 0 {
				b = append(b, ':')
			}
			b = append(b, config.OpenSSLCipherName(c)...)
		}
		return b
	},
	"ssl_client_v_start": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return c.NotBefore.UTC().AppendFormat(b, "Jan _2 15:04:05 2006 GMT")
		}
		return b
	},
	"ssl_client_v_end": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return c.NotAfter.UTC().AppendFormat(b, "Jan _2 15:04:05 2006 GMT")
		}
		return b
	},
	"ssl_client_v_remain": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return strconv.AppendInt(b, max(int64(time.Until(c.NotAfter)/(24*time.Hour)), 0), 10)
		}
		return b
	},
	"ssl_client_s_dn_legacy": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return appendLegacyDN(b, c.Subject)
		}
		return b
	},
	"ssl_client_i_dn_legacy": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return appendLegacyDN(b, c.Issuer)
		}
		return b
	},
	"ssl_client_cert": func(b []byte, t *tlsInfo) []byte {
		// nginx's (deprecated) form: the PEM with a tab after every line
		// break but the last.
		if c := t.leaf(); c != nil {
			p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			for i, ch := range p {
				b = append(b, ch)
				if ch == '\n' && i < len(p)-1 {
					b = append(b, '\t')
				}
			}
		}
		return b
	},
	"ssl_client_s_dn": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return append(b, c.Subject.String()...)
		}
		return b
	},
	"ssl_client_i_dn": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return append(b, c.Issuer.String()...)
		}
		return b
	},
	"ssl_client_serial": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return append(b, strings.ToUpper(c.SerialNumber.Text(16))...)
		}
		return b
	},
	"ssl_client_fingerprint": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			sum := sha1.Sum(c.Raw)
			return hex.AppendEncode(b, sum[:])
		}
		return b
	},
	"ssl_client_raw_cert": func(b []byte, t *tlsInfo) []byte {
		if c := t.leaf(); c != nil {
			return append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return b
	},
}

// leaf is the client's certificate, nil without one.
func (t *tlsInfo) leaf() *x509.Certificate {
	if len(t.state.PeerCertificates) > 0 {
		return t.state.PeerCertificates[0]
	}
	return nil
}

// curveName is a group as OpenSSL names it.
func curveName(c tls.CurveID) string {
	switch c {
	case tls.CurveP256:
		return "prime256v1"
	case tls.CurveP384:
		return "secp384r1"
	case tls.CurveP521:
		return "secp521r1"
	case 0:
		return ""
	}
	return c.String()
}

// appendLegacyDN is a name in OpenSSL's old one-line form, "/C=US/CN=x",
// most significant first.
func appendLegacyDN(b []byte, n pkix.Name) []byte {
	seq := n.ToRDNSequence()
	for _, rdn := range seq {
		for _, atv := range rdn {
			b = append(b, '/')
			b = append(b, attrName(atv.Type.String())...)
			b = append(b, '=')
			b = fmt.Append(b, atv.Value)
		}
	}
	return b
}

// attrName is an attribute's short name as OpenSSL prints it.
func attrName(oid string) string {
	switch oid {
	case "2.5.4.3":
		return "CN"
	case "2.5.4.6":
		return "C"
	case "2.5.4.7":
		return "L"
	case "2.5.4.8":
		return "ST"
	case "2.5.4.10":
		return "O"
	case "2.5.4.11":
		return "OU"
	case "1.2.840.113549.1.9.1":
		return "emailAddress"
	}
	return oid
}

// tlsVersionName is a protocol as nginx's $ssl_protocol prints it.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// upstreamTLS is a server's "proxy_ssl on": TLS to the upstream, on a
// goroutine of the session's own as for the client side, started once the
// TCP connect is done (after a PROXY header, which goes in the clear, as
// nginx's).
type upstreamTLS struct {
	cfg   *config.ProxyTLS
	name  template               // proxy_ssl_name; nil: the proxy_pass host
	cache tls.ClientSessionCache // proxy_ssl_session_reuse; nil: off
	alpn  []template             // proxy_ssl_alpn, each evaluated per session (empty ones left out)
	cert  [2]template            // proxy_ssl_certificate / _key with variables; nil: none
	certs *certCache             // proxy_ssl_certificate_cache; nil: off
}

func newUpstreamTLS(p *config.ProxyTLS, vt *varTable) (*upstreamTLS, error) {
	if p == nil {
		return nil, nil
	}
	u := &upstreamTLS{cfg: p, certs: certCacheOf(p.CertCache)}
	if p.Name != "" {
		t, err := vt.compile(p.Name)
		if err != nil {
			return nil, err
		}
		u.name = t
	}
	if p.SessionReuse {
		u.cache = tls.NewLRUClientSessionCache(256)
	}
	if p.CertVar[0] != "" {
		for i, v := range p.CertVar {
			t, err := vt.compile(v)
			if err != nil {
				return nil, err
			}
			u.cert[i] = t
		}
	}
	for _, a := range p.ALPN {
		t, err := vt.compile(a)
		if err != nil {
			return nil, err
		}
		u.alpn = append(u.alpn, t)
	}
	return u, nil
}

// upstreamName is the name the upstream's certificate is checked against
// and, with proxy_ssl_server_name, sent as SNI: proxy_ssl_name, or the host
// of what proxy_pass named.
func (s *session) upstreamName() string {
	if u := s.srv.ptls; u.name != nil {
		name := string(u.name.appendTo(nil, s.record(&s.loop.rec)))
		if h, msg := config.ParseURL(name); msg == "" && !h.NoPort {
			return h.Host // "example.com:123": the name without its port, as nginx
		}
		return name
	}
	name := s.group.name
	if u, msg := config.ParseURL(name); msg == "" {
		return u.Host
	}
	return name
}

// startUpstreamTLS hands the connected upstream socket to a goroutine for
// the handshake; the session waits in stateUpHandshake (bounded by
// proxy_connect_timeout, as nginx's) for it to come back (upTLSReady).
func (s *session) startUpstreamTLS() {
	l := s.loop
	var header []byte
	if v := s.srv.ppOut; v > 0 && s.ppOutLen == 0 {
		header = append([]byte(nil), s.proxyHeaderOut(v)...)
		s.ppOutLen = int64(len(header))
		s.c2u.n += int64(len(header))
	}
	var local netip.AddrPort // for proxyingStarts' info line alone
	if s.srv.log.Enabled(LevelInfo) {
		if sa, err := unix.Getsockname(s.ufd); err == nil {
			local = sock.AddrPort(sa)
		}
	}
	fd, ok := s.detachForTLS(&s.ufd, &s.uEvents, "an upstream TLS session")
	if !ok {
		return
	}
	s.state = stateUpHandshake
	s.lastActive, s.timeout = l.now, s.srv.connectTimeout
	l.schedule(s)
	ut := s.srv.ptls
	p := ut.cfg
	name := s.upstreamName()
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below, against proxy_ssl_name, when proxy_ssl_verify is on
		MinVersion:         p.MinVersion, MaxVersion: p.MaxVersion, CipherSuites: p.CipherSuites,
		Certificates: p.Certs, ClientSessionCache: ut.cache,
	}
	kl := &tlsrec.KeyLog{}
	if p.KeyLog != "" {
		kl.Next = keyLogFile(p.KeyLog)
	}
	cfg.KeyLogWriter = kl
	if ut.cache != nil {
		cfg.ClientSessionCache = kl.ClientCache(ut.cache) // a TLS 1.2 resumption's secret
	}
	for _, a := range ut.alpn {
		if v := a.appendTo(nil, s.record(&l.rec)); len(v) > 0 {
			cfg.NextProtos = append(cfg.NextProtos, string(v))
		}
	}
	if p.ServerName {
		cfg.ServerName = name
	}
	if p.Verify {
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyUpstream(raw, name, p)
		}
	}
	var certNames [2]string
	if ut.cert[0] != nil {
		r := s.record(&l.rec)
		for i, t := range ut.cert {
			if n := string(t.appendTo(nil, r)); n != "" {
				if !filepath.IsAbs(n) && !strings.HasPrefix(n, "data:") {
					n = filepath.Join(p.Prefix, n)
				}
				certNames[i] = n
			}
		}
	}
	id, halfClose, timeout := s.id, s.srv.halfClose, time.Duration(s.srv.connectTimeout)
	handshakers.run(func() {
		fail := func(err error) {
			l.p.fds.give(tlsFDs)
			l.do(func() { s.upTLSFailed(id, err) })
		}
		if certNames[0] != "" && certNames[1] != "" {
			// proxy_ssl_certificate with variables, as the session named it.
			pair, err := ut.certs.loadPair(certNames[0], certNames[1], p.Passwords)
			if err != nil {
				unix.Close(fd)
				fail(err)
				return
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		f := os.NewFile(uintptr(fd), "tls upstream")
		raw, err := net.FileConn(f)
		f.Close()
		if err != nil {
			fail(err)
			return
		}
		if len(header) > 0 {
			raw.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := raw.Write(header); err != nil {
				raw.Close()
				fail(err)
				return
			}
			raw.SetWriteDeadline(time.Time{})
		}
		hc := tlsrec.NewHandshakeConn(raw, nil)
		conn := tls.Client(hc, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err = conn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			raw.Close()
			fail(err)
			return
		}
		l.pumpAfterHandshake(conn, raw, hc, kl, false, halfClose, fail, func(fd int, rec *tlsrec.Conn, link *tlsLink) {
			s.upTLSReady(id, fd, &tlsInfo{rec: rec, link: link, local: local})
		})
	})
}

// verifyUpstream checks the upstream's certificate chain against
// proxy_ssl_trusted_certificate and name, within proxy_ssl_verify_depth.
func verifyUpstream(raw [][]byte, name string, p *config.ProxyTLS) error {
	if len(raw) == 0 {
		return errors.New("the upstream sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: p.Trusted, Intermediates: inter})
	if err != nil {
		return fmt.Errorf("upstream SSL certificate verify error: (%s)", verifyReason(err))
	}
	if !nameMatches(certs[0], name) {
		return fmt.Errorf("upstream SSL certificate does not match \"%s\"", name)
	}
	if len(chains[0]) > p.VerifyDepth+1 {
		return errors.New("upstream SSL certificate verify error: (certificate chain too long)")
	}
	for _, c := range chains[0] {
		if config.Revoked(c, p.CRLs) {
			return errors.New("upstream SSL certificate verify error: (certificate revoked)")
		}
	}
	return nil
}

// nameMatches is OpenSSL's host check as nginx's ngx_ssl_check_host: the
// subjectAltName DNS names (and IP addresses), or, for a certificate
// without any, its common name (which crypto/x509 no longer reads).
func nameMatches(c *x509.Certificate, name string) bool {
	if c.VerifyHostname(name) == nil {
		return true
	}
	if len(c.DNSNames) > 0 || len(c.IPAddresses) > 0 {
		return false
	}
	cn := strings.ToLower(c.Subject.CommonName)
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if rest, ok := strings.CutPrefix(cn, "*."); ok {
		i := strings.IndexByte(name, '.')
		return i > 0 && name[i+1:] == rest
	}
	return cn == name
}

// upTLSFailed handles a failed upstream handshake as nginx's
// ngx_stream_proxy_next_upstream: the peer's failure is counted and the
// next upstream tried, as proxy_next_upstream allows.
func (s *session) upTLSFailed(id uint64, err error) {
	if s.id != id || s.state != stateUpHandshake {
		return
	}
	s.loop.timers.remove(s)
	s.attemptFailed(fmt.Sprintf("SSL_do_handshake() failed (%v)", err), "SSL handshaking to upstream")
	// The PROXY header goes again, to the next upstream.
	s.c2u.n -= s.ppOutLen
	s.ppOutLen = 0
	s.state = stateConnecting
	s.connectNext()
}

// upTLSReady goes on with a session whose upstream handshake is done: fd
// is its upstream socket from now on.
func (s *session) upTLSReady(id uint64, fd int, info *tlsInfo) {
	l := s.loop
	if s.id != id || s.state != stateUpHandshake {
		info.drop()
		unix.Close(fd)
		return
	}
	l.timers.remove(s)
	s.ufd = fd
	l.track(fd, s)
	s.ext().upTLS = info
	if info.rec != nil {
		s.attachRec(info.rec, false)
	}
	s.proxyingStarts()
}

// drop lets go of a TLS side that ends here: the keys forgotten, or
// crypto/tls's pump told to close its peer once the last bytes are out.
func (t *tlsInfo) drop() {
	if t.rec != nil {
		t.rec.Wipe()
	} else {
		t.link.finished.Store(true)
	}
}

// hasTLS reports whether s is a TLS session, terminated or originated, or
// in its handshake.
func (s *session) hasTLS() bool {
	return s.state == stateHandshake || s.state == stateUpHandshake || (s.x != nil && (s.x.tls != nil || s.x.upTLS != nil))
}

// TLSSessions counts the live TLS sessions (terminated or originated,
// or in a handshake): after an upgrade, those it could not move.
func (p *Proxy) TLSSessions() int {
	var mu sync.Mutex
	n := 0
	p.eachLoop(func(l *loop) {
		k := 0
		for _, s := range l.sessions {
			if s.hasTLS() {
				k++
			}
		}
		mu.Lock()
		n += k
		mu.Unlock()
	})
	return n
}
