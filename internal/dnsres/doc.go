// Package dnsres is baton's DNS client, with the semantics of nginx's
// resolver (ngx_resolver.c) over github.com/miekg/dns's wire format.
//
// A Resolver sends each question over UDP, and again over TCP to the same
// server when the reply is truncated. The servers are tried in turn: each
// question starts at the next server (round robin), and a server that does
// not answer in time, or fails, passes the question on to the next one,
// until Config.Timeout is spent. Each attempt is bounded by
// min(2s, Timeout/len(Servers)), but at least 100ms, so that every server
// gets a try within Timeout.
//
// An empty answer (NOERROR without records of the type, or NXDOMAIN) is
// not an error: it is an Answer without addresses. A SERVFAIL, REFUSED,
// FORMERR or NOTIMP answer, a timeout, a failed network or a malformed
// reply is an *Error, whose text is nginx's: "example.net could not be
// resolved (2: Server failure)". Unlike nginx, a CNAME chain longer than
// 10 links is an error, not an empty answer.
//
// CNAMEs are followed: records whose owner is on the chain count, and when
// a reply ends the chain with no record of the type asked, its last target
// is asked in turn.
//
// The Resolver keeps nothing between lookups; a Cache in front of it
// serves answers until their TTL runs out and merges concurrent lookups of
// one name into one.
package dnsres
