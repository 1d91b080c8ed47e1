package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// kafka helper defaults.
const (
	defaultKafkaPort       = 19092
	defaultKafkaPartitions = 8
	defaultKafkaTopics     = "hubuim-push,hubuim-msg"
	defaultKafkaLife       = time.Hour
	kafkaMinSession        = time.Second
)

// runKafka serves an in-memory Kafka-protocol broker (kfake) for the
// distributed-mode benchmarks, until -for elapses or a signal arrives. It
// is a benchmark helper, not a Kafka: nothing is persisted.
func runKafka(ctx context.Context, args []string, c *common) error {
	fs := flag.NewFlagSet("kafka", flag.ContinueOnError)
	port := fs.Int("port", defaultKafkaPort, "port on 127.0.0.1")
	parts := fs.Int("partitions", defaultKafkaPartitions, "partitions per topic")
	topics := fs.String("topics", defaultKafkaTopics, "comma-separated topics to create")
	life := fs.Duration("for", defaultKafkaLife, "stop after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *port <= 0 || *parts <= 0 || *life <= 0 {
		return errors.New("-port, -partitions and -for must be positive")
	}
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1), kfake.Ports(*port),
		kfake.SeedTopics(int32(*parts), strings.Split(*topics, ",")...),
		kfake.GroupMinSessionTimeout(kafkaMinSession),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	fmt.Fprintln(c.out, "kafka listening on", strings.Join(cl.ListenAddrs(), ","))
	sleepCtx(ctx, *life)
	return nil
}
