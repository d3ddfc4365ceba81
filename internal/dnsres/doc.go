// Package dnsres is baton's DNS client: nginx's resolver semantics over
// github.com/miekg/dns.
package dnsres

import _ "github.com/miekg/dns" // the DNS wire format; see resolver.go
