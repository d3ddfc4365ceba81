package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The test hooks. The tests run this test binary as baton (batonCmd), so
// the hooks set here exist in that binary and in no baton build. Each is
// armed by an environment variable a test sets for the baton it starts.
func init() {
	handoffStep = stopAtStep
	testSpawn = spawnSleep
	testHoldReload = holdReload
}

// envTestStop makes the new process of an upgrade stop itself with
// SIGSTOP at one step of the handoff (fdpass.TakeoverOptions.Step), so
// that a fault test can find it (a stopped child of the old process) and
// SIGKILL it there, or leave it stopped to make T_batch fire. The old
// process passes its environment on to each new process it starts.
//
// The value is a step name, and the hook then fires at that step in every
// new process, or "file:PATH", and the hook then fires once, at the step
// named in the file PATH, which it removes when it fires (so a test arms
// one fault per upgrade and the next upgrade runs clean).
const envTestStop = "BATON_TEST_HANDOFF_STOP"

func stopAtStep(step string) {
	v := os.Getenv(envTestStop)
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
	fmt.Fprintf(os.Stderr, "baton: test hook %s: pid %d stops itself at %s\n", envTestStop, os.Getpid(), step)
	// Directed at this thread, so that it stops before it returns from
	// tgkill and the handoff does not take one more step; a signal to the
	// process would let this thread run on until another one takes it.
	unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSTOP)
}

// envTestUpgradeSpawn, for TestFailedUpgradeKillsProcessGroup: the new
// process of an upgrade starts "sleep 60" as a child of its own and writes
// the child's pid to the file it names, unless that file exists (so only
// the first new process does).
const envTestUpgradeSpawn = "BATON_TEST_UPGRADE_SPAWN"

func spawnSleep() {
	path := os.Getenv(envTestUpgradeSpawn)
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err == nil {
		return
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "baton: test hook %s: %v\n", envTestUpgradeSpawn, err)
		return
	}
	go cmd.Wait()
	if err := os.WriteFile(path+".tmp", []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err == nil {
		os.Rename(path+".tmp", path)
	}
}

// envTestHoldReload, for TestSignalsDuringReload: when it names a FIFO,
// each reload first says so on stderr and then opens the FIFO for reading,
// which blocks until the test opens it for writing. It holds a reload for
// as long as a test needs, without a sleep.
const envTestHoldReload = "BATON_TEST_HOLD_RELOAD"

func holdReload() {
	path := os.Getenv(envTestHoldReload)
	if path == "" {
		return
	}
	fmt.Fprintf(os.Stderr, "baton: test hook %s: pid %d holds a reload\n", envTestHoldReload, os.Getpid())
	if f, err := os.Open(path); err == nil {
		f.Close()
	}
}
