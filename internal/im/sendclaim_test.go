package im

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
)

// claimerEnv is a sendClaimer with its seq counter and the stored maxima
// its allocator re-creates lost counters from.
type claimerEnv struct {
	c      sendClaimer
	stored *fakeMax
	forget func() // drops every seq counter (Redis restart)
}

const testSeqJump = 100

func claimerImpls() map[string]func(t *testing.T) claimerEnv {
	return map[string]func(t *testing.T) claimerEnv{
		"memory": func(t *testing.T) claimerEnv {
			counter := NewMemorySeqCounter()
			stored := &fakeMax{m: map[string]int64{}}
			alloc, err := NewSeqAllocator(counter, stored, SeqAllocatorConfig{Jump: testSeqJump})
			if err != nil {
				t.Fatal(err)
			}
			c := newSendClaimer(NewMemoryDedup(0, 0), alloc, DefaultClaimPipelines, claimMaxBatch, slog.Default())
			if _, ok := c.(*splitClaimer); !ok {
				t.Fatalf("memory stores paired as %T", c)
			}
			return claimerEnv{c: c, stored: stored, forget: counter.Forget}
		},
		"redis": func(t *testing.T) claimerEnv {
			rdb, prefix := newTestRedis(t)
			counter, err := NewRedisSeqCounter(rdb, prefix, 0)
			if err != nil {
				t.Fatal(err)
			}
			dedup, err := NewRedisDedup(rdb, RedisDedupConfig{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			stored := &fakeMax{m: map[string]int64{}}
			alloc, err := NewSeqAllocator(counter, stored, SeqAllocatorConfig{Jump: testSeqJump})
			if err != nil {
				t.Fatal(err)
			}
			c := newSendClaimer(dedup, alloc, DefaultClaimPipelines, claimMaxBatch, slog.Default())
			if _, ok := c.(*redisClaimer); !ok {
				t.Fatalf("redis stores paired as %T", c)
			}
			forget := func() {
				ctx := context.Background()
				iter := rdb.Scan(ctx, 0, prefix+"seq:*", 100).Iterator()
				for iter.Next(ctx) {
					rdb.Del(ctx, iter.Val())
				}
			}
			return claimerEnv{c: c, stored: stored, forget: forget}
		},
	}
}

func mustClaim(tb testing.TB, c sendClaimer, sender int64, id, conv string) sendClaim {
	tb.Helper()
	got, err := c.claimNext(context.Background(), sender, id, conv)
	if err != nil {
		tb.Fatalf("claim %d/%s: %v", sender, id, err)
	}
	return got
}

// waitDone polls until a claim of id returns the recorded ACK (a finish
// may be recorded after it returns) and returns it.
func waitDone(tb testing.TB, c sendClaimer, sender int64, id, conv string) sendClaim {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := mustClaim(tb, c, sender, id, conv)
		if got.state == DedupDone {
			return got
		}
		if got.state != DedupInFlight || time.Now().After(deadline) {
			tb.Fatalf("claim of a finished id = %+v, want done", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendClaimer(t *testing.T) {
	for name, newEnv := range claimerImpls() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const conv = "s:1:2"

			t.Run("claims allocate consecutive seqs; taken ids allocate none", func(t *testing.T) {
				e := newEnv(t)
				for i, id := range []string{"a", "b"} {
					got := mustClaim(t, e.c, 1, id, conv)
					if got.state != DedupClaimed || got.seq != int64(i+1) {
						t.Fatalf("claim %s = %+v, want claimed seq %d", id, got, i+1)
					}
				}
				if got := mustClaim(t, e.c, 1, "a", conv); got.state != DedupInFlight {
					t.Fatalf("resend in flight = %+v, want in flight", got)
				}
				// The same id from another sender is another message.
				if got := mustClaim(t, e.c, 2, "a", conv); got.state != DedupClaimed || got.seq != 3 {
					t.Fatalf("other sender's id = %+v, want claimed seq 3", got)
				}
				e.c.finish(ctx, 1, "a", conv, []byte("ack-a"))
				if got := waitDone(t, e.c, 1, "a", conv); string(got.ack) != "ack-a" {
					t.Fatalf("resend after finish = %+v, want the recorded ack", got)
				}
				// Neither the in-flight nor the done resend took a seq.
				if got := mustClaim(t, e.c, 1, "c", conv); got.seq != 4 {
					t.Fatalf("next claim seq = %d, want 4", got.seq)
				}
			})

			t.Run("abort releases the claim, not a recorded ack", func(t *testing.T) {
				e := newEnv(t)
				mustClaim(t, e.c, 1, "a", conv)
				if err := e.c.abort(ctx, 1, "a", conv); err != nil {
					t.Fatal(err)
				}
				if got := mustClaim(t, e.c, 1, "a", conv); got.state != DedupClaimed || got.seq != 2 {
					t.Fatalf("claim after abort = %+v, want claimed seq 2", got)
				}
				e.c.finish(ctx, 1, "a", conv, []byte("ack"))
				waitDone(t, e.c, 1, "a", conv)
				if err := e.c.abort(ctx, 1, "a", conv); err != nil {
					t.Fatal(err)
				}
				if got := waitDone(t, e.c, 1, "a", conv); string(got.ack) != "ack" {
					t.Fatalf("abort dropped the recorded ack: %+v", got)
				}
			})

			t.Run("lost counter jumps past the stored max", func(t *testing.T) {
				e := newEnv(t)
				var last int64
				for i := range 10 {
					last = mustClaim(t, e.c, 1, fmt.Sprint("m", i), conv).seq
				}
				e.stored.set(conv, last-3) // three allocated seqs not stored yet
				e.forget()
				got := mustClaim(t, e.c, 1, "after", conv)
				if want := last - 3 + testSeqJump + 1; got.state != DedupClaimed || got.seq != want {
					t.Fatalf("claim after counter loss = %+v, want claimed seq %d", got, want)
				}
				if got2 := mustClaim(t, e.c, 1, "after2", conv); got2.seq != got.seq+1 {
					t.Fatalf("next seq = %d, want %d", got2.seq, got.seq+1)
				}
			})

			t.Run("concurrent claims: unique consecutive seqs, one claim per id", func(t *testing.T) {
				e := newEnv(t)
				const senders, ids = 40, 25
				var (
					mu      sync.Mutex
					seqs    = map[int64]bool{}
					claimed = map[string]int{}
					wg      sync.WaitGroup
				)
				for s := range senders {
					wg.Go(func() {
						for i := range ids {
							// Every id is claimed by two goroutines at once.
							id := fmt.Sprint("id", (s/2)*ids+i)
							got, err := e.c.claimNext(ctx, 1, id, conv)
							if err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							if got.state == DedupClaimed {
								claimed[id]++
								if seqs[got.seq] {
									t.Errorf("seq %d allocated twice", got.seq)
								}
								seqs[got.seq] = true
							}
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if len(claimed) != senders/2*ids {
					t.Fatalf("%d ids claimed, want %d", len(claimed), senders/2*ids)
				}
				for id, n := range claimed {
					if n != 1 {
						t.Fatalf("id %s claimed %d times", id, n)
					}
				}
				for seq := int64(1); seq <= int64(len(seqs)); seq++ {
					if !seqs[seq] {
						t.Fatalf("seq %d missing of 1..%d", seq, len(seqs))
					}
				}
			})
		})
	}
}

// TestRedisClaimKeysShareASlot: the claim script touches the dedup key and
// the seq counter, which must hash to one Redis Cluster slot.
func TestRedisClaimKeysShareASlot(t *testing.T) {
	r := &redisClaimer{dedup: &RedisDedup{prefix: "p:"}, counter: &RedisSeqCounter{prefix: "p:"}}
	tag := func(k string) string {
		i := strings.IndexByte(k, '{')
		j := strings.IndexByte(k[i+1:], '}')
		return k[i+1 : i+1+j]
	}
	dk, sk := r.dedupKey(7, "cm{x}", "s:1:7"), r.counter.key("s:1:7")
	if tag(dk) != "s:1:7" || tag(sk) != "s:1:7" {
		t.Fatalf("hash tags of %q and %q differ", dk, sk)
	}
}

// TestSendRedisDedup: the send path over Redis keeps every dedup rule:
// resends (sequential and concurrent) store one message and get the
// original ACK or a retry status, never a different ACK.
// newRedisService is a Service with Redis seq counters and dedup over a
// bolt store; wrap, if set, wraps the store the service writes to.
func newRedisService(t *testing.T, wrap func(Store) Store) (*Service, *store.Bolt, *recordingProducer) {
	t.Helper()
	rdb, prefix := newTestRedis(t)
	st, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	counter, _ := NewRedisSeqCounter(rdb, prefix, 0)
	alloc, _ := NewSeqAllocator(counter, st, SeqAllocatorConfig{})
	dedup, _ := NewRedisDedup(rdb, RedisDedupConfig{Prefix: prefix})
	var used Store = st
	if wrap != nil {
		used = wrap(st)
	}
	prod := &recordingProducer{}
	svc, err := NewService(Config{}, Deps{Seq: alloc, Dedup: dedup, Store: used, IDs: &counterIDs{}, Producer: prod})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st, prod
}

func TestSendRedisDedup(t *testing.T) {
	svc, st, prod := newRedisService(t, nil)
	ctx := context.Background()
	const senders = 20
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		acks []*protocol.MsgSendAck
	)
	for range senders {
		wg.Go(func() {
			for {
				ack := svc.Send(ctx, 1, "dev", single(2, "same"))
				if ack.Status == protocol.Status_STATUS_UNAVAILABLE {
					time.Sleep(time.Millisecond) // in flight: the client retries
					continue
				}
				mu.Lock()
				acks = append(acks, ack)
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	for _, ack := range acks {
		if ack.Status != protocol.Status_STATUS_OK || !proto.Equal(ack, acks[0]) {
			t.Fatalf("ack %v differs from %v", ack, acks[0])
		}
	}
	// A sequential resend after the ACK: the same ACK again.
	if again := svc.Send(ctx, 1, "dev", single(2, "same")); !proto.Equal(again, acks[0]) {
		t.Fatalf("resend ack %v, want %v", again, acks[0])
	}
	msgs, _, err := st.Range(ctx, store.SingleConvID(1, 2), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || prod.count() != 1 {
		t.Fatalf("stored %d, published %d; want 1 and 1", len(msgs), prod.count())
	}
	// Another message gets the next seq: resends consumed none.
	if ack := svc.Send(ctx, 1, "dev", single(2, "next")); ack.Seq != acks[0].Seq+1 {
		t.Fatalf("next message seq %d, want %d", ack.Seq, acks[0].Seq+1)
	}
}

func TestParseClaimReplyRejectsGarbage(t *testing.T) {
	for _, v := range [][]any{{}, {int64(1)}, {int64(2), int64(1)}, {"x", int64(1)}, {int64(1), "s"}, {int64(0), int64(3)}, {int64(1), int64(0)}} {
		cmd := newCmdWith(v)
		if _, err := parseClaimReply(cmd); !errors.Is(err, errClaimReply) {
			t.Fatalf("reply %v: err %v, want errClaimReply", v, err)
		}
	}
}

func newCmdWith(v []any) *redis.Cmd {
	cmd := redis.NewCmd(context.Background())
	cmd.SetVal(v)
	return cmd
}

// TestSendRedisRestart: after Redis lost everything (counters, dedup
// entries, the script cache), a send jumps past the stored maximum and a
// resend of a stored message still gets its original ACK (the store's
// uniqueness), through the pipelined claims.
func TestSendRedisRestart(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	st, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	counter, _ := NewRedisSeqCounter(rdb, "r:", 0)
	alloc, _ := NewSeqAllocator(counter, st, SeqAllocatorConfig{Jump: testSeqJump})
	dedup, _ := NewRedisDedup(rdb, RedisDedupConfig{Prefix: "r:"})
	svc, err := NewService(Config{}, Deps{Seq: alloc, Dedup: dedup, Store: st, IDs: &counterIDs{}, Producer: &recordingProducer{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var first, last *protocol.MsgSendAck
	for i := range 5 {
		last = svc.Send(ctx, 1, "dev", single(2, fmt.Sprint("before", i)))
		if last.Status != protocol.Status_STATUS_OK {
			t.Fatalf("send: %v %s", last.Status, last.Reason)
		}
		if first == nil {
			first = last
		}
	}
	srv.Stop()
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	var after *protocol.MsgSendAck
	for {
		// The first commands after the restart may fail on the dead
		// connections; a client retries.
		if after = svc.Send(ctx, 1, "dev", single(2, "after")); after.Status == protocol.Status_STATUS_OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := last.Seq + testSeqJump + 1; after.Status != protocol.Status_STATUS_OK || after.Seq != want {
		t.Fatalf("send after the restart = %v, want seq %d", after, want)
	}
	if again := svc.Send(ctx, 1, "dev", single(2, "before0")); !proto.Equal(again, first) {
		t.Fatalf("resend after the restart = %v, want the original %v", again, first)
	}
}

// slowFailStore fails its first AppendTouch after delay (a store that
// outlives its caller), then stores normally.
type slowFailStore struct {
	Store
	delay time.Duration
	once  sync.Once
}

func (s *slowFailStore) AppendTouch(ctx context.Context, items []store.AppendItem) ([]store.AppendResult, error) {
	failed := false
	s.once.Do(func() {
		time.Sleep(s.delay)
		failed = true
	})
	if failed {
		return nil, errors.New("store down")
	}
	return s.Store.AppendTouch(ctx, items)
}

// A send whose caller gave up while its store was failing releases its
// dedup claim all the same, so the client's resend is taken at once
// instead of being refused as in flight until the claim expires (the
// release used to run with the ended ctx and fail; found by review).
func TestSendCallerGoneReleasesClaim(t *testing.T) {
	svc, _, _ := newRedisService(t, func(st Store) Store { return &slowFailStore{Store: st, delay: 300 * time.Millisecond} })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	first := svc.Send(ctx, 1, "dev", single(2, "m"))
	cancel()
	if first.Status == protocol.Status_STATUS_OK {
		t.Fatalf("first attempt %v, want a failure", first)
	}
	again := svc.Send(context.Background(), 1, "dev", single(2, "m"))
	if again.Status != protocol.Status_STATUS_OK {
		t.Fatalf("resend %v %q, want OK", again.Status, again.Reason)
	}
}
