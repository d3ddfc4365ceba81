package main

import (
	"net"
	"os"
)

// sdNotify sends state to systemd when baton runs as a Type=notify service
// ($NOTIFY_SOCKET is set); otherwise it does nothing. After an upgrade the
// new process sends "MAINPID=<its pid>" so that systemd follows it (the unit
// needs NotifyAccess=all, since the new process is not the one it started).
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
