// Package control is baton's control socket, the server a running baton
// listens on and the client of "baton status", "baton reload" and "baton
// upgrade": one JSON request line, one JSON reply, then close.
//
//	-> {"cmd":"status"}
//	<- {"ok":true,"status":{...}}
//	-> {"cmd":"reload"}
//	<- {"ok":true,"report":"listeners kept: ..."}   or   {"ok":false,"error":"..."}
//
// The server knows nothing of the proxy: what each command does comes from
// its Handlers. The wire format is shared by an old and a new baton across
// an upgrade, so it only ever grows.
//
// Only the owner of the process (or root) may talk to it: the socket is
// created 0600 in a 0700 directory, and every peer's uid is checked with
// SO_PEERCRED. Requests are read without an ancillary-data buffer, so file
// descriptors a client attaches are discarded by the kernel (HANDOFF.md P12).
//
// The trust goes both ways (issue 12): the server serves only from a
// directory no other user can change (checkDir), and Call checks the
// server's uid with SO_PEERCRED before it sends anything, so a socket
// another user put at the path hears nothing.
package control
