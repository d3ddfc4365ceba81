package proxy

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/control"
	"golang.org/x/sys/unix"
)

// Descriptors.
//
// Sessions hold descriptors: a TCP session two (its client and its
// upstream, the upstream's counted from accept so that its connect never
// finds none), a UDP session one (its connected upstream socket), a splice
// pipe two (in a flow or spare). baton itself needs others: its listeners,
// event loops and log files, the control socket and its clients, the
// metrics endpoint and its clients, active health checks, and during an
// upgrade the socketpair to the new process and a copy of each socket of
// the batch in flight. A flood that let sessions take every descriptor
// would take those too: accept, metrics, the control socket and the
// upgrade all failed with EMFILE in the review that found it.
//
// So sessions draw from a budget: the open file limit less a reserve for
// baton itself (reserveFor), and no more than worker_connections when it
// is set (nginx counts a proxied connection as two, as baton does). Where
// TCP listeners exist, UDP sessions may hold at most half of it: a UDP
// flow costs its sender one datagram, a TCP one a handshake, and spoofed
// sources must not lock TCP clients out. The budget is taken before the
// descriptor is made (accept4, socket, pipe2) and given back when it is
// closed, with atomics: loops and UDP owners draw from it at once, and it
// never overshoots.
type fdBudget struct {
	limit    atomic.Int64 // descriptors sessions and pipes may hold
	udpLimit atomic.Int64 // of which UDP sessions may hold at most this many
	held     atomic.Int64
	udpHeld  atomic.Int64
	starved  atomic.Bool // a loop found no room for a session: no new pipes until one does

	// What the limit was made of, for the log lines that say it is reached.
	fileLimit atomic.Int64 // RLIMIT_NOFILE
	reserve   atomic.Int64 // kept for baton itself
	wc        atomic.Int64 // worker_connections; 0: not set
}

// Descriptors a session or pipe holds.
const (
	tcpSessionFDs = 2
	udpSessionFDs = 1
	pipeFDs       = 2
)

// take takes n descriptors if the budget has them.
func (b *fdBudget) take(n int64) bool { return takeUpTo(&b.held, n, b.limit.Load()) }

// takeUpTo adds n to held unless that would pass limit. A compare-and-swap,
// not an add undone: held is never seen over its limit, by status either.
func takeUpTo(held *atomic.Int64, n, limit int64) bool {
	for {
		h := held.Load()
		if h+n > limit {
			return false
		}
		if held.CompareAndSwap(h, h+n) {
			return true
		}
	}
}

// give gives back n descriptors.
func (b *fdBudget) give(n int64) { b.held.Add(-n) }

// takeUDP takes a UDP session's descriptor if both its share and the
// whole budget have it.
func (b *fdBudget) takeUDP() bool {
	if !takeUpTo(&b.udpHeld, udpSessionFDs, b.udpLimit.Load()) {
		return false
	}
	if !b.take(udpSessionFDs) {
		b.udpHeld.Add(-udpSessionFDs)
		return false
	}
	return true
}

// giveUDP gives back a UDP session's descriptor.
func (b *fdBudget) giveUDP() {
	b.udpHeld.Add(-udpSessionFDs)
	b.give(udpSessionFDs)
}

// The reserve: what baton keeps for itself out of the open file limit.
const (
	// Standard streams, the Go runtime's poller, the pipes of the exec
	// that starts a new process, the host lookups of a reload, and slack.
	reserveBase = 32
	// An upgrade: the socketpair, and a copy of each socket of the batch
	// in flight (fdpass sends at most MaxFDs descriptors at once).
	reserveUpgrade = 2 + fdpass.MaxFDs
	// The control socket, the clients it serves at once, and the one it
	// answers "busy".
	reserveControl = 1 + control.MaxConns + 1
	// The metrics endpoint and the scrapes it serves at once.
	reserveMetrics = 1 + defaultMetricsMaxConns
)

// reserveFor is the reserve for p serving cfg: the constants above, two
// per listener (the socket, and its copy while an upgrade sends it), two
// per event loop (epoll and eventfd), one per log file and one per server
// an active health check may be connected to.
func (p *Proxy) reserveFor(cfg *config.Config) int64 {
	n := int64(reserveBase + reserveUpgrade + reserveControl + 2*len(p.loops) + 1 + len(p.logFiles))
	if cfg.Baton.Metrics != "" {
		n += reserveMetrics
	}
	for _, srv := range p.servers {
		n += 2 * int64(len(srv.listens))
	}
	for _, g := range p.groups {
		if g.monitor.Load() != nil {
			n += int64(len(g.current().peers))
		}
	}
	return n
}

// fileLimit is the soft RLIMIT_NOFILE, or Options.FileLimit when set.
func (p *Proxy) fileLimit() int64 {
	if p.fileLimitOpt > 0 {
		return int64(p.fileLimitOpt)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<40 {
		return 1 << 20
	}
	return int64(lim.Cur)
}

// setBudget sizes the budget for cfg (New and Reload, after the servers
// and groups are in place). A file limit too small for the whole reserve
// keeps half of it for sessions; an upgrade may then fail for want of
// descriptors, and rolls back.
func (p *Proxy) setBudget(cfg *config.Config) {
	b := &p.fds
	files := p.fileLimit()
	reserve := min(p.reserveFor(cfg), files/2)
	limit := files - reserve
	wc := int64(max(cfg.WorkerConnections, 0))
	if wc > 0 {
		limit = min(limit, wc)
	}
	udp := limit
	if p.hasTCP() {
		udp = limit / 2
	}
	b.fileLimit.Store(files)
	b.reserve.Store(reserve)
	b.wc.Store(wc)
	b.udpLimit.Store(udp)
	b.limit.Store(limit)
}

// hasTCP reports whether any server listens on TCP.
func (p *Proxy) hasTCP() bool {
	for _, srv := range p.servers {
		for _, cl := range srv.listens {
			if !cl.UDP {
				return true
			}
		}
	}
	return false
}

// capReason says why no session can be added, for the log: nginx's
// worker_connections line when that is the bound, else the file limit's.
func (b *fdBudget) capReason() string {
	if wc := b.wc.Load(); wc > 0 && wc <= b.limit.Load() {
		return fmt.Sprintf("%d worker_connections are not enough", wc)
	}
	return fmt.Sprintf("the open file limit (%d, of which %d are kept for baton itself) is reached by %d descriptors of sessions",
		b.fileLimit.Load(), b.reserve.Load(), b.held.Load())
}

// udpCapReason says why a new UDP session was refused.
func (b *fdBudget) udpCapReason() string {
	if udp := b.udpLimit.Load(); udp < b.limit.Load() && b.udpHeld.Load()+udpSessionFDs > udp {
		return fmt.Sprintf("UDP sessions hold their share of descriptors (%d of %d; the rest is kept for TCP)", udp, b.limit.Load())
	}
	return b.capReason()
}

// udpUnansweredTimeout bounds how long a UDP session that has had no
// reply keeps its descriptor: min(proxy_timeout, this) of idleness. nginx
// keeps it for proxy_timeout (10 minutes by default), so one datagram from
// each of many spoofed sources held that many descriptors for that long.
// An answer, when it comes, comes within this: a DNS client gives up
// after 5 s. A client that sends again after the session ended simply
// starts a new one, as in nginx after proxy_timeout.
const udpUnansweredTimeout = 10 * time.Second
