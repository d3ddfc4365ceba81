package proxy

// timerHeap is a binary min-heap of sessions by heapAt, each knowing its own
// index (heapIdx, -1 when absent) so that a finished session leaves at once.
type timerHeap []*session

func (h timerHeap) less(i, j int) bool { return h[i].heapAt < h[j].heapAt }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *timerHeap) push(s *session) {
	s.heapIdx = len(*h)
	*h = append(*h, s)
	h.up(s.heapIdx)
}

func (h *timerHeap) remove(s *session) {
	i := s.heapIdx
	if i < 0 {
		return
	}
	n := len(*h) - 1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	s.heapIdx = -1
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
