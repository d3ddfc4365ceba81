package proxy

import (
	"errors"
	"net"

	"github.com/batonproxy/baton/config"
)

// udpListener serves one "listen ... udp" address. (Placeholder: the UDP
// data path is being written.)
type udpListener struct{}

// startUDP binds cl for srv and starts serving it.
func (p *Proxy) startUDP(srv *server, cl *config.Listen) (*udpListener, error) {
	return nil, errors.New(`the "udp" parameter of the "listen" directive is not supported yet`)
}

// addr is the bound address.
func (u *udpListener) addr() net.Addr { return nil }

// shutdown stops taking new sessions; live sessions end on their own
// (proxy_timeout, proxy_responses).
func (u *udpListener) shutdown() {}

// close ends every session and stops at once.
func (u *udpListener) close() {}

// wait returns when every goroutine of u has ended.
func (u *udpListener) wait() {}
