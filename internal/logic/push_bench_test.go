package logic_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/testenv"
)

// Push benchmark shape: imbench push's (docs/benchmarks.md, issue 4).
const (
	benchPushUsers       = 1000
	benchPushConcurrency = 128 // imbench -workers
	benchPushBody        = 64
	benchPushTopic       = "hubuim-push"
	benchPushPartitions  = 4
)

// benchPushHandler is logic's HTTP API over the real Redis store (users
// online on one comet) and a Kafka producer to an in-process kfake broker:
// what a business push goes through in the distributed mode.
func benchPushHandler(b *testing.B) http.Handler {
	b.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
	b.Cleanup(func() { _ = c.Close() })
	prefix := fmt.Sprintf("hubuimtest:pushbench:%d:", time.Now().UnixNano())
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
	ctx := context.Background()
	for mid := range int64(benchPushUsers) {
		s := session.Session{Key: fmt.Sprintf("dev-%d", mid), Mid: mid, Server: "comet-1", ConnID: "c"}
		if _, err := store.Add(ctx, s, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(benchPushPartitions, benchPushTopic))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	producer, err := mq.NewKafkaProducer(mq.KafkaConfig{Brokers: cluster.ListenAddrs()}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = producer.Close() })
	l, err := logic.New(logic.Config{Push: logic.PushConfig{Unauthenticated: true, Topic: benchPushTopic}},
		logic.Deps{Store: store, Verifier: fakeVerifier{}, Producer: producer})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l.HTTPHandler()
}

// BenchmarkHTTPPushMids is POST /goim/push/mids with one mid, as imbench
// push sends it, called straight on the handler (no sockets) by
// benchPushConcurrency goroutines: Redis lookup, marshalling, Kafka
// produce and its ACK.
func BenchmarkHTTPPushMids(b *testing.B) {
	h := benchPushHandler(b)
	body := bytes.Repeat([]byte{'x'}, benchPushBody)
	var next atomic.Int64
	b.SetParallelism(benchPushConcurrency/2 + 1) // ×GOMAXPROCS (2)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mid := next.Add(1) % benchPushUsers
			r := httptest.NewRequest(http.MethodPost, "/goim/push/mids?operation=1000&mids="+strconv.FormatInt(mid, 10), bytes.NewReader(body))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
}
