package im

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// blockingDevices answers every user with one device named after it, after
// release is closed, and records the users of each call.
type blockingDevices struct {
	release chan struct{}
	err     error
	mu      sync.Mutex
	calls   [][]int64
}

func (b *blockingDevices) Devices(_ context.Context, mids []int64) (map[int64][]session.Device, error) {
	<-b.release
	b.mu.Lock()
	b.calls = append(b.calls, slices.Clone(mids))
	b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	out := make(map[int64][]session.Device, len(mids))
	for _, m := range mids {
		out[m] = []session.Device{{Key: fmt.Sprint("k", m), Server: "s"}}
	}
	return out, nil
}

func (c *deviceCoalescer) state() (inflight, queued int) {
	c.once.Do(c.init)
	s := c.group.Stats()
	return s.InFlight, s.Calls
}

func pollUntil(tb testing.TB, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, 5*time.Second, "the condition", cond)
}

func TestDeviceCoalescerMergesQueuedLookups(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprint("fail=", fail), func(t *testing.T) {
			next := &blockingDevices{release: make(chan struct{})}
			if fail {
				next.err = errors.New("redis down")
			}
			c := &deviceCoalescer{next: next}
			ctx := context.Background()
			var wg sync.WaitGroup
			lookup := func(mids ...int64) {
				wg.Go(func() {
					got, err := c.Devices(ctx, mids)
					if fail {
						if !errors.Is(err, next.err) {
							t.Errorf("lookup %v: err %v, want %v", mids, err, next.err)
						}
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					for _, m := range mids {
						if d := got[m]; len(d) != 1 || d[0].Key != fmt.Sprint("k", m) {
							t.Errorf("lookup %v: devices of %d = %v", mids, m, d)
						}
					}
				})
			}
			for i := range fanoutLookups {
				lookup(int64(100 + i))
			}
			pollUntil(t, func() bool { in, _ := c.state(); return in == fanoutLookups })
			lookup(1, 2)
			lookup(2, 3)
			lookup(4)
			pollUntil(t, func() bool { _, q := c.state(); return q == 3 })
			close(next.release)
			wg.Wait()
			// The leaderships pass to at most two of the three queued
			// lookups, which take the rest with them.
			if n := len(next.calls); n > 2*fanoutLookups {
				t.Fatalf("%d calls for %d leaders and 3 queued lookups: %v", n, fanoutLookups, next.calls)
			}
			var merged []int64
			for _, call := range next.calls {
				if len(slices.Compact(slices.Sorted(slices.Values(call)))) != len(call) {
					t.Fatalf("call %v looks a user up twice", call)
				}
				if !slices.Contains(call, 100) && !slices.Contains(call, 101) {
					merged = append(merged, call...)
				}
			}
			if slices.Sort(merged); !slices.Equal(slices.Compact(merged), []int64{1, 2, 3, 4}) {
				t.Fatalf("queued lookups asked for %v, want users 1-4", merged)
			}
			if in, q := c.state(); in != 0 || q != 0 {
				t.Fatalf("inflight %d, queued %d after every lookup", in, q)
			}
		})
	}
}

// countingDevices answers every user with one device and counts calls;
// each call takes rtt (a Redis round trip).
type countingDevices struct {
	rtt   time.Duration
	calls atomic.Int64
}

func (c *countingDevices) Devices(_ context.Context, mids []int64) (map[int64][]session.Device, error) {
	c.calls.Add(1)
	time.Sleep(c.rtt)
	out := make(map[int64][]session.Device, len(mids))
	for _, m := range mids {
		out[m] = []session.Device{{Key: "k", Server: "s"}}
	}
	return out, nil
}

// BenchmarkFanoutDevices: 8 partitions' records (two users each) looked up
// at once, each lookup a 100 µs round trip: per record, a call of its own
// (direct) or merged calls (coalesced). lookups/op is the calls per record.
func BenchmarkFanoutDevices(b *testing.B) {
	for _, coalesce := range []bool{false, true} {
		b.Run(fmt.Sprint("coalesced=", coalesce), func(b *testing.B) {
			next := &countingDevices{rtt: 100 * time.Microsecond}
			var lookup DeviceLookup = next
			if coalesce {
				lookup = &deviceCoalescer{next: next}
			}
			ctx := context.Background()
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(4) // 8 goroutines on 2 CPUs: job's 8 partitions
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					u := n.Add(1)
					if _, err := lookup.Devices(ctx, []int64{u, u + 1}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(next.calls.Load())/float64(b.N), "lookups/op")
		})
	}
}
