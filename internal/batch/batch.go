// Package batch merges concurrent calls into shared batches, leader and
// followers: no goroutine, no timer.
//
// A Group runs at most MaxInFlight batches at once. A call arriving while
// a slot is free and no batch is queued runs at once, alone (Lone, with
// the caller's own context). Any other call queues: it joins the
// last queued batch if that stays within MaxItems items, or starts a new
// batch of which it is the leader. When a batch finishes, its slot goes to
// the oldest queued batch, whose leader runs it in its own goroutine; the
// batch takes the calls that join it until the leader starts it.
//
// Contexts: a batch of several calls runs with
// context.WithoutCancel(leader's context) (bounded by Timeout if set): no
// caller's cancellation fails the others. The leader waits for its batch's
// turn and runs it even if its context ends (the wait is bounded by the
// batches in flight). A follower waits for its batch's answer, or, with
// Abandon, stops waiting when its context ends (its items still go in the
// batch). A queued batch of one call runs like a lone call.
//
// A panic in Run or Lone releases the slot, fails the batch's other
// callers with ErrAborted and goes on in the caller that ran it.
package batch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hubuim/hubuim/internal/config"
)

// ErrAborted answers the callers of a batch whose run panicked.
var ErrAborted = errors.New("batch: shared run aborted")

// Config configures a Group.
type Config[In, Out any] struct {
	// Run runs a batch of several calls: in holds their items in arrival
	// order, each call's contiguous. It must not modify or keep in.
	// Required.
	Run func(ctx context.Context, in []In) (Out, error)
	// Lone runs the items of one call alone. Default: Run.
	Lone func(ctx context.Context, in []In) (Out, error)
	// MaxInFlight bounds the batches running at once. Default: 1.
	MaxInFlight int
	// MaxItems bounds the items of one batch (a call with more items still
	// gets a batch of its own). Default: 0, unbounded.
	MaxItems int
	// Timeout bounds a batch of several calls. Default: 0, none.
	Timeout time.Duration
	// Abandon lets a follower stop waiting when its context ends.
	// Default: false, followers wait for the answer.
	Abandon bool
}

// Group merges concurrent calls into batches, see the package doc.
type Group[In, Out any] struct {
	cfg Config[In, Out]

	mu       sync.Mutex
	inflight int
	queue    []*pending[In, Out]
	granted  int // queue[:granted] have a slot, their leaders are waking up
}

// pending is a queued batch.
type pending[In, Out any] struct {
	in    []In
	calls int
	ready chan struct{} // closed when the batch may run
	done  chan struct{} // closed when out and err are set
	out   Out
	err   error
}

// New returns a Group running batches with cfg.Run.
func New[In, Out any](cfg Config[In, Out]) (*Group[In, Out], error) {
	switch {
	case cfg.Run == nil:
		return nil, config.Errorf("Run", "required")
	case cfg.MaxInFlight < 0:
		return nil, config.Errorf("MaxInFlight", "%d is negative", cfg.MaxInFlight)
	case cfg.MaxItems < 0:
		return nil, config.Errorf("MaxItems", "%d is negative", cfg.MaxItems)
	case cfg.Timeout < 0:
		return nil, config.Errorf("Timeout", "%v is negative", cfg.Timeout)
	}
	if cfg.Lone == nil {
		cfg.Lone = cfg.Run
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1
	}
	return &Group[In, Out]{cfg: cfg}, nil
}

// Do runs in, possibly together with other calls: out is the answer of a
// batch in which in starts at off. out may be shared: read it only.
func (g *Group[In, Out]) Do(ctx context.Context, in []In) (out Out, off int, err error) {
	g.mu.Lock()
	// A call joins a granted batch whose leader is waking up rather than
	// run alone on a free slot: the batch costs one round trip either way.
	if g.inflight < g.cfg.MaxInFlight && len(g.queue) == 0 {
		g.inflight++
		g.mu.Unlock()
		defer g.release()
		out, err = g.cfg.Lone(ctx, in)
		return out, 0, err
	}
	var b *pending[In, Out]
	lead := false
	if n := len(g.queue); n > 0 && (g.cfg.MaxItems == 0 || len(g.queue[n-1].in)+len(in) <= g.cfg.MaxItems) {
		b = g.queue[n-1]
		off = len(b.in)
		b.in = append(b.in, in...) // in was clipped: a follower never writes into the leader's array
	} else {
		// Clipped: a lone queued call runs on the caller's slice, a
		// follower's append copies.
		b = &pending[In, Out]{in: slices.Clip(in), ready: make(chan struct{}), done: make(chan struct{})}
		g.queue = append(g.queue, b)
		lead = true
	}
	b.calls++
	g.mu.Unlock()

	if lead {
		<-b.ready
		g.run(ctx, b)
		return b.out, off, b.err
	}
	var stop <-chan struct{}
	if g.cfg.Abandon {
		stop = ctx.Done()
	}
	select {
	case <-b.done:
		return b.out, off, b.err
	case <-stop:
		return out, 0, ctx.Err()
	}
}

// run takes a granted batch out of the queue, runs it and hands its slot
// on, also if it panics.
func (g *Group[In, Out]) run(ctx context.Context, b *pending[In, Out]) {
	g.mu.Lock()
	i := slices.Index(g.queue[:g.granted], b)
	g.queue = slices.Delete(g.queue, i, i+1)
	g.granted--
	in, calls := b.in, b.calls // no call joins b from now on
	g.mu.Unlock()

	b.err = ErrAborted
	defer g.release()
	defer close(b.done)
	if calls == 1 {
		b.out, b.err = g.cfg.Lone(ctx, in)
		return
	}
	ctx = context.WithoutCancel(ctx)
	if g.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Timeout)
		defer cancel()
	}
	b.out, b.err = g.cfg.Run(ctx, in)
}

// release ends a batch: its slot goes to the oldest queued batch without
// one.
func (g *Group[In, Out]) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.granted == len(g.queue) {
		g.inflight--
		return
	}
	close(g.queue[g.granted].ready)
	g.granted++
}

// Stats is a snapshot of a Group.
type Stats struct {
	InFlight int // batches running
	Batches  int // batches queued
	Calls    int // calls queued
	Items    int // items queued
}

// Stats returns the Group's current state.
func (g *Group[In, Out]) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Stats{InFlight: g.inflight, Batches: len(g.queue)}
	for _, b := range g.queue {
		s.Calls += b.calls
		s.Items += len(b.in)
	}
	return s
}
