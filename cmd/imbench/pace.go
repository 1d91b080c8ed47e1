package main

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// stampLen is the size of the timestamp header imbench puts at the start of
// every body it sends: send time (unix nanoseconds), then a sequence number.
const stampLen = 16

// errShortStamp: a received body is too short to carry a stamp.
var errShortStamp = errors.New("imbench: body shorter than its stamp")

// putStamp writes the stamp into b[:stampLen].
func putStamp(b []byte, sent time.Time, seq uint64) {
	binary.BigEndian.PutUint64(b, uint64(sent.UnixNano()))
	binary.BigEndian.PutUint64(b[8:], seq)
}

// readStamp decodes the stamp at the start of b.
func readStamp(b []byte) (time.Time, uint64, error) {
	if len(b) < stampLen {
		return time.Time{}, 0, errShortStamp
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))), binary.BigEndian.Uint64(b[8:]), nil
}

// stampedBody is a body of size bytes (at least stampLen) stamped now.
func stampedBody(size int, seq uint64) []byte {
	b := make([]byte, max(size, stampLen))
	putStamp(b, time.Now(), seq)
	return b
}

// paceResult is what pace did.
type paceResult struct {
	Issued  int64         // calls started
	Elapsed time.Duration // from the first call to the return of the last
	Late    int64         // calls started more than lateAfter behind schedule
}

// lateAfter: a call started this long after its scheduled time counts as
// late (the target rate was not sustained).
const lateAfter = 10 * time.Millisecond

// pace calls fn(i) for i = 0, 1, ... at rate calls per second (rate <= 0:
// as fast as the workers go), from workers goroutines, until count calls
// were issued or d elapsed or ctx ended, whichever comes first. Both count
// and d must be positive: every loop is bounded. Calls in flight when d
// ends are waited for (they are bounded by the parent ctx).
//
// The indices called are exactly 0..Issued-1 (unless ctx ends): an index
// is reserved only while d has not elapsed and if it is scheduled before
// d ends, and a reserved index is always called, at its scheduled time. The trackers
// count missing messages over that range, so a reserved index left uncalled
// would be a false loss.
func pace(ctx context.Context, ratePerSec float64, count int64, d time.Duration, workers int, fn func(ctx context.Context, i int64)) paceResult {
	if count <= 0 || d <= 0 {
		return paceResult{}
	}
	workers = max(workers, 1)
	// fn gets the parent ctx: a call in flight when d ends completes.
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()

	var (
		mu     sync.Mutex
		next   int64
		late   int64
		issued atomic.Int64
	)
	start := time.Now()
	deadline, _ := ctx.Deadline()
	interval := time.Duration(0)
	if ratePerSec > 0 {
		interval = time.Duration(float64(time.Second) / ratePerSec)
	}
	// take reserves the next index and its scheduled time.
	take := func() (int64, time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at := start.Add(time.Duration(next) * interval)
		if next >= count || ctx.Err() != nil || at.After(deadline) {
			return 0, time.Time{}, false
		}
		i := next
		next++
		return i, at, true
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for {
				i, at, ok := take()
				if !ok {
					return
				}
				if wait := time.Until(at); wait > 0 {
					timer.Reset(wait)
					select {
					case <-parent.Done():
						return
					case <-timer.C:
					}
				} else if -wait > lateAfter {
					mu.Lock()
					late++
					mu.Unlock()
				}
				issued.Add(1)
				fn(parent, i)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return paceResult{Issued: issued.Load(), Elapsed: time.Since(start), Late: late}
}
