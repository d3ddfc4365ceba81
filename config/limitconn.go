package config

import "strings"

// minZoneSize is nginx's 8 * ngx_pagesize (4 KiB pages on Linux): the
// smallest limit_conn_zone.
const minZoneSize = 8 * 4096

// shmZone is one shared memory zone name as nginx's cycle registers it:
// the module that owns it ("upstream" for an upstream's "zone",
// "limit_conn") and its size, 0 while only referenced.
type shmZone struct {
	tag  string
	size int64
}

// pendingLimit is a limit_conn whose zone is looked up once the whole
// stream block is read: nginx allows the zone to be declared later.
type pendingLimit struct {
	lc   *LimitConn
	name string
}

// shmAdd is nginx's ngx_shared_memory_add: names are shared by all modules,
// a name belongs to the module that first used it, and a size once given
// cannot change. It reports false (with nginx's error) on a conflict.
func (l *loader) shmAdd(d *directive, name string, size int64, tag string) bool {
	st := l.st
	z := st.shm[name]
	if z == nil {
		st.shm[name] = &shmZone{tag: tag, size: size}
		return true
	}
	if z.tag != tag {
		l.errorf(d, "the shared memory zone \"%s\" is already declared for a different use", name)
		return false
	}
	if z.size == 0 {
		z.size = size
	}
	if size != 0 && size != z.size {
		l.errorf(d, "the size %d of shared memory zone \"%s\" conflicts with already declared size %d", size, name, z.size)
		return false
	}
	return true
}

// limitConnZone reads "limit_conn_zone KEY zone=NAME:SIZE" as
// ngx_stream_limit_conn_zone. KEY is kept as written, variables and all.
func (l *loader) limitConnZone(d *directive) {
	if !l.check(d, false, take(2)) {
		return
	}
	key, p := d.args[0], d.args[1]
	rest, ok := strings.CutPrefix(p, "zone=")
	if !ok {
		l.errorf(d, "invalid parameter \"%s\"", p)
		return
	}
	name, sizeText, ok := strings.Cut(rest, ":")
	if !ok {
		l.errorf(d, "invalid zone size \"%s\"", p)
		return
	}
	size, err := ParseSize(sizeText)
	if err != nil {
		l.errorf(d, "invalid zone size \"%s\"", p)
		return
	}
	if size < minZoneSize {
		l.errorf(d, "zone \"%s\" is too small", p)
		return
	}
	if name == "" {
		l.errorf(d, "\"limit_conn_zone\" must have \"zone\" parameter")
		return
	}
	if !l.shmAdd(d, name, size, "limit_conn") {
		return
	}
	zones := l.st.s.LimitConnZones
	if z := zones[name]; z != nil {
		l.errorf(d, "limit_conn_zone \"%s\" is already bound to key \"%s\"", name, z.Key)
		return
	}
	zones[name] = &LimitConnZone{Pos: d.pos, Name: name, Key: key, Size: size}
}

// limitConn reads "limit_conn ZONE N" as ngx_stream_limit_conn; the zone is
// linked by linkLimitConns.
func (l *loader) limitConn(d *directive, pc *proxyConf) {
	if !l.check(d, false, take(2)) {
		return
	}
	name := d.args[0]
	if !l.shmAdd(d, name, 0, "limit_conn") {
		return
	}
	for _, p := range l.st.limits {
		if p.name == name && containsLimit(pc.limits, p.lc) {
			l.errorf(d, "\"limit_conn\" directive is duplicate")
			return
		}
	}
	n, ok := atoi(d.args[1])
	if !ok || n == 0 {
		l.errorf(d, "invalid number of connections \"%s\"", d.args[1])
		return
	}
	if n > 65535 {
		l.errorf(d, "connection limit must be less 65536")
		return
	}
	lc := &LimitConn{Pos: d.pos, N: int(n)}
	pc.limits = append(pc.limits, lc)
	l.st.limits = append(l.st.limits, pendingLimit{lc: lc, name: name})
}

func containsLimit(list []*LimitConn, lc *LimitConn) bool {
	for _, x := range list {
		if x == lc {
			return true
		}
	}
	return false
}

// linkLimitConns gives every limit_conn its zone. A zone no limit_conn_zone
// declares is nginx's start-up error for a zone left without a size; it is
// reported once, at the first limit_conn that names it.
func (l *loader) linkLimitConns() {
	st := l.st
	reported := map[string]bool{}
	for _, p := range st.limits {
		if p.lc.Zone = st.s.LimitConnZones[p.name]; p.lc.Zone == nil && !reported[p.name] {
			reported[p.name] = true
			l.errAt(p.lc.Pos, "limit_conn", "zero size shared memory zone \"%s\"", p.name)
		}
	}
}
