// Package tlshello reads the server name, ALPN protocols and protocol version from the first bytes a
// TCP client sends, exactly as nginx's ngx_stream_ssl_preread_module does for its variables
// $ssl_preread_server_name, $ssl_preread_alpn_protocols and $ssl_preread_protocol. It parses; it does
// no TLS and never writes to the bytes it is given.
//
// Typical use, by the preread phase of a session:
//
//	var p tlshello.Parser // one per connection; Reset before reuse
//	// after each read that added bytes to buf, which holds all the client has sent:
//	done, err := p.Parse(buf)
//	switch {
//	case !done && len(buf) == cap(buf): // "preread buffer full", status 400
//	case !done: // read more, until preread_timeout
//	case err != nil: // declined: go on, the variables are not found
//	default: // go on with p.Result()
//	}
//
// # What nginx does, and what Parse mirrors
//
// nginx's handler waits for 5 bytes, then looks at each complete TLS record in turn (it never parses a
// record until the whole record has arrived) and feeds the record bodies, as one stream, through a
// state machine over the ClientHello. Parse keeps the same state between calls (a few words and the
// offset of the first record not yet parsed), so each byte is looked at once however the client
// splits its writes; the result does not depend on how buf grew, only on its final contents.
//
//   - done=false, err=nil: nginx's NGX_AGAIN. Fewer than 5 bytes, a record not complete yet, or a
//     ClientHello that goes on in a later record.
//   - done=true, err=nil: nginx's NGX_OK. The ClientHello was read up to the end of its extensions (or
//     of the compression methods, when it has no extensions), or a record header looked like an SSLv2
//     ClientHello (first byte has the high bit set, byte 2 is 1, byte 3 is 0 or 3): nginx then stops at
//     once and takes bytes 3-4 as the version ("SSLv2" for 0x0002, "TLSv1" for 0x0301), see
//     Result.SSLv2Hello.
//   - done=true, err!=nil: nginx's NGX_DECLINED. The input is not a ClientHello (a record type other
//     than handshake (22), a record major version other than 3, a handshake message other than
//     ClientHello) or it is one nginx cannot parse (a length that runs past the handshake message, an
//     SNI name type other than host_name, an empty ALPN protocol, a list length too short for its
//     entries). nginx logs the reason at debug level only, drops its context so that the three
//     variables are "not found" (the access log writes "-", everything else reads ""), and the session
//     goes on to the next preread handler and then to proxy_pass or return as usual: a declined hello
//     is not an error. err's text is nginx's debug line, e.g. "ssl preread: not a handshake", and
//     errors.Is(err, ErrDeclined) holds. Plain text such as an HTTP request is declined this way as soon
//     as 5 bytes have arrived.
//
// nginx has no error of its own here beyond running out of memory. It does not bound the server name
// or the ALPN list beyond their 16-bit wire lengths and stores them as sent: the server name is not
// lower-cased, and a trailing dot stays. Only the first server_name extension, the first name in it
// and the first ALPN extension count. Any supported_versions extension, whatever it lists, makes the
// version "TLSv1.3"; Go's crypto/tls sends one even when it is capped at TLS 1.2, so nginx reports
// every Go client as TLSv1.3. nginx reads the SNI, ALPN and supported_versions bodies by their inner
// lengths and ignores the extension's own length, so a malformed extension makes it read on out of
// step, as this package does too.
//
// Memory: nginx allocates the declared SNI and ALPN lengths (up to 64 KiB each) as soon as it reads
// them; Parser instead copies the bytes as they arrive, into a small array inside the Parser and,
// past that, into a slice it grows. What it holds never exceeds the bytes it was given, and a Parser
// that is Reset and reused stops allocating.
//
// # The preread phase around it (ngx_stream_core_preread_phase, nginx 1.31)
//
// ssl_preread acts on TCP only: its handler declines UDP sessions, and any session when ssl_preread
// is off, at once, before any buffer or timer exists. It allocates one buffer of preread_buffer_size (default
// 16k) and reads into it; after every read that returned data it calls the handler on the whole
// buffer. The handler's answer is looked at first, so a hello that exactly fills the buffer is still
// read. Then, while the answer is NGX_AGAIN:
//
//   - buffer full: the session ends with status 400, without connecting upstream, and the error log
//     gets, at level error, "*N preread buffer full while prereading client data, client: ADDR,
//     server: LISTEN".
//   - EOF from the client (recv returns 0, or EPOLLRDHUP was seen in the MSG_PEEK mode nginx uses with
//     epoll): the session ends with status 200, nothing logged above debug.
//   - recv error: logged by ngx_connection_error as "recv() failed" (info level for ECONNRESET, EPIPE,
//     ENOTCONN, ETIMEDOUT, ECONNREFUSED, ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH; alert for
//     others), and the session ends with status 200.
//   - preread_timeout (default 30s) is armed once, the first time the phase has to wait for data, and
//     is not pushed back when bytes arrive: it bounds the whole preread. When it fires the session ends with status 200 and
//     nothing is logged above debug (no "client timed out" here, unlike the PROXY protocol reader).
//
// Each of these ends writes the access log with whatever the variables hold at that moment, which is
// why Result is meaningful before Parse is done (see Parser.Result).
//
// When the handler answers NGX_OK the timer is removed and the session skips any preread handlers
// after it (js_preread) and goes on to content; NGX_DECLINED goes on to the next preread handler. On
// NGX_OK from a parsed ClientHello (not from the SSLv2 shortcut) with a non-empty server name, nginx
// also checks the name as a host (ngx_stream_validate_host: lower-cased, a trailing dot and a ":port"
// dropped; a name that is not a valid host is ignored) and, if a server block's server_name matches
// it, switches the session to that server's configuration and error_log. The variable keeps the raw
// name.
package tlshello
