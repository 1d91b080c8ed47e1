package idgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// WorkerLeaser hands out a worker id that no other live generator holds.
type WorkerLeaser interface {
	// Acquire obtains a worker id. lost is closed when the id may no longer
	// be held (lease expired, connection lost past the lease, Release): the
	// generator must stop issuing ids at once. Acquire may be called again
	// after lost is closed.
	Acquire(ctx context.Context) (id int64, lost <-chan struct{}, err error)
	// Release gives the id back (closing lost).
	Release(ctx context.Context) error
}

// ErrHeld is returned by Acquire while the leaser already holds an id.
var ErrHeld = errors.New("idgen: worker id already held; release it first")

// Static is a WorkerLeaser with a fixed id, for the standalone mode (one
// process, nothing to coordinate with).
type Static struct {
	id   int64
	mu   sync.Mutex
	lost chan struct{} // nil when not held
}

// NewStatic returns a leaser that always hands out id.
func NewStatic(id int64) (*Static, error) {
	if id < 0 || id > MaxWorkerID {
		return nil, fmt.Errorf("idgen: worker id %d outside 0..%d", id, MaxWorkerID)
	}
	return &Static{id: id}, nil
}

// Acquire implements WorkerLeaser.
func (s *Static) Acquire(context.Context) (int64, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil {
		return 0, nil, ErrHeld
	}
	s.lost = make(chan struct{})
	return s.id, s.lost, nil
}

// Release implements WorkerLeaser.
func (s *Static) Release(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil {
		close(s.lost)
		s.lost = nil
	}
	return nil
}
