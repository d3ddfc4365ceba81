package dnsres

import (
	"fmt"
	"strings"
)

// Limits of names (RFC 1035 section 2.3.4).
const (
	maxName  = 255
	maxLabel = 63
)

// canonical checks name and returns it lowercased with the trailing dot,
// the form queries use; a bad name is an *Error.
func canonical(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if err := checkName(n); err != nil {
		return "", &Error{Name: name, Err: err}
	}
	return n + ".", nil
}

// checkName reports why n (without trailing dot) is not a valid name.
func checkName(n string) error {
	if n == "" {
		return fmt.Errorf("invalid name: empty")
	}
	if len(n) > maxName {
		return fmt.Errorf("invalid name: %d characters, more than %d", len(n), maxName)
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" {
			return fmt.Errorf("invalid name: empty label")
		}
		if len(label) > maxLabel {
			return fmt.Errorf("invalid name: label of %d characters, more than %d", len(label), maxLabel)
		}
	}
	return nil
}

// serviceName is the SRV name of service for name: "_http._tcp.NAME" for
// "http", "SERVICE.NAME" for a service with a dot in it ("_http._tcp"), as
// nginx's ngx_resolve_name.
func serviceName(service, name string) (string, error) {
	if service == "" {
		return "", &Error{Name: name, Err: fmt.Errorf("invalid name: empty service")}
	}
	if !strings.Contains(service, ".") {
		service = "_" + service + "._tcp"
	}
	return canonical(service + "." + strings.TrimSuffix(name, "."))
}

// display is a canonical name as errors and answers show it: without the
// trailing dot.
func display(fqdn string) string { return strings.TrimSuffix(fqdn, ".") }
