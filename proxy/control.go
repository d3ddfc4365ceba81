package proxy

import (
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/control"
)

// ControlOptions are what the control socket can do beyond status.
type ControlOptions struct {
	// Reload re-reads the configuration and applies it, returning a report
	// of what changed. If nil, reload is refused.
	Reload func() (string, error)

	// Upgrade hands everything to a new process started from binary ("":
	// this one) and returns what moved. If nil, upgrade is refused.
	Upgrade func(binary string) (fdpass.Report, error)

	// Plan reads the configuration as Reload would and reports, changing
	// nothing, what it would do to live sessions (reload --dry-run).
	Plan func() (string, error)
}

// ServeControl serves the control socket (package control) at path until
// its Close: "status" reports p.Status, and opts say what else it can do.
// The socket the old process handed over in an upgrade is served if there is
// one (same socket, same path); otherwise it is created as control.Serve
// does. An upgrade from p hands the socket on.
func (p *Proxy) ServeControl(path string, opts ControlOptions) (*control.Server, error) {
	h := control.Handlers{
		Status:  func() any { st := p.Status(); return &st },
		Reload:  opts.Reload,
		Upgrade: opts.Upgrade,
		Plan:    opts.Plan,
	}
	var c *control.Server
	if ln := p.inheritedControl; ln != nil {
		p.inheritedControl = nil
		c = control.ServeListener(ln, path, h, p.log)
	} else {
		var err error
		if c, err = control.Serve(path, h, p.log); err != nil {
			return nil, err
		}
	}
	p.control = c
	return c, nil
}
