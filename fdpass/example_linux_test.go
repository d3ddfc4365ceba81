package fdpass_test

import (
	"fmt"
	"net"

	"github.com/batonproxy/baton/fdpass"
)

// The old process hands a listener to the new one. In baton the two ends are
// in different processes (the child's end goes in as ExtraFiles[0] and the
// child calls AdoptEnv); here both ends are in one process.
func Example() {
	old, childEnd, _ := fdpass.Socketpair()
	defer old.Close()
	c, _ := net.FileConn(childEnd)
	childEnd.Close()
	newProc := c.(*net.UnixConn)
	defer newProc.Close()

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()

	// Old: duplicate the listener without touching it, describe it, send it.
	f, _ := fdpass.Dup(ln.(*net.TCPListener), "listen/tcp/"+ln.Addr().String())
	var e fdpass.Encoder
	e.Text(f.Name())
	e.Text(ln.Addr().String())
	e.FD(0)
	body, _ := e.Body()
	if err := fdpass.Send(old, fdpass.Record{Type: fdpass.TypeListeners, Seq: 1, Body: body}, f); err != nil {
		fmt.Println(err)
	}
	f.Close() // the kernel holds its own reference until the peer receives it

	// New: receive, decode, check, convert.
	rec, files, err := fdpass.Receive(newProc)
	if err != nil {
		fmt.Println(err)
		return
	}
	d := fdpass.NewDecoder(rec.Body, len(files))
	name, addr, i := d.Text(), d.Text(), d.FD()
	if err := d.Finish(); err != nil {
		fmt.Println(err)
	}
	if err := fdpass.Check(files[i], fdpass.TCPListener, addr); err != nil {
		fmt.Println(err)
	}
	inherited, _ := net.FileListener(files[i])
	files[i].Close()
	defer inherited.Close()
	fmt.Println(rec.Type, len(files), name == "listen/tcp/"+addr, inherited.Addr().String() == addr)
	// Output: LISTENERS 1 true true
}
