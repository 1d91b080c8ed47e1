package mq_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/mq/mqtest"
)

const (
	kafkaTestPartitions = 4
	kafkaTestTimeout    = 30 * time.Second
)

// KafkaTestConfig is a configuration tuned for fast group joins against an
// in-process kfake broker.
func kafkaTestConfig(brokers []string) mq.KafkaConfig {
	return mq.KafkaConfig{
		Brokers:             brokers,
		DialTimeout:         time.Second,
		ProduceRetries:      2,
		ProduceRetryBackoff: 50 * time.Millisecond,
		ProduceTimeout:      2 * time.Second,
		SessionTimeout:      2 * time.Second,
		HeartbeatInterval:   300 * time.Millisecond,
		RebalanceTimeout:    2 * time.Second,
		AutoCommitInterval:  100 * time.Millisecond,
		ErrorBackoff:        50 * time.Millisecond,
		MaxErrorBackoff:     time.Second,
	}
}

func newKafkaBackend(t *testing.T) *mqtest.Backend {
	const topic = "t"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(kafkaTestPartitions, topic),
		kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := kafkaTestConfig(cluster.ListenAddrs())
	p, err := mq.NewKafkaProducer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &mqtest.Backend{
		Producer: p,
		NewConsumer: func(tb testing.TB, group string) mq.Consumer {
			c, err := mq.NewKafkaConsumer(cfg, []string{topic}, group, nil, nil)
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = c.Close() })
			return c
		},
		Topic:      topic,
		Partitions: kafkaTestPartitions,
		Kill:       cluster.Close,
		Timeout:    kafkaTestTimeout,
	}
}

func TestKafkaConformance(t *testing.T) { mqtest.Run(t, newKafkaBackend) }

func TestKafkaConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   mq.KafkaConfig
		field string
	}{
		{"no brokers", mq.KafkaConfig{}, "kafka.brokers"},
		{"old version", mq.KafkaConfig{Brokers: []string{"x:1"}, Version: "0.10.2.0"}, "kafka.version"},
		{"bad version", mq.KafkaConfig{Brokers: []string{"x:1"}, Version: "banana"}, "kafka.version"},
		{"heartbeat", mq.KafkaConfig{Brokers: []string{"x:1"}, HeartbeatInterval: time.Minute}, "kafka.heartbeat_interval"},
		{"offset", mq.KafkaConfig{Brokers: []string{"x:1"}, InitialOffset: "middle"}, "kafka.initial_offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mq.NewKafkaProducer(tc.cfg, nil, nil)
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}
