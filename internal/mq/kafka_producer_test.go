package mq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hubuim/hubuim/internal/mq"
)

// producerTestTopic is the topic of the producer tests and benchmarks.
const producerTestTopic = "p"

func newProducerCluster(tb testing.TB) (*kfake.Cluster, mq.KafkaConfig) {
	tb.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(kafkaTestPartitions, producerTestTopic))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cluster.Close)
	return cluster, kafkaTestConfig(cluster.ListenAddrs())
}

func newTestProducer(tb testing.TB, cfg mq.KafkaConfig) *mq.KafkaProducer {
	tb.Helper()
	p, err := mq.NewKafkaProducer(cfg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// TestKafkaProducerConcurrentPublish publishes from many goroutines at once
// (records share produce requests) and checks that every record reached
// the broker intact and in per-key order.
func TestKafkaProducerConcurrentPublish(t *testing.T) {
	_, cfg := newProducerCluster(t)
	p := newTestProducer(t, cfg)
	const (
		publishers = 32
		perKey     = 20
	)
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTestTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for g := range publishers {
		wg.Go(func() {
			for i := range perKey {
				key := fmt.Appendf(nil, "k%d", g)
				value := fmt.Appendf(nil, "k%d:%d", g, i)
				if err := p.Publish(ctx, producerTestTopic, key, value); err != nil {
					errs <- err
					return
				}
				// The producer must not retain the caller's buffers.
				clear(value)
				clear(key)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	checkRecords(ctx, t, cfg, publishers, perKey)
}

// checkRecords reads the test topic back with a plain sarama consumer (not
// the group consumer under test elsewhere), partition by partition from
// the oldest offset, and checks that it holds exactly keys×perKey records
// "k<g>:<i>" keyed "k<g>", intact and in order per key.
func checkRecords(ctx context.Context, t *testing.T, cfg mq.KafkaConfig, keys, perKey int) {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_6_0_0
	c, err := sarama.NewConsumer(cfg.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := map[string]int{}
	seen := 0
	for part := range int32(kafkaTestPartitions) {
		pc, err := c.ConsumePartition(producerTestTopic, part, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		hwm := pc.HighWaterMarkOffset()
		for hwm > 0 {
			var m *sarama.ConsumerMessage
			select {
			case m = <-pc.Messages():
			case <-ctx.Done():
				t.Fatalf("partition %d: %v", part, ctx.Err())
			}
			var g, i int
			if _, err := fmt.Sscanf(string(m.Value), "k%d:%d", &g, &i); err != nil || fmt.Sprintf("k%d", g) != string(m.Key) {
				t.Fatalf("corrupted record %q/%q", m.Key, m.Value)
			}
			if want := next[string(m.Key)]; i != want {
				t.Fatalf("%s: got %d, want %d", m.Key, i, want)
			}
			next[string(m.Key)] = i + 1
			seen++
			if m.Offset+1 >= hwm {
				break
			}
		}
		_ = pc.Close()
	}
	if seen != keys*perKey {
		t.Fatalf("broker has %d of %d records", seen, keys*perKey)
	}
}

// TestKafkaProducerPublishAsync hands records over without waiting: each
// callback is called once with nil, the records reach the broker intact and
// in per-key order although the caller reused its buffers at once, and
// Close waits for every callback.
func TestKafkaProducerPublishAsync(t *testing.T) {
	_, cfg := newProducerCluster(t)
	p := newTestProducer(t, cfg)
	const (
		keys   = 8
		perKey = 50
	)
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTestTimeout)
	defer cancel()
	var (
		mu     sync.Mutex
		calls  int
		failed []error
	)
	done := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if err != nil {
			failed = append(failed, err)
		}
	}
	var wg sync.WaitGroup
	for g := range keys {
		wg.Go(func() {
			key, value := make([]byte, 0, 8), make([]byte, 0, 16)
			for i := range perKey {
				key = fmt.Appendf(key[:0], "k%d", g)
				value = fmt.Appendf(value[:0], "k%d:%d", g, i)
				if err := p.PublishAsync(ctx, producerTestTopic, key, value, done); err != nil {
					t.Error(err)
					return
				}
				clear(value)
				clear(key)
			}
		})
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if calls != keys*perKey || len(failed) > 0 {
		t.Fatalf("after Close: %d callbacks of %d, failures %v", calls, keys*perKey, failed)
	}
	mu.Unlock()
	checkRecords(ctx, t, cfg, keys, perKey)
	if err := p.PublishAsync(ctx, producerTestTopic, nil, []byte("v"), done); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("PublishAsync after Close: %v, want ErrClosed", err)
	}
}

// TestKafkaProducerPublishAsyncBrokerDown: with the broker gone the
// record's callback gets an error (not never), and Close returns.
func TestKafkaProducerPublishAsyncBrokerDown(t *testing.T) {
	cluster, cfg := newProducerCluster(t)
	p := newTestProducer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTestTimeout)
	defer cancel()
	if err := p.Publish(ctx, producerTestTopic, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	cluster.Close()
	res := make(chan error, 1)
	if err := p.PublishAsync(ctx, producerTestTopic, []byte("k"), []byte("v"), func(err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("record to a dead broker acknowledged")
		}
	case <-ctx.Done():
		t.Fatal("no answer for a record to a dead broker")
	}
	_ = p.Close()
}

// TestKafkaProducerBrokerDown: with the broker gone Publish fails with an
// error (not a hang), and Close still returns.
func TestKafkaProducerBrokerDown(t *testing.T) {
	cluster, cfg := newProducerCluster(t)
	p := newTestProducer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTestTimeout)
	defer cancel()
	if err := p.Publish(ctx, producerTestTopic, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	cluster.Close()
	err := p.Publish(ctx, producerTestTopic, []byte("k"), []byte("v"))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a dead broker: %v, want a produce error before the deadline", err)
	}
	if err := p.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if err := p.Publish(ctx, producerTestTopic, nil, []byte("v")); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

// TestKafkaProducerContext: a done context fails at once; a context that
// ends while the record is in flight returns its error, and Close waits
// for that record instead of losing track of it.
func TestKafkaProducerContext(t *testing.T) {
	_, cfg := newProducerCluster(t)
	p := newTestProducer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ctx, producerTestTopic, nil, []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("publish with a canceled context: %v", err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancelShort()
	<-short.Done()
	// Either the context error (most likely) or nil if the broker was
	// faster; never anything else.
	if err := p.Publish(short, producerTestTopic, nil, []byte("v")); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish with an expiring context: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkKafkaPublish measures Publish (with a cancelable context, as
// an HTTP request has) against an in-process kfake broker: "serial" is one
// caller at a time (the round trip of a lone record), "parallel" many
// goroutines at once as logic's push handlers call it (records share
// produce requests).
func BenchmarkKafkaPublish(b *testing.B) {
	const parallelism = 64
	_, cfg := newProducerCluster(b)
	p := newTestProducer(b, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	value := make([]byte, 128)
	key := []byte("bench-key")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Publish(ctx, producerTestTopic, key, value); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(parallelism)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := p.Publish(ctx, producerTestTopic, key, value); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
