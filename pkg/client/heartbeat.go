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
	min, max  time.Duration
	step      time.Duration
	growAfter int
	cur       time.Duration
	successes int
}

func newAdaptiveInterval(min, max, step time.Duration, growAfter int) *adaptiveInterval {
	return &adaptiveInterval{min: min, max: max, step: step, growAfter: growAfter, cur: min}
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
// the AuthReply): the client never heartbeats less often than that, even
// when it is below HeartbeatMin.
func (a *adaptiveInterval) capAt(limit time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if limit <= 0 {
		return
	}
	a.max = min(a.max, limit)
	a.min = min(a.min, a.max)
	a.cur = min(a.cur, a.max)
}
