package logic

import (
	"context"
	"time"
)

const (
	// expiredBatch is how many candidates one store call examines; a
	// sweep asks again while the store says there are more.
	expiredBatch = 256
	// maxSweepCalls bounds one sweep (256 × 64 candidates); the rest
	// waits for the next.
	maxSweepCalls = 64
	// sweepCallTimeout bounds one store call and the publication of the
	// offlines it reported, together: once the store forgot a user, its
	// offline is published even while logic stops (so neither runs under
	// the sweep's context), and Close waits at most this long for it.
	sweepCallTimeout = 5 * time.Second
)

// sweepExpired runs a sweep every conn.expiry_sweep until ctx is done. It
// runs even without an OnUserOffline hook: the store's expiry records are
// dropped only by sweeps.
func (l *Logic) sweepExpired(ctx context.Context) {
	t := time.NewTicker(l.cfg.Conn.ExpirySweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.sweepOnce(ctx)
	}
}

// sweepOnce reports, through OnUserOffline, the users whose last session
// expired without a Disconnect (a comet that died cannot send one).
func (l *Logic) sweepOnce(ctx context.Context) {
	for range maxSweepCalls {
		if ctx.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sweepCallTimeout)
		users, more, err := l.store.ExpiredUsers(cctx, expiredBatch)
		for _, u := range users { // reported even with an error: they are forgotten
			if l.userOffline != nil {
				l.userOffline(cctx, u.Session, u.Version)
			}
		}
		cancel()
		l.m.expiredUsers.Add(float64(len(users)))
		if err != nil {
			l.m.expirySweeps.WithLabelValues(resultUnavailable).Inc()
			if ctx.Err() == nil {
				l.log.Warn("logic: expired sessions sweep failed", "err", err)
			}
			return
		}
		if !more {
			break
		}
	}
	l.m.expirySweeps.WithLabelValues(resultOK).Inc()
}
