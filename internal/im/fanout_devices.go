package im

import (
	"context"
	"sync"

	"github.com/hubuim/hubuim/internal/batch"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// fanoutLookups bounds the device lookups of one Fanout in flight; the
// lookups of records handled meanwhile (job handles its partitions
// concurrently) are merged into the next one.
const fanoutLookups = 2

// deviceCoalescer merges concurrent Devices lookups into one call of next
// (one Redis pipeline instead of one per record), leader and followers
// (batch.Group): no goroutine, no timer; a lone lookup runs at once with
// its caller's context, a merged one with the leader's context without its
// cancellation (it serves the followers too); followers wait for the
// answer. A merged lookup's map is shared by its callers (read only) and
// may hold other callers' users too.
type deviceCoalescer struct {
	next DeviceLookup

	once  sync.Once
	group *batch.Group[int64, map[int64][]session.Device]
	err   error // of batch.New; never set with the constant config
}

func (c *deviceCoalescer) init() {
	c.group, c.err = batch.New(batch.Config[int64, map[int64][]session.Device]{
		Run:         c.merged,
		Lone:        c.next.Devices,
		MaxInFlight: fanoutLookups,
	})
}

// Devices implements DeviceLookup.
func (c *deviceCoalescer) Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error) {
	if c.once.Do(c.init); c.err != nil {
		return nil, c.err
	}
	res, _, err := c.group.Do(ctx, mids)
	return res, err
}

// merged looks up the users of several callers, each once.
func (c *deviceCoalescer) merged(ctx context.Context, all []int64) (map[int64][]session.Device, error) {
	seen := make(map[int64]struct{}, len(all))
	mids := make([]int64, 0, len(all))
	for _, m := range all {
		if _, ok := seen[m]; !ok {
			seen[m] = struct{}{}
			mids = append(mids, m)
		}
	}
	return c.next.Devices(ctx, mids)
}
