package batch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/batch/batchtest"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 5*time.Second, what, cond)
}

func newGroup(tb testing.TB, cfg Config[int, []int]) *Group[int, []int] {
	tb.Helper()
	g, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// busy fills every slot of g with a call blocked in r.
func busy(t *testing.T, wg *sync.WaitGroup, g *Group[int, []int], r *batchtest.Gated, slots int) {
	t.Helper()
	for i := range slots {
		wg.Go(func() { _, _, _ = g.Do(context.Background(), []int{1000 + i}) })
	}
	for range slots {
		<-r.Started
	}
}

func TestNewValidates(t *testing.T) {
	run := func(context.Context, []int) ([]int, error) { return nil, nil }
	for _, cfg := range []Config[int, []int]{
		{},
		{Run: run, MaxInFlight: -1},
		{Run: run, MaxItems: -1},
		{Run: run, Timeout: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("%+v: no error", cfg)
		}
	}
}

// TestLoneRunsAtOnce: a call with a free slot runs Lone with its own
// context, without queueing.
func TestLoneRunsAtOnce(t *testing.T) {
	type key struct{}
	var lone, shared atomic.Int32
	g := newGroup(t, Config[int, []int]{
		Run: func(context.Context, []int) ([]int, error) { shared.Add(1); return nil, nil },
		Lone: func(ctx context.Context, in []int) ([]int, error) {
			lone.Add(1)
			if ctx.Value(key{}) != "mine" {
				t.Error("lone call without its own context")
			}
			return slices.Clone(in), nil
		},
	})
	ctx := context.WithValue(context.Background(), key{}, "mine")
	for i := range 3 {
		out, off, err := g.Do(ctx, []int{i})
		if err != nil || off != 0 || !slices.Equal(out, []int{i}) {
			t.Fatalf("Do: %v %d %v", out, off, err)
		}
	}
	if lone.Load() != 3 || shared.Load() != 0 {
		t.Fatalf("lone %d, shared %d", lone.Load(), shared.Load())
	}
	if s := g.Stats(); s != (Stats{}) {
		t.Fatalf("after: %+v", s)
	}
}

// TestConcurrentCallsShareBatch: calls arriving while every slot is busy
// share one batch, each gets its own answer, the in-flight bound holds.
func TestConcurrentCallsShareBatch(t *testing.T) {
	const slots, waiting = 3, 8
	r := batchtest.NewGated()
	g := newGroup(t, Config[int, []int]{Run: r.Run, MaxInFlight: slots})
	var wg sync.WaitGroup
	busy(t, &wg, g, r, slots)
	errs := make(chan error, waiting)
	for i := range waiting {
		wg.Go(func() {
			in := []int{2 * i, 2*i + 1}
			out, off, err := g.Do(context.Background(), in)
			if err == nil && !slices.Equal(out[off:off+2], []int{2 * in[0], 2 * in[1]}) {
				err = errors.New("wrong answer")
			}
			errs <- err
		})
	}
	waitFor(t, "the calls to queue", func() bool { s := g.Stats(); return s.Calls == waiting })
	if s := g.Stats(); s.InFlight != slots || s.Batches != 1 || s.Items != 2*waiting {
		t.Fatalf("queued: %+v", s)
	}
	close(r.Gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := r.NCalls(); got != slots+1 {
		t.Fatalf("%d runs, want %d", got, slots+1)
	}
	if m := r.MaxRunning(); m > slots {
		t.Fatalf("%d runs at once, bound %d", m, slots)
	}
	if s := g.Stats(); s != (Stats{}) {
		t.Fatalf("after: %+v", s)
	}
}

// TestInFlightBound: with many concurrent callers, no more than
// MaxInFlight runs at once and every call is answered.
func TestInFlightBound(t *testing.T) {
	const slots = 2
	var running, most atomic.Int32
	g := newGroup(t, Config[int, []int]{MaxInFlight: slots, Run: func(_ context.Context, in []int) ([]int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(100 * time.Microsecond)
		return slices.Clone(in), nil
	}})
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 20 {
				v := i*100 + j
				out, off, err := g.Do(context.Background(), []int{v})
				if err != nil || out[off] != v {
					t.Errorf("%d: %v %d %v", v, out, off, err)
				}
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m > slots || m == 0 {
		t.Fatalf("%d runs at once, bound %d", m, slots)
	}
}

// TestBatchBound: a batch takes at most MaxItems items; more start the
// next batch; a bigger call gets a batch of its own.
func TestBatchBound(t *testing.T) {
	const maxItems = 4
	r := batchtest.NewGated()
	g := newGroup(t, Config[int, []int]{Run: r.Run, MaxItems: maxItems})
	var wg sync.WaitGroup
	busy(t, &wg, g, r, 1)
	do := func(in ...int) { wg.Go(func() { _, _, _ = g.Do(context.Background(), in) }) }
	do(1, 2, 3)
	waitFor(t, "1 queued", func() bool { return g.Stats().Items == 3 })
	do(4)
	waitFor(t, "2 queued", func() bool { return g.Stats().Items == 4 })
	do(5)
	waitFor(t, "3 queued", func() bool { return g.Stats().Items == 5 })
	do(6, 7, 8, 9, 10)
	waitFor(t, "4 queued", func() bool { return g.Stats().Items == 10 })
	if s := g.Stats(); s.Batches != 3 {
		t.Fatalf("%+v, want 3 batches", s)
	}
	close(r.Gate)
	wg.Wait()
	want := [][]int{{1000}, {1, 2, 3, 4}, {5}, {6, 7, 8, 9, 10}}
	if calls := r.Calls(); !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("runs %v, want %v", calls, want)
	}
}

// TestFollowerAbandons: with Abandon, a follower whose context ends
// returns at once; its items still go in the batch, which answers the
// others. Without Abandon, it waits for the answer.
func TestFollowerAbandons(t *testing.T) {
	for _, abandon := range []bool{true, false} {
		r := batchtest.NewGated()
		g := newGroup(t, Config[int, []int]{Run: r.Run, Abandon: abandon})
		var wg sync.WaitGroup
		busy(t, &wg, g, r, 1)
		leader := make(chan error, 1)
		go func() { _, _, err := g.Do(context.Background(), []int{1}); leader <- err }()
		waitFor(t, "the leader to queue", func() bool { return g.Stats().Calls == 1 })
		ctx, cancel := context.WithCancel(context.Background())
		follower := make(chan error, 1)
		go func() { _, _, err := g.Do(ctx, []int{2}); follower <- err }()
		waitFor(t, "the follower to queue", func() bool { return g.Stats().Calls == 2 })
		cancel()
		if abandon {
			if err := <-follower; !errors.Is(err, context.Canceled) {
				t.Fatalf("abandoning follower: %v", err)
			}
		}
		close(r.Gate)
		if err := <-leader; err != nil {
			t.Fatalf("leader: %v", err)
		}
		if !abandon {
			if err := <-follower; err != nil {
				t.Fatalf("waiting follower: %v", err)
			}
		}
		wg.Wait()
		if calls := r.Calls(); !slices.Equal(calls[1], []int{1, 2}) {
			t.Fatalf("abandon=%v: batch %v", abandon, calls[1])
		}
	}
}

// TestLeaderCancelDoesNotFailFollowers: the leader's cancellation neither
// stops its batch nor reaches the batch's context; Timeout bounds it.
func TestLeaderCancelDoesNotFailFollowers(t *testing.T) {
	r := batchtest.NewGated()
	var deadline atomic.Bool
	run := func(ctx context.Context, in []int) ([]int, error) {
		if len(in) > 1 {
			_, ok := ctx.Deadline()
			deadline.Store(ok)
		}
		return r.Run(ctx, in)
	}
	g := newGroup(t, Config[int, []int]{Run: run, Timeout: time.Minute, Abandon: true})
	var wg sync.WaitGroup
	busy(t, &wg, g, r, 1)
	ctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() { _, _, err := g.Do(ctx, []int{1}); leader <- err }()
	waitFor(t, "the leader to queue", func() bool { return g.Stats().Calls == 1 })
	follower := make(chan error, 1)
	go func() {
		out, off, err := g.Do(context.Background(), []int{2})
		if err == nil && out[off] != 4 {
			err = errors.New("wrong answer")
		}
		follower <- err
	}()
	waitFor(t, "the follower to queue", func() bool { return g.Stats().Calls == 2 })
	cancel()
	close(r.Gate)
	if err := <-follower; err != nil {
		t.Fatalf("follower: %v", err)
	}
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
	wg.Wait()
	if errs := r.CtxErrs(); errs[1] != nil {
		t.Fatalf("shared batch ran with a canceled context: %v", errs[1])
	}
	if !deadline.Load() {
		t.Fatal("shared batch without the Timeout deadline")
	}
}

// TestPanicReleases: a panicking run goes on in the caller that ran it,
// fails the batch's other callers with ErrAborted and frees its slot.
func TestPanicReleases(t *testing.T) {
	r := batchtest.NewGated()
	r.Panics = true
	g := newGroup(t, Config[int, []int]{Run: r.Run})
	catch := func(in int) (err error, panicked bool) {
		defer func() { panicked = recover() != nil }()
		_, _, err = g.Do(context.Background(), []int{in})
		return err, false
	}
	first := make(chan bool, 1)
	go func() { _, p := catch(0); first <- p }()
	<-r.Started
	leader := make(chan bool, 1)
	go func() { _, p := catch(1); leader <- p }()
	waitFor(t, "the leader to queue", func() bool { return g.Stats().Calls == 1 })
	follower := make(chan error, 1)
	go func() { err, _ := catch(2); follower <- err }()
	waitFor(t, "the follower to queue", func() bool { return g.Stats().Calls == 2 })
	close(r.Gate)
	if !<-first || !<-leader {
		t.Fatal("the panic did not reach the callers that ran")
	}
	if err := <-follower; !errors.Is(err, ErrAborted) {
		t.Fatalf("follower: %v, want ErrAborted", err)
	}
	if s := g.Stats(); s != (Stats{}) {
		t.Fatalf("after: %+v", s)
	}
	r.Panics = false
	if _, _, err := g.Do(context.Background(), []int{3}); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
}

// BenchmarkGroup: a lone call (no contention) and 8 goroutines per CPU
// sharing 2 slots of a 10 µs run.
func BenchmarkGroup(b *testing.B) {
	run := func(_ context.Context, in []int) (int, error) { return len(in), nil }
	b.Run("lone", func(b *testing.B) {
		g, err := New(Config[int, int]{Run: run})
		if err != nil {
			b.Fatal(err)
		}
		in := []int{1, 2}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := g.Do(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("contended", func(b *testing.B) {
		var runs atomic.Int64
		g, err := New(Config[int, int]{MaxInFlight: 2, Run: func(_ context.Context, in []int) (int, error) {
			runs.Add(1)
			time.Sleep(10 * time.Microsecond)
			return len(in), nil
		}})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			in := []int{1, 2}
			for pb.Next() {
				if _, _, err := g.Do(ctx, in); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(runs.Load())/float64(b.N), "runs/op")
	})
}
