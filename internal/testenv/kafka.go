package testenv

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaMinSession lets tests use short consumer-group session timeouts
// (kfake's default minimum is Kafka's 6s), so rebalances take about a
// second.
const kafkaMinSession = time.Second

// Kafka starts an in-process Kafka-protocol broker listening on loopback,
// with the given topics pre-created (partitions each), and returns its
// bootstrap addresses. It stops when the test ends.
func Kafka(tb testing.TB, partitions int32, topics ...string) []string {
	tb.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(kafkaMinSession)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatalf("kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return c.ListenAddrs()
}
