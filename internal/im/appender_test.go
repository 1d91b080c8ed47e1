package im

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// fakeBatchStore records AppendTouch calls; gate (if set) holds each call
// until a value is received; fail decides per-message errors.
type fakeBatchStore struct {
	gate    chan struct{}
	entered chan struct{} // receives once per call, before the gate (if set)
	callErr error
	fail    func(m *protocol.Msg) error

	mu        sync.Mutex
	batches   [][]store.AppendItem
	deadlines []time.Time
}

func (f *fakeBatchStore) AppendTouch(ctx context.Context, items []store.AppendItem) ([]store.AppendResult, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	dl, _ := ctx.Deadline()
	f.mu.Lock()
	f.batches = append(f.batches, append([]store.AppendItem(nil), items...))
	f.deadlines = append(f.deadlines, dl)
	f.mu.Unlock()
	if f.callErr != nil {
		return nil, f.callErr
	}
	res := make([]store.AppendResult, len(items))
	for i, it := range items {
		if f.fail != nil {
			if err := f.fail(it.Msg); err != nil {
				res[i].Err = err
				continue
			}
		}
		res[i].Msg = it.Msg
	}
	return res, nil
}

func (f *fakeBatchStore) calls() [][]store.AppendItem {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]store.AppendItem(nil), f.batches...)
}

func (a *appender) queued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queue)
}

// waitQueued polls until n requests are queued.
func waitQueued(tb testing.TB, a *appender, n int) {
	tb.Helper()
	waitfor.Until(tb, 10*time.Second, fmt.Sprintf("%d queued requests", n), func() bool { return a.queued() >= n })
}

type appendOutcome struct {
	msg *protocol.Msg
	dup bool
	err error
}

// appendAsync runs n appends of conv seqs 1..n (the first alone, so that it
// is the one in flight) and returns their outcomes by seq.
func appendAsync(tb testing.TB, a *appender, f *fakeBatchStore, n int, deadline time.Time) []appendOutcome {
	tb.Helper()
	gate := make(chan struct{})
	entered := make(chan struct{}, n)
	f.gate, f.entered = gate, entered
	out := make([]appendOutcome, n)
	var wg sync.WaitGroup
	run := func(i int) {
		defer wg.Done()
		m := &protocol.Msg{ConvId: store.SingleConvID(1, 2), Seq: int64(i + 1), MsgId: int64(i + 1)}
		st, dup, err := a.append(context.Background(), m, []int64{1, 2}, deadline)
		out[i] = appendOutcome{st, dup, err}
	}
	wg.Add(n)
	go run(0)
	// The first append is held in the store; the others queue behind it.
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		tb.Fatal("first append never reached the store")
	}
	for i := 1; i < n; i++ {
		go run(i)
	}
	waitQueued(tb, a, n-1)
	close(gate)
	wg.Wait()
	return out
}

func TestAppenderGroupsQueuedAppends(t *testing.T) {
	const n = 10
	f := &fakeBatchStore{}
	a := newAppender(f, 0, DefaultAppendMaxBatch, 1, nil)
	out := appendAsync(t, a, f, n, time.Now().Add(time.Minute))
	for i, o := range out {
		if o.err != nil || o.dup || o.msg.GetSeq() != int64(i+1) {
			t.Fatalf("append %d: %+v", i, o)
		}
	}
	calls := f.calls()
	if len(calls) != 2 || len(calls[0]) != 1 || len(calls[1]) != n-1 {
		sizes := make([]int, len(calls))
		for i, c := range calls {
			sizes[i] = len(c)
		}
		t.Fatalf("batch sizes %v, want [1 %d]", sizes, n-1)
	}
	for _, it := range calls[1] {
		if len(it.Users) != 2 {
			t.Fatalf("item %d lost its users: %v", it.Msg.GetSeq(), it.Users)
		}
	}
	if a.inflight != 0 || a.queued() != 0 {
		t.Fatalf("after the appends: inflight %d, queued %d", a.inflight, a.queued())
	}
}

func TestAppenderMaxBatch(t *testing.T) {
	const n, maxBatch = 10, 4
	f := &fakeBatchStore{}
	a := newAppender(f, 0, maxBatch, 1, nil)
	appendAsync(t, a, f, n, time.Now().Add(time.Minute))
	total := 0
	for _, c := range f.calls() {
		if len(c) > maxBatch {
			t.Fatalf("batch of %d, max %d", len(c), maxBatch)
		}
		total += len(c)
	}
	if total != n {
		t.Fatalf("%d messages committed, want %d", total, n)
	}
}

func TestAppenderPerMessageOutcomes(t *testing.T) {
	const n = 6
	f := &fakeBatchStore{fail: func(m *protocol.Msg) error {
		if m.GetSeq() == 4 {
			return store.ErrSeqConflict
		}
		return nil
	}}
	a := newAppender(f, 0, DefaultAppendMaxBatch, 1, nil)
	out := appendAsync(t, a, f, n, time.Now().Add(time.Minute))
	for i, o := range out {
		if i == 3 {
			if !errors.Is(o.err, store.ErrSeqConflict) {
				t.Fatalf("append 4: err %v, want ErrSeqConflict", o.err)
			}
			continue
		}
		if o.err != nil || o.msg.GetSeq() != int64(i+1) {
			t.Fatalf("append %d failed with the conflict of another: %+v", i+1, o)
		}
	}
}

func TestAppenderCallErrorFailsTheBatch(t *testing.T) {
	boom := errors.New("boom")
	f := &fakeBatchStore{callErr: boom}
	a := newAppender(f, 0, DefaultAppendMaxBatch, 1, nil)
	for i, o := range appendAsync(t, a, f, 5, time.Now().Add(time.Minute)) {
		if !errors.Is(o.err, boom) || o.msg != nil {
			t.Fatalf("append %d: %+v, want the call's error", i, o)
		}
	}
}

func TestAppenderBatchDeadlineIsTheEarliest(t *testing.T) {
	gate := make(chan struct{})
	f := &fakeBatchStore{gate: gate}
	a := newAppender(f, 0, DefaultAppendMaxBatch, 1, nil)
	far := time.Now().Add(time.Hour)
	near := time.Now().Add(time.Minute)
	expired := time.Now().Add(-time.Second)

	var wg sync.WaitGroup
	res := make([]error, 3)
	send := func(i int, dl time.Time) {
		defer wg.Done()
		m := &protocol.Msg{ConvId: store.GroupConvID(1), Seq: int64(i + 1), MsgId: int64(i + 1)}
		_, _, res[i] = a.append(context.Background(), m, nil, dl)
	}
	wg.Add(1)
	go send(0, far) // held in the store
	waitFirstCall := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		busy := a.inflight == 1
		a.mu.Unlock()
		if busy {
			break
		}
		if time.Now().After(waitFirstCall) {
			t.Fatal("first append never started")
		}
		time.Sleep(time.Millisecond)
	}
	wg.Add(2)
	go send(1, near)
	go send(2, expired)
	waitQueued(t, a, 2)
	close(gate)
	wg.Wait()

	if res[0] != nil || res[1] != nil {
		t.Fatalf("live appends failed: %v, %v", res[0], res[1])
	}
	if !errors.Is(res[2], context.DeadlineExceeded) {
		t.Fatalf("expired append: err %v, want DeadlineExceeded", res[2])
	}
	calls := f.calls()
	if len(calls) != 2 || len(calls[1]) != 1 || calls[1][0].Msg.GetSeq() != 2 {
		t.Fatalf("calls %v: want the expired message left out of the second batch", calls)
	}
	f.mu.Lock()
	dl := f.deadlines[1]
	f.mu.Unlock()
	if !dl.Equal(near) {
		t.Fatalf("second batch deadline %v, want the earliest item's %v", dl, near)
	}
}

func TestAppenderCancelledContext(t *testing.T) {
	a := newAppender(&fakeBatchStore{}, 0, DefaultAppendMaxBatch, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := a.append(ctx, &protocol.Msg{}, nil, time.Now().Add(time.Minute)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want Canceled", err)
	}
}

// TestAppenderConcurrentWithBolt runs many concurrent sends through the
// real store and checks every message and touch landed.
func TestAppenderConcurrentWithBolt(t *testing.T) {
	st, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := newAppender(st, 0, 16, 2, nil)
	const senders, per = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := int64(100 + s)
			conv := store.SingleConvID(1, u)
			for seq := int64(1); seq <= per; seq++ {
				m := &protocol.Msg{ConvId: conv, Seq: seq, MsgId: u*1000 + seq, Sender: 1, To: u,
					ConvType: protocol.ConvType_CONV_TYPE_SINGLE}
				if _, dup, err := a.append(context.Background(), m, []int64{1, u}, time.Now().Add(time.Minute)); err != nil || dup {
					errs <- fmt.Errorf("append %s %d: dup=%v err=%v", conv, seq, dup, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ctx := context.Background()
	for s := range senders {
		u := int64(100 + s)
		for _, user := range []int64{1, u} {
			c, err := st.Conversation(ctx, user, store.SingleConvID(1, u))
			if err != nil || c.LastSeq != per {
				t.Fatalf("user %d conversation: %+v, %v", user, c, err)
			}
		}
	}
}

// nopBatchStore accepts everything.
type nopBatchStore struct{}

func (nopBatchStore) AppendTouch(_ context.Context, items []store.AppendItem) ([]store.AppendResult, error) {
	return make([]store.AppendResult, len(items)), nil
}

func BenchmarkAppender(b *testing.B) {
	a := newAppender(nopBatchStore{}, 0, DefaultAppendMaxBatch, DefaultAppendConcurrency, nil)
	m := &protocol.Msg{ConvId: store.SingleConvID(1, 2), Seq: 1, MsgId: 1}
	users := []int64{1, 2}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := a.append(ctx, m, users, time.Now().Add(time.Minute)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestSendTouchesBothUsersConversation(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	const senders, per = 8, 5
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ack := h.svc.Send(ctx, int64(10+s), "d", single(99, fmt.Sprintf("c-%d-%d", s, i)))
				if ack.Status != protocol.Status_STATUS_OK {
					t.Errorf("send %d/%d: %v %s", s, i, ack.Status, ack.Reason)
				}
			}
		}()
	}
	wg.Wait()
	for s := range senders {
		conv := store.SingleConvID(int64(10+s), 99)
		for _, u := range []int64{int64(10 + s), 99} {
			c, err := h.st.Conversation(ctx, u, conv)
			if err != nil || c.LastSeq < per {
				t.Fatalf("user %d %s: %+v, %v; want last seq >= %d", u, conv, c, err, per)
			}
		}
	}
	// A resend is answered from the dedup record and touches nothing new.
	if ack := h.svc.Send(ctx, 10, "d", single(99, "c-0-0")); ack.Status != protocol.Status_STATUS_OK {
		t.Fatalf("resend: %v", ack.Status)
	}
}

func TestAppendConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{AppendMaxBatch: -1},
		{AppendConcurrency: -1},
		{AppendWindow: -time.Millisecond},
		{AppendWindow: DefaultSettleTime},
		{SettleTime: time.Second, AppendWindow: 500 * time.Millisecond},
	} {
		_, err := NewService(cfg, Deps{Seq: &SeqAllocator{}, Dedup: NewMemoryDedup(0, 0), Store: &store.Bolt{}, IDs: &counterIDs{}, Producer: &recordingProducer{}})
		if err == nil {
			t.Errorf("NewService(%+v) accepted", cfg)
		}
	}
	h := newHarness(t, Config{AppendMaxBatch: store.MaxBatch})
	if got := h.svc.app.maxBatch; got != store.MaxBatch/maxTouchedPerMsg {
		t.Errorf("append max batch %d, want capped at %d", got, store.MaxBatch/maxTouchedPerMsg)
	}
	if got := h.svc.app.concurrency; got != DefaultAppendConcurrency {
		t.Errorf("append concurrency %d, want default %d", got, DefaultAppendConcurrency)
	}
}
