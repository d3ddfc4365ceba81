package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics exports the proxy's counters to Prometheus. Counters live where
// the data path keeps them anyway (atomics on listeners and peers); the
// collector reads them at scrape time, so the data path pays nothing extra
// but the pick-latency histogram.
type metrics struct {
	reg  *prometheus.Registry
	pick prometheus.Histogram
	srv  *http.Server
	ln   net.Listener // the bound listener (handed over on upgrade), not the limiting wrapper

	// Limits of the /metrics server (issue 12: one scrape on each of 20,000
	// connections left 20,000 idle descriptors and 547 MB behind). Zero means
	// the default below; tests set them between New and Start.
	maxConns      int           // connections served at once; more wait in the kernel's backlog
	idleTimeout   time.Duration // an idle keep-alive connection is closed after this
	headerTimeout time.Duration // to read a request's header
	readTimeout   time.Duration // to read a whole request
	writeTimeout  time.Duration // from the end of the header to the end of the reply
}

// Defaults of the metrics server's limits. A scrape is one small GET whose
// reply takes milliseconds to build; Prometheus keeps one connection per
// target, so 64 at once leaves room for many scrapers and a few humans.
const (
	defaultMetricsMaxConns      = 64
	defaultMetricsIdleTimeout   = 30 * time.Second
	defaultMetricsHeaderTimeout = 5 * time.Second
	defaultMetricsReadTimeout   = 10 * time.Second
	defaultMetricsWriteTimeout  = 10 * time.Second
	metricsMaxHeaderBytes       = 16 << 10 // a scrape's header is a few hundred bytes; net/http's default is 1 MiB
)

var (
	descActive      = prometheus.NewDesc("baton_connections_active", "Live client connections, by listener.", []string{"listener"}, nil)
	descTotal       = prometheus.NewDesc("baton_connections_total", "Client connections accepted, by listener.", []string{"listener"}, nil)
	descUpActive    = prometheus.NewDesc("baton_upstream_connections_active", "Live connections to an upstream server.", []string{"upstream", "server"}, nil)
	descUpTotal     = prometheus.NewDesc("baton_upstream_connections_total", "Connections established to an upstream server.", []string{"upstream", "server"}, nil)
	descUpFails     = prometheus.NewDesc("baton_upstream_connect_failures_total", "Failed or timed-out connects to an upstream server.", []string{"upstream", "server"}, nil)
	descUpSent      = prometheus.NewDesc("baton_upstream_bytes_sent_total", "Bytes sent to an upstream server (counted when a session ends).", []string{"upstream", "server"}, nil)
	descUpReceived  = prometheus.NewDesc("baton_upstream_bytes_received_total", "Bytes received from an upstream server (counted when a session ends).", []string{"upstream", "server"}, nil)
	descUpHealthy   = prometheus.NewDesc("baton_upstream_server_up", "1 if the upstream server may take new connections now (not down, failing out or at max_conns), else 0.", []string{"upstream", "server"}, nil)
	descBackupInUse = prometheus.NewDesc("baton_upstream_backup_in_use", "1 if no primary server of the upstream is usable and a backup is.", []string{"upstream"}, nil)
	descResAddrs    = prometheus.NewDesc("baton_upstream_resolved_addresses", "Addresses a name resolved at run time (server NAME resolve) has now.", []string{"upstream", "name", "service"}, nil)
	descResRefresh  = prometheus.NewDesc("baton_upstream_resolve_last_lookup_timestamp_seconds", "When the last lookup of a resolved name ended, good or not (Unix time; 0: none yet).", []string{"upstream", "name", "service"}, nil)
	descResFailing  = prometheus.NewDesc("baton_upstream_resolve_failing", "1 if the last lookup of a resolved name failed (its last good answer is kept), else 0.", []string{"upstream", "name", "service"}, nil)
	descResFails    = prometheus.NewDesc("baton_upstream_resolve_failures_total", "Failed lookups of a resolved name.", []string{"upstream", "name", "service"}, nil)
	descResChanges  = prometheus.NewDesc("baton_upstream_resolve_changes_total", "Answers that changed a resolved name's addresses.", []string{"upstream", "name", "service"}, nil)
	descRbMisplaced = prometheus.NewDesc("baton_upstream_rebalance_misplaced", "Live sessions of an upstream with rebalance whose key belongs to another server now.", []string{"upstream"}, nil)
	descRbCloses    = prometheus.NewDesc("baton_upstream_rebalance_closes_total", "Misplaced sessions rebalance closed, by cause: idle (at an idle moment in their turn) or window_end.", []string{"upstream", "cause"}, nil)
	descUDPDropped  = prometheus.NewDesc("baton_udp_datagrams_dropped_total", "Client datagrams a UDP listener did not forward, by cause.", []string{"listener", "cause"}, nil)
	descFDsHeld     = prometheus.NewDesc("baton_descriptors_held", "Descriptors held by sessions and splice pipes.", nil, nil)
	descFDsLimit    = prometheus.NewDesc("baton_descriptors_limit", "Descriptors sessions and pipes may hold: the open file limit less baton's reserve, at most worker_connections.", nil, nil)
	descUDPFDsHeld  = prometheus.NewDesc("baton_descriptors_udp_held", "Descriptors held by UDP sessions (part of baton_descriptors_held).", nil, nil)
	descUDPFDsLimit = prometheus.NewDesc("baton_descriptors_udp_limit", "Descriptors UDP sessions may hold: half of baton_descriptors_limit where TCP listeners exist.", nil, nil)
)

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pick: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_pick_duration_seconds",
			Help:    "Time the balancer took to pick an upstream server.",
			Buckets: []float64{1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3},
		}),
	}
	return m
}

// collector adapts Proxy to prometheus.Collector.
type collector struct{ p *Proxy }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descTotal, descUpActive, descUpTotal, descUpFails, descUpSent, descUpReceived, descUpHealthy, descBackupInUse, descUDPDropped, descFDsHeld, descFDsLimit, descUDPFDsHeld, descUDPFDsLimit} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Status()
	c.p.reloadMu.Lock()
	// One series per address and cause: an address's shards are summed.
	drops := map[string]map[string]uint64{}
	var order []string
	for _, u := range c.p.udp {
		k := u.addrKey()
		if drops[k] == nil {
			drops[k] = map[string]uint64{}
			order = append(order, k)
		}
		for cause, n := range u.dropCounts() {
			drops[k][cause] += n
		}
	}
	for _, k := range order {
		for cause, n := range drops[k] {
			ch <- prometheus.MustNewConstMetric(descUDPDropped, prometheus.CounterValue, float64(n), k, cause)
		}
	}
	c.p.reloadMu.Unlock()
	d := st.Descriptors
	ch <- prometheus.MustNewConstMetric(descFDsHeld, prometheus.GaugeValue, float64(d.Held))
	ch <- prometheus.MustNewConstMetric(descFDsLimit, prometheus.GaugeValue, float64(d.Limit))
	ch <- prometheus.MustNewConstMetric(descUDPFDsHeld, prometheus.GaugeValue, float64(d.UDPHeld))
	ch <- prometheus.MustNewConstMetric(descUDPFDsLimit, prometheus.GaugeValue, float64(d.UDPLimit))
	for _, l := range st.Listeners {
		name := l.Protocol + "/" + l.Addr
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(l.Active), name)
		ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(l.Total), name)
	}
	for _, u := range st.Upstreams {
		ch <- prometheus.MustNewConstMetric(descBackupInUse, prometheus.GaugeValue, b2f(u.BackupInUse), u.Name)
		if rb := u.Rebalance; rb != nil {
			ch <- prometheus.MustNewConstMetric(descRbMisplaced, prometheus.GaugeValue, float64(rb.Misplaced), u.Name)
			ch <- prometheus.MustNewConstMetric(descRbCloses, prometheus.CounterValue, float64(rb.ClosedIdle), u.Name, "idle")
			ch <- prometheus.MustNewConstMetric(descRbCloses, prometheus.CounterValue, float64(rb.ClosedAtEnd), u.Name, "window_end")
		}
		for _, r := range u.Resolved {
			var at float64
			if !r.Refreshed.IsZero() {
				at = float64(r.Refreshed.UnixNano()) / 1e9
			}
			ch <- prometheus.MustNewConstMetric(descResAddrs, prometheus.GaugeValue, float64(len(r.Addrs)), u.Name, r.Name, r.Service)
			ch <- prometheus.MustNewConstMetric(descResRefresh, prometheus.GaugeValue, at, u.Name, r.Name, r.Service)
			ch <- prometheus.MustNewConstMetric(descResFailing, prometheus.GaugeValue, b2f(r.Error != ""), u.Name, r.Name, r.Service)
			ch <- prometheus.MustNewConstMetric(descResFails, prometheus.CounterValue, float64(r.Failures), u.Name, r.Name, r.Service)
			ch <- prometheus.MustNewConstMetric(descResChanges, prometheus.CounterValue, float64(r.Changes), u.Name, r.Name, r.Service)
		}
		seen := map[string]bool{}
		for _, s := range u.Servers {
			server := s.Addr
			if s.Name != s.Addr {
				server = s.Name + "/" + s.Addr
			}
			if seen[server] { // the same server listed twice: label it apart
				server += "#" + strconv.Itoa(len(seen))
			}
			seen[server] = true
			ch <- prometheus.MustNewConstMetric(descUpActive, prometheus.GaugeValue, float64(s.Active), u.Name, server)
			ch <- prometheus.MustNewConstMetric(descUpTotal, prometheus.CounterValue, float64(s.Total), u.Name, server)
			ch <- prometheus.MustNewConstMetric(descUpFails, prometheus.CounterValue, float64(s.ConnectFails), u.Name, server)
			ch <- prometheus.MustNewConstMetric(descUpSent, prometheus.CounterValue, float64(s.BytesSent), u.Name, server)
			ch <- prometheus.MustNewConstMetric(descUpReceived, prometheus.CounterValue, float64(s.BytesReceived), u.Name, server)
			ch <- prometheus.MustNewConstMetric(descUpHealthy, prometheus.GaugeValue, b2f(s.Up), u.Name, server)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler returns the Prometheus metrics handler.
func (p *Proxy) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{})
}

// serveMetrics binds addr ("baton { metrics ADDR; }") and serves /metrics.
func (p *Proxy) serveMetrics(addr string) error {
	ln := p.inheritedMetrics
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", p.MetricsHandler())
	m := p.metrics
	m.ln = ln
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cmp.Or(m.headerTimeout, defaultMetricsHeaderTimeout),
		ReadTimeout:       cmp.Or(m.readTimeout, defaultMetricsReadTimeout),
		WriteTimeout:      cmp.Or(m.writeTimeout, defaultMetricsWriteTimeout),
		IdleTimeout:       cmp.Or(m.idleTimeout, defaultMetricsIdleTimeout),
		MaxHeaderBytes:    metricsMaxHeaderBytes,
	}
	limited := newLimitListener(ln, cmp.Or(m.maxConns, defaultMetricsMaxConns))
	go func() {
		if err := m.srv.Serve(limited); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Logf(LevelAlert, "metrics server on %s: %v", addr, err)
		}
	}()
	return nil
}

// limitListener holds at most cap accepted connections at once. At the cap,
// Accept waits for a slot before it takes the next connection off the
// kernel's queue, rather than accepting and closing it: a connection waiting
// there costs baton no descriptor and no memory, and a scrape that arrives
// in a burst is served late (as soon as a slot frees, within the timeouts
// above) instead of refused. A flood beyond the listen backlog is refused by
// the kernel. The same as golang.org/x/net/netutil.LimitListener, which
// baton does not otherwise need.
type limitListener struct {
	net.Listener
	slots     chan struct{} // one token per accepted connection not yet closed
	done      chan struct{} // closed by Close: a waiting Accept gives up
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, cap int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, cap), done: make(chan struct{})}
}

// Accept waits for a free slot, then accepts. The returned conn frees its
// slot when it is closed (once, however often Close is called).
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	release   func()
	closeOnce sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.release)
	return err
}

// CloseWrite passes on the half-close net/http uses to end a reply to a bad
// request before it closes (closeWriteAndWait).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// MetricsAddr is where metrics are served, or nil.
func (p *Proxy) MetricsAddr() net.Addr {
	if p.metrics.ln == nil {
		return nil
	}
	return p.metrics.ln.Addr()
}

func (p *Proxy) stopMetrics() {
	if p.metrics.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.metrics.srv.Shutdown(ctx)
	}
}
