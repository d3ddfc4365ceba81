// Package lookup builds the run-time tables of nginx's stream map, geo and
// split_clients blocks from their parsed config (config.Map, config.Geo,
// config.SplitClients) and answers lookups exactly as nginx does: the same
// entry for the same key, address or hash.
//
// Each table is built once and is read-only afterwards, so it is safe for
// concurrent use. Lookups do not allocate, but for a map's regular
// expression with groups, whose submatches regexp allocates.
//
// The package knows nothing of sessions or variables: callers evaluate the
// source template and expand the chosen value themselves.
package lookup
