package logic

import (
	"context"
	"time"
)

// expiredBatch is how many expired users one store call reports; a sweep
// asks again while batches come back full.
const expiredBatch = 256

// sweepExpired reports, every conn.expiry_sweep until ctx is done, the
// users whose last session expired without a Disconnect (a comet that
// died cannot send one) through OnUserOffline.
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

// sweepOnce drains what the store reports now.
func (l *Logic) sweepOnce(ctx context.Context) {
	for ctx.Err() == nil {
		users, err := l.store.ExpiredUsers(ctx, expiredBatch)
		for _, u := range users { // reported even with an error: they are forgotten
			l.userOffline(ctx, u.Session, u.Version)
		}
		l.m.expiredUsers.Add(float64(len(users)))
		if err != nil {
			l.m.expirySweeps.WithLabelValues(resultUnavailable).Inc()
			if ctx.Err() == nil {
				l.log.Warn("logic: expired sessions sweep failed", "err", err)
			}
			return
		}
		if len(users) < expiredBatch {
			l.m.expirySweeps.WithLabelValues(resultOK).Inc()
			return
		}
	}
}
