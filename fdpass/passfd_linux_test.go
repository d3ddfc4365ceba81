package fdpass

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const helperEnv = "GO_WANT_FDPASS_HELPER"

// TestPassFD hands a TCP listener and a live TCP connection to another process,
// in the style of Go's syscall TestPassFD: the test binary re-execs itself as
// the child, which gets its end of the socketpair as ExtraFiles fd 3. Bytes the
// client wrote before the handoff are still queued in the kernel and must reach
// the child, and a connection queued on the listener must be accepted by it.
func TestPassFD(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		passFDChild()
		return
	}
	ln := localListener(t)
	client, server := tcpPair(t, ln)
	if _, err := client.Write([]byte("before handoff")); err != nil {
		t.Fatal(err)
	}

	parent, childEnd, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestPassFD$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1", EnvHandoffFD+"=3")
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close() // P17: else no EOF if the child dies
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// A hang anywhere below becomes a failure: kill the child and unblock every read.
	timer := time.AfterFunc(20*time.Second, func() {
		cmd.Process.Kill()
		parent.Close()
		client.Close()
	})
	defer timer.Stop()

	lf, err := Dup(ln, "listen/tcp/"+ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := Dup(server, "conn/tcp/"+server.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	var e Encoder
	e.Text(lf.Name())
	e.Text(ln.Addr().String())
	e.FD(0)
	body, _ := e.Body()
	if err := Send(parent, Record{Type: TypeListeners, Seq: 1, Body: body}, lf); err != nil {
		t.Fatal(err)
	}
	e = Encoder{}
	e.Text(cf.Name())
	e.FD(0)
	body, _ = e.Body()
	if err := Send(parent, Record{Type: TypeBatch, Seq: 2, Body: body}, cf); err != nil {
		t.Fatal(err)
	}
	// Close every copy this process has: from here only the child holds the
	// listener and the server side of the connection.
	lf.Close()
	cf.Close()
	server.Close()
	ln.Close()

	rec, files, err := Receive(parent)
	closeFiles(files)
	if err != nil || rec.Type != TypeDone {
		t.Fatalf("waiting for DONE: %v, %v\nchild output:\n%s", rec, err, childOutput(cmd, exited, &out))
	}
	d := NewDecoder(rec.Body, 0)
	childPID := int(d.Uint32())
	if err := d.Finish(); err != nil || childPID != cmd.Process.Pid {
		t.Fatalf("DONE from pid %d (%v), child is %d", childPID, err, cmd.Process.Pid)
	}

	// The child, not this process, answers on the moved connection...
	reply, err := io.ReadAll(client)
	if want := fmt.Sprintf("child %d got %q", childPID, "before handoff"); err != nil || string(reply) != want {
		t.Fatalf("moved conn: %q, %v; want %q\nchild output:\n%s", reply, err, want, childOutput(cmd, exited, &out))
	}
	// ...and accepts on the moved listener, whose address is unchanged.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	reply, err = io.ReadAll(c2)
	if want := fmt.Sprintf("child %d accepted %q", childPID, "new"); err != nil || string(reply) != want {
		t.Fatalf("moved listener: %q, %v; want %q", reply, err, want)
	}
	if err := <-exited; err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
}

func childOutput(cmd *exec.Cmd, exited <-chan error, out *bytes.Buffer) string {
	cmd.Process.Kill()
	<-exited
	return out.String()
}

// passFDChild is the child side of TestPassFD. It exits non-zero on any failure.
func passFDChild() {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		os.Exit(1)
	}
	time.AfterFunc(20*time.Second, func() { fail("timed out") })
	c, err := AdoptEnv()
	if err != nil || c == nil {
		fail("AdoptEnv: %v, %v", c, err)
	}
	if _, ok := os.LookupEnv(EnvHandoffFD); ok {
		fail("%s still set", EnvHandoffFD)
	}

	rec, files, err := Receive(c)
	if err != nil || rec.Type != TypeListeners || len(files) != 1 {
		fail("LISTENERS: %v, %d files, %v", rec, len(files), err)
	}
	d := NewDecoder(rec.Body, len(files))
	name, addr, i := d.Text(), d.Text(), d.FD()
	if err := d.Finish(); err != nil {
		fail("LISTENERS body: %v", err)
	}
	if !strings.HasPrefix(name, "listen/tcp/") {
		fail("listener name %q", name)
	}
	if err := Check(files[i], TCPConn, ""); err == nil {
		fail("a listener passed as a TCP connection")
	}
	if err := Check(files[i], TCPListener, addr); err != nil {
		fail("%v", err)
	}
	ln, err := net.FileListener(files[i])
	files[i].Close()
	if err != nil {
		fail("FileListener: %v", err)
	}

	rec, files, err = Receive(c)
	if err != nil || rec.Type != TypeBatch || len(files) != 1 {
		fail("BATCH: %v, %d files, %v", rec, len(files), err)
	}
	d = NewDecoder(rec.Body, len(files))
	_, i = d.Text(), d.FD()
	if err := d.Finish(); err != nil {
		fail("BATCH body: %v", err)
	}
	if err := Check(files[i], TCPConn, ""); err != nil {
		fail("%v", err)
	}
	conn, err := net.FileConn(files[i])
	files[i].Close()
	if err != nil {
		fail("FileConn: %v", err)
	}

	// Tell the parent everything is adopted; it has closed its copies.
	var e Encoder
	e.Uint32(uint32(os.Getpid()))
	body, _ := e.Body()
	if err := Send(c, Record{Type: TypeDone, Seq: 1, Ack: 2, Body: body}); err != nil {
		fail("DONE: %v", err)
	}

	buf := make([]byte, len("before handoff"))
	if _, err := io.ReadFull(conn, buf); err != nil {
		fail("read moved conn: %v", err)
	}
	fmt.Fprintf(conn, "child %d got %q", os.Getpid(), buf)
	conn.Close()

	nc, err := ln.Accept()
	if err != nil {
		fail("Accept: %v", err)
	}
	buf = make([]byte, 3)
	if _, err := io.ReadFull(nc, buf); err != nil {
		fail("read accepted conn: %v", err)
	}
	fmt.Fprintf(nc, "child %d accepted %q", os.Getpid(), buf)
	nc.Close()
	ln.Close()
	c.Close()
	os.Exit(0)
}
