package config

import (
	"net/netip"
	"regexp"
	"time"
)

// Pos is where a directive was written: the file as it was opened (after
// include resolution) and its 1-based line.
type Pos struct {
	File string
	Line int
}

// Config is a loaded, validated configuration. Every field that nginx gives a
// default has that default filled in by Load; a zero value means "not set"
// only where the field's comment says so.
type Config struct {
	// Files lists every file read, the main file first, then includes in the
	// order they were read.
	Files []string

	// Warnings are the non-fatal findings, in file order: ignored nginx
	// directives, accepted-but-inert settings such as "user".
	Warnings []Warning

	// Pid is the "pid" file path; empty means no pid file is written.
	Pid string

	// ErrorLogs are the top-level "error_log" directives in order: baton's
	// own log goes to each of them, at its level, as nginx's. There is
	// always at least one: standard error at "error" when none is written.
	ErrorLogs []ErrorLog

	// ErrorLog is ErrorLogs[0], kept for callers that know only one.
	ErrorLog ErrorLog

	// WorkerRlimitNofile is "worker_rlimit_nofile"; 0 means leave the limit alone.
	WorkerRlimitNofile int

	// WorkerShutdownTimeout is "worker_shutdown_timeout", the bound on a
	// graceful stop (SIGQUIT); 0 means wait for connections without bound, as nginx.
	WorkerShutdownTimeout time.Duration

	// WorkerConnections is "events { worker_connections N; }": the cap on open
	// connections, counted as nginx counts them (a client connection and its
	// upstream connection are two). 0 means no cap but the file limit.
	WorkerConnections int

	// Stream is the "stream {}" block; nil when the file has none.
	Stream *Stream

	// Baton is the "baton {}" block: baton's own settings, defaults filled in
	// when the file has no such block.
	Baton Baton
}

// Baton holds baton's own settings ("baton { ... }").
type Baton struct {
	Pos Pos

	// ControlSocket is "control_socket PATH": the Unix socket that serves
	// "baton status|reload|upgrade". Default "/run/baton/control.sock".
	ControlSocket string

	// Metrics is "metrics ADDR:PORT": where Prometheus metrics are served.
	// Empty (the default) means off.
	Metrics string

	// UpgradeTimeout is "upgrade_timeout T": how long the old process waits
	// for the new one at each step of an upgrade (its HELLO and READY, each
	// batch's acknowledgement, DONE) before it rolls back. Default 10s.
	UpgradeTimeout time.Duration
}

// Warning is a non-fatal finding, printed by "baton check" and at start-up.
type Warning struct {
	Pos Pos
	Msg string
}

// ErrorLog is one "error_log" directive.
type ErrorLog struct {
	Pos    Pos
	Path   string  // the file; "" means standard error ("stderr" is stored as ""). The target as written when Syslog is set
	Syslog *Syslog // "syslog:...": lines go to this syslog server instead of a file
	Level  string  // debug, info, notice, warn, error, crit, alert, emerg; default "error"
}

// Stream is the "stream {}" block.
type Stream struct {
	Pos Pos

	// Upstreams in the order they were written; names are unique
	// (case-insensitively, as nginx). Only "upstream NAME {}" blocks are
	// here: the implicit upstream of a "proxy_pass ADDR" is reached through
	// Server.Upstream, and servers naming the same address share one.
	Upstreams []*Upstream

	// Servers in the order they were written.
	Servers []*Server

	// LogFormats by name. nginx's stream module predefines none and requires
	// a format on every access_log; so does baton.
	LogFormats map[string]*LogFormat

	// AccessLogs are the stream block's own "access_log" directives.
	// Servers without their own inherit them (Server.AccessLogs); their
	// files are opened even when no server does, as nginx opens every
	// access_log's file.
	AccessLogs []*AccessLog

	// Matches are the "match NAME {}" blocks for health_check, by name.
	Matches map[string]*Match

	// LimitConnZones are the "limit_conn_zone KEY zone=NAME:SIZE"
	// directives, by zone name.
	LimitConnZones map[string]*LimitConnZone

	// Maps, Geos and SplitClients are the "map", "geo" and "split_clients"
	// blocks in the order written. Each defines a variable; nginx lets a
	// later block redefine a variable an earlier one defined, and the last
	// one wins.
	Maps         []*Map
	Geos         []*Geo
	SplitClients []*SplitClients
}

// Match is a "match NAME { send ...; expect ...; }" block (nginx Plus
// stream syntax): what an active health check sends and expects back.
type Match struct {
	Pos    Pos
	Name   string
	Send   string         // "send"; may be empty
	Expect string         // "expect STRING": the reply must contain it
	Regexp *regexp.Regexp // "expect ~ REGEX": the reply must match it
}

// HealthCheck is a "health_check" directive in a stream server (nginx Plus
// syntax): active checks of the servers of its proxy_pass upstream.
type HealthCheck struct {
	Pos       Pos
	Interval  time.Duration // "interval=", default 5s
	Fails     int           // "fails=", default 1
	Passes    int           // "passes=", default 1
	Port      int           // "port=", default 0: each server's own port
	Match     *Match        // "match=NAME"; nil: a connect is enough
	UDP       bool          // "udp"
	Mandatory bool          // "mandatory": no traffic until the first check passes
	Timeout   time.Duration // "health_check_timeout", default 5s
}

// LimitConnZone is a "limit_conn_zone KEY zone=NAME:SIZE" directive.
type LimitConnZone struct {
	Pos  Pos
	Name string
	Key  string // the key template, e.g. "$binary_remote_addr"
	Size int64
}

// LimitConn is a "limit_conn ZONE N" directive.
type LimitConn struct {
	Pos  Pos
	Zone *LimitConnZone
	N    int
}

// AccessRule is one "allow" or "deny" directive, evaluated in order.
type AccessRule struct {
	Pos    Pos
	Allow  bool
	All    bool         // "all"
	Unix   bool         // "unix:": the clients of unix: listeners
	Prefix netip.Prefix // the address or CIDR when not All
}

// Upstream is an "upstream NAME {}" block, or the implicit one-server
// upstream that "proxy_pass ADDR" creates (Implicit true, Name = ADDR as written).
type Upstream struct {
	Pos      Pos
	Name     string
	Implicit bool

	// Method is the balancing method: "" (round robin), "hash", "ip_hash",
	// "least_conn", "random", "least_time".
	Method          string
	MethodPos       Pos
	HashKey         string // for "hash KEY"
	Consistent      bool   // "hash KEY consistent"
	RandomTwo       bool   // "random two"
	RandomLeastConn bool   // "random two least_conn"
	LeastTime       string // "least_time MODE": "connect", "first_byte" or "last_byte"
	Inflight        bool   // "least_time MODE inflight"

	// BalanceFactor is baton's "hash_balance_factor N" (HAProxy's
	// hash-balance-factor): with "hash KEY consistent", no server takes more
	// than N% of the mean load. 0 means not set (no bound); else N > 100.
	BalanceFactor int

	// HashRing is baton's "hash_ring": "name" (the default, nginx's ring,
	// where the servers' names as written make the points, so the addresses
	// of one name share them) or "address" (each address its own points, as
	// if written "server IP:PORT"). Only with "hash KEY consistent".
	HashRing string

	// Zone is the "zone" name, "" without one.
	Zone string

	// Rebalance is baton's "rebalance": live sessions whose key now maps to
	// another usable server are closed, paced over Window, each at an idle
	// moment. nil: sessions stay where they are (nginx).
	Rebalance *Rebalance

	// Resolver resolves the "resolve" servers at run time: the upstream's
	// own "resolver", or the stream's; nil when no server has "resolve".
	Resolver *Resolver

	Servers []*UpstreamServer

	res resolverConf // the upstream's own resolver directives, merged at the end
}

// Rebalance is a "rebalance [window=TIME] [idle=TIME]" directive.
type Rebalance struct {
	Pos    Pos
	Window time.Duration // default 60s
	Idle   time.Duration // default 1s
}

// Resolver is a "resolver" directive with the "resolver_timeout" that
// applies where it is used.
type Resolver struct {
	Pos   Pos
	Addrs []netip.AddrPort // the name servers, port 53 when none is given
	Valid time.Duration    // "valid=": overrides the answers' TTLs; 0: use them
	IPv4  bool             // "ipv4=" (default on)
	IPv6  bool             // "ipv6=" (default on)

	// Timeout is "resolver_timeout" (default 30s).
	Timeout time.Duration
}

// UpstreamServer is one "server" line of an upstream.
type UpstreamServer struct {
	Pos Pos

	// Name is the address exactly as written ("127.0.0.1:5432",
	// "db.internal:5432", "[::1]:80"); the hash methods hash this text.
	Name string

	// Addrs are Name resolved at load time, in resolver order. A name that
	// resolves to several addresses gives several peers, as nginx.
	Addrs []netip.AddrPort

	// Unix is the path of "server unix:PATH" (Addrs is then empty).
	Unix string

	// Resolve is "resolve" on a server written with a host name: Addrs is
	// empty, and the proxy resolves Host at run time through the upstream's
	// Resolver, following every change. Port is the port written (none with
	// Service).
	Resolve bool
	Host    string
	Port    uint16
	// Service is "service=NAME": Host's SRV records give the addresses,
	// ports and weights (nginx's ngx_stream_upstream_zone_resolve_handler).
	Service string

	Weight      int           // default 1
	MaxFails    int           // default 1; 0 disables accounting
	FailTimeout time.Duration // default 10s
	MaxConns    int           // default 0: no limit
	SlowStart   time.Duration // "slow_start=", default 0: off
	Backup      bool
	Down        bool
}

// Server is a "server {}" block inside "stream".
type Server struct {
	Pos    Pos
	Listen []*Listen

	// ProxyPass is the "proxy_pass" argument as written; Upstream is what it
	// names: a declared upstream, or an implicit one for an address.
	ProxyPass    string
	ProxyPassPos Pos
	Upstream     *Upstream

	// ProxyPassVars: ProxyPass has variables, evaluated per session to an
	// upstream's name or an address (Upstream is nil).
	ProxyPassVars bool

	// Return is the server's "return"; nil when it proxies. A server has
	// either Return or ProxyPass.
	Return *Return

	// Pass is "pass ADDRESS": the connection goes to the server listening
	// on that address in this process, as if accepted there; PassAddr is
	// the address when Pass has no variables (PassVars).
	Pass     string
	PassPos  Pos
	PassVars bool
	PassAddr netip.AddrPort

	// ServerNames are the "server_name" names in order.
	ServerNames []*ServerName

	// Sets are the "set" directives in order.
	Sets []*Set

	// SSLPreread is "ssl_preread on": read the client's TLS ClientHello
	// before choosing an upstream ($ssl_preread_*). PrereadBufferSize
	// ("preread_buffer_size", default 16k) bounds what is read;
	// PrereadTimeout ("preread_timeout", default 30s) bounds the wait.
	SSLPreread        bool
	PrereadBufferSize int
	PrereadTimeout    time.Duration

	// TLS is the server's ssl_* settings when a listen of it has "ssl".
	TLS *TLS

	// NoHandler: the server has no proxy_pass, return or pass; its
	// sessions end with 500, as nginx's "no handler for server".
	NoHandler bool

	// ProxyTLS is "proxy_ssl on" with its settings; nil: plain upstreams.
	ProxyTLS *ProxyTLS

	// Resolver resolves host names "proxy_pass $var" gives at run time:
	// the server's "resolver", or the stream's; nil when neither has one.
	Resolver *Resolver

	ProxyConnectTimeout      time.Duration // default 60s
	ProxyTimeout             time.Duration // default 10m
	ProxyNextUpstream        bool          // default true
	ProxyNextUpstreamTries   int           // default 0: unlimited
	ProxyNextUpstreamTimeout time.Duration // default 0: unlimited
	ProxyHalfClose           bool          // default false

	// UDP sessions: "proxy_responses N" (default -1: not limited) and
	// "proxy_requests N" (default 0: not limited).
	ProxyResponses int
	ProxyRequests  int

	// ProxyUploadRate and ProxyDownloadRate are "proxy_upload_rate" and
	// "proxy_download_rate" as written: a size in bytes per second, or text
	// with variables evaluated per session; "" or 0 is no limit.
	ProxyUploadRate, ProxyDownloadRate string

	// ProxyBufferSize is "proxy_buffer_size": the most a TCP read takes per
	// direction; 0 when not set (baton then reads up to 64k at once, where
	// nginx's default is 16k).
	ProxyBufferSize int

	// ProxyBind is "proxy_bind" as written, "" when off: the upstream
	// socket is bound to this address before connecting. Without variables
	// ProxyBindAddr is the address (port 0: any); with them (ProxyBindVars)
	// it is evaluated per session, as nginx's, and a value that is empty or
	// no address binds nothing. ProxyBindTransparent is its "transparent":
	// the address need not be this host's (IP_TRANSPARENT).
	ProxyBind            string
	ProxyBindPos         Pos
	ProxyBindVars        bool
	ProxyBindAddr        netip.AddrPort
	ProxyBindTransparent bool

	// ProxySocketKeepalive is "proxy_socket_keepalive on": SO_KEEPALIVE on
	// the upstream socket (default off).
	ProxySocketKeepalive bool

	// TCPNoDelayOff is "tcp_nodelay off": TCP_NODELAY is set on neither the
	// client's nor the upstream's TCP socket. The default, false, is
	// nginx's default "tcp_nodelay on".
	TCPNoDelayOff bool

	// ProxyProtocol is "proxy_protocol on|v2|off" towards the upstream: 0
	// off (default), 1 version 1, 2 version 2.
	ProxyProtocol int

	// ProxyProtocolTimeout bounds reading a PROXY header from a client of a
	// "listen ... proxy_protocol" (default 30s, as nginx).
	ProxyProtocolTimeout time.Duration

	// SetRealIPFrom lists the peers whose PROXY header is trusted for
	// $remote_addr ("set_real_ip_from"; inherited from stream).
	SetRealIPFrom []netip.Prefix

	// SetRealIPFromUnix is "set_real_ip_from unix:": a PROXY header from
	// a client of a unix: listener is trusted.
	SetRealIPFromUnix bool

	// Access are the "allow"/"deny" rules in order (inherited from stream
	// when the server has none).
	Access []*AccessRule

	// LimitConns are the "limit_conn" directives (inherited from stream
	// when the server has none); LimitConnLogLevel and LimitConnDryRun are
	// "limit_conn_log_level" (default "error") and "limit_conn_dry_run".
	LimitConns        []*LimitConn
	LimitConnLogLevel string
	LimitConnDryRun   bool

	// HealthCheck is the server's "health_check"; nil when none.
	HealthCheck *HealthCheck

	// AccessLogs are the "access_log" directives in effect for this server
	// (inherited from stream when the server has none). Empty means off.
	AccessLogs []*AccessLog

	// ErrorLogs are the "error_log" directives in effect for this
	// server's sessions (inherited from stream when the server has none).
	// Empty means the top-level error logs (Config.ErrorLogs).
	ErrorLogs []ErrorLog
}

// Listen is one "listen" directive.
type Listen struct {
	Pos Pos

	// Addr is the address to bind. A bare port ("listen 7000;") binds
	// 0.0.0.0:PORT as nginx does.
	Addr netip.AddrPort

	// Text is the address as written, for messages and names.
	Text string

	Backlog     int // default 511 (nginx's NGX_LISTEN_BACKLOG on Linux)
	ReusePort   bool
	SoKeepalive bool // "so_keepalive=on" (or the idle:intvl:cnt form)

	// so_keepalive=idle:intvl:cnt (0: the system's), fastopen=N (0: off),
	// rcvbuf=, sndbuf= (0: the system's), deferred (TCP_DEFER_ACCEPT),
	// ipv6only= (default on), multipath (MPTCP).
	KeepIdle, KeepIntvl time.Duration
	KeepCnt             int
	FastOpen            int
	RcvBuf, SndBuf      int
	Deferred            bool
	IPv6Only            bool
	Multipath           bool
	UDP                 bool // "udp"
	ProxyProtocol       bool // "proxy_protocol": every client must send a PROXY header
	DefaultServer       bool // "default_server"
	SSL                 bool // "ssl": TLS is terminated here (Server.TLS)

	// Unix is the path of "listen unix:PATH" (Addr is then invalid, Text
	// "unix:PATH").
	Unix string

	// Vhosts, on the Listen that binds an address several servers listen
	// on (TCP), lists those servers in config order, the default among
	// them; the others' Listens for it have Vhost set and bind nothing.
	Vhosts []*Server
	Vhost  bool

	optsSet bool // backlog=, reuseport, so_keepalive=: options of the socket
}

// LogFormat is a "log_format NAME ..." directive.
type LogFormat struct {
	Pos    Pos
	Name   string
	Format string // the argument strings concatenated, as nginx does
	Escape string // "escape=": "default" (when not given), "json" or "none"
}

// AccessLog is an "access_log PATH FORMAT [if=CONDITION]" directive.
type AccessLog struct {
	Pos    Pos
	Path   string  // the file; the target as written when Syslog is set
	Syslog *Syslog // "syslog:...": lines go to this syslog server instead of a file
	Format *LogFormat
	If     string // "if=": a line is written only when this evaluates to neither "" nor "0"; "" when not given

	// PathVars: Path has variables, evaluated for each line (the file is
	// opened, written and closed each time, as nginx without
	// open_log_file_cache).
	PathVars bool

	// Buffer is "buffer=SIZE" (64k with gzip and no buffer=), Flush
	// "flush=TIME", Gzip "gzip[=LEVEL]" (1-9; 0: off).
	Buffer int
	Flush  time.Duration
	Gzip   int
}
