//go:build linux

package fdpass

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvTestStop is a TEST HOOK, for the fault tests of cmd/baton
// (upgrade_fault_test.go) and nothing else: when it is set, the new process
// of an upgrade stops itself with SIGSTOP at one step of Takeover, so that a
// test can find it (a stopped child of the old process) and SIGKILL it there,
// or leave it stopped to make T_batch fire. Only Takeover calls the hook, so
// it only ever fires in the new process; the old one passes its environment
// on to each new process it starts.
//
// The value is a step name, and the hook then fires at that step in every
// new process, or "file:PATH", and the hook then fires once, at the step
// named in the file PATH, which it removes when it fires (so a test arms one
// fault per upgrade and the next upgrade runs clean). The steps, in order:
//
//	after-hello      HELLO_OK received
//	after-listeners  READY sent (listeners adopted, serving)
//	mid-batch        a BATCH record received, before its DATA and ACCEPTED
//	after-accepted   ACCEPTED sent for the first batch, its flows started
//	before-done-ok   DONE received and opts.Done run (PID file written), DONE_OK not sent
const EnvTestStop = "BATON_TEST_HANDOFF_STOP"

// testStop is the hook: it stops this process at step if EnvTestStop says so.
func testStop(step string) {
	v := os.Getenv(EnvTestStop)
	if v == "" {
		return
	}
	if path, ok := strings.CutPrefix(v, "file:"); ok {
		want, err := os.ReadFile(path)
		if err != nil || strings.TrimSpace(string(want)) != step || os.Remove(path) != nil {
			return
		}
	} else if v != step {
		return
	}
	fmt.Fprintf(os.Stderr, "baton: test hook %s: pid %d stops itself at %s\n", EnvTestStop, os.Getpid(), step)
	// Directed at this thread, so that it stops before it returns from
	// tgkill and Takeover does not take one more step; a signal to the
	// process would let this thread run on until another one takes it.
	unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSTOP)
}
