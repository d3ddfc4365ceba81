package proxy

import (
	"sync/atomic"
	"time"
)

// handshakers run TLS handshakes, crypto/tls's blocking code, one a
// goroutine. A goroutine that finished one waits a little for the next,
// so that its stack, which crypto/tls grew to tens of kilobytes, serves
// again instead of a new goroutine growing its own (a copy at each
// doubling). At most maxIdleHandshakers wait; the rest exit.
var handshakers workPool

const (
	maxIdleHandshakers = 32
	handshakerIdle     = 2 * time.Second
)

type workPool struct {
	tasks chan func() // unbuffered: a send succeeds only into a waiting worker
	idle  atomic.Int32
}

func init() { handshakers.tasks = make(chan func()) }

// run runs f on a waiting worker, or on a new one.
func (w *workPool) run(f func()) {
	select {
	case w.tasks <- f:
	default:
		go w.work(f)
	}
}

func (w *workPool) work(f func()) {
	var t *time.Timer
	for {
		f()
		if w.idle.Add(1) > maxIdleHandshakers {
			w.idle.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(handshakerIdle)
		} else {
			t.Reset(handshakerIdle)
		}
		select {
		case f = <-w.tasks:
			w.idle.Add(-1)
		case <-t.C:
			w.idle.Add(-1)
			return
		}
	}
}
