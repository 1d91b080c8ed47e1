package im

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/testenv"
)

func randomPrefix(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return "test:" + hex.EncodeToString(b[:]) + ":"
}

func newTestRedis(tb testing.TB) (redis.UniversalClient, string) {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(tb)})
	prefix := randomPrefix(tb)
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return rdb, prefix
}

type seqCounterFactory func(t *testing.T) (c SeqCounter, forget func())

func seqCounterImpls() map[string]seqCounterFactory {
	return map[string]seqCounterFactory{
		"memory": func(t *testing.T) (SeqCounter, func()) {
			c := NewMemorySeqCounter()
			return c, c.Forget
		},
		"redis": func(t *testing.T) (SeqCounter, func()) {
			rdb, prefix := newTestRedis(t)
			c, err := NewRedisSeqCounter(rdb, prefix, 0)
			if err != nil {
				t.Fatal(err)
			}
			return c, func() {
				ctx := context.Background()
				iter := rdb.Scan(ctx, 0, prefix+"seq:*", 100).Iterator()
				for iter.Next(ctx) {
					rdb.Del(ctx, iter.Val())
				}
			}
		},
	}
}

// fakeMax is a MaxSeqer over a fixed map.
type fakeMax struct {
	mu sync.Mutex
	m  map[string]int64
}

func (f *fakeMax) MaxSeq(_ context.Context, conv string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[conv], nil
}

func (f *fakeMax) set(conv string, v int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[conv] = v
}

func TestSeqAllocator(t *testing.T) {
	for name, newCounter := range seqCounterImpls() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()

			t.Run("starts at one and grows", func(t *testing.T) {
				c, _ := newCounter(t)
				jumps := 0
				a, err := NewSeqAllocator(c, &fakeMax{m: map[string]int64{}}, SeqAllocatorConfig{OnJump: func(string, int64) { jumps++ }})
				if err != nil {
					t.Fatal(err)
				}
				for want := int64(1); want <= 5; want++ {
					got, err := a.Next(ctx, "s:1:2")
					if err != nil || got != want {
						t.Fatalf("Next = %d, %v; want %d", got, err, want)
					}
				}
				if got, _ := a.Next(ctx, "s:1:3"); got != 1 {
					t.Fatalf("other conversation starts at %d, want 1", got)
				}
				if jumps != 0 {
					t.Fatalf("jumps = %d for fresh conversations", jumps)
				}
			})

			t.Run("lost counter jumps past stored max", func(t *testing.T) {
				c, forget := newCounter(t)
				store := &fakeMax{m: map[string]int64{}}
				var jumpedFrom int64
				a, _ := NewSeqAllocator(c, store, SeqAllocatorConfig{Jump: 100, OnJump: func(_ string, from int64) { jumpedFrom = from }})
				var last int64
				for i := 0; i < 10; i++ {
					last, _ = a.Next(ctx, "g:7")
				}
				store.set("g:7", last-3) // three allocated seqs not stored yet
				forget()
				got, err := a.Next(ctx, "g:7")
				if err != nil {
					t.Fatal(err)
				}
				if want := last - 3 + 100 + 1; got != want {
					t.Fatalf("after loss Next = %d, want %d", got, want)
				}
				if got <= last {
					t.Fatalf("seq went backwards: %d <= %d", got, last)
				}
				if jumpedFrom != last-3 {
					t.Fatalf("OnJump from = %d, want %d", jumpedFrom, last-3)
				}
			})

			t.Run("counter behind the store is raised after a conflict", func(t *testing.T) {
				c, _ := newCounter(t)
				store := &fakeMax{m: map[string]int64{}}
				a, _ := NewSeqAllocator(c, store, SeqAllocatorConfig{Jump: 100})
				for range 5 {
					if _, err := a.Next(ctx, "g:8"); err != nil {
						t.Fatal(err)
					}
				}
				// The store holds 50 (the counter came back from an old
				// snapshot at 5): the conflict on 6 raises it past 50.
				store.set("g:8", 50)
				got, err := a.NextAfterConflict(ctx, "g:8")
				if err != nil || got != 151 {
					t.Fatalf("NextAfterConflict = %d, %v; want 151", got, err)
				}
				// A counter already past the floor is only incremented.
				store.set("g:8", 20)
				if got, _ := a.NextAfterConflict(ctx, "g:8"); got != 152 {
					t.Fatalf("NextAfterConflict over a counter ahead of the floor = %d, want 152", got)
				}
				if got, _ := a.Next(ctx, "g:8"); got != 153 {
					t.Fatalf("Next after the raise = %d, want 153", got)
				}
			})

			t.Run("concurrent allocations are unique", func(t *testing.T) {
				c, forget := newCounter(t)
				store := &fakeMax{m: map[string]int64{"s:5:6": 40}}
				a, _ := NewSeqAllocator(c, store, SeqAllocatorConfig{Jump: 10})
				forget()
				const workers, each = 8, 50
				var mu sync.Mutex
				seen := map[int64]bool{}
				var wg sync.WaitGroup
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < each; i++ {
							s, err := a.Next(ctx, "s:5:6")
							if err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							if seen[s] {
								t.Errorf("seq %d handed out twice", s)
							}
							seen[s] = true
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				if len(seen) != workers*each {
					t.Fatalf("got %d distinct seqs, want %d", len(seen), workers*each)
				}
				for s := range seen {
					if s <= 50 {
						t.Fatalf("seq %d not past stored max 40 + jump 10", s)
					}
				}
			})
		})
	}
}

func TestNewSeqAllocatorErrors(t *testing.T) {
	if _, err := NewSeqAllocator(nil, &fakeMax{}, SeqAllocatorConfig{}); err == nil {
		t.Fatal("nil counter accepted")
	}
	if _, err := NewSeqAllocator(NewMemorySeqCounter(), &fakeMax{}, SeqAllocatorConfig{Jump: -1}); err == nil {
		t.Fatal("negative jump accepted")
	}
}

func dedupImpls(claimTTL, window time.Duration) map[string]func(t *testing.T) DedupStore {
	return map[string]func(t *testing.T) DedupStore{
		"memory": func(t *testing.T) DedupStore { return NewMemoryDedup(window, claimTTL) },
		"redis": func(t *testing.T) DedupStore {
			rdb, prefix := newTestRedis(t)
			d, err := NewRedisDedup(rdb, RedisDedupConfig{Prefix: prefix, Window: window, ClaimTTL: claimTTL})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	}
}

func TestDedup(t *testing.T) {
	const claimTTL = 300 * time.Millisecond
	for name, newDedup := range dedupImpls(claimTTL, time.Hour) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			d := newDedup(t)

			_, st, err := d.Claim(ctx, 1, "c1")
			if err != nil || st != DedupClaimed {
				t.Fatalf("first claim = %v, %v", st, err)
			}
			if _, st, _ := d.Claim(ctx, 1, "c1"); st != DedupInFlight {
				t.Fatalf("second claim while in flight = %v", st)
			}
			if _, st, _ := d.Claim(ctx, 2, "c1"); st != DedupClaimed {
				t.Fatalf("another sender's same id = %v, want claimed", st)
			}
			if err := d.Finish(ctx, 1, "c1", []byte("ack-1")); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				ack, st, err := d.Claim(ctx, 1, "c1")
				if err != nil || st != DedupDone || string(ack) != "ack-1" {
					t.Fatalf("resend %d = %q, %v, %v", i, ack, st, err)
				}
			}
			if err := d.Abort(ctx, 1, "c1"); err != nil {
				t.Fatal(err)
			}
			if _, st, _ := d.Claim(ctx, 1, "c1"); st != DedupDone {
				t.Fatalf("abort removed a recorded ack: %v", st)
			}

			// An aborted claim can be retried at once.
			if _, st, _ := d.Claim(ctx, 1, "c2"); st != DedupClaimed {
				t.Fatal("claim c2")
			}
			if err := d.Abort(ctx, 1, "c2"); err != nil {
				t.Fatal(err)
			}
			if _, st, _ := d.Claim(ctx, 1, "c2"); st != DedupClaimed {
				t.Fatalf("after abort = %v, want claimed", st)
			}

			// A claim whose owner died expires after the claim TTL.
			if _, st, _ := d.Claim(ctx, 1, "c3"); st != DedupClaimed {
				t.Fatal("claim c3")
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, st, err := d.Claim(ctx, 1, "c3")
				if err != nil {
					t.Fatal(err)
				}
				if st == DedupClaimed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("stale claim never expired: %v", st)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func TestMemoryDedupSweep(t *testing.T) {
	now := time.Unix(1000, 0)
	d := NewMemoryDedup(time.Minute, time.Second)
	d.now = func() time.Time { return now }
	ctx := context.Background()
	d.Claim(ctx, 1, "a")
	d.Finish(ctx, 1, "a", []byte("x"))
	d.Claim(ctx, 1, "b")
	now = now.Add(2 * time.Second)
	d.Sweep()
	if len(d.m) != 1 {
		t.Fatalf("after claim expiry %d entries, want 1", len(d.m))
	}
	now = now.Add(time.Minute)
	d.Sweep()
	if len(d.m) != 0 {
		t.Fatalf("after window %d entries, want 0", len(d.m))
	}
}
