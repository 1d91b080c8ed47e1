package client

import "time"

// Backoff computes jittered exponential reconnect delays.
type Backoff struct {
	Base   time.Duration // first delay
	Max    time.Duration // cap, also after jitter
	Factor float64       // growth per attempt, >= 1
	Jitter float64       // relative, in [0, 1]
}

// Delay is the wait before retry number attempt (0 for the first retry).
// rnd is a uniform random value in [0, 1); the result is uniform in
// [d(1-Jitter), d(1+Jitter)] where d = min(Base*Factor^attempt, Max), and
// never above Max nor below zero.
func (b Backoff) Delay(attempt int, rnd float64) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	d := float64(b.Base)
	limit := float64(b.Max)
	if limit < d {
		limit = d
	}
	for i := 0; i < attempt && d < limit; i++ {
		d *= b.Factor
	}
	if d > limit {
		d = limit
	}
	if rnd < 0 {
		rnd = 0
	} else if rnd >= 1 {
		rnd = 1
	}
	j := b.Jitter
	if j < 0 {
		j = 0
	} else if j > 1 {
		j = 1
	}
	d *= 1 - j + 2*j*rnd
	if d > limit {
		d = limit
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}
