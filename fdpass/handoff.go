package fdpass

import (
	"os"
	"time"
)

// The handoff protocol's two ends (HANDOFF.md §2.4-2.7) drive these two
// small interfaces; package proxy implements them, and knows nothing of the
// wire. Upgrade runs in the old process (the parent), Takeover in the new one
// (the child, started by the parent with the socketpair's other end as fd 3).
//
// Sequence: HELLO -> HELLO_OK -> LISTENERS -> READY -> (parent stops
// accepting) -> { BATCH, DATA*, BATCH_END -> ACCEPTED }* -> DONE -> DONE_OK.

// NamedFile is a socket with the name that matches it to configuration,
// e.g. "tcp/127.0.0.1:7000", "udp/0.0.0.0:53", "control", "metrics".
type NamedFile struct {
	Name string
	File *os.File
}

// Conn is one live flow moving to the new process: a TCP pair (Files: the
// client socket, then the upstream socket) or a UDP session (Files: its
// connected upstream socket). State is the flow's plain data as package proxy
// encodes it (pending bytes, half-close flags, counters, addresses); fdpass
// carries it opaquely, split over DATA records when it is large.
// MaxState is the largest Conn.State the protocol carries: its length
// travels as a u32, the bytes in as many records as they take.
const MaxState = 1<<32 - 1

type Conn struct {
	ID    uint64
	Files []*os.File
	State []byte
}

// Source is the old process's side: what it hands over.
type Source interface {
	// Listeners returns every listening socket to hand over. The files are
	// duplicates: Upgrade closes them once sent; the listeners stay open and
	// serving in the old process until Release is called for good.
	Listeners() ([]NamedFile, error)

	// PauseAccepting stops accepting on every listener, without closing
	// any, and returns when nothing in the old process accepts any more.
	// ResumeAccepting undoes it (rollback).
	PauseAccepting()
	ResumeAccepting()

	// Quiesce stops up to max live flows at an exact byte boundary and
	// returns them: no byte read from either side is lost (it is in State).
	// Files are duplicates that Upgrade closes after sending. done is true
	// when no flow is left to move; flows still connecting or reading a
	// PROXY header are waited for, not returned.
	Quiesce(max int) (conns []Conn, done bool, err error)

	// Release is called once the new process has accepted these flows: the
	// old process forgets them and closes its copies of their sockets (a
	// plain close of a non-last reference: no FIN, no RST).
	Release(ids []uint64)

	// Restore resumes these quiesced flows in the old process, from the
	// state they were quiesced with (the new process rejected them, or the
	// upgrade failed before they were accepted).
	Restore(ids []uint64)
}

// Sink is the new process's side: what it takes over.
type Sink interface {
	// AdoptListeners takes the listening sockets (matched by name; the sink
	// owns the files from now on, also on error), binds the listeners that
	// are new in its own config, and starts serving. It returns the names
	// it adopted; an error aborts the upgrade before the parent pauses.
	AdoptListeners(files []NamedFile) (adopted []string, err error)

	// Import takes flows, checks their sockets and keeps them idle: no byte
	// is read or written yet. It owns the files from now on. It returns the
	// ids it accepted and, for each other id, why not (their files closed).
	Import(conns []Conn) (accepted []uint64, rejected map[uint64]string)

	// Start begins moving bytes for accepted flows, pending bytes first. It
	// is called only after ACCEPTED has been sent for them.
	Start(ids []uint64)
}

// Report is what an upgrade did, for "baton upgrade" and its exit code.
type Report struct {
	NewPID  int
	Moved   int // flows the new process accepted
	Resumed int // flows quiesced but resumed in the old process
	Lost    int // flows that died with a failed new process

	// PendingBytes is how many bytes read but not yet written the moved
	// flows carried (filled in by the caller from its Source; fdpass does
	// not look inside states).
	PendingBytes int64

	// Stayed is how many flows could not move (TLS sessions whose record
	// state only the old process can carry) and stay in the old process
	// until they end (filled in by the caller).
	Stayed int
}

// UpgradeOptions tune Upgrade. Zero values take the defaults.
type UpgradeOptions struct {
	HelloTimeout time.Duration // T_hello: HELLO and READY, default 60s
	BatchTimeout time.Duration // T_batch: per batch, default 5s
	BatchSize    int           // flows per batch, default and at most 126
	Generation   uint64        // this process's generation, sent in HELLO_OK

	// ChildExited is closed when the child process has exited; Kill kills
	// it (SIGKILL). Upgrade uses them to never resume a flow while the
	// child may still own it (HANDOFF.md I1, §2.7).
	ChildExited <-chan struct{}
	Kill        func()

	// Progress, if set, is told about each step for "baton upgrade" to show.
	Progress func(format string, args ...any)
}

// TakeoverOptions tune Takeover.
type TakeoverOptions struct {
	Build string // version of the new binary, sent in HELLO

	// Done is called before DONE_OK is sent: the child writes its PID file
	// there (HANDOFF.md §2.4 step 7, teleport #1852).
	Done func() error

	// Step, if not nil, is called at each step of the protocol with its
	// name, for tests that make the new process fail there (cmd/baton's
	// fault tests stop it with SIGSTOP). The steps, in order:
	//
	//	after-hello      HELLO_OK received
	//	after-listeners  READY sent (listeners adopted, serving)
	//	mid-batch        a BATCH record received, before its DATA and ACCEPTED
	//	after-accepted   ACCEPTED sent for a batch, its flows started
	//	before-done-ok   DONE received and Done run (PID file written), DONE_OK not sent
	Step func(name string)
}
