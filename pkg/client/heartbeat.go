package client

import (
	"sync"
	"time"
)

// adaptiveInterval is the heartbeat interval: it starts at min, grows by
// step after growAfter answered heartbeats in a row and shrinks by step
// after a failure, always within [min, max]. It survives reconnects, so a
// network that drops idle connections settles on the largest interval it
// tolerates.
type adaptiveInterval struct {
	mu        sync.Mutex
	min, max  time.Duration // the bounds in force (the configured ones, capped)
	cfgMin    time.Duration // the configured bounds
	cfgMax    time.Duration
	step      time.Duration
	growAfter int
	cur       time.Duration
	successes int
}

// minServerHeartbeat is the shortest interval a server's hint can impose
// (unless HeartbeatMin is shorter): a hint of 1 ms, or one meant in
// seconds read as milliseconds, would otherwise make the client flood.
const minServerHeartbeat = time.Second

func newAdaptiveInterval(min, max, step time.Duration, growAfter int) *adaptiveInterval {
	return &adaptiveInterval{min: min, max: max, cfgMin: min, cfgMax: max, step: step, growAfter: growAfter, cur: min}
}

// reset restores the configured bounds for a new connection, before the
// caps of its server are applied: a cap belongs to the server that asked
// for it. The interval learned so far is kept within the bounds.
func (a *adaptiveInterval) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.min, a.max = a.cfgMin, a.cfgMax
	a.cur = min(max(a.cur, a.min), a.max)
}

func (a *adaptiveInterval) get() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

func (a *adaptiveInterval) success() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.successes++
	if a.growAfter > 0 && a.successes >= a.growAfter {
		a.successes = 0
		a.cur = min(a.cur+a.step, a.max)
	}
}

func (a *adaptiveInterval) failure() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.successes = 0
	a.cur = max(a.cur-a.step, a.min)
}

// capAt bounds the interval by what the server asks for (heartbeat_ms in
// the AuthReply or the node list): the client never heartbeats less often
// than that, even when it is below HeartbeatMin — but not more often than
// minServerHeartbeat (or HeartbeatMin, if shorter).
func (a *adaptiveInterval) capAt(limit time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if limit <= 0 {
		return
	}
	limit = max(limit, min(minServerHeartbeat, a.cfgMin))
	a.max = min(a.max, limit)
	a.min = min(a.min, a.max)
	a.cur = min(a.cur, a.max)
}
