package discovery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Static is an in-process Registry for tests and the standalone mode.
// Register, Update and Close of a Registration and Set change what
// watchers see at once; nothing expires. Lists are sorted by ID.
type Static struct {
	mu       sync.Mutex
	closed   bool
	services map[string]map[string]Instance // service → id → instance
	watchers map[string]map[*staticWatch]struct{}
	done     chan struct{} // closed at Close
	wg       sync.WaitGroup
}

var _ Registry = (*Static)(nil)

type staticWatch struct {
	out chan []Instance
}

// NewStatic returns a Static registry holding instances (by their Service
// and ID; a later one with the same Service and ID replaces an earlier).
func NewStatic(instances ...Instance) *Static {
	s := &Static{
		services: make(map[string]map[string]Instance),
		watchers: make(map[string]map[*staticWatch]struct{}),
		done:     make(chan struct{}),
	}
	for _, ins := range instances {
		s.put(ins)
	}
	return s
}

// put stores a copy of ins; s.mu held (or s not shared yet).
func (s *Static) put(ins Instance) {
	m := s.services[ins.Service]
	if m == nil {
		m = make(map[string]Instance)
		s.services[ins.Service] = m
	}
	m[ins.ID] = cloneInstance(ins)
}

func cloneInstance(ins Instance) Instance {
	ins.Addrs = maps.Clone(ins.Addrs)
	return ins
}

// list returns a sorted copy of service's instances; s.mu held.
func (s *Static) list(service string) []Instance {
	m := s.services[service]
	list := make([]Instance, 0, len(m))
	for _, ins := range m {
		list = append(list, cloneInstance(ins))
	}
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return list
}

// notify sends the new list of service to its watchers; s.mu held, which
// makes every send and the close of a watcher's channel mutually
// exclusive. A list the watcher has not taken yet is replaced.
func (s *Static) notify(service string) {
	for w := range s.watchers[service] {
		list := s.list(service)
		select {
		case w.out <- list:
			continue
		default:
		}
		select {
		case <-w.out:
		default:
		}
		w.out <- list
	}
}

// Set replaces the whole list of service (including instances added by
// Register: a later Update or Close of such a registration acts on the
// entry with its ID). Instances are stored under service whatever their
// Service field says.
func (s *Static) Set(service string, list []Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.services, service)
	for _, ins := range list {
		ins.Service = service
		s.put(ins)
	}
	if len(s.services[service]) == 0 {
		delete(s.services, service)
	}
	if !s.closed {
		s.notify(service)
	}
}

// Register adds ins (replacing one with the same Service and ID).
func (s *Static) Register(_ context.Context, ins Instance) (Registration, error) {
	if err := checkInstance(ins); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.put(ins)
	s.notify(ins.Service)
	return &staticRegistration{s: s, service: ins.Service, id: ins.ID}, nil
}

// Watch returns the current list of service at once and every new list
// after a change. The channel is closed when ctx is done or s is closed.
func (s *Static) Watch(ctx context.Context, service string) (<-chan []Instance, error) {
	if err := checkName("service", service); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	w := &staticWatch{out: make(chan []Instance, 1)}
	w.out <- s.list(service)
	ws := s.watchers[service]
	if ws == nil {
		ws = make(map[*staticWatch]struct{})
		s.watchers[service] = ws
	}
	ws[w] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers[service], w)
		if len(s.watchers[service]) == 0 {
			delete(s.watchers, service)
		}
		close(w.out)
	}()
	return w.out, nil
}

// Close closes every watcher's channel. Registrations stay readable but
// every later call returns ErrClosed.
func (s *Static) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

type staticRegistration struct {
	s       *Static
	service string
	id      string
	closed  bool // guarded by s.mu
}

func (r *staticRegistration) Update(_ context.Context, ins Instance) error {
	if ins.Service == "" {
		ins.Service = r.service
	}
	if ins.ID == "" {
		ins.ID = r.id
	}
	if ins.Service != r.service || ins.ID != r.id {
		return fmt.Errorf("%w: update of %s/%s names %s/%s", ErrInvalidInstance, r.service, r.id, ins.Service, ins.ID)
	}
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed || r.s.closed {
		return ErrClosed
	}
	r.s.put(ins)
	r.s.notify(r.service)
	return nil
}

func (r *staticRegistration) Close(context.Context) error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	if r.s.closed {
		return nil
	}
	if m := r.s.services[r.service]; m != nil {
		delete(m, r.id)
		if len(m) == 0 {
			delete(r.s.services, r.service)
		}
	}
	r.s.notify(r.service)
	return nil
}
