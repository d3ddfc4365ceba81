// Package proxy runs baton's listeners and forwards each accepted TCP
// connection, and each UDP client's flow of datagrams, to an upstream picked
// by package lb, as an nginx stream server would: connect timeout,
// next-upstream retries on connect failure, an idle timeout, half-close per
// proxy_half_close, proxy_requests and proxy_responses for UDP, and one
// access-log line at the end.
//
// The data path is an event loop per core over epoll that owns nonblocking
// sockets, TCP and UDP alike (loop.go; UDP in udp.go). An idle connection
// holds no goroutine, stack or buffer: only a session (a few hundred bytes of
// plain data) and its descriptors, two for TCP, one for UDP (its connected
// upstream socket; replies leave by the listening socket). TCP bytes move
// through the loop's shared read buffer; a session borrows a pending buffer
// only while a write to its peer would block, and then stops reading the
// other side until the buffer drains. Datagrams move in batches: recvmmsg on
// a listening socket, sendmmsg of the replies a loop read in one event batch.
// That plain per-session state is what a later upgrade stops at an exact byte
// or datagram boundary and ships (HANDOFF.md §2.4, §2.5).
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
// Invariants: a socket is owned by exactly one loop from accept (or
// socket()) to close, and a UDP listener with all its sessions by one loop;
// a byte read from one side is either written to the other side or held in
// that direction's pending buffer, and a datagram read is sent or counted as
// dropped before the loop's next batch; a session is closed (its
// descriptors, one access-log line) exactly once. Other goroutines reach a
// loop's state only through its commands (loop.do, loop.call), run between
// event batches.
package proxy
