package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// Presence defaults.
const (
	// DefaultPresenceTTL is how long a presence subscription lasts unless
	// renewed (a client re-subscribes on every connection).
	DefaultPresenceTTL = 24 * time.Hour
	// MaxPresenceTargets bounds the users of one subscribe or query.
	MaxPresenceTargets = 500
)

// PresenceStore keeps who subscribed to whose presence.
type PresenceStore interface {
	// Subscribe adds subscriber to the watchers of each target for ttl.
	Subscribe(ctx context.Context, subscriber int64, targets []int64, ttl time.Duration) error
	// Unsubscribe removes subscriber from the watchers of each target.
	Unsubscribe(ctx context.Context, subscriber int64, targets []int64) error
	// Subscribers returns the watchers of target.
	Subscribers(ctx context.Context, target int64) ([]int64, error)
}

// Presence turns sessions coming and going into PresenceEvents (op 29) for
// the users who subscribed: online when a user's first device connects,
// offline when its last one leaves.
type Presence struct {
	store   PresenceStore
	devices DeviceLookup
	svc     *Service
	ttl     time.Duration
	log     *slog.Logger
}

// NewPresence returns presence over st; events are published through svc.
func NewPresence(st PresenceStore, devices DeviceLookup, svc *Service, ttl time.Duration) (*Presence, error) {
	if st == nil || devices == nil || svc == nil {
		return nil, errors.New("im: presence needs a store, a device lookup and the IM service")
	}
	if ttl <= 0 {
		ttl = DefaultPresenceTTL
	}
	return &Presence{store: st, devices: devices, svc: svc, ttl: ttl, log: svc.log}, nil
}

// UserOnline is logic's OnUserOnline hook: s is its user's first device.
func (p *Presence) UserOnline(ctx context.Context, s session.Session, version int64) {
	p.changed(ctx, s, true, version)
}

// UserOffline is logic's OnUserOffline hook: s was its user's last device.
func (p *Presence) UserOffline(ctx context.Context, s session.Session, version int64) {
	p.changed(ctx, s, false, version)
}

// changed publishes the user's new state to its subscribers. Whether s
// was the first or last device was decided by the session store with its
// write: a count of the devices read afterwards saw both of two devices
// connecting at once (no event) or neither of two leaving (two events).
// The store's version of the transition goes with the event: events of
// one user decided by different logics can arrive out of order, and
// clients keep the latest.
func (p *Presence) changed(ctx context.Context, s session.Session, online bool, version int64) {
	if s.Mid <= 0 {
		return
	}
	subs, err := p.store.Subscribers(ctx, s.Mid)
	if err != nil || len(subs) == 0 {
		if err != nil {
			p.log.Warn("im: presence subscribers", "err", err)
		}
		return // nobody asked
	}
	ev := &protocol.PresenceEvent{User: s.Mid, Online: online, Platform: s.Platform, Time: p.svc.deps.Now().UnixMilli(), Version: version}
	p.svc.publishKeyed(ctx, "presence:"+strconv.FormatInt(s.Mid, 10),
		&logicpb.MsgEvent{Kind: logicpb.MsgEvent_PRESENCE, Presence: ev, Users: subs})
}

// PresenceStatus is one user's current state.
type PresenceStatus struct {
	User      int64    `json:"user"`
	Online    bool     `json:"online"`
	Platforms []string `json:"platforms,omitempty"`
}

// Subscribe subscribes user to targets and returns their current state.
func (p *Presence) Subscribe(ctx context.Context, user int64, targets []int64) ([]PresenceStatus, error) {
	if err := checkTargets(targets); err != nil {
		return nil, err
	}
	if err := p.store.Subscribe(ctx, user, targets, p.ttl); err != nil {
		return nil, fmt.Errorf("presence subscribe: %w", err)
	}
	return p.Status(ctx, targets)
}

// Unsubscribe stops user's subscriptions to targets.
func (p *Presence) Unsubscribe(ctx context.Context, user int64, targets []int64) error {
	if err := checkTargets(targets); err != nil {
		return err
	}
	if err := p.store.Unsubscribe(ctx, user, targets); err != nil {
		return fmt.Errorf("presence unsubscribe: %w", err)
	}
	return nil
}

// Status returns whether each target is online now.
func (p *Presence) Status(ctx context.Context, targets []int64) ([]PresenceStatus, error) {
	if err := checkTargets(targets); err != nil {
		return nil, err
	}
	devs, err := p.devices.Devices(ctx, targets)
	if err != nil {
		return nil, fmt.Errorf("presence devices: %w", err)
	}
	out := make([]PresenceStatus, 0, len(targets))
	for _, u := range targets {
		st := PresenceStatus{User: u, Online: len(devs[u]) > 0}
		for _, d := range devs[u] {
			st.Platforms = append(st.Platforms, d.Platform)
		}
		out = append(out, st)
	}
	return out, nil
}

func checkTargets(targets []int64) error {
	if len(targets) == 0 || len(targets) > MaxPresenceTargets {
		return errStatus(protocol.Status_STATUS_BAD_REQUEST, fmt.Sprintf("give 1 to %d users", MaxPresenceTargets))
	}
	for _, u := range targets {
		if u <= 0 {
			return errStatus(protocol.Status_STATUS_BAD_REQUEST, "user ids must be positive")
		}
	}
	return nil
}

// MemoryPresence is an in-process PresenceStore (standalone mode).
type MemoryPresence struct {
	mu  sync.Mutex
	m   map[int64]map[int64]time.Time // target -> subscriber -> expiry
	now func() time.Time
}

// NewMemoryPresence returns an empty store.
func NewMemoryPresence() *MemoryPresence {
	return &MemoryPresence{m: map[int64]map[int64]time.Time{}, now: time.Now}
}

// Subscribe implements PresenceStore.
func (s *MemoryPresence) Subscribe(_ context.Context, sub int64, targets []int64, ttl time.Duration) error {
	exp := s.now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range targets {
		if s.m[t] == nil {
			s.m[t] = map[int64]time.Time{}
		}
		s.m[t][sub] = exp
	}
	return nil
}

// Unsubscribe implements PresenceStore.
func (s *MemoryPresence) Unsubscribe(_ context.Context, sub int64, targets []int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range targets {
		delete(s.m[t], sub)
		if len(s.m[t]) == 0 {
			delete(s.m, t)
		}
	}
	return nil
}

// Subscribers implements PresenceStore; expired subscriptions are dropped.
func (s *MemoryPresence) Subscribers(_ context.Context, target int64) ([]int64, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for sub, exp := range s.m[target] {
		if now.Before(exp) {
			out = append(out, sub)
		} else {
			delete(s.m[target], sub)
		}
	}
	return out, nil
}
