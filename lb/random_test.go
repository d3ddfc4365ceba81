package lb

import (
	"errors"
	"testing"
)

func TestRandomWeights(t *testing.T) {
	b := mustNew(t, Random, weighted(1, 3), Options{})
	var n [2]int
	for range 40000 {
		n[mustPick(t, b, nil)]++
	}
	if frac := float64(n[1]) / 40000; frac < 0.72 || frac > 0.78 {
		t.Errorf("weight 3 of 4 got %.3f of picks", frac)
	}
	for range 100 {
		if i, _ := b.Pick(nil, func(i int) bool { return i == 0 }); i != 0 {
			t.Fatalf("picked unusable %d", i)
		}
	}
	if _, err := b.Pick(nil, func(int) bool { return false }); !errors.Is(err, ErrNoPeer) {
		t.Errorf("none usable: %v", err)
	}
}

func TestRandomTwo(t *testing.T) {
	for _, m := range []Method{RandomTwo, RandomTwoLeastConn} {
		// Of two different peers the less loaded wins, so the busiest of
		// three never does.
		state := counter{0, 1, 7}
		b := mustNew(t, m, weighted(1, 1, 1), Options{State: state})
		var n [3]int
		for range 3000 {
			n[mustPick(t, b, nil)]++
		}
		if n[2] != 0 || n[0] <= n[1] {
			t.Errorf("%v: picks %v", m, n)
		}
		// Per unit of weight: 4 connections at weight 3 beat 3 at weight 2.
		// (Rarely 21 draws find no second peer and round robin answers.)
		state = counter{3, 4}
		b = mustNew(t, m, weighted(2, 3), Options{State: state})
		ones := 0
		for range 1000 {
			if mustPick(t, b, nil) == 1 {
				ones++
			}
		}
		if ones < 990 {
			t.Errorf("%v weighted: the less loaded peer got %d of 1000", m, ones)
		}
		// One usable peer: no second draw is ever found; after 20 tries it
		// is round robin, which finds it.
		if i, _ := b.Pick(nil, func(i int) bool { return i == 0 }); i != 0 {
			t.Errorf("%v one usable: got %d", m, i)
		}
	}
}
