package im

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/proto"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/mq"
)

// maxEventsInFlight bounds the message events handed to an asynchronous
// producer and not yet acknowledged by the queue: beyond it a publish
// waits for a slot (the producer is behind; senders slow down instead of
// the backlog growing without bound).
const maxEventsInFlight = 8192

// asyncPublisher is a producer that can hand a record over without waiting
// for the queue's acknowledgement (mq.KafkaProducer): done is called once
// with the outcome when PublishAsync returned nil; records handed over in
// order with one key stay in that order.
type asyncPublisher interface {
	PublishAsync(ctx context.Context, topic string, key, value []byte, done func(error)) error
}

// eventPublisher publishes message events to the message topic. The store
// is the source of truth: an event only drives the live push, so a send's
// ACK (after the store) does not wait for the queue's acknowledgement when
// the producer can hand records over (the record is in the producer, in
// order with the events before it, when publish returns). A failure is
// counted and logged; recipients get the message by sync on their next
// reconnect or pull. With a producer that cannot, publish waits for the
// acknowledgement as before.
type eventPublisher struct {
	p     mq.Producer
	async asyncPublisher // nil: p.Publish waits
	topic string
	slots chan struct{} // one per event handed over, unanswered
	m     *Metrics
	log   *slog.Logger
	done  func(error) // the callback of every asynchronous record
}

// newEventPublisher publishes to topic through p; at most maxInFlight
// events are handed over and unanswered at once.
func newEventPublisher(p mq.Producer, topic string, maxInFlight int, m *Metrics, log *slog.Logger) *eventPublisher {
	e := &eventPublisher{p: p, topic: topic, m: m, log: log}
	if a, ok := p.(asyncPublisher); ok {
		e.async = a
		e.slots = make(chan struct{}, maxInFlight)
		e.done = e.answered
	}
	return e
}

// publish publishes ev with record key key (one key stays in order).
func (e *eventPublisher) publish(ctx context.Context, key string, ev *logicpb.MsgEvent) {
	value, err := proto.Marshal(ev)
	if err != nil {
		e.failed(key, err)
		return
	}
	if e.async == nil {
		if err := e.p.Publish(ctx, e.topic, []byte(key), value); err != nil {
			e.failed(key, err)
		}
		return
	}
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		e.failed(key, ctx.Err())
		return
	}
	if err := e.async.PublishAsync(ctx, e.topic, []byte(key), value, e.done); err != nil {
		<-e.slots
		e.failed(key, err)
	}
}

// answered is the outcome of an asynchronous record.
func (e *eventPublisher) answered(err error) {
	<-e.slots
	if err != nil {
		e.failed("", err)
	}
}

// failed counts and logs a lost event (key "": not known any more).
func (e *eventPublisher) failed(key string, err error) {
	e.m.publishFailed()
	e.log.Warn("im: publish event", "topic", e.topic, "key", key, "err", err)
}
