package mq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrRunning is returned by Run while another Run of the same consumer is
// active.
var ErrRunning = errors.New("mq: consumer already running")

// KafkaConsumer consumes topics in a Kafka consumer group.
//
// Delivery is at least once. A record's offset is marked only after the
// handler returned nil for it, or, if the handler deferred it
// (Message.Defer), after it was acknowledged; a partition is marked only
// up to its first record not handled and acknowledged yet (a per-claim
// tracker, at most MaxUnacked records, follows out-of-order
// acknowledgements). Marked offsets are committed every AutoCommitInterval
// and when a session ends. When the handler fails, the claim stops without
// marking, the session ends (which commits what was handled), and after a
// backoff the consumer rejoins and the failed record is delivered again
// (with any record after the last marked one). Acknowledgements that come
// after their claim ended (rebalance, Close, ctx) are void: those records
// are delivered again. A crash re-delivers the records handled since the
// last commit; it never loses one.
type KafkaConsumer struct {
	cfg     KafkaConfig
	topics  []string
	group   string
	cg      sarama.ConsumerGroup
	log     *slog.Logger
	metrics *metrics

	running   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{}
}

var _ Consumer = (*KafkaConsumer)(nil)

// NewKafkaConsumer joins nothing yet: it connects to the brokers and
// prepares a consumer group for topics; Run joins. logger nil means
// slog.Default(); reg nil means the metrics are not registered.
func NewKafkaConsumer(cfg KafkaConfig, topics []string, group string, logger *slog.Logger, reg prometheus.Registerer) (*KafkaConsumer, error) {
	cfg, v, err := cfg.withDefaults("kafka")
	if err != nil {
		return nil, err
	}
	if len(topics) == 0 {
		return nil, errors.New("mq: kafka consumer: no topics")
	}
	if group == "" {
		return nil, errors.New("mq: kafka consumer: empty group")
	}
	if logger == nil {
		logger = slog.Default()
	}
	cg, err := sarama.NewConsumerGroup(cfg.Brokers, group, cfg.saramaConfig(v))
	if err != nil {
		return nil, fmt.Errorf("mq: kafka consumer group %s: %w", group, err)
	}
	return &KafkaConsumer{
		cfg:     cfg,
		topics:  append([]string(nil), topics...),
		group:   group,
		cg:      cg,
		log:     logger.With("component", "mq.kafka.consumer", "group", group),
		metrics: newMetrics("kafka", reg),
		closed:  make(chan struct{}),
	}, nil
}

// Run joins the group and consumes until ctx is done (it returns nil) or
// Close is called (it returns ErrClosed). Session errors and handler errors
// are retried with backoff, rejoining the group each time.
func (c *KafkaConsumer) Run(ctx context.Context, h Handler) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	var wg sync.WaitGroup
	defer wg.Wait()
	errCtx, stopErrs := context.WithCancel(ctx)
	defer stopErrs()
	wg.Go(func() { c.logErrors(errCtx) })

	backoff := c.cfg.ErrorBackoff
	for {
		select {
		case <-c.closed:
			return ErrClosed
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		gh := &groupHandler{c: c, h: h}
		err := c.cg.Consume(ctx, c.topics, gh)
		switch {
		case errors.Is(err, sarama.ErrClosedConsumerGroup):
			return ErrClosed
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.log.Warn("consumer group session failed", "err", err, "retry_in", backoff)
		case gh.failed.Load():
			// the handler error was logged by the claim
		default:
			backoff = c.cfg.ErrorBackoff // a clean rebalance
			continue
		}
		if gh.handled.Load() {
			backoff = c.cfg.ErrorBackoff
		}
		if !c.sleep(ctx, backoff) {
			if ctx.Err() != nil {
				return nil
			}
			return ErrClosed
		}
		backoff = min(2*backoff, c.cfg.MaxErrorBackoff)
	}
}

// sleep waits d; false if ctx ended or the consumer closed first.
func (c *KafkaConsumer) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-c.closed:
	}
	return false
}

func (c *KafkaConsumer) logErrors(ctx context.Context) {
	for {
		select {
		case err, ok := <-c.cg.Errors():
			if !ok {
				return
			}
			c.log.Warn("consumer error", "err", err)
		case <-ctx.Done():
			return
		}
	}
}

// Close leaves the group (committing handled offsets) and makes Run return
// ErrClosed.
func (c *KafkaConsumer) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.cg.Close()
	})
	if err != nil {
		return fmt.Errorf("mq: kafka consumer close: %w", err)
	}
	return nil
}

// groupHandler is one session's sarama handler.
type groupHandler struct {
	c       *KafkaConsumer
	h       Handler
	failed  atomic.Bool // a handler returned an error in this session
	handled atomic.Bool // a record was handled in this session
}

func (g *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (g *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim hands the claim's records to the handler one at a time.
// Returning (on a handler error) ends the whole session, which is what
// redelivers the failed record.
func (g *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	topic, group := claim.Topic(), g.c.group
	partition := strconv.FormatInt(int64(claim.Partition()), 10)
	consumed := g.c.metrics.consumed.WithLabelValues(topic, group)
	lag := g.c.metrics.lag.WithLabelValues(topic, partition, group)
	defer g.c.metrics.lag.DeleteLabelValues(topic, partition, group)
	unacked := g.c.metrics.unacked.WithLabelValues(topic, partition, group)
	defer g.c.metrics.unacked.DeleteLabelValues(topic, partition, group)
	ctx := sess.Context()
	tr := newTracker(MaxUnacked, unacked, func(next int64) { sess.MarkOffset(topic, claim.Partition(), next, "") })
	defer tr.close() // before the session's final commit: later acks are void
	var m Message
	for {
		if !tr.waitSpace(ctx) {
			return nil
		}
		select {
		case rec, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m = Message{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Key: rec.Key, Value: rec.Value,
				tracker: tr, seq: tr.add(rec.Offset)}
			if err := g.h(ctx, &m); err != nil {
				g.failed.Store(true)
				g.c.metrics.handlerErrors.WithLabelValues(topic, group).Inc()
				if ctx.Err() == nil {
					g.c.log.Warn("handler failed; record will be redelivered",
						"topic", topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				}
				return fmt.Errorf("mq: handler at %s/%d@%d: %w", topic, rec.Partition, rec.Offset, err)
			}
			if !m.deferred {
				tr.done(m.seq)
			}
			g.handled.Store(true)
			consumed.Inc()
			lag.Set(float64(max(claim.HighWaterMarkOffset()-rec.Offset-1, 0)))
		case <-ctx.Done():
			return nil
		}
	}
}
