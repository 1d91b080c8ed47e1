package im

import (
	"context"
	"sync"
)

// MemorySeqCounter keeps seq counters in process memory (standalone mode).
// They are lost on restart, which the SeqAllocator turns into a jump past
// the stored maximum.
type MemorySeqCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

// NewMemorySeqCounter returns an empty counter set.
func NewMemorySeqCounter() *MemorySeqCounter {
	return &MemorySeqCounter{m: make(map[string]int64)}
}

// Incr implements SeqCounter.
func (c *MemorySeqCounter) Incr(_ context.Context, convID string) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[convID]
	if !ok {
		return 0, false, nil
	}
	v++
	c.m[convID] = v
	return v, true, nil
}

// InitIncr implements SeqCounter.
func (c *MemorySeqCounter) InitIncr(_ context.Context, convID string, floor int64) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[convID]
	if !ok || v < floor {
		v = floor
	}
	v++
	c.m[convID] = v
	return v, nil
}

// Forget drops every counter, as a Redis restart would (tests).
func (c *MemorySeqCounter) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}
