// Package mqtest is the conformance suite every mq implementation passes:
// per-key order, at-least-once redelivery on handler errors, commit after
// handle, deferred acknowledgements (out of order acks commit only the
// acknowledged prefix; unacknowledged records are redelivered to the next
// consumer), partitions split inside a group, clear errors after close, and
// a prompt stop on context cancellation.
package mqtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// Backend is one fresh queue, with one topic, for one test.
type Backend struct {
	Producer mq.Producer
	// NewConsumer returns a new member of group consuming Topic. The
	// backend closes it when the test ends.
	NewConsumer func(t testing.TB, group string) mq.Consumer
	Topic       string
	Partitions  int
	// Kill makes the queue unavailable: stops the broker or closes the
	// in-process queue.
	Kill func()
	// Timeout bounds anything that needs a group join or rebalance.
	Timeout time.Duration
}

// Run runs the suite; newBackend is called once per subtest.
func Run(t *testing.T, newBackend func(t *testing.T) *Backend) {
	t.Run("PerKeyOrder", func(t *testing.T) { testPerKeyOrder(t, newBackend(t)) })
	t.Run("RedeliverOnError", func(t *testing.T) { testRedeliver(t, newBackend(t)) })
	t.Run("CommitAfterHandle", func(t *testing.T) { testCommitAfterHandle(t, newBackend(t)) })
	t.Run("DeferredAckOutOfOrder", func(t *testing.T) { testAckOutOfOrder(t, newBackend(t)) })
	t.Run("UnackedRedelivered", func(t *testing.T) { testUnackedRedelivered(t, newBackend(t)) })
	t.Run("GroupSplitsPartitions", func(t *testing.T) { testGroupSplit(t, newBackend(t)) })
	t.Run("ClosedErrors", func(t *testing.T) { testClosed(t, newBackend(t)) })
	t.Run("CancelStopsRun", func(t *testing.T) { testCancel(t, newBackend(t)) })
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	waitfor.Until(tb, timeout, fmt.Sprintf(format, args...), cond)
}

// record is one handled message: key and sequence number (value "key:seq").
type record struct {
	key       string
	seq       int
	partition int32
}

// collector records what a handler saw, in order.
type collector struct {
	mu   sync.Mutex
	recs []record
}

func (c *collector) add(m *mq.Message) record {
	key, seqStr, _ := strings.Cut(string(m.Value), ":")
	seq, _ := strconv.Atoi(seqStr)
	r := record{key: key, seq: seq, partition: m.Partition}
	c.mu.Lock()
	c.recs = append(c.recs, r)
	c.mu.Unlock()
	return r
}

func (c *collector) snapshot() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record(nil), c.recs...)
}

func (c *collector) seqs(key string) []int {
	var out []int
	for _, r := range c.snapshot() {
		if r.key == key {
			out = append(out, r.seq)
		}
	}
	return out
}

func (c *collector) handler(m *mq.Message) error { c.add(m); return nil }

func publish(tb testing.TB, b *Backend, key string, seq int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), b.Timeout)
	defer cancel()
	if err := b.Producer.Publish(ctx, b.Topic, []byte(key), []byte(key+":"+strconv.Itoa(seq))); err != nil {
		tb.Fatalf("publish %s:%d: %v", key, seq, err)
	}
}

// run starts c.Run in the background; the returned channel gets its result.
// The consumer is stopped (and waited for) when the test ends.
func run(tb testing.TB, c mq.Consumer, h func(ctx context.Context, m *mq.Message) error) (cancel func(), done <-chan error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		ch <- c.Run(ctx, h)
	}()
	tb.Cleanup(func() {
		cancel()
		_ = c.Close()
		<-exited
	})
	return cancel, ch
}

func wantSeq(tb testing.TB, key string, got []int, from, to int) {
	tb.Helper()
	if len(got) != to-from {
		tb.Fatalf("key %s: got %d records %v, want seq %d..%d", key, len(got), got, from, to-1)
	}
	for i, s := range got {
		if s != from+i {
			tb.Fatalf("key %s: got %v, want seq %d..%d in order", key, got, from, to-1)
		}
	}
}

func testPerKeyOrder(t *testing.T, b *Backend) {
	const keys, perKey = 8, 40
	var col collector
	run(t, b.NewConsumer(t, "order"), func(_ context.Context, m *mq.Message) error { return col.handler(m) })
	for i := range perKey {
		for k := range keys {
			publish(t, b, "k"+strconv.Itoa(k), i)
		}
	}
	Eventually(t, b.Timeout, func() bool { return len(col.snapshot()) >= keys*perKey }, "want %d records, got %d", keys*perKey, len(col.snapshot()))
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		wantSeq(t, key, col.seqs(key), 0, perKey)
	}
	// One key, one partition.
	part := map[string]int32{}
	for _, r := range col.snapshot() {
		if p, ok := part[r.key]; ok && p != r.partition {
			t.Fatalf("key %s in partitions %d and %d", r.key, p, r.partition)
		}
		part[r.key] = r.partition
	}
}

func testRedeliver(t *testing.T, b *Backend) {
	const n, failAt, failures = 10, 3, 2
	var (
		ok       collector
		mu       sync.Mutex
		attempts int
	)
	errBoom := errors.New("boom")
	run(t, b.NewConsumer(t, "redeliver"), func(_ context.Context, m *mq.Message) error {
		if string(m.Value) == "k:"+strconv.Itoa(failAt) {
			mu.Lock()
			attempts++
			a := attempts
			mu.Unlock()
			if a <= failures {
				return errBoom
			}
		}
		return ok.handler(m)
	})
	for i := range n {
		publish(t, b, "k", i)
	}
	Eventually(t, b.Timeout, func() bool { return len(ok.seqs("k")) >= n }, "want %d handled, got %v", n, ok.seqs("k"))
	got := ok.seqs("k")
	// At least once: records handled before the failure may come again
	// (only if their commit was lost); but nothing after the failed record
	// may be handled before it, and everything arrives.
	first := map[int]bool{}
	var order []int
	for _, s := range got {
		if !first[s] {
			first[s] = true
			order = append(order, s)
		}
	}
	wantSeq(t, "k", order, 0, n)
	mu.Lock()
	defer mu.Unlock()
	if attempts != failures+1 {
		t.Fatalf("failed record attempted %d times, want %d", attempts, failures+1)
	}
}

func testCommitAfterHandle(t *testing.T, b *Backend) {
	const n, stopAt = 10, 5
	var a collector
	var mu sync.Mutex
	blocked := 0
	ca := b.NewConsumer(t, "commit")
	_, doneA := run(t, ca, func(ctx context.Context, m *mq.Message) error {
		r := a.add(m)
		if r.seq < stopAt {
			return nil
		}
		mu.Lock()
		blocked++
		mu.Unlock()
		<-ctx.Done() // never handled: must not be committed
		return ctx.Err()
	})
	for i := range n {
		publish(t, b, "k", i)
	}
	Eventually(t, b.Timeout, func() bool { mu.Lock(); defer mu.Unlock(); return blocked > 0 }, "consumer A never reached seq %d: %v", stopAt, a.seqs("k"))
	if err := ca.Close(); err != nil {
		t.Fatalf("close A: %v", err)
	}
	select {
	case err := <-doneA:
		if !errors.Is(err, mq.ErrClosed) {
			t.Fatalf("Run after Close = %v, want ErrClosed", err)
		}
	case <-time.After(b.Timeout):
		t.Fatal("Run did not return after Close")
	}

	var bcol collector
	run(t, b.NewConsumer(t, "commit"), func(_ context.Context, m *mq.Message) error { return bcol.handler(m) })
	Eventually(t, b.Timeout, func() bool { return len(bcol.seqs("k")) >= n-stopAt }, "consumer B: want seq %d..%d, got %v", stopAt, n-1, bcol.seqs("k"))
	wantSeq(t, "k", bcol.seqs("k"), stopAt, n)
}

func testGroupSplit(t *testing.T, b *Backend) {
	if b.Partitions < 2 {
		t.Skip("needs at least 2 partitions")
	}
	var ca, cb collector
	run(t, b.NewConsumer(t, "split"), func(_ context.Context, m *mq.Message) error { return ca.handler(m) })
	run(t, b.NewConsumer(t, "split"), func(_ context.Context, m *mq.Message) error { return cb.handler(m) })

	const keysPerRound = 32
	published := 0
	round := 0
	deadline := time.Now().Add(b.Timeout)
	for len(ca.snapshot()) == 0 || len(cb.snapshot()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("both members never got records: A=%d B=%d", len(ca.snapshot()), len(cb.snapshot()))
		}
		for k := range keysPerRound {
			publish(t, b, "r"+strconv.Itoa(round)+"k"+strconv.Itoa(k), 0)
			published++
		}
		round++
		time.Sleep(100 * time.Millisecond)
	}
	// The group is settled: a final round must be split by partition.
	na, nb := len(ca.snapshot()), len(cb.snapshot())
	for k := range keysPerRound {
		publish(t, b, "final"+strconv.Itoa(k), 0)
		published++
	}
	Eventually(t, b.Timeout, func() bool {
		seen := map[string]bool{}
		for _, r := range append(ca.snapshot(), cb.snapshot()...) {
			seen[r.key] = true
		}
		return len(seen) == published
	}, "not every record was handled")
	owner := map[int32]string{}
	for name, recs := range map[string][]record{"A": ca.snapshot()[na:], "B": cb.snapshot()[nb:]} {
		for _, r := range recs {
			if !strings.HasPrefix(r.key, "final") {
				continue
			}
			if o, ok := owner[r.partition]; ok && o != name {
				t.Fatalf("partition %d handled by both members", r.partition)
			}
			owner[r.partition] = name
		}
	}
}

func testClosed(t *testing.T, b *Backend) {
	// A closed consumer: Run returns ErrClosed, promptly.
	c := b.NewConsumer(t, "closed")
	_, done := run(t, c, func(context.Context, *mq.Message) error { return nil })
	if err := c.Close(); err != nil {
		t.Fatalf("consumer close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, mq.ErrClosed) {
			t.Fatalf("Run after Close = %v, want ErrClosed", err)
		}
	case <-time.After(b.Timeout):
		t.Fatal("Run did not return after Close")
	}
	if err := c.Run(context.Background(), func(context.Context, *mq.Message) error { return nil }); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("Run on a closed consumer = %v, want ErrClosed", err)
	}

	// A dead queue: Publish fails (not hangs).
	publish(t, b, "k", 0)
	b.Kill()
	res := make(chan error, 1)
	go func() { res <- b.Producer.Publish(context.Background(), b.Topic, []byte("k"), []byte("k:1")) }()
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("Publish to a dead queue succeeded")
		}
	case <-time.After(b.Timeout):
		t.Fatal("Publish to a dead queue did not return")
	}

	// A closed producer: ErrClosed.
	if err := b.Producer.Close(); err != nil {
		t.Logf("producer close after kill: %v", err)
	}
	if err := b.Producer.Publish(context.Background(), b.Topic, []byte("k"), []byte("k:2")); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
}

func testCancel(t *testing.T, b *Backend) {
	var col collector
	cancel, done := run(t, b.NewConsumer(t, "cancel"), func(_ context.Context, m *mq.Message) error { return col.handler(m) })
	publish(t, b, "k", 0)
	Eventually(t, b.Timeout, func() bool { return len(col.snapshot()) > 0 }, "record not handled")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(b.Timeout):
		t.Fatal("Run did not return after cancel")
	}
}

// acks keeps the Acks of deferred records by sequence number.
type acks struct {
	mu sync.Mutex
	m  map[int]mq.Ack
}

// handler defers every record and keeps its Ack.
func (a *acks) handler(col *collector) func(context.Context, *mq.Message) error {
	return func(_ context.Context, m *mq.Message) error {
		r := col.add(m)
		ack := m.Defer()
		a.mu.Lock()
		if a.m == nil {
			a.m = make(map[int]mq.Ack)
		}
		a.m[r.seq] = ack
		a.mu.Unlock()
		return nil
	}
}

func (a *acks) done(seqs ...int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range seqs {
		a.m[s].Done()
	}
}

// stop closes c and waits for its Run to return.
func stop(tb testing.TB, b *Backend, c mq.Consumer, done <-chan error) {
	tb.Helper()
	if err := c.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
	select {
	case <-done:
	case <-time.After(b.Timeout):
		tb.Fatal("Run did not return after Close")
	}
}

func testAckOutOfOrder(t *testing.T, b *Backend) {
	const n = 6
	// A defers everything and acknowledges 0, 1, 3 and 5, out of order and
	// some twice: only 0 and 1 form an acknowledged prefix.
	var colA collector
	var acksA acks
	ca := b.NewConsumer(t, "ackorder")
	_, doneA := run(t, ca, acksA.handler(&colA))
	for i := range n {
		publish(t, b, "k", i)
	}
	Eventually(t, b.Timeout, func() bool { return len(colA.seqs("k")) >= n }, "consumer A: want %d records, got %v", n, colA.seqs("k"))
	wantSeq(t, "k", colA.seqs("k"), 0, n)
	acksA.done(3, 1, 5, 0, 1, 3)
	stop(t, b, ca, doneA)
	acksA.done(2, 4) // after the claim ended: void

	// B starts after the prefix: 2..5 again. It acknowledges them in
	// reverse order, which commits everything.
	var colB collector
	var acksB acks
	cb := b.NewConsumer(t, "ackorder")
	_, doneB := run(t, cb, acksB.handler(&colB))
	Eventually(t, b.Timeout, func() bool { return len(colB.seqs("k")) >= n-2 }, "consumer B: want seq 2..%d, got %v", n-1, colB.seqs("k"))
	wantSeq(t, "k", colB.seqs("k"), 2, n)
	acksB.done(5, 4, 3, 2)
	stop(t, b, cb, doneB)

	// C gets only what is new.
	var colC collector
	run(t, b.NewConsumer(t, "ackorder"), func(_ context.Context, m *mq.Message) error { return colC.handler(m) })
	publish(t, b, "k", n)
	Eventually(t, b.Timeout, func() bool { return len(colC.seqs("k")) >= 1 }, "consumer C got nothing")
	wantSeq(t, "k", colC.seqs("k"), n, n+1)

	// An Ack of a Message no consumer delivered does nothing.
	m := &mq.Message{Topic: b.Topic}
	m.Defer().Done()
	var zero mq.Ack
	zero.Done()
}

func testUnackedRedelivered(t *testing.T, b *Backend) {
	const n = 3
	// A defers record 0 and never acknowledges it in time; 1 and 2 are
	// handled synchronously, which must not commit past 0.
	var colA collector
	var late mq.Ack
	var mu sync.Mutex
	ca := b.NewConsumer(t, "unacked")
	cancelA, doneA := run(t, ca, func(_ context.Context, m *mq.Message) error {
		if r := colA.add(m); r.seq == 0 {
			mu.Lock()
			late = m.Defer()
			mu.Unlock()
		}
		return nil
	})
	for i := range n {
		publish(t, b, "k", i)
	}
	Eventually(t, b.Timeout, func() bool { return len(colA.seqs("k")) >= n }, "consumer A: want %d records, got %v", n, colA.seqs("k"))
	cancelA() // a crash, as far as the queue can tell
	select {
	case err := <-doneA:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(b.Timeout):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	late.Done() // too late: void
	mu.Unlock()

	var colB collector
	run(t, b.NewConsumer(t, "unacked"), func(_ context.Context, m *mq.Message) error { return colB.handler(m) })
	Eventually(t, b.Timeout, func() bool { return len(colB.seqs("k")) >= n }, "consumer B: want seq 0..%d, got %v", n-1, colB.seqs("k"))
	wantSeq(t, "k", colB.seqs("k"), 0, n)
}
