package store

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hubuim/hubuim/internal/batch"
)

// Delivered marks coalescing (PostgreSQL).
const (
	// deliveredConcurrency bounds the delivered-mark statements in flight;
	// calls arriving meanwhile queue and go in the next statement.
	deliveredConcurrency = 2
	// deliveredMaxBatch bounds the marks of one statement.
	deliveredMaxBatch = 512
	// deliveredTimeout bounds one shared statement (its callers' contexts
	// cannot cancel it: it carries the others' marks too).
	deliveredTimeout = 10 * time.Second
)

// sqlSetDeliveredBatch raises many delivered marks in one statement (one
// commit). The marks are unique by key and sorted, so concurrent statements
// lock their rows in the same order.
const sqlSetDeliveredBatch = `INSERT INTO delivered (user_id, device_key, conv_id, seq)
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
	ON CONFLICT (user_id, device_key, conv_id) DO UPDATE SET seq = excluded.seq
	WHERE delivered.seq < excluded.seq`

type deliveredMark struct {
	user   int64
	device string
	conv   string
	seq    int64
}

// deliveredBatcher group-commits concurrent SetDelivered calls (leader and
// followers, batch.Group): at most deliveredConcurrency statements run at
// once; calls arriving meanwhile queue and the first of them leads the
// next statement for the queue (at most deliveredMaxBatch marks). No
// goroutine, no timer: a lone call runs at once. Every call waits for its
// statement's result.
type deliveredBatcher struct {
	exec func(ctx context.Context, users []int64, devices, convs []string, seqs []int64) error

	once  sync.Once
	group *batch.Group[deliveredMark, struct{}]
	err   error // of batch.New; never set with the constant config
}

func (b *deliveredBatcher) init() {
	b.group, b.err = batch.New(batch.Config[deliveredMark, struct{}]{
		Run:         b.runBatch,
		MaxInFlight: deliveredConcurrency,
		MaxItems:    deliveredMaxBatch,
	})
}

func (b *deliveredBatcher) set(ctx context.Context, m deliveredMark) error {
	if b.once.Do(b.init); b.err != nil {
		return b.err
	}
	_, _, err := b.group.Do(ctx, []deliveredMark{m})
	return err
}

func (b *deliveredBatcher) runBatch(ctx context.Context, marks []deliveredMark) (struct{}, error) {
	return struct{}{}, b.run(ctx, marks)
}

// run keeps the highest seq per key, sorts the keys and sends them in one
// statement.
func (b *deliveredBatcher) run(ctx context.Context, in []deliveredMark) error {
	marks := in
	if len(in) > 1 {
		marks = slices.Clone(in) // in is the group's: not sorted in place
	}
	slices.SortFunc(marks, func(x, y deliveredMark) int {
		return cmp.Or(cmp.Compare(x.user, y.user), cmp.Compare(x.device, y.device), cmp.Compare(x.conv, y.conv), cmp.Compare(y.seq, x.seq))
	})
	marks = slices.CompactFunc(marks, func(x, y deliveredMark) bool { // keeps the first: the highest seq
		return x.user == y.user && x.device == y.device && x.conv == y.conv
	})
	users := make([]int64, len(marks))
	devices := make([]string, len(marks))
	convs := make([]string, len(marks))
	seqs := make([]int64, len(marks))
	for i, m := range marks {
		users[i], devices[i], convs[i], seqs[i] = m.user, m.device, m.conv, m.seq
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliveredTimeout)
	defer cancel()
	return b.exec(ctx, users, devices, convs, seqs)
}
