package im

import (
	"context"
	"sync"

	"github.com/hubuim/hubuim/internal/logic/session"
)

// fanoutLookups bounds the device lookups of one Fanout in flight; the
// lookups of records handled meanwhile (job handles its partitions
// concurrently) are merged into the next one.
const fanoutLookups = 2

// deviceCoalescer merges concurrent Devices lookups into one call of next
// (one Redis pipeline instead of one per record), leader and followers
// like the appender: no goroutine, no timer; a lone lookup runs at once.
// A merged lookup's map is shared by its callers (read only) and may hold
// other callers' users too.
type deviceCoalescer struct {
	next DeviceLookup

	mu       sync.Mutex
	queue    []*deviceReq
	inflight int
}

type deviceReq struct {
	mids []int64
	res  map[int64][]session.Device
	err  error
	done chan int // sigDone or sigLead; buffered 1
}

// Devices implements DeviceLookup.
func (c *deviceCoalescer) Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error) {
	r := &deviceReq{mids: mids, done: make(chan int, 1)}
	c.mu.Lock()
	lead := c.inflight < fanoutLookups
	if lead {
		c.inflight++
	} else {
		c.queue = append(c.queue, r)
	}
	c.mu.Unlock()
	if !lead && <-r.done == sigDone {
		return r.res, r.err
	}
	c.lead(ctx, r)
	return r.res, r.err
}

// lead looks up own's users with every queued request's, hands the result
// over and passes the leadership to the next queued request, if any.
func (c *deviceCoalescer) lead(ctx context.Context, own *deviceReq) {
	c.mu.Lock()
	batch := append([]*deviceReq{own}, c.queue...)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.mu.Unlock()

	if len(batch) == 1 {
		own.res, own.err = c.next.Devices(ctx, own.mids)
	} else {
		seen := make(map[int64]struct{})
		var mids []int64
		for _, r := range batch {
			for _, m := range r.mids {
				if _, ok := seen[m]; !ok {
					seen[m] = struct{}{}
					mids = append(mids, m)
				}
			}
		}
		// The lookup serves the followers too: the leader's cancellation
		// must not fail theirs.
		res, err := c.next.Devices(context.WithoutCancel(ctx), mids)
		for _, r := range batch {
			r.res, r.err = res, err
		}
	}
	for _, r := range batch[1:] {
		r.done <- sigDone
	}

	c.mu.Lock()
	if len(c.queue) > 0 {
		next := c.queue[0]
		rest := copy(c.queue, c.queue[1:])
		c.queue[rest] = nil
		c.queue = c.queue[:rest]
		next.done <- sigLead // the leadership moves; inflight unchanged
	} else {
		c.inflight--
	}
	c.mu.Unlock()
}
