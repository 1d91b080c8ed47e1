package logic

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/batch"
	"github.com/hubuim/hubuim/internal/batch/batchtest"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 5*time.Second, what, cond)
}

func (c *coalescer[In, Out]) stats() batch.Stats {
	c.once.Do(c.init)
	return c.group.Stats()
}

func (c *coalescer[In, Out]) queued() int { return c.stats().Items }

// TestCoalescerBatchesWhileBusy: with maxLookupsInFlight lookups in flight,
// the pushes that arrive share one lookup, and each gets its own answer.
func TestCoalescerBatchesWhileBusy(t *testing.T) {
	g := batchtest.NewGated()
	c := &coalescer[int, []int]{lookup: g.Run}
	ctx := context.Background()

	type result struct {
		in  []int
		out []int
		err error
	}
	results := make(chan result, 2*maxLookupsInFlight+8)
	call := func(in []int) {
		out, off, err := c.do(ctx, in)
		if err == nil {
			out = out[off : off+len(in)]
		}
		results <- result{in, out, err}
	}
	var wg sync.WaitGroup
	for i := range maxLookupsInFlight {
		wg.Go(func() { call([]int{i}) })
	}
	for range maxLookupsInFlight {
		<-g.Started // every slot is busy
	}
	const waiting = 8
	for i := range waiting {
		wg.Go(func() { call([]int{100 + 2*i, 101 + 2*i}) })
	}
	waitFor(t, "the waiting pushes to queue", func() bool { return c.queued() == 2*waiting })
	close(g.Gate)
	wg.Wait()
	close(results)
	n := 0
	for r := range results {
		n++
		if r.err != nil {
			t.Fatalf("%v: %v", r.in, r.err)
		}
		for i, v := range r.in {
			if r.out[i] != 2*v {
				t.Fatalf("%v: answer %v", r.in, r.out)
			}
		}
	}
	if n != maxLookupsInFlight+waiting {
		t.Fatalf("%d answers", n)
	}
	if got := g.NCalls(); got != maxLookupsInFlight+1 {
		t.Fatalf("%d lookups, want %d (the waiting pushes share one)", got, maxLookupsInFlight+1)
	}
	if s := c.stats(); s.InFlight != 0 || s.Batches != 0 {
		t.Fatalf("after: %d in flight, %d queued", s.InFlight, s.Batches)
	}
}

// TestCoalescerBatchLimit: a batch takes at most maxLookupBatch targets;
// more wait for the next one.
func TestCoalescerBatchLimit(t *testing.T) {
	g := batchtest.NewGated()
	c := &coalescer[int, []int]{lookup: g.Run}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range maxLookupsInFlight {
		wg.Go(func() { _, _, _ = c.do(ctx, []int{i}) })
	}
	for range maxLookupsInFlight {
		<-g.Started
	}
	big := make([]int, maxLookupBatch-1)
	wg.Go(func() { _, _, _ = c.do(ctx, big) })
	waitFor(t, "the big push to queue", func() bool { return c.queued() == len(big) })
	wg.Go(func() { _, _, _ = c.do(ctx, []int{1, 2}) })
	waitFor(t, "the second batch", func() bool { return c.queued() == len(big)+2 })
	batches := c.stats().Batches
	if batches != 2 {
		t.Fatalf("%d queued batches, want 2", batches)
	}
	close(g.Gate)
	wg.Wait()
	if got := g.NCalls(); got != maxLookupsInFlight+2 {
		t.Fatalf("%d lookups, want %d", got, maxLookupsInFlight+2)
	}
}

// TestCoalescerContextAndErrors: a waiting push whose context ends returns
// its error at once; the batch still runs for the others; a lookup error
// reaches every push of the batch.
func TestCoalescerContextAndErrors(t *testing.T) {
	g := batchtest.NewGated()
	g.Err = errors.New("store down")
	c := &coalescer[int, []int]{lookup: g.Run}
	var wg sync.WaitGroup
	for i := range maxLookupsInFlight {
		wg.Go(func() { _, _, _ = c.do(context.Background(), []int{i}) })
	}
	for range maxLookupsInFlight {
		<-g.Started
	}
	// The leader of the next batch gives up: it still runs the batch.
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, _, err := c.do(leaderCtx, []int{7})
		leaderErr <- err
	}()
	waitFor(t, "the leader to queue", func() bool { return c.queued() == 1 })
	followerErr := make(chan error, 1)
	go func() {
		_, _, err := c.do(context.Background(), []int{8})
		followerErr <- err
	}()
	waitFor(t, "the follower to queue", func() bool { return c.queued() == 2 })
	cancelLeader()
	close(g.Gate)
	if err := <-leaderErr; !errors.Is(err, context.Canceled) && !errors.Is(err, g.Err) {
		t.Fatalf("leader: %v", err)
	}
	if err := <-followerErr; !errors.Is(err, g.Err) {
		t.Fatalf("follower: %v, want the lookup's error", err)
	}
	wg.Wait()

	// A canceled waiter returns without its batch having run.
	g2 := batchtest.NewGated()
	c2 := &coalescer[int, []int]{lookup: g2.Run}
	for i := range maxLookupsInFlight {
		wg.Go(func() { _, _, _ = c2.do(context.Background(), []int{i}) })
	}
	for range maxLookupsInFlight {
		<-g2.Started
	}
	wg.Go(func() { _, _, _ = c2.do(context.Background(), []int{1}) })
	waitFor(t, "a leader to queue", func() bool { return c2.queued() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c2.do(ctx, []int{2})
		errc <- err
	}()
	waitFor(t, "the waiter to queue", func() bool { return c2.queued() == 2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled waiter: %v", err)
	}
	close(g2.Gate)
	wg.Wait()
}

// TestOKEmptyBody: the precomputed success answer is what writeJSON
// writes for it.
func TestOKEmptyBody(t *testing.T) {
	want := httptest.NewRecorder()
	writeJSON(want, http.StatusOK, envelope{Code: CodeOK})
	got := httptest.NewRecorder()
	writeOKEmpty(got)
	if got.Code != want.Code || got.Body.String() != want.Body.String() ||
		got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
		t.Fatalf("writeOKEmpty: %d %q %q, writeJSON: %d %q %q", got.Code, got.Body, got.Header(), want.Code, want.Body, want.Header())
	}
}

// TestReadAll: the Content-Length sized read returns the whole body, also
// when the length is wrong or unknown.
func TestReadAll(t *testing.T) {
	body := strings.Repeat("x", 1000)
	for _, cl := range []int64{-1, 0, 1, 999, 1000, 1001, 5000} {
		got, err := readAll(strings.NewReader(body), cl, 2000)
		if err != nil || string(got) != body {
			t.Fatalf("content length %d: %d bytes, %v", cl, len(got), err)
		}
	}
}
