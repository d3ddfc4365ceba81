package proxy

import "github.com/batonproxy/baton/config"

// defineLookups defines the variables of the config's map, geo and
// split_clients blocks.
func defineLookups(cfg *config.Config, vt *varTable) error {
	return nil
}

// parseHello runs the ssl_preread parser over what the client sent so far.
func parseHello(b []byte, sv *sessVars) (done bool, err error) {
	return true, nil
}
