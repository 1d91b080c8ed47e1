package im

import (
	"context"
	"sync"
	"time"
)

// MemoryDedup is an in-process DedupStore (standalone mode). Expired entries
// are dropped lazily and by Sweep.
type MemoryDedup struct {
	mu       sync.Mutex
	m        map[dedupKey]dedupEntry
	window   time.Duration
	claimTTL time.Duration
	now      func() time.Time
}

type dedupKey struct {
	sender int64
	id     string
}

type dedupEntry struct {
	ack     []byte // nil while claimed
	expires time.Time
}

// NewMemoryDedup returns a MemoryDedup; zero durations are defaults.
func NewMemoryDedup(window, claimTTL time.Duration) *MemoryDedup {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	if claimTTL <= 0 {
		claimTTL = DefaultDedupClaimTTL
	}
	return &MemoryDedup{m: make(map[dedupKey]dedupEntry), window: window, claimTTL: claimTTL, now: time.Now}
}

// Claim implements DedupStore.
func (d *MemoryDedup) Claim(_ context.Context, sender int64, id string) ([]byte, DedupState, error) {
	k := dedupKey{sender, id}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.m[k]; ok && now.Before(e.expires) {
		if e.ack == nil {
			return nil, DedupInFlight, nil
		}
		return e.ack, DedupDone, nil
	}
	d.m[k] = dedupEntry{expires: now.Add(d.claimTTL)}
	return nil, DedupClaimed, nil
}

// Finish implements DedupStore.
func (d *MemoryDedup) Finish(_ context.Context, sender int64, id string, ack []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[dedupKey{sender, id}] = dedupEntry{ack: append([]byte(nil), ack...), expires: d.now().Add(d.window)}
	return nil
}

// Abort implements DedupStore.
func (d *MemoryDedup) Abort(_ context.Context, sender int64, id string) error {
	k := dedupKey{sender, id}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.m[k]; ok && e.ack == nil {
		delete(d.m, k)
	}
	return nil
}

// Sweep drops expired entries; the standalone mode calls it periodically.
func (d *MemoryDedup) Sweep() {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, e := range d.m {
		if !now.Before(e.expires) {
			delete(d.m, k)
		}
	}
}
