package proxy

// timer is what a loop's timer heap knows of a session, TCP or UDP: it
// expires at lastActive+timeout, in loop.now units. Deadlines are lazy
// (loop.schedule): activity only moves lastActive.
type timer struct {
	lastActive int64
	timeout    int64
	heapAt     int64 // deadline of this entry in the heap
	heapIdx    int   // index in loop.timers; -1 when not in the heap
}

func (t *timer) tm() *timer { return t }

// timed is a session in a loop's timer heap.
type timed interface {
	tm() *timer
	expire() // its deadline passed with no activity
}

// timerHeap is a binary min-heap of sessions by heapAt, each knowing its own
// index (heapIdx, -1 when absent) so that a finished session leaves at once.
type timerHeap []timed

func (h timerHeap) less(i, j int) bool { return h[i].tm().heapAt < h[j].tm().heapAt }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].tm().heapIdx = i
	h[j].tm().heapIdx = j
}

func (h *timerHeap) push(s timed) {
	t := s.tm()
	t.heapIdx = len(*h)
	*h = append(*h, s)
	h.up(t.heapIdx)
}

func (h *timerHeap) remove(s timed) {
	t := s.tm()
	i := t.heapIdx
	if i < 0 {
		return
	}
	n := len(*h) - 1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	t.heapIdx = -1
	if i != n {
		h.fix(i)
	}
}

func (h timerHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h timerHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h timerHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}
