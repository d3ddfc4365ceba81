package main

import (
	"strings"
	"sync"

	"github.com/batonproxy/baton/internal/errlog"
)

// reloadQueue runs the reloads that SIGHUP asks for on a goroutine of its
// own, so that the signal loop never waits for one: a slow reload (a huge
// include, a resolver that does not answer) used to keep TERM, QUIT and USR1
// waiting until it ended (issue 12). A HUP that comes while a reload runs
// asks for one more after it, which reads the file as it is by then; however
// many come, they make one.
type reloadQueue struct {
	kick chan struct{} // capacity 1: a reload asked for and not yet started
}

func newReloadQueue() *reloadQueue {
	return &reloadQueue{kick: make(chan struct{}, 1)}
}

// request asks for a reload and returns at once.
func (q *reloadQueue) request() {
	select {
	case q.kick <- struct{}{}:
	default: // one is asked for already; it will read the latest file
	}
}

// run does the reloads asked for, one at a time, until stop is closed, and
// logs each outcome. A reload under way when stop closes is not waited for.
func (q *reloadQueue) run(stop <-chan struct{}, reload func() (string, error), file string, log *errlog.Logger) {
	for {
		select {
		case <-stop:
			return
		case <-q.kick:
		}
		report, err := reload()
		if err != nil {
			log.Logf(errlog.LevelEmerg, "reload refused, the running configuration stays: %v", err)
			continue
		}
		log.Logf(errlog.LevelNotice, "reloaded %s: %s", file, strings.ReplaceAll(strings.TrimSpace(report), "\n", "; "))
	}
}

// oneReload makes reload run one at a time whoever asks, SIGHUP or the
// control socket, so that a reload that read the file earlier never applies
// after one that read it later.
func oneReload(reload func() (string, error)) func() (string, error) {
	var mu sync.Mutex
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		testHoldReload()
		return reload()
	}
}

// testHoldReload runs before each reload: a no-op in baton, a hook in the
// tests (hooks_test.go).
var testHoldReload = func() {}
