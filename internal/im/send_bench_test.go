package im

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/store"
)

// benchConvs is how many 1:1 conversations the send benchmarks spread over.
const benchConvs = 100

// storeOnlyBolt is a bolt store whose AppendTouch accepts every message
// without writing it, so the send benchmarks measure the Redis part of the
// send path (dedup, seq) and the service itself, not the disk.
type storeOnlyBolt struct{ *store.Bolt }

func (s storeOnlyBolt) AppendTouch(_ context.Context, items []store.AppendItem) ([]store.AppendResult, error) {
	res := make([]store.AppendResult, len(items))
	for i, it := range items {
		res[i].Msg = it.Msg
	}
	return res, nil
}

// roundTrips counts the Redis round trips of a client (a pipeline is one).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// newRedisBenchService is a Service over the test Redis (dedup and seq) and
// a store that does not write; rt counts its Redis round trips.
func newRedisBenchService(tb testing.TB, cfg Config) (*Service, *roundTrips) {
	tb.Helper()
	rdb, prefix := newTestRedis(tb)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	st, err := store.OpenBolt(store.BoltConfig{Dir: tb.TempDir(), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	counter, err := NewRedisSeqCounter(rdb, prefix, 0)
	if err != nil {
		tb.Fatal(err)
	}
	seq, err := NewSeqAllocator(counter, st, SeqAllocatorConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	dedup, err := NewRedisDedup(rdb, RedisDedupConfig{Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	metrics, err := NewMetrics(nil)
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := NewService(cfg, Deps{Seq: seq, Dedup: dedup, Store: storeOnlyBolt{st}, IDs: &counterIDs{}, Producer: nopProducer{}, Metrics: metrics})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, rt
}

type nopProducer struct{}

func (nopProducer) Publish(context.Context, string, []byte, []byte) error { return nil }
func (nopProducer) Close() error                                          { return nil }

// benchSend sends b.N 1:1 messages from parallelism*GOMAXPROCS goroutines
// (each one message in flight, like closed-loop senders), every one with a
// fresh client message id.
func benchSend(b *testing.B, parallelism int) {
	svc, rt := newRedisBenchService(b, Config{})
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	rt.n.Store(0)
	b.Cleanup(func() { b.ReportMetric(float64(rt.n.Load())/float64(b.N), "redis-rt/op") })
	b.RunParallel(func(pb *testing.PB) {
		req := &protocol.MsgSend{ConvType: protocol.ConvType_CONV_TYPE_SINGLE, Payload: []byte("hello")}
		for pb.Next() {
			n := next.Add(1)
			sender := 1 + n%benchConvs
			req.To = sender + benchConvs
			req.ClientMsgId = "c" + strconv.FormatInt(n, 10)
			if ack := svc.Send(ctx, sender, "k", req); ack.Status != protocol.Status_STATUS_OK {
				b.Fatalf("send: %v %s", ack.Status, ack.Reason)
			}
		}
	})
}

// BenchmarkSendRedis: the send path over Redis (dedup and seq) with a store
// that does not write; one sender, then 100 concurrent senders.
func BenchmarkSendRedis(b *testing.B) {
	for _, par := range []int{1, 50} {
		b.Run(fmt.Sprintf("senders=%dxGOMAXPROCS", par), func(b *testing.B) { benchSend(b, par) })
	}
}
