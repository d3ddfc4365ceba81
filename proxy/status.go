package proxy

import (
	"os"
	"time"
)

// Status is what the proxy believes about everything it serves: what
// "baton status" shows and the metrics export.
type Status struct {
	PID       int              `json:"pid"`
	Started   time.Time        `json:"started"`
	Active    int64            `json:"active"` // live sessions
	Total     uint64           `json:"total"`  // sessions since start
	Listeners []ListenerStatus `json:"listeners"`
	Upstreams []UpstreamStatus `json:"upstreams"`

	Descriptors DescriptorStatus `json:"descriptors"`
}

// DescriptorStatus is the descriptor budget sessions draw from (README,
// Descriptors).
type DescriptorStatus struct {
	Held      int64 `json:"held"`       // by sessions and splice pipes
	Limit     int64 `json:"limit"`      // what they may hold
	UDPHeld   int64 `json:"udp_held"`   // by UDP sessions
	UDPLimit  int64 `json:"udp_limit"`  // what UDP sessions may hold
	FileLimit int64 `json:"file_limit"` // the open file limit
	Reserve   int64 `json:"reserve"`    // kept out of it for baton itself
}

// ListenerStatus is one listening address.
type ListenerStatus struct {
	Addr     string `json:"addr"`
	Protocol string `json:"protocol"`
	Upstream string `json:"upstream"`
	Active   int64  `json:"active"`
	Total    uint64 `json:"total"`
}

// UpstreamStatus is one upstream and its servers.
type UpstreamStatus struct {
	Name        string         `json:"name"`
	Method      string         `json:"method"`
	BackupInUse bool           `json:"backup_in_use"` // no primary is usable and a backup is
	Servers     []ServerStatus `json:"servers"`
	// Resolved are the names resolved at run time ("server NAME resolve").
	Resolved []ResolvedStatus `json:"resolved,omitempty"`
	// Rebalance is baton's "rebalance", nil without it.
	Rebalance *RebalanceStatus `json:"rebalance,omitempty"`
}

// RebalanceStatus is an upstream's rebalancing: its settings, the live
// sessions misplaced now (waiting for their turn or an idle moment), and
// the sessions closed so far.
type RebalanceStatus struct {
	Window      time.Duration `json:"window"`
	Idle        time.Duration `json:"idle"`
	Misplaced   int64         `json:"misplaced"`
	ClosedIdle  uint64        `json:"closed_idle"`       // at an idle moment in their turn
	ClosedAtEnd uint64        `json:"closed_window_end"` // at their window's end
}

// ResolvedStatus is one name an upstream resolves at run time.
type ResolvedStatus struct {
	Name      string    `json:"name"`              // the host name
	Service   string    `json:"service,omitempty"` // service=, for SRV
	Addrs     []string  `json:"addrs"`             // the last good answer
	Answered  bool      `json:"answered"`          // an answer has come since start
	Refreshed time.Time `json:"refreshed"`         // when the last lookup ended, good or not
	Error     string    `json:"error,omitempty"`   // the last lookup's error, "" after a good one
	Failures  uint64    `json:"failures"`          // failed lookups since start
	Changes   uint64    `json:"changes"`           // answers that changed the addresses
}

// ServerStatus is one upstream server (one address of it).
type ServerStatus struct {
	Name          string `json:"name"` // as written in the config
	Addr          string `json:"addr"`
	State         string `json:"state"` // "up", "down (config)", "failing since ...", "down by check since ...", ...
	Up            bool   `json:"up"`    // may take new connections now
	Backup        bool   `json:"backup,omitempty"`
	Down          bool   `json:"down,omitempty"`
	Active        int    `json:"active"`
	Total         uint64 `json:"total"`
	ConnectFails  uint64 `json:"connect_fails"`
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
}

// Status returns a snapshot of the proxy's state.
func (p *Proxy) Status() Status {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	now := time.Now()
	st := Status{PID: os.Getpid(), Started: p.base, Active: p.active.Load(), Total: p.total.Load(), Descriptors: DescriptorStatus{
		Held: p.fds.held.Load(), Limit: p.fds.limit.Load(), UDPHeld: p.fds.udpHeld.Load(), UDPLimit: p.fds.udpLimit.Load(),
		FileLimit: p.fds.fileLimit.Load(), Reserve: p.fds.reserve.Load(),
	}}
	for _, ln := range p.listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{
			Addr: ln.addr.String(), Protocol: "tcp", Upstream: ln.srv.upstreamName(),
			Active: ln.active.Load(), Total: ln.accepted.Load(),
		})
	}
	at := map[string]int{} // an address's line, for its other shards
	for _, u := range p.udp {
		k := u.addrKey()
		if i, ok := at[k]; ok {
			ls := &st.Listeners[i]
			ls.Active += u.active.Load()
			ls.Total += u.total.Load()
			continue
		}
		at[k] = len(st.Listeners)
		st.Listeners = append(st.Listeners, u.status())
	}
	for _, g := range p.groups {
		us := g.current().status(now)
		us.Resolved = g.res.status()
		if st, rb := g.rbStats, g.cfg.Rebalance; st != nil && rb != nil {
			rs := &RebalanceStatus{Window: rb.Window, Idle: rb.Idle, ClosedIdle: st.closeIdle.Load(), ClosedAtEnd: st.closeEnd.Load()}
			for i := range st.misplaced {
				rs.Misplaced += st.misplaced[i].Load()
			}
			us.Rebalance = rs
		}
		st.Upstreams = append(st.Upstreams, us)
	}
	return st
}

func (g *group) status(now time.Time) UpstreamStatus {
	us := UpstreamStatus{Name: g.name, Method: g.method.String()}
	primaryUp, backupUp := false, false
	for i := range g.peers {
		p := g.peers[i]
		hs := g.health.Peer(i).State(now)
		ss := ServerStatus{
			Name: p.name, Addr: p.String(), Down: p.down, Backup: p.backup,
			Active: int(p.active.Load()), Total: p.total.Load(), ConnectFails: p.fails.Load(),
			BytesSent: p.sent.Load(), BytesReceived: p.received.Load(),
			Up: g.usable(i, now), State: hs.String(),
		}
		switch {
		case p.down:
			ss.State = "down (config)"
		case p.maxConns > 0 && p.active.Load() >= p.maxConns:
			ss.State += ", at max_conns"
		}
		if ss.Up && ss.Backup {
			backupUp = true
		} else if ss.Up {
			primaryUp = true
		}
		us.Servers = append(us.Servers, ss)
	}
	us.BackupInUse = backupUp && !primaryUp && usesBackup(g.method)
	return us
}
