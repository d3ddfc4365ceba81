package config

import "time"

// DefaultControlSocket is Baton.ControlSocket when "control_socket" is not set.
const DefaultControlSocket = "/run/baton/control.sock"

// DefaultUpgradeTimeout is Baton.UpgradeTimeout when "upgrade_timeout" is not set.
const DefaultUpgradeTimeout = 10 * time.Second

// batonState tracks the baton {} block while it is read.
type batonState struct {
	socketSet, metricsSet, upgradeSet bool
}

// batonDirective reads one directive of "baton {}": control_socket,
// metrics and upgrade_timeout; anything else is refused as not supported yet.
func (l *loader) batonDirective(d *directive, bs *batonState) {
	b := &l.cfg.Baton
	switch d.name {
	case "control_socket":
		if !l.check(d, false, take(1)) {
			return
		}
		if bs.socketSet {
			l.errorf(d, "\"control_socket\" directive is duplicate")
			return
		}
		bs.socketSet = true
		if d.args[0] == "" {
			l.errorf(d, "\"control_socket\" directive invalid value")
			return
		}
		b.ControlSocket = d.args[0]
	case "metrics":
		if !l.check(d, false, take(1)) {
			return
		}
		if bs.metricsSet {
			l.errorf(d, "\"metrics\" directive is duplicate")
			return
		}
		bs.metricsSet = true
		text := d.args[0]
		if text == "off" {
			b.Metrics = ""
			return
		}
		// ADDR:PORT as proxy_pass reads an address: an IP literal or a host
		// name (resolved now, as everywhere else), and a port 1..65535.
		u, msg := parseURL(text, false)
		switch {
		case msg != "":
			l.errorf(d, "%s in \"%s\" of the \"metrics\" directive", msg, text)
			return
		case u.noPort:
			l.errorf(d, "no port in \"%s\" of the \"metrics\" directive", text)
			return
		}
		if !u.addr.IsValid() && len(l.lookupHost(u.host)) == 0 {
			l.errorf(d, "host not found in \"%s\" of the \"metrics\" directive", text)
			return
		}
		b.Metrics = text
	case "upgrade_timeout":
		if !l.check(d, false, take(1)) {
			return
		}
		if bs.upgradeSet {
			l.errorf(d, "\"upgrade_timeout\" directive is duplicate")
			return
		}
		bs.upgradeSet = true
		t, err := ParseDuration(d.args[0])
		if err != nil || t <= 0 {
			l.errorf(d, "\"upgrade_timeout\" directive invalid value")
			return
		}
		b.UpgradeTimeout = t
	default:
		l.refuse(d, ctxBaton)
	}
}
