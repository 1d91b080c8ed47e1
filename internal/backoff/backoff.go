// Package backoff is the exponential retry delay of HubuIM's reconnect
// loops: it doubles after each failure up to a bound, with full jitter in
// [d/2, d], and starts over after a success.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// factor is the growth of the delay after each failure.
const factor = 2

// Backoff is an exponential delay between Min and Max. Not safe for
// concurrent use: one per retry loop.
type Backoff struct {
	min, max, cur time.Duration
}

// New returns a Backoff starting at minDelay, growing to maxDelay.
func New(minDelay, maxDelay time.Duration) *Backoff {
	return &Backoff{min: minDelay, max: maxDelay, cur: minDelay}
}

// Reset starts over at the minimum delay (after a success).
func (b *Backoff) Reset() { b.cur = b.min }

// Next returns the delay to wait now and grows the following one.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*factor, b.max)
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + rand.Int64N(half+1))
	}
	return d
}

// Wait sleeps for the next delay; false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
