// Package proxy runs baton's listeners and forwards each accepted TCP
// connection to an upstream picked by package lb, as an nginx stream server
// would: connect timeout, next-upstream retries on connect failure, an idle
// timeout, half-close per proxy_half_close, and one access-log line at the end.
//
// The data path is an event loop per core over epoll that owns nonblocking
// sockets. An idle connection holds no goroutine, stack or buffer: only a
// session (a few hundred bytes of plain data) and its two descriptors. Bytes
// move through the loop's shared read buffer; a session borrows a pending
// buffer only while a write to its peer would block, and then stops reading
// the other side until the buffer drains. That plain per-session state is what
// a later upgrade stops at an exact byte boundary and ships (HANDOFF.md §2.5).
//
// Typical usage:
//
//	cfg, err := config.Load("/etc/baton/baton.conf")
//	...
//	p, err := proxy.New(cfg, proxy.Options{})
//	...
//	if err := p.Start(); err != nil { ... } // binds every listen address
//	<-ctx.Done()
//	p.Shutdown(shutdownCtx) // stop accepting, let sessions finish, then cut
//
// Invariants: a socket is owned by exactly one loop from accept to close; a
// byte read from one side is either written to the other side or held in that
// direction's pending buffer; a session is closed (both descriptors, one
// access-log line) exactly once.
package proxy
