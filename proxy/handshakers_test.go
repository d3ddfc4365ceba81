package proxy

import (
	"sync"
	"testing"
	"time"
)

// run never waits for a worker: tasks that block until all of them have
// started all start, many more than the workers that may wait idle; and
// the workers then left waiting take later tasks.
func TestWorkPoolRunsEverythingAtOnce(t *testing.T) {
	var w workPool
	w.tasks = make(chan func())
	const n = 3 * maxIdleHandshakers
	for range 2 {
		var started, done sync.WaitGroup
		started.Add(n)
		done.Add(n)
		all := make(chan struct{})
		for range n {
			w.run(func() {
				started.Done()
				<-all
				done.Done()
			})
		}
		waited := make(chan struct{})
		go func() { started.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Fatal("not every task started: run waited for a worker")
		}
		close(all)
		done.Wait()
	}
	waitFor(t, func() bool { return w.idle.Load() == maxIdleHandshakers }) // the rest exited
	if idle := w.idle.Load(); idle != maxIdleHandshakers {
		t.Errorf("%d workers wait idle, want %d", idle, maxIdleHandshakers)
	}
}
