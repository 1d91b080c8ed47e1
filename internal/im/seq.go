// Package im is the reliable-messaging core of logic: it allocates
// per-conversation seq, deduplicates client message ids, stores messages
// before acknowledging them and serves sync (ARCHITECTURE.md "Reliable
// messaging").
package im

import (
	"context"
	"errors"
	"fmt"
)

// DefaultSeqJump is how far past the stored maximum a lost counter is
// re-created. It must exceed the number of seqs that can be allocated but
// not yet stored when the counter is lost (in-flight sends of all logic
// replicas), so a re-created counter never hands out a seq again.
const DefaultSeqJump = 1000

// SeqCounter is the fast, possibly volatile counter behind seq allocation
// (Redis in production, memory in the standalone mode).
type SeqCounter interface {
	// Incr increments the counter of convID and returns the new value; ok is
	// false, and nothing changes, when the counter does not exist.
	Incr(ctx context.Context, convID string) (seq int64, ok bool, err error)
	// InitIncr raises the counter to floor unless it is there or above
	// (creating it if missing), then increments it. Concurrent callers
	// never get the same value.
	InitIncr(ctx context.Context, convID string, floor int64) (int64, error)
}

// MaxSeqer reports the highest stored seq of a conversation (0 if none).
type MaxSeqer interface {
	MaxSeq(ctx context.Context, convID string) (int64, error)
}

// SeqAllocator hands out per-conversation seq that only grows: when the
// counter is missing (Redis restarted or failed over, or the standalone
// process restarted) it is re-created at the stored maximum plus a jump.
type SeqAllocator struct {
	counter SeqCounter
	store   MaxSeqer
	jump    int64
	onJump  func(convID string, from int64)
}

// SeqAllocatorConfig configures a SeqAllocator.
type SeqAllocatorConfig struct {
	// Jump is added to the stored maximum when a counter is re-created.
	// Default DefaultSeqJump.
	Jump int64
	// OnJump, if set, is called when a counter is re-created (for metrics).
	OnJump func(convID string, from int64)
}

// NewSeqAllocator returns an allocator over counter and store.
func NewSeqAllocator(counter SeqCounter, store MaxSeqer, cfg SeqAllocatorConfig) (*SeqAllocator, error) {
	if counter == nil || store == nil {
		return nil, errors.New("im: seq allocator needs a counter and a store")
	}
	if cfg.Jump < 0 {
		return nil, fmt.Errorf("im: seq jump must not be negative, got %d", cfg.Jump)
	}
	if cfg.Jump == 0 {
		cfg.Jump = DefaultSeqJump
	}
	return &SeqAllocator{counter: counter, store: store, jump: cfg.Jump, onJump: cfg.OnJump}, nil
}

// Next allocates the next seq of convID.
func (a *SeqAllocator) Next(ctx context.Context, convID string) (int64, error) {
	seq, ok, err := a.counter.Incr(ctx, convID)
	if err != nil {
		return 0, fmt.Errorf("im: allocate seq: %w", err)
	}
	if ok {
		return seq, nil
	}
	return a.recreate(ctx, convID)
}

// NextAfterConflict allocates a seq after the store already held the
// last one handed out: the counter is behind the store — restored from a
// snapshot, or a replica promoted before it had the latest increments —
// so it is raised past the stored maximum plus the jump, like a missing
// one, instead of handing out the stored seqs (and the holes between
// them) one by one.
func (a *SeqAllocator) NextAfterConflict(ctx context.Context, convID string) (int64, error) {
	return a.recreate(ctx, convID)
}

// recreate raises the missing or stale counter of convID past the stored
// maximum (see jumpFloor) and returns its next seq.
func (a *SeqAllocator) recreate(ctx context.Context, convID string) (int64, error) {
	max, err := a.store.MaxSeq(ctx, convID)
	if err != nil {
		return 0, fmt.Errorf("im: stored max seq: %w", err)
	}
	floor := a.jumpFloor(max)
	seq, err := a.counter.InitIncr(ctx, convID, floor)
	if err != nil {
		return 0, fmt.Errorf("im: re-create seq counter: %w", err)
	}
	if a.onJump != nil && max > 0 {
		a.onJump(convID, max)
	}
	return seq, nil
}

// jumpFloor is where a re-created counter starts. A conversation with
// nothing stored starts at 0 so that seq begins at 1; a seq handed out but
// not yet stored when its counter was lost can then be handed out again, and
// the store rejects the second message with a seq conflict (the sender's
// retry gets a fresh seq). Once anything is stored the counter jumps.
func (a *SeqAllocator) jumpFloor(max int64) int64 {
	if max == 0 {
		return 0
	}
	return max + a.jump
}
