package config

import "strings"

// scope is where a directive is written.
type scope uint8

const (
	ctxMain scope = 1 << iota
	ctxEvents
	ctxStream   // stream {}
	ctxServer   // stream { server {} }
	ctxUpstream // stream { upstream NAME {} }
	ctxBaton    // baton {}
	ctxMatch    // stream { match NAME {} }
	ctxEntries  // map, geo and split_clients blocks: each line is an entry, not a directive
)

// ignoredMain lists nginx's main-context directives that baton accepts with
// one warning and ignores; true marks block directives, whose contents are
// skipped unread (includes inside them are not followed). From nginx's
// ngx_core_module, ngx_events_module, ngx_http/mail modules, ngx_openssl_module,
// ngx_thread_pool_module, ngx_google_perftools_module, ngx_regex_module and the
// commercial mgmt/otel modules.
var ignoredMain = map[string]bool{
	"daemon": false, "master_process": false, "timer_resolution": false,
	"lock_file": false, "worker_processes": false, "debug_points": false,
	"worker_priority": false, "worker_cpu_affinity": false,
	"worker_rlimit_core": false, "worker_rlimit_sigpending": false,
	"working_directory": false, "env": false, "load_module": false,
	"pcre_jit": false, "ssl_engine": false, "ssl_object_cache_inheritable": false,
	"thread_pool": false, "google_perftools_profiles": false,
	"quic_bpf": false, "otel_exporter": true, "otel_service_name": false,
	"otel_resource_attr": false, "otel_trace": false,
	"http": true, "mail": true, "mgmt": true,
}

// ignoredEvents are the events {} directives other than worker_connections.
var ignoredEvents = map[string]bool{
	"use": true, "multi_accept": true, "accept_mutex": true,
	"accept_mutex_delay": true, "debug_connection": true,
	"worker_aio_requests": true, "epoll_events": true, "kqueue_changes": true,
	"kqueue_events": true, "devpoll_changes": true, "devpoll_events": true,
	"eventport_events": true, "iocp_threads": true, "post_acceptex": true,
	"acceptex_read": true,
}

const (
	sv  = ctxStream | ctxServer
	svu = ctxStream | ctxServer | ctxUpstream
)

// notSupported lists every directive of nginx's stream modules (open source
// and commercial, from nginx.org/en/docs/stream/) that baton does not
// implement yet, with the contexts nginx accepts it in. Written there it is
// refused by name as not supported yet; elsewhere it is "not allowed here".
var notSupported = map[string]scope{
	// ngx_stream_core_module
	"variables_hash_bucket_size": ctxStream, "variables_hash_max_size": ctxStream,
	// ngx_stream_return_module, ngx_stream_set_module, ngx_stream_pass_module
	// ngx_stream_geoip_module
	"geoip_country": ctxStream, "geoip_city": ctxStream, "geoip_org": ctxStream,
	// ngx_stream_proxy_module
	"proxy_session_drop": sv,
	// ngx_stream_ssl_module, ngx_stream_ssl_preread_module
	"ssl_early_data": sv,
	// ngx_stream_js_module
	"js_access": sv, "js_context_reuse": sv, "js_engine": sv,
	"js_fetch_buffer_size": sv, "js_fetch_ciphers": sv,
	"js_fetch_keepalive": sv, "js_fetch_keepalive_requests": sv,
	"js_fetch_keepalive_time": sv, "js_fetch_keepalive_timeout": sv,
	"js_fetch_max_response_buffer_size": sv, "js_fetch_protocols": sv,
	"js_fetch_timeout": sv, "js_fetch_trusted_certificate": sv,
	"js_fetch_verify": sv, "js_fetch_verify_depth": sv, "js_filter": sv,
	"js_import": sv, "js_include": ctxStream, "js_path": sv, "js_periodic": ctxServer,
	"js_preload_object": sv, "js_preread": sv, "js_set": sv,
	"js_shared_dict_zone": ctxStream, "js_var": sv,
	// commercial modules: upstream extras, health checks, keyval, zone_sync, mqtt, status
	"state": ctxUpstream, "sticky": ctxUpstream,
	"keyval": ctxStream, "keyval_zone": ctxStream,
	"zone_sync": ctxServer, "zone_sync_buffers": sv, "zone_sync_connect_retry_interval": sv,
	"zone_sync_connect_timeout": sv, "zone_sync_interval": sv,
	"zone_sync_recv_buffer_size": sv, "zone_sync_server": ctxServer, "zone_sync_ssl": sv,
	"zone_sync_ssl_certificate": sv, "zone_sync_ssl_certificate_key": sv,
	"zone_sync_ssl_ciphers": sv, "zone_sync_ssl_conf_command": sv,
	"zone_sync_ssl_crl": sv, "zone_sync_ssl_name": sv, "zone_sync_ssl_password_file": sv,
	"zone_sync_ssl_protocols": sv, "zone_sync_ssl_server_name": sv,
	"zone_sync_ssl_trusted_certificate": sv, "zone_sync_ssl_verify": sv,
	"zone_sync_ssl_verify_depth": sv, "zone_sync_timeout": sv,
	"mqtt": sv, "mqtt_buffers": sv, "mqtt_preread": sv, "mqtt_rewrite_buffer_size": sv,
	"mqtt_set_connect": sv, "status_zone": ctxServer,
}

// implemented lists the directives baton reads, with their contexts; with
// the two tables above it makes up every name that is not "unknown". The
// directives of baton's own blocks (control_socket, metrics in baton {};
// send, expect in match {}) are not here: elsewhere they are unknown.
var implemented = map[string]scope{
	"include": ctxMain | ctxEvents | svu | ctxBaton | ctxMatch,
	"pid":     ctxMain, "error_log": ctxMain | sv, "user": ctxMain,
	"worker_rlimit_nofile": ctxMain, "worker_shutdown_timeout": ctxMain,
	"events": ctxMain, "stream": ctxMain, "baton": ctxMain,
	"worker_connections": ctxEvents,
	"upstream":           ctxStream, "server": ctxStream | ctxUpstream,
	"log_format": ctxStream, "access_log": sv,
	"listen": ctxServer, "proxy_pass": ctxServer,
	"proxy_connect_timeout": sv, "proxy_timeout": sv, "proxy_next_upstream": sv,
	"proxy_next_upstream_tries": sv, "proxy_next_upstream_timeout": sv,
	"proxy_half_close": sv, "proxy_responses": sv, "proxy_requests": sv,
	"proxy_protocol": sv, "proxy_protocol_timeout": sv,
	"set_real_ip_from": sv, "allow": sv, "deny": sv,
	"limit_conn_zone": ctxStream, "limit_conn": sv, "limit_conn_log_level": sv,
	"limit_conn_dry_run": sv,
	"health_check":       ctxServer, "health_check_timeout": sv, "match": ctxStream,
	"zone": ctxUpstream, "hash": ctxUpstream, "ip_hash": ctxUpstream,
	"least_conn": ctxUpstream, "random": ctxUpstream, "hash_balance_factor": ctxUpstream, "least_time": ctxUpstream,
	"set": ctxServer, "return": ctxServer, "pass": ctxServer, "server_name": ctxServer,
	"proxy_upload_rate": sv, "proxy_download_rate": sv, "proxy_buffer_size": sv,
	"open_log_file_cache": sv,
	"proxy_bind":          sv, "proxy_socket_keepalive": sv, "tcp_nodelay": sv,
	"server_names_hash_bucket_size": ctxStream, "server_names_hash_max_size": ctxStream,
	"ssl_preread": sv, "preread_buffer_size": sv, "preread_timeout": sv,
	"map": ctxStream, "map_hash_bucket_size": ctxStream, "map_hash_max_size": ctxStream,
	"geo": ctxStream, "split_clients": ctxStream,
	"resolver": sv | ctxUpstream, "resolver_timeout": sv | ctxUpstream, "hash_ring": ctxUpstream,
	"rebalance": ctxUpstream,
	// ngx_stream_ssl_module (the rest is refused above)
	"ssl_alpn": sv, "ssl_certificate": sv, "ssl_certificate_key": sv, "ssl_ciphers": sv,
	"ssl_client_certificate": sv, "ssl_conf_command": sv, "ssl_dhparam": sv, "ssl_ecdh_curve": sv,
	"ssl_handshake_timeout": sv, "ssl_prefer_server_ciphers": sv, "ssl_protocols": sv,
	"ssl_reject_handshake": sv, "ssl_session_cache": sv, "ssl_session_tickets": sv,
	"ssl_session_timeout": sv, "ssl_verify_client": sv, "ssl_verify_depth": sv, "ssl_password_file": sv,
	"ssl_trusted_certificate": sv, "ssl_crl": sv, "ssl_key_log": sv, "ssl_session_ticket_key": sv,
	"ssl_ocsp": sv, "ssl_ocsp_cache": sv, "ssl_ocsp_responder": sv,
	"ssl_stapling": sv, "ssl_stapling_file": sv, "ssl_stapling_responder": sv, "ssl_stapling_verify": sv,
	"ssl_certificate_cache": sv, "proxy_ssl_certificate_cache": sv,
	"proxy_ssl": sv, "proxy_ssl_certificate": sv, "proxy_ssl_certificate_key": sv, "proxy_ssl_ciphers": sv,
	"proxy_ssl_conf_command": sv, "proxy_ssl_name": sv, "proxy_ssl_password_file": sv, "proxy_ssl_protocols": sv,
	"proxy_ssl_server_name": sv, "proxy_ssl_session_reuse": sv, "proxy_ssl_trusted_certificate": sv,
	"proxy_ssl_verify": sv, "proxy_ssl_verify_depth": sv, "proxy_ssl_alpn": sv, "proxy_ssl_crl": sv, "proxy_ssl_key_log": sv,
}

// refuse reports d, which the context's own switch did not handle: as not
// supported yet, as not allowed here, or as unknown, in that order.
func (l *loader) refuse(d *directive, ctx scope) {
	if ctx == ctxBaton {
		l.errorf(d, "\"%s\" directive is not supported yet", d.name)
		return
	}
	if c, ok := notSupported[d.name]; ok && c&ctx != 0 {
		l.errorf(d, "\"%s\" directive is not supported yet", d.name)
		return
	}
	_, a := notSupported[d.name]
	_, b := implemented[d.name]
	_, c := ignoredMain[d.name]
	if a || b || c || ignoredEvents[d.name] {
		l.errorf(d, "\"%s\" directive is not allowed here", d.name)
		return
	}
	l.errorf(d, "unknown directive \"%s\"", d.name)
}

// argRule says how many arguments (after the name) a directive takes.
type argRule func(n int) bool

func take(counts ...int) argRule {
	return func(n int) bool {
		for _, c := range counts {
			if n == c {
				return true
			}
		}
		return false
	}
}

func atLeast(min int) argRule { return func(n int) bool { return n >= min } }

// check applies nginx's ngx_conf_handler checks: block or not, then the
// argument count. It records the error and reports false when d fails.
func (l *loader) check(d *directive, block bool, args argRule) bool {
	switch {
	case !block && d.hasBlock:
		l.errorf(d, "directive \"%s\" is not terminated by \";\"", d.name)
		return false
	case block && !d.hasBlock:
		l.errorf(d, "directive \"%s\" has no opening \"{\"", d.name)
		return false
	case !args(len(d.args)):
		l.errorf(d, "invalid number of arguments in \"%s\" directive", d.name)
		return false
	}
	return true
}

// hasVariable reports whether s uses an nginx variable.
func hasVariable(s string) bool { return strings.Contains(s, "$") }
