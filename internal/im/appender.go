package im

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of the appender's part of Config.
const (
	// DefaultAppendMaxBatch bounds the messages of one group commit.
	DefaultAppendMaxBatch = 256
	// DefaultAppendConcurrency bounds the group commits in flight. One:
	// the sends that arrive during a commit share the next one, so each
	// commit carries more messages and PostgreSQL does less work per
	// message — with PostgreSQL on the same 2 cores (imbench chat, 225
	// senders) 1 sustained ~10% more than 4 with a lower ACK p99, also at
	// 1,000 msg/s (24 vs 42 ms). Raise it when PostgreSQL is far away (a
	// round trip that dominates the commit).
	DefaultAppendConcurrency = 1
)

// errBatchResults: the store returned a result count unlike the batch's.
var errBatchResults = errors.New("im: store returned a wrong number of append results")

// batchStore is what the appender needs from the store.
type batchStore interface {
	AppendTouch(ctx context.Context, items []store.AppendItem) ([]store.AppendResult, error)
}

// appender group-commits concurrent appends: each message and the users
// whose conversation index it touches go to the store in one AppendTouch
// call shared with the appends waiting at the same time.
//
// No goroutine is started; callers do the work. At most concurrency
// callers lead a commit at once; the others queue. A leader optionally
// waits window for more messages (0: none; under load the queue fills
// while the commits in flight run, which is the batching), commits its own
// message with up to maxBatch-1 queued ones, hands every result over and
// passes its leadership to the first queued caller, if any.
type appender struct {
	st          batchStore
	window      time.Duration
	maxBatch    int
	concurrency int
	m           *Metrics

	mu       sync.Mutex
	queue    []*appendReq
	inflight int // leaderships held, <= concurrency

	reqs    sync.Pool // *appendReq
	batches sync.Pool // *appendBatch
}

// Signals on appendReq.done.
const (
	sigDone = iota // res and err are set
	sigLead        // lead the next commit
)

type appendReq struct {
	item     store.AppendItem
	deadline time.Time // the store attempt must end by then
	res      store.AppendResult
	err      error
	done     chan int // sigDone or sigLead; buffered 1
}

// appendBatch is a leader's scratch space, reused.
type appendBatch struct {
	reqs  []*appendReq
	items []store.AppendItem
}

func newAppender(st batchStore, window time.Duration, maxBatch, concurrency int, m *Metrics) *appender {
	a := &appender{st: st, window: window, maxBatch: maxBatch, concurrency: concurrency, m: m}
	a.reqs.New = func() any { return &appendReq{done: make(chan int, 1)} }
	a.batches.New = func() any {
		return &appendBatch{reqs: make([]*appendReq, 0, maxBatch), items: make([]store.AppendItem, 0, maxBatch)}
	}
	return a
}

// append stores m and touches users with its seq when it is inserted. The
// store attempt ends by deadline (the batch's deadline is its earliest).
// ctx only bounds the wait to enter the queue: once queued, the message may
// be committed with others, so its outcome is always awaited (at most
// until deadline).
func (a *appender) append(ctx context.Context, m *protocol.Msg, users []int64, deadline time.Time) (*protocol.Msg, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	r := a.reqs.Get().(*appendReq)
	r.item = store.AppendItem{Msg: m, Users: users}
	r.deadline = deadline

	a.mu.Lock()
	lead := a.inflight < a.concurrency
	if lead {
		a.inflight++
	} else {
		a.queue = append(a.queue, r)
	}
	a.mu.Unlock()
	if !lead {
		lead = <-r.done == sigLead // else the result is in
	}
	if lead {
		a.lead(ctx, r)
		<-r.done // sigDone: lead committed r
	}
	res, err := r.res, r.err
	*r = appendReq{done: r.done}
	a.reqs.Put(r)
	if err != nil {
		return nil, false, err
	}
	return res.Msg, res.Dup, res.Err
}

// lead commits own and the head of the queue in one batch, then passes the
// leadership to the next queued request or gives it up. A request given
// the leadership leaves the queue at once, so nobody else signals it.
func (a *appender) lead(ctx context.Context, own *appendReq) {
	if a.window > 0 {
		a.mu.Lock()
		full := len(a.queue)+1 >= a.maxBatch
		a.mu.Unlock()
		if !full {
			time.Sleep(a.window)
		}
	}
	b := a.batches.Get().(*appendBatch)
	b.reqs = append(b.reqs[:0], own)
	a.mu.Lock()
	n := min(len(a.queue), a.maxBatch-1)
	b.reqs = append(b.reqs, a.queue[:n]...)
	rest := copy(a.queue, a.queue[n:])
	clear(a.queue[rest:])
	a.queue = a.queue[:rest]
	a.mu.Unlock()

	a.commit(ctx, b)
	clear(b.reqs[:cap(b.reqs)])
	b.reqs = b.reqs[:0]
	a.batches.Put(b)

	a.mu.Lock()
	if len(a.queue) > 0 {
		next := a.queue[0]
		rest := copy(a.queue, a.queue[1:])
		a.queue[rest] = nil
		a.queue = a.queue[:rest]
		next.done <- sigLead // the leadership moves; inflight unchanged
	} else {
		a.inflight--
	}
	a.mu.Unlock()
}

// commit stores b in one AppendTouch call bounded by the earliest deadline
// of its messages; messages already past their deadline are failed without
// being sent. Every request of b gets sigDone.
func (a *appender) commit(ctx context.Context, b *appendBatch) {
	now := time.Now()
	var earliest time.Time
	b.items = b.items[:0]
	live := b.reqs[:0] // filtered in place
	for _, r := range b.reqs {
		if !r.deadline.After(now) {
			r.err = context.DeadlineExceeded
			r.done <- sigDone
			continue
		}
		if earliest.IsZero() || r.deadline.Before(earliest) {
			earliest = r.deadline
		}
		b.items = append(b.items, r.item)
		live = append(live, r)
	}
	b.reqs = live
	if len(live) == 0 {
		return
	}
	a.m.observeAppendBatch(len(live))
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), earliest)
	res, err := a.st.AppendTouch(cctx, b.items)
	cancel()
	if err == nil && len(res) != len(live) {
		err = errBatchResults
	}
	for i, r := range live {
		if err != nil {
			r.err = err
		} else {
			r.res = res[i]
		}
		r.done <- sigDone
	}
	clear(b.items)
	b.items = b.items[:0]
}
