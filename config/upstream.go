package config

import (
	"net/netip"
	"strings"
	"time"
)

// Server parameters an upstream's balancing method allows, as nginx's
// NGX_STREAM_UPSTREAM_* flags.
const (
	allowWeight = 1 << iota
	allowMaxConns
	allowMaxFails
	allowFailTimeout
	allowDown
	allowBackup
	allowSlowStart // nginx Plus: "cannot be used along with the hash, ip_hash and random methods"

	allowAll    = allowWeight | allowMaxConns | allowMaxFails | allowFailTimeout | allowDown | allowBackup | allowSlowStart
	allowNoBkup = allowAll &^ (allowBackup | allowSlowStart) // what hash, ip_hash and random allow
)

// upstreamState is what one upstream block tracks while it is read.
type upstreamState struct {
	flags     int  // parameters later "server" lines may use
	servers   int  // "server" lines seen, valid or not
	methodSet bool // a balancing method directive was seen
	factorPos Pos
	zoneSet   bool
	ltSet     bool // a least_time directive was seen (nginx's mode is set)
	ringPos   Pos  // the hash_ring directive
}

func newUpstreamServer(pos Pos, name string) *UpstreamServer {
	return &UpstreamServer{Pos: pos, Name: name, Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}
}

func (l *loader) upstream(d *directive) {
	if !l.check(d, true, take(1)) {
		return
	}
	st := l.st
	name := d.args[0]
	key := strings.ToLower(name)
	if st.upstreams[key] != nil {
		l.errorf(d, "duplicate upstream \"%s\"", name)
		return
	}
	up := &Upstream{Pos: d.pos, Name: name}
	st.upstreams[key] = up
	st.s.Upstreams = append(st.s.Upstreams, up)
	us := &upstreamState{flags: allowAll}
	l.each(d.block, ctxUpstream, func(d *directive) { l.upstreamDirective(d, up, us) })
	if l.fatal {
		return
	}
	if us.servers == 0 {
		// nginx reports this once the block is read: at the closing "}".
		l.errAt(d.end, "upstream", "no servers are inside upstream")
	}
	switch up.Method {
	case "hash", "ip_hash", "random":
		// nginx checks the flags only as each "server" line is read, so a
		// backup server written before the method directive is accepted, and
		// then never used: these methods do not look at backup servers.
		for _, s := range up.Servers {
			if s.Backup {
				l.warnf(s.Pos, "backup server \"%s\" will never be used: the \"%s\" balancing method does not use backup servers", s.Name, up.Method)
			}
			// Likewise a slow_start written before the method: accepted and
			// ignored. SlowStart is cleared so the balancer need not know.
			if s.SlowStart != 0 {
				l.warnf(s.Pos, "the \"slow_start\" parameter of server \"%s\" is ignored: the \"%s\" balancing method does not support it", s.Name, up.Method)
				s.SlowStart = 0
			}
		}
	}
	if up.BalanceFactor != 0 && (up.Method != "hash" || !up.Consistent) {
		l.errAt(us.factorPos, "hash_balance_factor", "\"hash_balance_factor\" requires \"hash ... consistent\" in the same upstream")
	}
	if rb := up.Rebalance; rb != nil {
		switch {
		case up.Method != "hash" && up.Method != "ip_hash":
			l.errAt(rb.Pos, "rebalance", "\"rebalance\" requires \"hash\" or \"ip_hash\" in the same upstream: only they map a session's key to one server")
		case up.BalanceFactor != 0:
			l.errAt(rb.Pos, "rebalance", "\"rebalance\" cannot be used with \"hash_balance_factor\": a session the bound sent to another server would be moved back and forth")
		}
	}
	if up.HashRing != "" && (up.Method != "hash" || !up.Consistent) {
		l.errAt(us.ringPos, "hash_ring", "\"hash_ring\" requires \"hash ... consistent\" in the same upstream: the other methods have no ring")
	}
}

func (l *loader) upstreamDirective(d *directive, up *Upstream, us *upstreamState) {
	switch d.name {
	case "server":
		l.upstreamServer(d, up, us)
	case "zone":
		if !l.check(d, false, take(1, 2)) {
			return
		}
		if us.zoneSet {
			l.errorf(d, "\"zone\" directive is duplicate")
			return
		}
		us.zoneSet = true
		var size int64
		if len(d.args) == 2 {
			var err error
			if size, err = ParseSize(d.args[1]); err != nil {
				l.errorf(d, "invalid zone size \"%s\"", d.args[1])
				return
			}
		}
		// The name space is shared with limit_conn_zone, as nginx's.
		l.shmAdd(d, d.args[0], size, "upstream")
		up.Zone = d.args[0]
	case "hash":
		if !l.setMethod(d, up, us, take(1, 2), allowNoBkup) {
			return
		}
		up.HashKey = d.args[0]
		if len(d.args) == 2 {
			if d.args[1] != "consistent" {
				l.errorf(d, "invalid parameter \"%s\"", d.args[1])
				return
			}
			up.Consistent = true
		}
	case "ip_hash":
		l.setMethod(d, up, us, take(0), allowNoBkup)
	case "least_conn":
		l.setMethod(d, up, us, take(0), allowAll)
	case "random":
		if !l.setMethod(d, up, us, take(0, 1, 2), allowNoBkup) {
			return
		}
		if len(d.args) >= 1 {
			if d.args[0] != "two" {
				l.errorf(d, "invalid parameter \"%s\"", d.args[0])
				return
			}
			up.RandomTwo = true
		}
		if len(d.args) == 2 {
			if d.args[1] != "least_conn" {
				l.errorf(d, "invalid parameter \"%s\"", d.args[1])
				return
			}
			up.RandomLeastConn = true
		}
	case "least_time":
		l.leastTime(d, up, us)
	case "resolver", "resolver_timeout":
		l.resolverSetting(d, &up.res)
	case "rebalance":
		l.rebalance(d, up)
	case "hash_ring":
		if !l.check(d, false, take(1)) {
			return
		}
		if up.HashRing != "" {
			l.errorf(d, "\"hash_ring\" directive is duplicate")
			return
		}
		v, ok := l.enumArg(d, "name", "address")
		if !ok {
			return
		}
		up.HashRing = v
		us.ringPos = d.pos
	case "hash_balance_factor":
		if !l.check(d, false, take(1)) {
			return
		}
		if up.BalanceFactor != 0 || us.factorPos.Line != 0 {
			l.errorf(d, "\"hash_balance_factor\" directive is duplicate")
			return
		}
		us.factorPos = d.pos
		n, ok := atoiInt(d.args[0])
		if !ok || n <= 100 {
			l.errorf(d, "invalid value \"%s\" in \"hash_balance_factor\" directive, it must be a number greater than 100", d.args[0])
			return
		}
		up.BalanceFactor = n
	default:
		l.refuse(d, ctxUpstream)
	}
}

// setMethod records a balancing method directive, as nginx: a second one
// warns "load balancing method redefined" and replaces the first, and the
// method replaces the set of parameters later "server" lines may use.
func (l *loader) setMethod(d *directive, up *Upstream, us *upstreamState, args argRule, flags int) bool {
	if !l.check(d, false, args) {
		return false
	}
	if us.methodSet {
		l.warnf(d.pos, "load balancing method redefined")
	}
	us.methodSet = true
	us.flags = flags
	up.Method, up.MethodPos = d.name, d.pos
	up.HashKey, up.Consistent, up.RandomTwo, up.RandomLeastConn = "", false, false, false
	up.LeastTime, up.Inflight = "", false
	return true
}

// leastTime reads "least_time connect|first_byte|last_byte [inflight]" as
// nginx's ngx_stream_upstream_least_time: the method is set (with the
// "redefined" warning) before the arguments are checked, "inflight" is
// checked before the mode, and the mode, matched without regard to case,
// may be set only once in an upstream, even with another method between.
func (l *loader) leastTime(d *directive, up *Upstream, us *upstreamState) {
	if !l.setMethod(d, up, us, take(1, 2), allowAll) {
		return
	}
	if len(d.args) == 2 {
		if d.args[1] != "inflight" {
			l.errorf(d, "invalid parameter \"%s\"", d.args[1])
			return
		}
		up.Inflight = true
	}
	if us.ltSet {
		l.errorf(d, "\"least_time\" directive is duplicate")
		return
	}
	mode := strings.ToLower(d.args[0])
	switch mode {
	case "connect", "first_byte", "last_byte":
	default:
		l.errorf(d, "invalid value \"%s\"", d.args[0])
		return
	}
	us.ltSet = true
	up.LeastTime = mode
}

func (l *loader) upstreamServer(d *directive, up *Upstream, us *upstreamState) {
	if !l.check(d, false, atLeast(1)) {
		return
	}
	us.servers++
	s := newUpstreamServer(d.pos, d.args[0])
	for _, p := range d.args[1:] {
		name, val, hasVal := strings.Cut(p, "=")
		need := 0
		ok := true
		switch {
		case hasVal && name == "weight":
			need = allowWeight
			s.Weight, ok = atoiInt(val)
			ok = ok && s.Weight != 0
		case hasVal && name == "max_conns":
			need = allowMaxConns
			s.MaxConns, ok = atoiInt(val)
		case hasVal && name == "max_fails":
			need = allowMaxFails
			s.MaxFails, ok = atoiInt(val)
		case hasVal && name == "fail_timeout":
			need = allowFailTimeout
			var err error
			s.FailTimeout, err = ParseSeconds(val)
			ok = err == nil
		case p == "backup":
			need = allowBackup
			s.Backup = true
		case p == "down":
			need = allowDown
			s.Down = true
		case hasVal && name == "slow_start":
			need = allowSlowStart
			var err error
			s.SlowStart, err = ParseSeconds(val)
			ok = err == nil
		case p == "resolve":
			s.Resolve = true
		case hasVal && name == "service":
			if val == "" {
				l.errorf(d, "service is empty")
				return
			}
			s.Service = val
		case p == "drain" || (hasVal && name == "route"):
			l.errorf(d, "the \"%s\" parameter of the \"server\" directive is not supported yet", name)
			return
		default:
			ok = false
		}
		if need != 0 && us.flags&need == 0 {
			l.errorf(d, "balancing method does not support parameter \"%s\"", p)
			return
		}
		if !ok {
			l.errorf(d, "invalid parameter \"%s\"", p)
			return
		}
	}
	if path, ok := strings.CutPrefix(s.Name, "unix:"); ok {
		if path == "" {
			l.errorf(d, "no path in the unix domain socket in upstream \"%s\"", s.Name)
			return
		}
		if s.Service != "" {
			l.errorf(d, "service upstream \"%s\" requires domain name", s.Name)
			return
		}
		s.Unix, s.Resolve = path, false
		up.Servers = append(up.Servers, s)
		return
	}
	if s.Service != "" && !s.Resolve {
		l.errorf(d, "service upstream \"%s\" requires \"resolve\" parameter", s.Name)
		return
	}
	u, msg := parseURL(s.Name, false)
	if msg != "" {
		l.errorf(d, "%s in upstream \"%s\"", msg, s.Name)
		return
	}
	if u.noPort && s.Service == "" {
		l.errorf(d, "no port in upstream \"%s\"", s.Name)
		return
	}
	if s.Service != "" && !u.noPort {
		l.errorf(d, "service upstream \"%s\" may not have port", s.Name)
		return
	}
	if s.Service != "" && u.addr.IsValid() {
		l.errorf(d, "service upstream \"%s\" requires domain name", s.Name)
		return
	}
	if s.Resolve && !u.addr.IsValid() {
		// Resolved at run time (nginx's u.no_resolve): no lookup now.
		s.Host, s.Port = u.host, u.port
		up.Servers = append(up.Servers, s)
		return
	}
	s.Resolve = false // an address needs no resolving, as nginx ignores "resolve" then
	addrs := []netip.Addr{u.addr}
	if !u.addr.IsValid() {
		if addrs = l.lookupHost(u.host); len(addrs) == 0 {
			l.errorf(d, "host not found in upstream \"%s\"", s.Name)
			return
		}
	}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, netip.AddrPortFrom(a, u.port))
	}
	up.Servers = append(up.Servers, s)
}

// finishResolve gives every upstream its resolver, once the whole stream
// block is read (a stream-level "resolver" may follow the upstream), and
// checks, as nginx's ngx_stream_upstream_init_round_robin, that an upstream
// with "resolve" servers has a zone and a resolver.
func (l *loader) finishResolve(streamRes *resolverConf) {
	for _, up := range l.st.s.Upstreams {
		up.Resolver = mergeResolver(&up.res, streamRes)
		resolve := false
		for _, s := range up.Servers {
			resolve = resolve || s.Resolve
		}
		switch {
		case !resolve:
		case up.Zone == "":
			l.errAt(up.Pos, "upstream", "resolving names at run time requires upstream \"%s\" to be in shared memory", up.Name)
		case up.Resolver == nil:
			l.errAt(up.Pos, "upstream", "no resolver defined to resolve names at run time in upstream \"%s\"", up.Name)
		}
	}
}

// rebalance reads baton's "rebalance [window=TIME] [idle=TIME]".
func (l *loader) rebalance(d *directive, up *Upstream) {
	if !l.check(d, false, take(0, 1, 2)) {
		return
	}
	if up.Rebalance != nil {
		l.errorf(d, "\"rebalance\" directive is duplicate")
		return
	}
	rb := &Rebalance{Pos: d.pos, Window: 60 * time.Second, Idle: time.Second}
	for _, a := range d.args {
		name, val, _ := strings.Cut(a, "=")
		var t time.Duration
		var err error
		switch name {
		case "window", "idle":
			t, err = ParseDuration(val)
		default:
			err = errInvalidValue
		}
		if err != nil || (name == "window" && t <= 0) {
			l.errorf(d, "invalid parameter \"%s\"", a)
			return
		}
		if name == "window" {
			rb.Window = t
		} else {
			rb.Idle = t
		}
	}
	up.Rebalance = rb
}
