package tlshello

import "errors"

// ErrDeclined is matched, through errors.Is, by every error Parse returns: nginx's NGX_DECLINED,
// after which the session goes on without the ssl_preread variables.
var ErrDeclined = errors.New("ssl preread: declined")

// declined is one of nginx's reasons for NGX_DECLINED; its text is nginx's debug log line.
type declined string

func (e declined) Error() string        { return "ssl preread: " + string(e) }
func (e declined) Is(target error) bool { return target == ErrDeclined }

// The reasons, in the words of nginx's debug log.
const (
	errNotHandshake    = declined("not a handshake")
	errRecordVersion   = declined("unsupported SSL version")
	errNotClientHello  = declined("not a client hello")
	errSNINotDNS       = declined("SNI hostname type is not DNS")
	errSNIFormat       = declined("SNI format error")
	errALPNEmpty       = declined("ALPN empty protocol")
	errALPNFormat      = declined("ALPN format error")
	errHandshakeFormat = declined("failed to parse handshake")
)

// Result is what nginx's ssl_preread variables read.
type Result struct {
	// Found is false when nginx has no ssl_preread context for the session: Parse was never called
	// (ssl_preread off, UDP, or no byte arrived) or it declined. The variables are then "not found":
	// the access log writes "-" for each, and everything else (map, return, proxy_pass) reads "".
	Found bool

	// ServerName is $ssl_preread_server_name: the first host_name of the first server_name extension,
	// as sent (not lower-cased, a trailing dot kept). Empty until the whole name has been read.
	ServerName []byte

	// ALPN is $ssl_preread_alpn_protocols: the protocols of the first ALPN extension joined with ",",
	// each added once all of it has been read (while the list is being read it may end in ",").
	ALPN []byte

	// Version is $ssl_preread_protocol: "SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" or
	// "" (SSL_get_version's names). It is the ClientHello's client_version, "TLSv1.3" once any
	// supported_versions extension is seen, or bytes 3-4 of an SSLv2-style record header.
	Version string

	// SSLv2Hello says that the parse ended at a record header that nginx takes for an SSLv2
	// ClientHello. nginx then does not look for a server block by ServerName.
	SSLv2Hello bool
}

// The states of the ClientHello reader, in the order of the fields on the wire (RFC 8446 4.1.2,
// RFC 6066 3, RFC 7301 3.1), as nginx's parse_record names them.
const (
	stStart         = iota
	stHeader        // msg_type, length
	stVersion       // client_version
	stRandom        // random
	stSIDLen        // session_id length
	stSID           // session_id
	stCSLen         // cipher_suites length
	stCS            // cipher_suites
	stCMLen         // compression_methods length
	stCM            // compression_methods
	stExt           // extensions length, or the end of the previous extension
	stExtHeader     // extension_type, extension_data length
	stSNILen        // server_name_list length
	stSNIHostHead   // name_type, host_name length
	stSNIHost       // host_name
	stALPNLen       // protocol_name_list length
	stALPNProtoLen  // protocol_name length
	stALPNProtoData // protocol_name
	stSupVerLen     // supported_versions length
)

// Where the bytes a state reads go.
const (
	toNone    = iota // skipped
	toHdr            // Parser.hdr, from its start (a length or a header, at most 4 bytes)
	toVersion        // Parser.version
	toMem            // appended to Parser.mem (a server name or an ALPN protocol)
)

// A Parser reads one connection's ClientHello. Its zero value is ready to use.
type Parser struct {
	// The record loop.
	pos   int  // offset in buf of the first record header not yet parsed (nginx's ctx->pos)
	begun bool // Parse has been called: nginx has its context
	done  bool // Parse returned done
	err   error

	// The ClientHello reader (nginx's ctx->state, size, left, ext, dst).
	state uint8
	dst   uint8
	fill  int // bytes read into hdr or version by the current state
	size  int // bytes the current state still wants
	left  int // bytes left in the handshake message
	ext   int // bytes left in the SNI or ALPN list

	hdr     [4]byte
	version [2]byte
	v2      bool

	// The server name is mem()[hostOff:hostOff+hostLen] and the ALPN list
	// mem()[alpnOff:alpnOff+alpnLen]. hostSeen and alpnSeen are nginx's host.data != NULL and
	// alpn.data != NULL.
	hostSeen, alpnSeen bool
	hostOff, hostLen   int
	alpnOff, alpnLen   int

	// The bytes of the server name and of the ALPN list, in the order they arrive: small[:n] until
	// they outgrow it, then big, which Reset keeps.
	n     int
	small [256]byte
	big   []byte
}

// mem returns the server name and ALPN bytes kept so far.
func (p *Parser) mem() []byte {
	if p.big != nil {
		return p.big
	}
	return p.small[:p.n]
}

// keep adds b to mem.
func (p *Parser) keep(b ...byte) {
	if p.big == nil {
		if p.n+len(b) <= len(p.small) {
			p.n += copy(p.small[p.n:], b)
			return
		}
		p.big = append(make([]byte, 0, 2*(p.n+len(b))), p.small[:p.n]...)
	}
	p.big = append(p.big, b...)
}

// Reset makes p ready for a new connection, keeping its memory.
func (p *Parser) Reset() {
	big := p.big[:0]
	*p = Parser{big: big}
}

// Parse reads the ClientHello from buf, which holds every byte the client has sent since the
// connection began (each call's buf extends the last one's; Parse does not keep it). It returns
// done=false while it needs more bytes, done=true with a nil err once nginx would accept what it has
// read (NGX_OK), and done=true with an err matching ErrDeclined when nginx would decline (see the
// package doc). Once done, further calls return the same answer.
func (p *Parser) Parse(buf []byte) (done bool, err error) {
	if p.done {
		return true, p.err
	}
	p.begun = true
	for len(buf)-p.pos >= 5 {
		h := buf[p.pos : p.pos+5]
		// An SSLv2 record header: 2-byte length with the high bit set, then msg_type
		// CLIENT-HELLO (1) and a version. nginx checks for it before every record, not only the
		// first, and keeps whatever it has parsed so far.
		if h[0]&0x80 != 0 && h[2] == 1 && (h[3] == 0 || h[3] == 3) {
			p.version = [2]byte{h[3], h[4]}
			p.v2 = true
			return p.finish(nil)
		}
		if h[0] != 22 { // handshake
			return p.finish(errNotHandshake)
		}
		if h[1] != 3 { // the minor version is not checked: 3.0 records are read
			return p.finish(errRecordVersion)
		}
		n := int(h[3])<<8 | int(h[4])
		if len(buf)-p.pos-5 < n {
			break // nginx reads a record only once all of it is here
		}
		p.pos += 5
		ok, err := p.record(buf[p.pos : p.pos+n])
		if ok || err != nil {
			return p.finish(err)
		}
		p.pos += n
	}
	return false, nil
}

func (p *Parser) finish(err error) (bool, error) {
	p.done, p.err = true, err
	return true, err
}

// Result returns what the ssl_preread variables read now. Before Parse is done this is the part
// nginx has stored so far, which is what nginx logs when the preread ends early (timeout, EOF or a
// full buffer): a server name once all of it is read, the ALPN protocols read so far, the version
// bytes read so far. The slices point into memory p owns; Parse only adds to it, so they stay
// valid until Reset.
func (p *Parser) Result() Result {
	if !p.begun || p.err != nil {
		return Result{}
	}
	mem := p.mem()
	return Result{
		Found:      true,
		ServerName: mem[p.hostOff : p.hostOff+p.hostLen : p.hostOff+p.hostLen],
		ALPN:       mem[p.alpnOff : p.alpnOff+p.alpnLen : p.alpnOff+p.alpnLen],
		Version:    versionName(p.version),
		SSLv2Hello: p.v2,
	}
}

// versionName is SSL_get_version's name for a version, as nginx's $ssl_preread_protocol gives it.
func versionName(v [2]byte) string {
	switch v {
	case [2]byte{0, 2}:
		return "SSLv2"
	case [2]byte{3, 0}:
		return "SSLv3"
	case [2]byte{3, 1}:
		return "TLSv1"
	case [2]byte{3, 2}:
		return "TLSv1.1"
	case [2]byte{3, 3}:
		return "TLSv1.2"
	case [2]byte{3, 4}:
		return "TLSv1.3"
	}
	return ""
}

// record feeds one record's body to the ClientHello reader. It returns ok when the ClientHello has
// been read to its end, an error when nginx declines it, and neither when it goes on in the next
// record. The reader runs over the handshake bytes as one stream: a state may start in one record
// and end in another.
func (p *Parser) record(b []byte) (ok bool, err error) {
	for {
		n := min(len(b), p.size)
		switch p.dst {
		case toHdr:
			p.fill += copy(p.hdr[p.fill:], b[:n])
		case toVersion:
			p.fill += copy(p.version[p.fill:], b[:n])
		case toMem:
			p.keep(b[:n]...)
		}
		b = b[n:]
		p.size -= n
		p.left -= n
		if p.size != 0 {
			return false, nil
		}

		h := &p.hdr
		switch p.state {
		case stStart:
			p.next(stHeader, toHdr, 4)
			p.left = 4

		case stHeader:
			if h[0] != 1 { // client_hello
				return false, errNotClientHello
			}
			p.next(stVersion, toVersion, 2)
			p.left = int(h[1])<<16 | int(h[2])<<8 | int(h[3])

		case stVersion:
			p.next(stRandom, toNone, 32)

		case stRandom:
			p.next(stSIDLen, toHdr, 1)

		case stSIDLen:
			p.next(stSID, toNone, int(h[0]))

		case stSID:
			p.next(stCSLen, toHdr, 2)

		case stCSLen:
			p.next(stCS, toNone, int(h[0])<<8|int(h[1]))

		case stCS:
			p.next(stCMLen, toHdr, 1)

		case stCMLen:
			p.next(stCM, toNone, int(h[0]))

		case stCM:
			if p.left == 0 { // no extensions
				return true, nil
			}
			p.next(stExt, toHdr, 2) // the extensions length, which nginx does not use

		case stExt:
			if p.left == 0 {
				return true, nil
			}
			p.next(stExtHeader, toHdr, 4)

		case stExtHeader:
			typ := int(h[0])<<8 | int(h[1])
			switch {
			case typ == 0 && !p.hostSeen: // server_name
				p.next(stSNILen, toHdr, 2)
			case typ == 16 && !p.alpnSeen: // application_layer_protocol_negotiation
				p.next(stALPNLen, toHdr, 2)
			case typ == 43: // supported_versions
				p.next(stSupVerLen, toHdr, 1)
			default:
				p.next(stExt, toNone, int(h[2])<<8|int(h[3]))
			}

		case stSNILen:
			p.ext = int(h[0])<<8 | int(h[1])
			p.next(stSNIHostHead, toHdr, 3)

		case stSNIHostHead:
			if h[0] != 0 { // host_name
				return false, errSNINotDNS
			}
			size := int(h[1])<<8 | int(h[2])
			if p.ext < 3+size {
				return false, errSNIFormat
			}
			p.ext -= 3 + size
			p.hostSeen = true
			p.hostOff = len(p.mem())
			p.next(stSNIHost, toMem, size)

		case stSNIHost:
			p.hostLen = int(h[1])<<8 | int(h[2])
			p.next(stExt, toNone, p.ext) // the other names in the list

		case stALPNLen:
			p.ext = int(h[0])<<8 | int(h[1])
			p.alpnSeen = true
			p.alpnOff = len(p.mem())
			p.next(stALPNProtoLen, toHdr, 1)

		case stALPNProtoLen:
			size := int(h[0])
			if size == 0 {
				return false, errALPNEmpty
			}
			if p.ext < 1+size {
				return false, errALPNFormat
			}
			p.ext -= 1 + size
			p.next(stALPNProtoData, toMem, size)

		case stALPNProtoData:
			p.alpnLen += int(h[0])
			if p.ext != 0 {
				p.keep(',')
				p.alpnLen++
				p.next(stALPNProtoLen, toHdr, 1)
				break
			}
			p.next(stExt, toNone, 0)

		case stSupVerLen:
			// Whatever the list holds, as nginx does.
			p.version = [2]byte{3, 4}
			p.next(stExt, toNone, int(h[0]))
		}

		if p.left < p.size {
			return false, errHandshakeFormat
		}
	}
}

// next moves the reader to state, reading the next size bytes into dst.
func (p *Parser) next(state, dst uint8, size int) {
	p.state, p.dst, p.fill, p.size = state, dst, 0, size
}
