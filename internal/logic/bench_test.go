package logic_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/testenv"
)

// nopProducer accepts everything.
type nopProducer struct{}

func (nopProducer) Publish(context.Context, string, []byte, []byte) error { return nil }
func (nopProducer) Close() error                                          { return nil }

func benchLogic(b *testing.B, store session.Store) *logic.Logic {
	b.Helper()
	l, err := logic.New(logic.Config{Push: logic.PushConfig{Secret: "x"}},
		logic.Deps{Store: store, Verifier: fakeVerifier{}, Producer: nopProducer{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

// BenchmarkConnect is the Connect path (parse, verify, record) over the
// in-memory store, without gRPC.
func BenchmarkConnect(b *testing.B) {
	l := benchLogic(b, session.NewMemory())
	ctx := context.Background()
	req := &pb.ConnectReq{Server: "comet-1", ConnId: "c", Token: authBody(42, "dev-1", "")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Connect(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushKeys is a push to 100 keys on 10 comets: lookup in the
// in-memory store, grouping, marshalling, publishing.
func BenchmarkPushKeys(b *testing.B) {
	store := session.NewMemory()
	l := benchLogic(b, store)
	ctx := context.Background()
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("dev-%d", i)
		s := session.Session{Key: keys[i], Mid: int64(i), Server: fmt.Sprintf("comet-%d", i%10), ConnID: "c"}
		if _, err := store.Add(ctx, s, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	msg := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.PushKeys(ctx, 1000, keys, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnectRedis is the Connect path over the real Redis store (one
// pipelined round trip of two scripts).
func BenchmarkConnectRedis(b *testing.B) {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
	b.Cleanup(func() { _ = c.Close() })
	prefix := fmt.Sprintf("hubuimtest:bench:%d:", time.Now().UnixNano())
	b.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	store, err := session.NewRedis(c, session.RedisConfig{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	l := benchLogic(b, store)
	ctx := context.Background()
	req := &pb.ConnectReq{Server: "comet-1", ConnId: "c", Token: authBody(42, "dev-1", "")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Connect(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
