// Package config reads baton's configuration: an operator's nginx.conf, as
// it is, with its stream {} block. Load (or a Loader, which carries the DNS
// and file-system seams) returns a validated Config whose every nginx
// default is filled in, ready for proxy to build listeners and balancers.
//
// Reading follows nginx (src/core/ngx_conf_file.c and the stream modules):
// the same tokens, quoting, escapes and comments; "include" relative to the
// main file's directory, with sorted globs; the same directive contexts,
// argument counts, defaults, inheritance from stream to server, and the
// same error wording, each ending " in FILE:LINE" where LINE is the line
// nginx would name (the line of the directive's ";" or "{").
//
// Invariants:
//   - Load never panics, whatever the input, and reads no file outside
//     what the main file includes (an include inside an ignored block such as
//     http {} is not followed).
//   - On success there are no errors; on failure the Config is nil and the
//     error is an ErrorList of *Error: every semantic error found, or the
//     first syntax error, after which nothing more is read.
//   - nginx directives that baton ignores (worker_processes, http {}, ...)
//     give exactly one Warning each; nginx stream directives that baton does
//     not implement are refused by name as "not supported yet", never as
//     unknown; anything else unknown is `unknown directive "X"`.
//   - Every proxy_pass is linked: Server.Upstream is a declared upstream or
//     an implicit one (Implicit true, one server) for an address; names and
//     host names are resolved once, at load time, through Loader.LookupHost.
package config
