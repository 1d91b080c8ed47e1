package session

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// sweepEvery bounds how often Memory drops expired entries; lookups filter
// them by deadline anyway, so this only bounds memory.
const sweepEvery = time.Second

type memRoute struct {
	s        Session
	deadline time.Time
	removed  bool // a tombstone: s was removed (until deadline)
}

// live reports whether r routes its key at now.
func (r memRoute) live(now time.Time) bool { return !r.removed && now.Before(r.deadline) }

type memDevice struct {
	d        Device
	deadline time.Time
	removed  bool // a tombstone of d's connection (until deadline)
}

// live reports whether d is a live device at now.
func (d memDevice) live(now time.Time) bool { return !d.removed && now.Before(d.deadline) }

// owned reports whether d is s's connection's.
func (d memDevice) owned(s Session) bool { return d.d.Server == s.Server && d.d.ConnID == s.ConnID }

type memRooms struct {
	counts   map[string]int32
	deadline time.Time
}

// Memory is an in-process Store for the standalone mode and tests. Entries
// expire in real time: a lookup never returns an entry past its deadline.
// Like Redis, it keeps a removed route's tombstone for removedTTL and a
// user's expired device entries for expiryGrace (for ExpiredUsers).
type Memory struct {
	now func() time.Time

	mu        sync.Mutex
	routes    map[string]memRoute            // key → route
	devices   map[int64]map[string]memDevice // mid → key → device
	rooms     map[string]memRooms            // server → counts
	nextSweep time.Time
	version   int64 // the last transition version given out
	// expiring indexes users by the second (unix, floor) of a device
	// deadline written for them (Add, Heartbeat), so that ExpiredUsers
	// looks only at users whose deadline may have passed, not at every
	// user (as the Redis store's x:{...} sets); indexedAt is each user's
	// second there, raised only (one entry per user).
	expiring  map[int64]map[int64]struct{}
	indexedAt map[int64]int64
}

// nextVersion returns a transition version: the clock in microseconds,
// raised past the last one. m.mu is held.
func (m *Memory) nextVersion(now time.Time) int64 {
	m.version = max(now.UnixMicro(), m.version+1)
	return m.version
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{
		now:       time.Now,
		routes:    make(map[string]memRoute),
		devices:   make(map[int64]map[string]memDevice),
		expiring:  make(map[int64]map[int64]struct{}),
		indexedAt: make(map[int64]int64),
		rooms:     make(map[string]memRooms),
	}
}

// sweep drops expired entries at most once per sweepEvery. m.mu is held.
func (m *Memory) sweep(now time.Time) {
	if now.Before(m.nextSweep) {
		return
	}
	m.nextSweep = now.Add(sweepEvery)
	for k, r := range m.routes {
		if !now.Before(r.deadline) {
			delete(m.routes, k)
		}
	}
	for mid, devs := range m.devices {
		for k, d := range devs {
			if !now.Before(d.deadline.Add(expiryGrace)) {
				delete(devs, k)
			}
		}
		if len(devs) == 0 {
			delete(m.devices, mid)
		}
	}
	for srv, r := range m.rooms {
		if !now.Before(r.deadline) {
			delete(m.rooms, srv)
		}
	}
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Add implements Store.
func (m *Memory) Add(ctx context.Context, s Session, ttl time.Duration) (AddResult, error) {
	if err := checkSession(s, ttl); err != nil {
		return AddResult{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return AddResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	var res AddResult
	if r, ok := m.routes[s.Key]; ok && r.live(now) && !r.s.Owner(s) {
		res.Prev, res.Replaced = r.s, true
	}
	if m.liveDevices(s.Mid, now) == 0 {
		res.First, res.Version = true, m.nextVersion(now)
	}
	m.routes[s.Key] = memRoute{s: s, deadline: now.Add(ttl)}
	m.putDevice(s, now, now.Add(ttl))
	return res, nil
}

// liveDevices counts mid's device entries alive at now.
func (m *Memory) liveDevices(mid int64, now time.Time) int {
	n := 0
	for _, d := range m.devices[mid] {
		if d.live(now) {
			n++
		}
	}
	return n
}

// putDevice writes s's device entry and prunes the user's expired ones
// and old tombstones (as Redis's putUser does).
func (m *Memory) putDevice(s Session, now, deadline time.Time) {
	devs := m.devices[s.Mid]
	if devs == nil {
		devs = make(map[string]memDevice)
		m.devices[s.Mid] = devs
	}
	for k, d := range devs {
		if !now.Before(d.deadline) {
			delete(devs, k)
		}
	}
	devs[s.Key] = memDevice{d: Device{Key: s.Key, Server: s.Server, ConnID: s.ConnID, Platform: s.Platform}, deadline: deadline}
	m.index(s.Mid, deadline)
}

// index files mid under the second of deadline, unless it is filed at
// that second or a later one. m.mu is held.
func (m *Memory) index(mid int64, deadline time.Time) {
	sec := deadline.Unix()
	if old, ok := m.indexedAt[mid]; ok {
		if old >= sec {
			return
		}
		m.unindex(mid, old)
	}
	m.indexedAt[mid] = sec
	set := m.expiring[sec]
	if set == nil {
		set = make(map[int64]struct{})
		m.expiring[sec] = set
	}
	set[mid] = struct{}{}
}

// Heartbeat implements Store.
func (m *Memory) Heartbeat(ctx context.Context, s Session, ttl time.Duration) (HeartbeatResult, error) {
	if err := checkSession(s, ttl); err != nil {
		return HeartbeatResult{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return HeartbeatResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	if r, ok := m.routes[s.Key]; ok && now.Before(r.deadline) {
		if r.removed && r.s.Owner(s) {
			return HeartbeatResult{}, nil // removed from s: a heartbeat sent before
		}
		if !r.removed && !r.s.Owner(s) {
			return HeartbeatResult{}, nil // owned by another connection
		}
	}
	m.routes[s.Key] = memRoute{s: s, deadline: now.Add(ttl)}
	res := HeartbeatResult{Owner: true}
	if d, ok := m.devices[s.Mid][s.Key]; ok && now.Before(d.deadline) {
		if d.removed && d.owned(s) {
			return res, nil // s's tombstone: a Remove ran after the route check
		}
		if !d.removed && !d.owned(s) {
			return res, nil // the user's entry belongs to a newer connection
		}
	}
	if m.liveDevices(s.Mid, now) == 0 {
		res.First, res.Version = true, m.nextVersion(now)
	}
	m.putDevice(s, now, now.Add(ttl))
	return res, nil
}

// Remove implements Store.
func (m *Memory) Remove(ctx context.Context, s Session) (RemoveResult, error) {
	if s.Key == "" || s.Server == "" {
		return RemoveResult{}, fmt.Errorf("%w: empty key or server", ErrInvalid)
	}
	if err := ctxErr(ctx); err != nil {
		return RemoveResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var res RemoveResult
	if r, ok := m.routes[s.Key]; !ok || !r.live(now) || r.s.Owner(s) {
		res.Removed = ok && r.live(now)
		m.routes[s.Key] = memRoute{s: s, deadline: now.Add(removedTTL), removed: true}
	}
	devs := m.devices[s.Mid]
	d, ok := devs[s.Key]
	if ok && !d.owned(s) {
		return res, nil // another connection's entry
	}
	if devs == nil {
		devs = make(map[string]memDevice)
		m.devices[s.Mid] = devs
	}
	tomb := memDevice{d: Device{Key: s.Key, Server: s.Server, ConnID: s.ConnID, Platform: s.Platform},
		deadline: now.Add(removedTTL), removed: true}
	devs[s.Key] = tomb
	if !ok || d.removed {
		return res, nil // nothing of the connection was left
	}
	if m.liveDevices(s.Mid, now) == 0 {
		// The offline is this one: expired entries go with it; other
		// connections' tombstones stay until their time.
		res.Last, res.Version = true, m.nextVersion(now)
		for k, d := range devs {
			if !d.removed || !now.Before(d.deadline) {
				delete(devs, k)
			}
		}
	}
	return res, nil
}

// ExpiredUsers implements Store.
func (m *Memory) ExpiredUsers(ctx context.Context, limit int) ([]Expired, bool, error) {
	if limit <= 0 {
		return nil, false, fmt.Errorf("%w: limit must be positive", ErrInvalid)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []Expired
	examined := 0
	for sec, set := range m.expiring {
		if sec > now.Unix() {
			continue // also the seconds filed below while iterating
		}
		for mid := range set {
			if live := m.liveUntil(mid, now); !live.IsZero() {
				if live.Unix() > sec {
					m.index(mid, live) // moves it (the write that raised it was not indexed)
				}
				continue // or it expires later in this second: stays
			}
			if examined == limit {
				return out, true, nil
			}
			examined++
			m.unindex(mid, sec)
			if u, ok := m.expireUser(mid, now); ok {
				out = append(out, u)
			}
		}
	}
	return out, false, nil
}

// unindex removes mid from the second sec. m.mu is held.
func (m *Memory) unindex(mid, sec int64) {
	if set := m.expiring[sec]; set != nil {
		delete(set, mid)
		if len(set) == 0 {
			delete(m.expiring, sec)
		}
	}
	delete(m.indexedAt, mid)
}

// liveUntil is the latest deadline of mid's live devices (zero: none).
// m.mu is held.
func (m *Memory) liveUntil(mid int64, now time.Time) time.Time {
	var until time.Time
	for _, d := range m.devices[mid] {
		if d.live(now) && d.deadline.After(until) {
			until = d.deadline
		}
	}
	return until
}

// expireUser reports mid, which has no live device, when it has expired
// ones, and deletes them. m.mu is held.
func (m *Memory) expireUser(mid int64, now time.Time) (Expired, bool) {
	devs := m.devices[mid]
	var last memDevice
	found := false
	for k, d := range devs {
		if d.removed {
			continue
		}
		if !found || d.deadline.After(last.deadline) {
			last, found = d, true
		}
		delete(devs, k) // expired: reported below
	}
	if len(devs) == 0 {
		delete(m.devices, mid)
	}
	if !found {
		return Expired{}, false
	}
	return Expired{Session: Session{Key: last.d.Key, Mid: mid, Server: last.d.Server, ConnID: last.d.ConnID, Platform: last.d.Platform},
		Version: m.nextVersion(now)}, true
}

// Servers implements Store.
func (m *Memory) Servers(ctx context.Context, keys []string) ([]string, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, k := range keys {
		if r, ok := m.routes[k]; ok && r.live(now) {
			out[i] = r.s.Server
		}
	}
	return out, nil
}

// Devices implements Store.
func (m *Memory) Devices(ctx context.Context, mids []int64) (map[int64][]Device, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	out := make(map[int64][]Device, len(mids))
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, mid := range mids {
		for _, d := range m.devices[mid] {
			if d.live(now) {
				out[mid] = append(out[mid], d.d)
			}
		}
	}
	return out, nil
}

// SetRoomCounts implements Store.
func (m *Memory) SetRoomCounts(ctx context.Context, server string, counts map[string]int32, ttl time.Duration) error {
	if server == "" || ttl <= 0 {
		return fmt.Errorf("%w: empty server or non-positive ttl", ErrInvalid)
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	cp := make(map[string]int32, len(counts))
	for r, c := range counts {
		if c > 0 {
			cp[r] = c
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	m.rooms[server] = memRooms{counts: cp, deadline: now.Add(ttl)}
	return nil
}

// RoomCounts implements Store.
func (m *Memory) RoomCounts(ctx context.Context) (map[string]int32, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]int32)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, r := range m.rooms {
		if !now.Before(r.deadline) {
			continue
		}
		for room, c := range r.counts {
			out[room] += c
		}
	}
	return out, nil
}
