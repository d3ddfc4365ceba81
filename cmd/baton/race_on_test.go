//go:build race

package main

// raceEnabled: the race detector slows every goroutine down several times;
// the upgrade load test then runs a smaller configuration (HANDOFF.md §4).
const raceEnabled = true
