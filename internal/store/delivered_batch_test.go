package store

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/batch"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// TestDeliveredBatcherCoalesces: calls queued behind the statements in
// flight go in one statement, one mark per key (the highest seq), sorted.
func TestDeliveredBatcherCoalesces(t *testing.T) {
	release := make(chan struct{})
	var (
		mu    sync.Mutex
		calls [][]int64 // seqs per statement
		convs [][]string
	)
	b := &deliveredBatcher{exec: func(_ context.Context, _ []int64, _, c []string, seqs []int64) error {
		<-release
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, slices.Clone(seqs))
		convs = append(convs, slices.Clone(c))
		return nil
	}}
	ctx := context.Background()
	var wg sync.WaitGroup
	set := func(conv string, seq int64) {
		wg.Go(func() {
			if err := b.set(ctx, deliveredMark{user: 1, device: "d", conv: conv, seq: seq}); err != nil {
				t.Error(err)
			}
		})
	}
	// deliveredConcurrency leaders block in exec.
	for i := range deliveredConcurrency {
		set("lead", int64(i+1))
	}
	waitFor(t, func() bool { return b.stats().InFlight == deliveredConcurrency })
	set("s:1:3", 7)
	set("s:1:2", 5)
	set("s:1:3", 9)
	set("s:1:3", 8)
	waitFor(t, func() bool { return b.stats().Calls == 4 })
	close(release)
	wg.Wait()
	// The two leaderships pass to two queued calls, which take the rest:
	// four calls in at most two statements.
	if len(calls) > 2*deliveredConcurrency {
		t.Fatalf("%d statements for 2 leaders and 4 queued calls: %v", len(calls), calls)
	}
	for _, c := range convs {
		if !slices.IsSorted(c) || len(slices.Compact(slices.Clone(c))) != len(c) {
			t.Fatalf("statement %v: keys not sorted and unique", c)
		}
	}
	if s := b.stats(); s.InFlight != 0 || s.Calls != 0 {
		t.Fatalf("inflight %d, queue %d after all calls", s.InFlight, s.Calls)
	}
}

func (b *deliveredBatcher) stats() batch.Stats {
	b.once.Do(b.init)
	return b.group.Stats()
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 5*time.Second, "the condition", cond)
}

// TestDeliveredBatcherRunKeepsHighest: one statement carries each key once,
// at its highest seq, in key order.
func TestDeliveredBatcherRunKeepsHighest(t *testing.T) {
	var got []deliveredMark
	b := &deliveredBatcher{exec: func(_ context.Context, users []int64, devices, convs []string, seqs []int64) error {
		for i := range users {
			got = append(got, deliveredMark{users[i], devices[i], convs[i], seqs[i]})
		}
		return nil
	}}
	batch := []deliveredMark{{2, "d", "s:1:2", 3}, {1, "d", "s:1:3", 7}, {1, "d", "s:1:3", 9}, {1, "d", "s:1:3", 8}, {1, "c", "s:1:3", 1}}
	if err := b.run(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	want := []deliveredMark{{1, "c", "s:1:3", 1}, {1, "d", "s:1:3", 9}, {2, "d", "s:1:2", 3}}
	if !slices.Equal(got, want) {
		t.Fatalf("statement marks %v, want %v", got, want)
	}
}
