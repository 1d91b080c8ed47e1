package discovery

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoffFactor is the growth of the retry delay after each failure.
const backoffFactor = 2

// backoff is an exponential delay with full jitter in [cur/2, cur].
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(minDelay, maxDelay time.Duration) *backoff {
	return &backoff{min: minDelay, max: maxDelay, cur: minDelay}
}

func (b *backoff) reset() { b.cur = b.min }

// next returns the delay to wait now and grows the following one.
func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*backoffFactor, b.max)
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + rand.Int64N(half+1))
	}
	return d
}

// wait sleeps for the next delay; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
