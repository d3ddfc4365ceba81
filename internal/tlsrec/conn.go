package tlsrec

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// Conn carries application data over raw with a record state: Read opens
// the peer's records (answering KeyUpdate, ending at close_notify), Write
// seals. One goroutine may Read while another Writes. Stop interrupts both
// at a point where State captures everything, so that another process can
// go on with NewConn.
type Conn struct {
	raw    net.Conn
	vers   uint16
	suite  uint16
	server bool

	// The read side, owned by the reader.
	in    half
	small [1 << 10]byte // an idle connection waits in a read of this
	big   *[]byte       // taken while a record does not fit small
	buf   []byte        // small or *big: ciphertext in buf[start:end]
	start int
	end   int
	plain []byte // opened application data not yet returned
	more  bool   // the last read filled what it was given: more is likely there, keep big
	hs    []byte // a handshake message split across records
	rerr  error

	tickets func(rec []byte) // TicketsTo's: hands a record of session tickets to crypto/tls

	wmu   sync.Mutex // the write side: Write, and the reader's answers (KeyUpdate, alerts)
	out   half
	wbuf  []byte  // sealed, not yet written: what a failed write left
	wbase *[]byte // wbuf's buffer, from wbufs while bytes flow
	werr  error
	// queuedAnswer: wbuf ends with a KeyUpdate answered to the peer's
	// request and not yet written. A peer that keeps asking while it does
	// not read gets no more answers until then, so that its requests
	// cannot grow wbuf without bound: RFC 8446 4.6.3 lets "an
	// implementation which receives multiple KeyUpdates while it is
	// silent" respond with a single update.
	queuedAnswer bool
}

// State is a Conn's record state, all another process needs to go on
// with the connection.
type State struct {
	Version, Suite uint16
	Server         bool
	InSecret       []byte
	OutSecret      []byte
	InSeq, OutSeq  uint64
	In             []byte // received, not yet opened (part of a record)
	Plain          []byte // opened, not yet read
	Out            []byte // sealed, not yet written
}

// Wipe clears the secrets and buffers of s.
func (s *State) Wipe() {
	for _, b := range [][]byte{s.InSecret, s.OutSecret, s.In, s.Plain, s.Out} {
		clear(b)
	}
	*s = State{}
}

// bigBufs hold what a busy connection reads: several records, so that
// one read (and one write of what they open) carries them.
var bigBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// NewConn returns the Conn over raw that goes on from st. st's secrets are
// taken (and cleared in st); its buffers are copied.
func NewConn(raw net.Conn, st *State) (*Conn, error) {
	s := suiteFor(st.Version, st.Suite)
	if s == nil {
		return nil, ErrUnsupported
	}
	c := &Conn{raw: raw, vers: st.Version, suite: st.Suite, server: st.Server}
	c.in = half{s: s, vers: st.Version, secret: clone(st.InSecret), seq: st.InSeq}
	c.out = half{s: s, vers: st.Version, secret: clone(st.OutSecret), seq: st.OutSeq}
	clear(st.InSecret)
	clear(st.OutSecret)
	if err := c.in.setKeys(); err != nil {
		return nil, err
	}
	if err := c.out.setKeys(); err != nil {
		return nil, err
	}
	c.buf = c.small[:]
	if len(st.In) > len(c.small) {
		c.big = bigBufs.Get().(*[]byte)
		c.buf = *c.big
	}
	if len(st.In) > len(c.buf) {
		return nil, errOverflow
	}
	c.end = copy(c.buf, st.In)
	c.plain = clone(st.Plain)
	c.wbuf = clone(st.Out)
	return c, nil
}

// NetConn is the connection the records go over.
func (c *Conn) NetConn() net.Conn { return c.raw }

// Version is the connection's TLS version.
func (c *Conn) Version() uint16 { return c.vers }

// Read returns application data from the peer; io.EOF after its
// close_notify.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.fill(); err != nil {
		return 0, err
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// ReadPlain is Read without the copy: it returns the next application
// data, valid until the next call.
func (c *Conn) ReadPlain() ([]byte, error) {
	if err := c.fill(); err != nil {
		return nil, err
	}
	b := c.plain
	c.plain = nil
	return b, nil
}

// fill reads records until there is application data to return, or an
// error (kept: every later read returns it). The whole records already
// read after it are opened too, their application data moved to follow
// the first's, so that a bulk reader gets a buffer's worth at once, not a
// record at a time.
func (c *Conn) fill() error {
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return c.rerr
		}
		err := c.readRecord()
		if WouldBlock(err) {
			// A nonblocking connection has nothing more now: not an
			// error to keep. An idle connection holds no big buffer.
			c.release()
			return err
		}
		c.rerr = err
	}
	for c.rerr == nil {
		n, whole := c.nextRecord()
		if !whole || n > maxCipher12 {
			break // not whole (or too long: readRecord says so later)
		}
		rec := c.buf[c.start : c.start+hdrLen+n]
		c.start += hdrLen + n
		held := c.plain
		c.plain = nil
		if err := c.handle(rec); err != nil {
			c.rerr = err // after the data already opened
		}
		next := c.plain
		c.plain = held
		if len(next) > 0 {
			// held ends before rec began: next moves down onto the gap
			// (held is buf's, up to its end). A state's opened bytes
			// (NewConn) are not: append copies them then.
			c.plain = append(held, next...)
		}
	}
	return nil
}

// Seal seals p into records without writing them: Flush (or the State's
// Out) has them. For bytes taken over from a stopped writer.
func (c *Conn) Seal(p []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.sealLocked(p)
}

func (c *Conn) sealLocked(p []byte) {
	if c.wbuf == nil && c.wbase == nil && len(p) > 0 {
		c.wbase = wbufs.Get().(*[]byte)
		c.wbuf = (*c.wbase)[:0]
	}
	if len(p) > 0 {
		c.queuedAnswer = false // the next request's answer must come after p
	}
	for len(p) > 0 {
		k := min(len(p), maxPlain)
		c.wbuf = c.out.seal(c.wbuf, typeAppData, p[:k])
		p = p[k:]
	}
}

// readRecord reads and handles one record.
func (c *Conn) readRecord() error {
	max := maxCipher13
	if c.vers != tls.VersionTLS13 {
		max = maxCipher12
	}
	for {
		if n, whole := c.nextRecord(); n >= 0 {
			if n > max {
				c.alert(22) // record_overflow
				return errOverflow
			}
			if whole {
				rec := c.buf[c.start : c.start+hdrLen+n]
				c.start += hdrLen + n
				return c.handle(rec)
			}
			if c.start+hdrLen+n > len(c.buf) {
				c.makeRoom(hdrLen + n)
			}
		}
		if c.start == c.end {
			c.start, c.end = 0, 0
			if !c.more {
				c.release()
			}
		}
		if c.end == len(c.buf) {
			c.makeRoom(hdrLen)
		}
		want := len(c.buf) - c.end
		k, err := c.raw.Read(c.buf[c.end:])
		c.end += k
		c.more = k == want
		if err != nil && k == 0 {
			if err == io.EOF && c.start < c.end {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// makeRoom moves the bytes not yet handled to the front of a buffer that
// holds need bytes.
func (c *Conn) makeRoom(need int) {
	if c.big == nil && need > len(c.small) {
		c.big = bigBufs.Get().(*[]byte)
		n := copy(*c.big, c.buf[c.start:c.end])
		c.buf, c.start, c.end = *c.big, 0, n
		return
	}
	c.end = copy(c.buf, c.buf[c.start:c.end])
	c.start = 0
}

// release gives the big buffer back once it holds nothing.
func (c *Conn) release() {
	if c.big != nil && c.start == c.end {
		bigBufs.Put(c.big)
		c.big, c.buf = nil, c.small[:]
	}
}

// handle handles one whole record.
func (c *Conn) handle(rec []byte) error {
	var sealed []byte
	if c.tickets != nil {
		sealed = clone(rec) // opened in place
	}
	typ, plain, err := c.in.open(rec)
	if typ != typeHandshake {
		c.tickets = nil
	}
	if err != nil {
		c.alert(20) // bad_record_mac
		return err
	}
	if len(plain) > maxPlain {
		c.alert(22)
		return errOverflow
	}
	switch typ {
	case typeAppData:
		if len(c.hs) > 0 {
			c.alert(10)
			return errors.New("tls: application data inside a handshake message")
		}
		c.plain = plain // in buf, which is not read into again until plain is returned
		return nil
	case typeAlert:
		if len(plain) != 2 {
			c.alert(10)
			return errors.New("tls: bad alert")
		}
		if plain[1] == 0 {
			return io.EOF // close_notify
		}
		if c.vers != tls.VersionTLS13 && plain[0] == 1 {
			return nil // a warning: TLS 1.2 goes on, as crypto/tls
		}
		return fmt.Errorf("remote error: tls: alert %d", plain[1])
	case typeHandshake:
		c.hs = append(c.hs, plain...)
		if err := c.handshakeMessages(); err != nil {
			return err
		}
		if c.tickets != nil {
			if len(c.hs) == 0 {
				c.tickets(sealed)
			} else {
				c.tickets = nil
			}
		}
		return nil
	}
	c.alert(10) // unexpected_message
	return fmt.Errorf("tls: unexpected record type %d", typ)
}

// handshakeMessages handles the post-handshake messages in c.hs: KeyUpdate
// (TLS 1.3), and a client's NewSessionTicket, which is dropped (this side
// does not resume). TLS 1.2 renegotiation is refused, as crypto/tls.
func (c *Conn) handshakeMessages() error {
	if c.vers != tls.VersionTLS13 {
		c.alert(100) // no_renegotiation
		return errors.New("tls: renegotiation is not supported")
	}
	for len(c.hs) >= 4 {
		n := int(c.hs[1])<<16 | int(c.hs[2])<<8 | int(c.hs[3])
		if n > 1<<16 {
			c.alert(10)
			return errors.New("tls: handshake message too large")
		}
		if !(c.hs[0] == 24 && n == 1 || c.hs[0] == 4 && !c.server) {
			// Refused at its header, not once it is whole: a message
			// this side never takes holds no buffer while it comes.
			c.alert(10)
			return fmt.Errorf("tls: unexpected handshake message %d", c.hs[0])
		}
		if len(c.hs) < 4+n {
			return nil
		}
		msg := c.hs[:4+n]
		c.hs = c.hs[4+n:]
		switch {
		case msg[0] == 24 && n == 1 && msg[4] <= 1: // key_update
			c.tickets = nil // crypto/tls's keys are not c's any more
			if len(c.hs) > 0 {
				c.alert(10) // RFC 8446 5.1: it ends its record
				return errors.New("tls: KeyUpdate not at a record boundary")
			}
			if err := c.in.update(); err != nil {
				return err
			}
			if msg[4] == 1 { // update_requested
				c.wmu.Lock()
				var err error
				if !c.queuedAnswer {
					err = c.keyUpdateLocked(false)
					c.queuedAnswer = len(c.wbuf) > 0
				}
				c.wmu.Unlock()
				if err != nil && !WouldBlock(err) {
					return err // (the answer that would block is sealed: OutPending)
				}
			}
		case msg[0] == 4 && !c.server: // new_session_ticket: see TicketsTo
		default:
			c.alert(10)
			return fmt.Errorf("tls: unexpected handshake message %d", msg[0])
		}
	}
	if len(c.hs) == 0 {
		c.hs = nil
	}
	return nil
}

// Write seals p into records and writes them. A failed write keeps what
// is sealed and not written (State's Out); p counts as written then, as
// the record stream has it. Over a nonblocking connection that would
// block, the error is syscall.EAGAIN, and the rest goes with the next
// Flush (OutPending).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	c.sealLocked(p)
	return len(p), c.flushLocked()
}

func (c *Conn) flushLocked() error {
	for len(c.wbuf) > 0 {
		k, err := c.raw.Write(c.wbuf)
		c.wbuf = c.wbuf[max(k, 0):]
		if WouldBlock(err) {
			return err // the rest stays sealed for the next Flush
		}
		if err != nil {
			c.werr = err
			return err
		}
	}
	c.dropWbufLocked()
	return nil
}

// dropWbufLocked lets go of the write buffer (wbuf's, back to wbufs).
func (c *Conn) dropWbufLocked() {
	if c.wbase != nil {
		*c.wbase = (*c.wbase)[:0]
		wbufs.Put(c.wbase)
		c.wbase = nil
	}
	c.wbuf = nil
	c.queuedAnswer = false
}

// wbufs hold sealed records between a Write's seal and its write, so that
// an idle connection holds none.
const wbufSize = 64 << 10

var wbufs = sync.Pool{New: func() any { b := make([]byte, 0, wbufSize); return &b }}

// WouldBlock reports whether err, from a Conn over a nonblocking
// connection, is its "not now" (syscall.EAGAIN): nothing is lost, the
// call goes on later.
func WouldBlock(err error) bool { return err != nil && errors.Is(err, syscall.EAGAIN) }

// Buffered reports whether a Read would return without reading the
// connection: opened application data, a whole record, or an error (the
// peer's close_notify, say) already read. A loop that reads the
// connection only when its socket is readable must read on while it is.
func (c *Conn) Buffered() bool {
	if len(c.plain) > 0 || c.rerr != nil {
		return true
	}
	n, whole := c.nextRecord()
	return whole || n > maxCipher12
}

// nextRecord returns the length of the record at c.start as its header
// says (-1 while less than a header is read), and whether all of it is.
func (c *Conn) nextRecord() (n int, whole bool) {
	if c.end-c.start < hdrLen {
		return -1, false
	}
	n = int(c.buf[c.start+3])<<8 | int(c.buf[c.start+4])
	return n, c.end-c.start >= hdrLen+n
}

// OutPending reports whether sealed bytes wait for a Flush (a write over a
// nonblocking connection would have blocked). For the goroutine that
// writes.
func (c *Conn) OutPending() bool { return len(c.wbuf) > 0 }

// Flush writes what a failed write, or the state NewConn took, left.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	return c.flushLocked()
}

// KeyUpdate sends a KeyUpdate and moves to the next sending key; with
// request, the peer is asked to update its own (TLS 1.3 only).
func (c *Conn) KeyUpdate(request bool) error {
	if c.vers != tls.VersionTLS13 {
		return errors.New("tls: KeyUpdate is TLS 1.3's")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.keyUpdateLocked(request)
}

func (c *Conn) keyUpdateLocked(request bool) error {
	if c.werr != nil {
		return c.werr
	}
	req := byte(0)
	if request {
		req = 1
	}
	c.wbuf = c.out.seal(c.wbuf, typeHandshake, []byte{24, 0, 0, 1, req})
	if err := c.out.update(); err != nil {
		return err
	}
	return c.flushLocked()
}

// alert sends a fatal alert, best effort.
func (c *Conn) alert(desc byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	level := byte(2)
	if desc == 100 || desc == 0 {
		level = 1
	}
	c.wbuf = c.out.seal(c.wbuf, typeAlert, []byte{level, desc})
	c.flushLocked()
	c.werr = errAlertSent // nothing is sent after an alert
	if desc == 0 {
		c.werr = net.ErrClosed
	}
}

var errAlertSent = errors.New("tls: alert sent")

// CloseWrite sends close_notify and shuts the socket's sending side.
func (c *Conn) CloseWrite() error {
	c.alert(0)
	if tc, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return tc.CloseWrite()
	}
	return nil
}

// Close sends close_notify and closes the socket.
func (c *Conn) Close() error {
	c.alert(0)
	return c.raw.Close()
}

// Stop interrupts a Read and a Write under way (they return an error):
// the Conn can then give its State.
func (c *Conn) Stop() { c.raw.SetDeadline(time.Unix(1, 0)) }

// Resume undoes Stop, for a connection that goes on here.
func (c *Conn) Resume() {
	c.raw.SetDeadline(time.Time{})
	c.rerr = nil
	c.wmu.Lock()
	c.werr = nil
	c.wmu.Unlock()
}

// Movable reports whether State captures all of c: false while a
// post-handshake message split across records is half read, or once a
// read or a write failed or met the end (the state carries none of
// these). Call it with no Read under way.
func (c *Conn) Movable() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.hs) == 0 && c.rerr == nil && c.werr == nil
}

// State returns the record state, with plain (application data read and
// not passed on, which goes before the Conn's own) in it. Call it with
// neither Read nor Write under way.
func (c *Conn) State(plain []byte) *State {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return &State{
		Version: c.vers, Suite: c.suite, Server: c.server,
		InSecret: clone(c.in.secret), OutSecret: clone(c.out.secret),
		InSeq: c.in.seq, OutSeq: c.out.seq,
		In:    clone(c.buf[c.start:c.end]),
		Plain: append(clone(plain), c.plain...),
		Out:   clone(c.wbuf),
	}
}

// Wipe forgets the keys (the connection is closed, or moved), and lets
// go of the crypto/tls connection TicketsTo kept.
func (c *Conn) Wipe() {
	c.tickets = nil
	c.in.wipe()
	clear(c.buf[c.start:c.end])
	if c.big != nil {
		bigBufs.Put(c.big)
		c.big = nil
	}
	c.wmu.Lock()
	c.out.wipe()
	c.dropWbufLocked()
	c.wmu.Unlock()
}

// TicketsTo hands the server's TLS 1.3 session tickets to tc, the
// crypto/tls client whose handshake over hc made c: they come after the
// handshake, and only crypto/tls can make a resumable session of them (its
// ClientSessionCache gets them, as if tc had read them). A record of
// tickets goes to tc as long as every record before it was one, so that
// tc's read sequence number is c's; servers send their tickets first.
// After the first other record (or a move), tc is let go.
func (c *Conn) TicketsTo(tc *tls.Conn, hc *HandshakeConn) {
	if c.server || c.vers != tls.VersionTLS13 || c.in.seq != 0 {
		return
	}
	hc.SetConn(noConn{c.raw.LocalAddr(), c.raw.RemoteAddr()}) // the addresses key crypto/tls's cache
	c.tickets = func(rec []byte) {
		hc.pre = rec
		var b [1]byte
		tc.Read(b[:]) // handles the tickets, then meets noConn's "no record"
	}
}

// noConn is what a HandshakeConn reads from once crypto/tls only handles
// the records TicketsTo gives it: there is nothing more.
type noConn struct{ local, remote net.Addr }

// errNoRecord is temporary, so that crypto/tls returns it without
// taking the connection for broken.
type errNoRecord struct{}

func (errNoRecord) Error() string   { return "tls: no record" }
func (errNoRecord) Timeout() bool   { return true }
func (errNoRecord) Temporary() bool { return true }

func (noConn) Read([]byte) (int, error)         { return 0, errNoRecord{} }
func (noConn) Write([]byte) (int, error)        { return 0, errNoRecord{} }
func (noConn) Close() error                     { return nil }
func (c noConn) LocalAddr() net.Addr            { return c.local }
func (c noConn) RemoteAddr() net.Addr           { return c.remote }
func (noConn) SetDeadline(time.Time) error      { return nil }
func (noConn) SetReadDeadline(time.Time) error  { return nil }
func (noConn) SetWriteDeadline(time.Time) error { return nil }
