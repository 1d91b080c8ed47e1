// Package timer is a hashed timing wheel for connection deadlines
// (handshake and heartbeat timeouts). One goroutine per wheel advances it;
// entries are intrusive (embedded in the connection) so that setting,
// resetting and removing a deadline never allocates.
//
// Precision is one tick: an entry set for d fires between d and d+tick
// after Set. Entries far in the future stay in their slot across rounds and
// are skipped until their tick comes, so any duration works with any
// number of slots.
package timer

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Defaults used when Config fields are zero.
const (
	DefaultTick  = 100 * time.Millisecond
	DefaultSlots = 4096
)

// ErrConfig is wrapped by errors New returns for a bad Config.
var ErrConfig = errors.New("timer: bad config")

// Expirer is told that its deadline passed. Expire is called from the
// wheel's goroutine without any wheel lock held; it must not block.
type Expirer interface {
	Expire()
}

// Entry is one deadline. Embed it in the owning struct and call Init once.
// An Entry belongs to at most one wheel at a time.
type Entry struct {
	prev, next *Entry
	expire     int64 // tick at which the entry fires
	owner      Expirer
}

// Init binds the entry to the owner told when it expires.
func (e *Entry) Init(owner Expirer) { e.owner = owner }

// Config configures a Wheel. The zero value is valid.
type Config struct {
	// Tick is the wheel's resolution. Default 100ms.
	Tick time.Duration
	// Slots is the number of slots. Default 4096 (with the default tick,
	// deadlines up to ~410s never wait a round).
	Slots int
}

// Wheel is a timing wheel. Its methods are safe for concurrent use.
type Wheel struct {
	tick  time.Duration
	mu    sync.Mutex
	slots []Entry // sentinel heads of circular lists
	now   int64   // current tick
	n     int     // entries linked
	fired []*Entry
}

// New returns a wheel; Run advances it.
func New(cfg Config) (*Wheel, error) {
	if cfg.Tick < 0 {
		return nil, errors.Join(ErrConfig, errors.New("Tick must not be negative"))
	}
	if cfg.Slots < 0 {
		return nil, errors.Join(ErrConfig, errors.New("slots must not be negative"))
	}
	if cfg.Tick == 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Slots == 0 {
		cfg.Slots = DefaultSlots
	}
	w := &Wheel{tick: cfg.Tick, slots: make([]Entry, cfg.Slots)}
	for i := range w.slots {
		h := &w.slots[i]
		h.prev, h.next = h, h
	}
	return w, nil
}

// Tick returns the wheel's resolution.
func (w *Wheel) Tick() time.Duration { return w.tick }

// Len returns the number of pending entries.
func (w *Wheel) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Set (re)schedules e to expire after d. A pending e is moved.
func (w *Wheel) Set(e *Entry, d time.Duration) {
	ticks := int64((d + w.tick - 1) / w.tick)
	if ticks < 1 {
		ticks = 1
	}
	w.mu.Lock()
	if e.next != nil {
		w.unlink(e)
	}
	e.expire = w.now + ticks
	h := &w.slots[e.expire%int64(len(w.slots))]
	e.prev, e.next = h.prev, h
	h.prev.next = e
	h.prev = e
	w.n++
	w.mu.Unlock()
}

// Remove cancels e. Removing an entry that is not pending is a no-op.
func (w *Wheel) Remove(e *Entry) {
	w.mu.Lock()
	if e.next != nil {
		w.unlink(e)
	}
	w.mu.Unlock()
}

func (w *Wheel) unlink(e *Entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
	w.n--
}

// Advance moves the wheel one tick and fires the entries due. Run calls it
// once per tick; tests may call it directly instead of running the wheel.
func (w *Wheel) Advance() {
	w.mu.Lock()
	w.now++
	h := &w.slots[w.now%int64(len(w.slots))]
	for e := h.next; e != h; {
		next := e.next
		if e.expire <= w.now {
			w.unlink(e)
			w.fired = append(w.fired, e)
		}
		e = next
	}
	w.fire()
}

// ExpireAll fires every pending entry now (used to force connections
// closed at the end of a shutdown).
func (w *Wheel) ExpireAll() {
	w.mu.Lock()
	for i := range w.slots {
		h := &w.slots[i]
		for e := h.next; e != h; {
			next := e.next
			w.unlink(e)
			w.fired = append(w.fired, e)
			e = next
		}
	}
	w.fire()
}

// fire is called with w.mu held and releases it. An entry re-Set between
// the unlock and its Expire call still gets that Expire: the owner was late
// by a whole timeout anyway.
func (w *Wheel) fire() {
	fired := w.fired
	w.fired = nil
	w.mu.Unlock()
	for i, e := range fired {
		e.owner.Expire()
		fired[i] = nil
	}
	w.mu.Lock()
	if w.fired == nil {
		w.fired = fired[:0]
	}
	w.mu.Unlock()
}

// Run advances the wheel every tick until ctx is done.
func (w *Wheel) Run(ctx context.Context) {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Advance()
		}
	}
}
