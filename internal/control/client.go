package control

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"
)

// Call sends req to the control socket at path and returns the reply. It is
// the client side, used by "baton status", "baton reload" and "baton
// upgrade". Before it sends anything it checks who serves the socket
// (SO_PEERCRED): root or the caller's own euid, the rule the server applies
// to its clients; a socket of any other user gets an error and no request.
func Call(path string, req Request, timeout time.Duration) (*Reply, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("no baton answers on %s: %w", path, err)
	}
	defer c.Close()
	conn := c.(*net.UnixConn)
	uid, err := peerUID(conn)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: who serves it: %w", path, err)
	}
	if !uidAllowed(uid) {
		return nil, fmt.Errorf("control socket %s is served by uid %d, not by root or uid %d: another user's socket; nothing sent", path, uid, os.Geteuid())
	}
	conn.SetDeadline(time.Now().Add(timeout))
	// A server that refuses us answers and closes without reading: a failed
	// write is then less telling than the answer, so read it first.
	werr := json.NewEncoder(conn).Encode(req)
	var r Reply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		if werr != nil {
			return nil, werr
		}
		return nil, fmt.Errorf("reading the reply from %s: %w", path, err)
	}
	return &r, nil
}
