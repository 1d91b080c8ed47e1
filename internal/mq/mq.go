// Package mq is the message queue between logic and job: a Producer that
// publishes keyed records to a topic and a Consumer that delivers them to a
// handler in a consumer group, committing a record only after the handler
// returned without error. Implementations: Kafka through sarama, and an
// in-process queue for the standalone mode and tests.
package mq

import (
	"context"
	"errors"
)

// Default topic names.
const (
	TopicPush    = "hubuim-push"
	TopicMessage = "hubuim-msg"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("mq: closed")

// Message is one consumed record. Records with the same key go to the same
// partition and are delivered in order.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
}

// Producer publishes records.
type Producer interface {
	// Publish returns after the record is acknowledged by the queue.
	Publish(ctx context.Context, topic string, key, value []byte) error
	Close() error
}

// Handler processes one record. Returning nil commits it; returning an
// error stops the consumer's session for that partition so the record is
// delivered again, after a backoff. ctx ends when the partition is taken
// away (rebalance) or the consumer stops; a handler blocked on it should
// return its error, and the record is then delivered again.
type Handler func(ctx context.Context, m *Message) error

// Consumer delivers records of its topics to a handler.
type Consumer interface {
	// Run consumes until ctx is done (it returns nil) or Close is called
	// (it returns ErrClosed). Records of one partition are handled one at a
	// time, in order. Delivery is at least once: a record is committed only
	// after h returned nil for it, so a crash re-delivers and never loses.
	// One Run at a time per Consumer (ErrRunning otherwise).
	Run(ctx context.Context, h Handler) error
	Close() error
}
