// Package batchtest holds a fake batch run function for tests of
// batch.Group and its users: a run that blocks until the test opens a
// gate, and records what it was called with.
package batchtest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// Gated is a run function (Run) that answers each item doubled once Gate
// is closed. Each call records its batch, sends on Started, waits for
// Gate, then records its context's error. Make one with NewGated.
type Gated struct {
	// Started receives one value per call, before it blocks on Gate
	// (buffered: 64 calls may start unread).
	Started chan struct{}
	// Gate blocks every call until the test closes it.
	Gate chan struct{}
	// Err is returned by every call, with the answer.
	Err error
	// Panics makes a call panic once the gate is open, instead of
	// answering.
	Panics bool

	mu      sync.Mutex
	calls   [][]int
	ctxErrs []error
	running atomic.Int32
	maxRun  atomic.Int32
}

// NewGated returns a Gated whose gate is shut.
func NewGated() *Gated {
	return &Gated{Started: make(chan struct{}, 64), Gate: make(chan struct{})}
}

// Run is the run function: it blocks until Gate is closed, then answers
// each item of in doubled, with g.Err.
func (g *Gated) Run(ctx context.Context, in []int) ([]int, error) {
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for {
		m := g.maxRun.Load()
		if n <= m || g.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	g.mu.Lock()
	g.calls = append(g.calls, slices.Clone(in))
	g.mu.Unlock()
	g.Started <- struct{}{}
	<-g.Gate
	g.mu.Lock()
	g.ctxErrs = append(g.ctxErrs, ctx.Err())
	g.mu.Unlock()
	if g.Panics {
		panic("run failed")
	}
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = 2 * v
	}
	return out, g.Err
}

// Calls returns the batches Run was called with, in the order the calls
// began.
func (g *Gated) Calls() [][]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// NCalls is how many calls Run has begun.
func (g *Gated) NCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}

// CtxErrs returns the error of each call's context as the gate let it
// through, in the order the calls passed the gate.
func (g *Gated) CtxErrs() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.ctxErrs)
}

// MaxRunning is the most calls that were in Run at once.
func (g *Gated) MaxRunning() int { return int(g.maxRun.Load()) }
