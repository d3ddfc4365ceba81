package fdpass

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// endpoint is one descriptor to send and a way to prove, after receipt, that
// the received copy is that very descriptor.
type endpoint struct {
	send  *os.File
	prove func(t *testing.T, got *os.File)
}

// pipeEndpoint sends a pipe's write end; the proof writes into the received
// copy and reads from the kept read end.
func pipeEndpoint(t *testing.T, i int) endpoint {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return endpoint{send: w, prove: func(t *testing.T, got *os.File) {
		msg := fmt.Sprintf("pipe %d", i)
		if _, err := got.Write([]byte(msg)); err != nil {
			t.Fatalf("%s: write: %v", got.Name(), err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(r, buf); err != nil || string(buf) != msg {
			t.Fatalf("pipe %d: read %q, %v; want %q", i, buf, err, msg)
		}
	}}
}

// tcpEndpoint sends a dup of an accepted loopback conn; the proof converts the
// received copy with net.FileConn and exchanges bytes both ways with the kept client.
func tcpEndpoint(t *testing.T, ln *net.TCPListener, i int) endpoint {
	client, server := tcpPair(t, ln)
	f, err := Dup(server, "conn/tcp/"+server.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	server.Close() // the dup keeps the socket open
	t.Cleanup(func() { f.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return endpoint{send: f, prove: func(t *testing.T, got *os.File) {
		if err := Check(got, TCPConn, client.RemoteAddr().String()); err != nil {
			t.Fatal(err)
		}
		c, err := net.FileConn(got)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		up, down := fmt.Sprintf("to server %d", i), fmt.Sprintf("to client %d", i)
		if _, err := c.Write([]byte(down)); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte(up)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := io.ReadFull(client, buf[:len(down)]); err != nil || string(buf[:len(down)]) != down {
			t.Fatalf("client %d read %q, %v", i, buf[:len(down)], err)
		}
		if _, err := io.ReadFull(c, buf[:len(up)]); err != nil || string(buf[:len(up)]) != up {
			t.Fatalf("server %d read %q, %v", i, buf[:len(up)], err)
		}
	}}
}

func TestRoundTrip(t *testing.T) {
	ln := localListener(t)
	for _, n := range []int{0, 1, 126, MaxFDs} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			a, b := channel(t)
			// Half pipes, half TCP conns, sent in a shuffled order so that the
			// body's indices, not the order, tie each name to its descriptor.
			eps := make([]endpoint, n)
			for i := range eps {
				if i%2 == 0 {
					eps[i] = tcpEndpoint(t, ln, i)
				} else {
					eps[i] = pipeEndpoint(t, i)
				}
			}
			perm := rand.New(rand.NewPCG(1, uint64(n))).Perm(n)
			files := make([]*os.File, n)
			var e Encoder
			e.Uint16(uint16(n))
			for i, ep := range eps {
				files[perm[i]] = ep.send
				e.Text(ep.send.Name())
				e.FD(perm[i])
			}
			body, err := e.Body()
			if err != nil {
				t.Fatal(err)
			}
			want := Record{Type: TypeBatch, Seq: 7, Ack: 6, Flags: 0x8001, Body: body}
			if err := Send(a, want, files...); err != nil {
				t.Fatal(err)
			}

			got, rfiles, err := Receive(b)
			if err != nil {
				t.Fatal(err)
			}
			defer closeFiles(rfiles)
			if got.Type != want.Type || got.Seq != want.Seq || got.Ack != want.Ack ||
				got.Flags != want.Flags || !bytes.Equal(got.Body, want.Body) || len(rfiles) != n {
				t.Fatalf("got %v with %d files, want %v with %d", got, len(rfiles), want, n)
			}
			d := NewDecoder(got.Body, len(rfiles))
			if m := int(d.Uint16()); m != n {
				t.Fatalf("count %d, want %d", m, n)
			}
			for i, ep := range eps {
				name, idx := d.Text(), d.FD()
				if d.Err() != nil {
					t.Fatal(d.Err())
				}
				if name != ep.send.Name() {
					t.Fatalf("entry %d: name %q, want %q", i, name, ep.send.Name())
				}
				if fl, _ := fdFlags(t, rfiles[idx]); fl&unix.FD_CLOEXEC == 0 {
					t.Errorf("%s: received descriptor is not close-on-exec (P10)", name)
				}
				ep.prove(t, rfiles[idx])
			}
			if err := d.Finish(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestKeepsNonblocking guards P3: dup'ing and sending a live conn must not
// switch the shared open file description to blocking mode, even when the
// caller hands Send a File from conn.File (whose Fd would).
func TestKeepsNonblocking(t *testing.T) {
	ln := localListener(t)
	for _, how := range []string{"Dup", "conn.File"} {
		t.Run(how, func(t *testing.T) {
			_, server := tcpPair(t, ln)
			a, b := channel(t)
			var f *os.File
			var err error
			if how == "Dup" {
				f, err = Dup(server, "conn")
			} else {
				f, err = server.File()
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := Send(a, Record{Type: TypeBatch}, f); err != nil {
				t.Fatal(err)
			}
			_, got, err := Receive(b)
			if err != nil {
				t.Fatal(err)
			}
			closeFiles(got)
			fdfl, flfl := fdFlags(t, server)
			if flfl&unix.O_NONBLOCK == 0 {
				t.Error("original conn became blocking")
			}
			if ffd, _ := fdFlags(t, f); ffd&unix.FD_CLOEXEC == 0 || fdfl&unix.FD_CLOEXEC == 0 {
				t.Error("dup or original not close-on-exec")
			}
		})
	}
}

func TestSendRefuses(t *testing.T) {
	a, _ := channel(t)
	tests := []struct {
		name  string
		rec   Record
		files []*os.File
		want  error
	}{
		{"253 fds", Record{Type: TypeBatch}, pipes(t, MaxFDs+1), ErrTooManyFDs},
		{"big body", Record{Type: TypeData, Body: make([]byte, MaxBody+1)}, nil, ErrTooLarge},
		{"bad type", Record{Type: 0}, nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Send(a, tt.rec, tt.files...); !errors.Is(err, tt.want) {
				t.Fatalf("Send: %v, want %v", err, tt.want)
			}
		})
	}
	if err := Send(a, Record{Type: TypeDone}, nil); err == nil {
		t.Error("Send with a nil file: no error")
	}
}

func TestMaxRecord(t *testing.T) {
	a, b := channel(t)
	body := bytes.Repeat([]byte{0xa5}, MaxBody)
	if err := Send(a, Record{Type: TypeData, Body: body}, pipes(t, MaxFDs)...); err != nil {
		t.Fatal(err) // HANDOFF §2.3 (unverified): a 64 KiB SEQPACKET record fits SO_SNDBUF
	}
	rec, files, err := Receive(b)
	closeFiles(files)
	if err != nil || !bytes.Equal(rec.Body, body) || len(files) != MaxFDs {
		t.Fatalf("got %v, %d files, %v", rec, len(files), err)
	}
}

// TestTruncatedOOB receives 10 descriptors with room for 2: the kernel
// installs 2, drops 8 and sets MSG_CTRUNC. Receive must report it and close the 2.
func TestTruncatedOOB(t *testing.T) {
	a, b := channel(t)
	files := pipes(t, 10)
	base := fdCount(t)
	if err := Send(a, Record{Type: TypeListeners}, files...); err != nil {
		t.Fatal(err)
	}
	_, got, err := receive(b, unix.CmsgSpace(2*4))
	if !errors.Is(err, ErrTruncated) || got != nil {
		t.Fatalf("receive: %v, %d files; want ErrTruncated", err, len(got))
	}
	checkNoLeak(t, base)
}

// TestReceiveRejects sends hand-made records with descriptors attached; each
// must fail with its sentinel, and every attached descriptor must be closed.
func TestReceiveRejects(t *testing.T) {
	good, err := appendRecord(nil, Record{Type: TypeBatch, Body: []byte("body")}, 3)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		rec  []byte
		nfds int
		want error
	}{
		{"bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return b }), 3, ErrMalformed},
		{"bad version", edit(func(b []byte) []byte { b[4] = 2; return b }), 3, ErrMalformed},
		{"bad type", edit(func(b []byte) []byte { b[6] = 99; return b }), 3, ErrMalformed},
		{"short", good[:HeaderSize-1], 3, ErrMalformed},
		{"one byte", good[:1], 3, ErrMalformed},
		{"bodylen too big", edit(func(b []byte) []byte { b[28]++; return b }), 3, ErrMalformed},
		{"bodylen too small", edit(func(b []byte) []byte { return append(b, 'x') }), 3, ErrMalformed},
		{"fewer fds than nfds", good, 2, ErrFDCount},
		{"more fds than nfds", good, 4, ErrFDCount},
		{"nfds over MaxFDs", edit(func(b []byte) []byte { b[24] = 0xff; return b }), 3, ErrFDCount},
		{"record over MaxRecord", append(bytes.Clone(good), make([]byte, MaxRecord)...), 3, ErrTruncated},
		{"record of MaxRecord+1", append(bytes.Clone(good), make([]byte, MaxRecord+1-len(good))...), 3, ErrTruncated},
		{"SCM_MAX_FD fds", good, MaxFDs + 1, ErrFDCount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := channel(t)
			files := pipes(t, tt.nfds)
			base := fdCount(t)
			sendRaw(t, a, tt.rec, files...)
			rec, got, err := Receive(b)
			if !errors.Is(err, tt.want) || got != nil {
				t.Fatalf("Receive: %v, %v, %d files; want %v", rec, err, len(got), tt.want)
			}
			checkNoLeak(t, base)
		})
	}
}

func TestReceiveEOF(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		a, b := channel(t)
		a.Close()
		if _, _, err := Receive(b); err != io.EOF {
			t.Fatalf("Receive: %v, want io.EOF", err)
		}
	})
	// Go's sendmsg adds a dummy byte to an empty message with control data, so
	// an empty record with descriptors needs a raw sendmsg. recvmsg returning 0
	// reads as EOF, and the descriptors must still be closed.
	t.Run("empty record with fds", func(t *testing.T) {
		a, b := channel(t)
		files := pipes(t, 3)
		base := fdCount(t)
		var fds []int
		err := withFDs(files, &fds, func() error {
			oob := unix.UnixRights(fds...)
			var msg unix.Msghdr
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
			raw, _ := a.SyscallConn()
			var errno syscall.Errno
			raw.Control(func(fd uintptr) {
				_, _, errno = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
			})
			if errno != 0 {
				return errno
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, got, err := Receive(b); err != io.EOF || got != nil {
			t.Fatalf("Receive: %v, %d files; want io.EOF", err, len(got))
		}
		checkNoLeak(t, base)
		// The empty record was consumed: the channel is still open and in order.
		if err := Send(a, Record{Type: TypeDone}); err != nil {
			t.Fatal(err)
		}
		if rec, _, err := Receive(b); err != nil || rec.Type != TypeDone {
			t.Fatalf("Receive after empty record: %v, %v", rec, err)
		}
	})
	t.Run("empty write with fds", func(t *testing.T) {
		a, b := channel(t)
		files := pipes(t, 3)
		base := fdCount(t)
		sendRaw(t, a, nil, files...)
		if _, _, err := Receive(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Receive: %v, want ErrMalformed", err)
		}
		checkNoLeak(t, base)
	})
}

func TestDeadlines(t *testing.T) {
	a, b := channel(t)
	b.SetReadDeadline(time.Unix(1, 0))
	if _, _, err := Receive(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive past deadline: %v", err)
	}
	a.SetWriteDeadline(time.Unix(1, 0))
	if err := Send(a, Record{Type: TypeDone}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send past deadline: %v", err)
	}
}

func TestAdopt(t *testing.T) {
	t.Run("not seqpacket", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		if _, err := Adopt(r.Fd()); !errors.Is(err, ErrFDType) {
			t.Fatalf("Adopt(pipe): %v, want ErrFDType", err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv(EnvHandoffFD, "") // registers the restore
		os.Unsetenv(EnvHandoffFD)
		if c, err := AdoptEnv(); c != nil || err != nil {
			t.Fatalf("unset: %v, %v", c, err)
		}
		for _, v := range []string{"x", "1", "-3", ""} {
			os.Setenv(EnvHandoffFD, v)
			if _, err := AdoptEnv(); err == nil {
				t.Errorf("%s=%q: no error", EnvHandoffFD, v)
			}
			if _, ok := os.LookupEnv(EnvHandoffFD); ok {
				t.Errorf("%s not unset", EnvHandoffFD)
			}
		}
	})
	t.Run("socketpair end", func(t *testing.T) {
		a, f, err := Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		// Adopt closes the descriptor it is given, so give it a dup of f.
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD, 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		b, err := Adopt(uintptr(fd))
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("adopted descriptor %d still open: %v", fd, err)
		}
		if err := Send(a, Record{Type: TypeHello}); err != nil {
			t.Fatal(err)
		}
		if rec, _, err := Receive(b); err != nil || rec.Type != TypeHello {
			t.Fatalf("Receive: %v, %v", rec, err)
		}
	})
}
