package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"
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

// errDeliveredLead tells a queued call that it leads the next statement.
var errDeliveredLead = errors.New("store: lead the next delivered statement")

type deliveredMark struct {
	user   int64
	device string
	conv   string
	seq    int64
}

type deliveredCall struct {
	mark deliveredMark
	done chan error // the result, or errDeliveredLead; buffered 1
}

// deliveredBatcher group-commits concurrent SetDelivered calls: at most
// deliveredConcurrency statements run at once; calls arriving meanwhile
// queue and the first of them leads the next statement for the queue. No
// goroutine, no timer: a lone call runs at once.
type deliveredBatcher struct {
	exec func(ctx context.Context, users []int64, devices, convs []string, seqs []int64) error

	mu       sync.Mutex
	queue    []*deliveredCall
	inflight int
}

func (b *deliveredBatcher) set(ctx context.Context, m deliveredMark) error {
	c := &deliveredCall{mark: m, done: make(chan error, 1)}
	b.mu.Lock()
	lead := b.inflight < deliveredConcurrency
	if lead {
		b.inflight++
	} else {
		b.queue = append(b.queue, c)
	}
	b.mu.Unlock()
	if !lead {
		if err := <-c.done; !errors.Is(err, errDeliveredLead) {
			return err
		}
	}
	return b.lead(ctx, c)
}

// lead runs own with the head of the queue, then passes the leadership on.
func (b *deliveredBatcher) lead(ctx context.Context, own *deliveredCall) error {
	b.mu.Lock()
	n := min(len(b.queue), deliveredMaxBatch-1)
	batch := append([]*deliveredCall{own}, b.queue[:n]...)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.mu.Unlock()

	err := b.run(ctx, batch)
	for _, c := range batch[1:] {
		c.done <- err
	}

	b.mu.Lock()
	if len(b.queue) > 0 {
		next := b.queue[0]
		rest := copy(b.queue, b.queue[1:])
		b.queue[rest] = nil
		b.queue = b.queue[:rest]
		next.done <- errDeliveredLead // inflight unchanged
	} else {
		b.inflight--
	}
	b.mu.Unlock()
	return err
}

// run keeps the highest seq per key, sorts the keys and sends them in one
// statement.
func (b *deliveredBatcher) run(ctx context.Context, batch []*deliveredCall) error {
	marks := make([]deliveredMark, len(batch))
	for i, c := range batch {
		marks[i] = c.mark
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
