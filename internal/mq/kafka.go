package mq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/hubuim/hubuim/internal/config"
)

// Kafka defaults, see KafkaConfig.
const (
	DefaultKafkaVersion       = "3.6.0"
	DefaultKafkaClientID      = "hubuim"
	DefaultProduceRetries     = 10
	DefaultProduceRetryWait   = 100 * time.Millisecond
	DefaultProduceTimeout     = 10 * time.Second
	DefaultSessionTimeout     = 10 * time.Second
	DefaultHeartbeatInterval  = 3 * time.Second
	DefaultRebalanceTimeout   = 60 * time.Second
	DefaultAutoCommitInterval = time.Second
	DefaultErrorBackoff       = 500 * time.Millisecond
	DefaultMaxErrorBackoff    = 30 * time.Second
	DefaultDialTimeout        = 10 * time.Second

	OffsetOldest = "oldest"
	OffsetNewest = "newest"
)

// minKafkaVersion is the first version with idempotent producers (and the
// lowest one kfake answers).
var minKafkaVersion = sarama.V0_11_0_0

// KafkaConfig configures the Kafka producer and consumer. The zero value
// (with Brokers set) is a sane production configuration.
type KafkaConfig struct {
	// Brokers are the bootstrap addresses (host:port). Required.
	Brokers []string `yaml:"brokers"`
	// Version is the Kafka protocol version to speak. Default "3.6.0";
	// at least "0.11.0" (idempotent producer).
	Version string `yaml:"version"`
	// ClientID is sent to the brokers. Default "hubuim".
	ClientID string `yaml:"client_id"`
	// DialTimeout bounds connecting to a broker. Default 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`

	// ProduceRetries is how often a failed produce is retried. Default 10.
	ProduceRetries int `yaml:"produce_retries"`
	// ProduceRetryBackoff is the wait between produce retries. Default 100ms.
	ProduceRetryBackoff time.Duration `yaml:"produce_retry_backoff"`
	// ProduceTimeout is how long the brokers may take to acknowledge a
	// produce with all in-sync replicas. Default 10s.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`

	// SessionTimeout is the consumer group session timeout. Default 10s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// HeartbeatInterval is the consumer group heartbeat. Default 3s; must
	// be below SessionTimeout.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// RebalanceTimeout is how long a member may take to rejoin. Default 60s.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// InitialOffset is where a group with no committed offset starts:
	// "oldest" (default: nothing already queued is skipped) or "newest".
	InitialOffset string `yaml:"initial_offset"`
	// AutoCommitInterval is how often handled (marked) offsets are
	// committed. Default 1s. Offsets are also committed when a session ends.
	AutoCommitInterval time.Duration `yaml:"auto_commit_interval"`
	// ErrorBackoff is the first wait before a consumer rejoins after a
	// handler or session error; it doubles up to MaxErrorBackoff and resets
	// after a record is handled. Default 500ms.
	ErrorBackoff time.Duration `yaml:"error_backoff"`
	// MaxErrorBackoff caps ErrorBackoff. Default 30s.
	MaxErrorBackoff time.Duration `yaml:"max_error_backoff"`
}

// withDefaults returns c with zero fields set to their defaults, or an error
// naming the first invalid field (prefixed with field, e.g. "kafka").
func (c KafkaConfig) withDefaults(field string) (KafkaConfig, sarama.KafkaVersion, error) {
	var zero sarama.KafkaVersion
	if len(c.Brokers) == 0 {
		return c, zero, config.Errorf(field+".brokers", "at least one broker is required")
	}
	setDefault(&c.Version, DefaultKafkaVersion)
	setDefault(&c.ClientID, DefaultKafkaClientID)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
	setDefault(&c.ProduceRetries, DefaultProduceRetries)
	setDefault(&c.ProduceRetryBackoff, DefaultProduceRetryWait)
	setDefault(&c.ProduceTimeout, DefaultProduceTimeout)
	setDefault(&c.SessionTimeout, DefaultSessionTimeout)
	setDefault(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	setDefault(&c.InitialOffset, OffsetOldest)
	setDefault(&c.AutoCommitInterval, DefaultAutoCommitInterval)
	setDefault(&c.ErrorBackoff, DefaultErrorBackoff)
	setDefault(&c.MaxErrorBackoff, DefaultMaxErrorBackoff)

	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return c, zero, config.Errorf(field+".version", "%v", err)
	}
	if !v.IsAtLeast(minKafkaVersion) {
		return c, zero, config.Errorf(field+".version", "%s is below %s (needed for idempotent produce)", c.Version, minKafkaVersion)
	}
	switch {
	case c.ProduceRetries < 0:
		return c, zero, config.Errorf(field+".produce_retries", "must not be negative")
	case c.HeartbeatInterval >= c.SessionTimeout:
		return c, zero, config.Errorf(field+".heartbeat_interval", "%s must be below session_timeout %s", c.HeartbeatInterval, c.SessionTimeout)
	case c.InitialOffset != OffsetOldest && c.InitialOffset != OffsetNewest:
		return c, zero, config.Errorf(field+".initial_offset", "%q is neither %q nor %q", c.InitialOffset, OffsetOldest, OffsetNewest)
	case c.MaxErrorBackoff < c.ErrorBackoff:
		return c, zero, config.Errorf(field+".max_error_backoff", "%s is below error_backoff %s", c.MaxErrorBackoff, c.ErrorBackoff)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"dial_timeout", c.DialTimeout}, {"produce_retry_backoff", c.ProduceRetryBackoff},
		{"produce_timeout", c.ProduceTimeout}, {"session_timeout", c.SessionTimeout},
		{"heartbeat_interval", c.HeartbeatInterval}, {"rebalance_timeout", c.RebalanceTimeout},
		{"auto_commit_interval", c.AutoCommitInterval}, {"error_backoff", c.ErrorBackoff},
	} {
		if d.v < 0 {
			return c, zero, config.Errorf(field+"."+d.name, "must not be negative")
		}
	}
	return c, v, nil
}

// Sarama keeps its own go-metrics meters and histograms (per broker and
// topic, updated on every request and record). HubuIM exports its own
// Prometheus metrics and never reads them, and the histograms' sampling
// cost ~5% of the job's CPU under load: they are replaced by no-ops. The
// switch is go-metrics' process-wide one; it is set at package
// initialisation, before any Kafka client exists, so no client ever reads
// it while it changes.
func init() { gometrics.UseNilMetrics = true }

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// saramaConfig builds the sarama configuration shared by producer and
// consumer.
func (c KafkaConfig) saramaConfig(v sarama.KafkaVersion) *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = v
	sc.ClientID = c.ClientID
	sc.Net.DialTimeout = c.DialTimeout

	// Idempotent, ordered producer: one in-flight request per broker and
	// acks from all in-sync replicas, so retries neither duplicate nor
	// reorder. The hash partitioner keeps one key in one partition.
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Retry.Max = c.ProduceRetries
	sc.Producer.Retry.Backoff = c.ProduceRetryBackoff
	sc.Producer.Timeout = c.ProduceTimeout
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true

	sc.Consumer.Group.Session.Timeout = c.SessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = c.HeartbeatInterval
	sc.Consumer.Group.Rebalance.Timeout = c.RebalanceTimeout
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = c.AutoCommitInterval
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	if c.InitialOffset == OffsetNewest {
		sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	sc.Consumer.Return.Errors = true
	return sc
}

// KafkaProducer publishes to Kafka with one shared idempotent asynchronous
// producer: concurrent Publish calls put their records in the same produce
// requests (sarama sends what is buffered as soon as the request in flight
// is answered), and each caller waits for its own record's acknowledgement.
// Records with the same key land in the same partition, in publish order.
type KafkaProducer struct {
	p       sarama.AsyncProducer
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // records sent to the producer, not yet answered
	results  sync.WaitGroup // the success and error loops
	pending  sync.Pool      // *produceResult whose answer was received
}

var _ Producer = (*KafkaProducer)(nil)

// produceResult carries one record's outcome from the producer's result
// loops to the waiting Publish (the record's Metadata).
type produceResult struct {
	done chan error // buffered, one answer
}

// asyncResult carries one record's outcome to PublishAsync's callback (the
// record's Metadata).
type asyncResult struct {
	topic string
	done  func(error)
}

// NewKafkaProducer connects to the brokers. logger nil means slog.Default();
// reg nil means the metrics are not registered. The producer's result loops
// run until Close.
func NewKafkaProducer(cfg KafkaConfig, logger *slog.Logger, reg prometheus.Registerer) (*KafkaProducer, error) {
	cfg, v, err := cfg.withDefaults("kafka")
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	ap, err := sarama.NewAsyncProducer(cfg.Brokers, cfg.saramaConfig(v))
	if err != nil {
		return nil, fmt.Errorf("mq: kafka producer: %w", err)
	}
	p := &KafkaProducer{p: ap, log: logger.With("component", "mq.kafka.producer"), metrics: newMetrics("kafka", reg)}
	p.results.Go(func() {
		for m := range ap.Successes() {
			p.answer(m, nil)
		}
	})
	p.results.Go(func() {
		for pe := range ap.Errors() {
			p.answer(pe.Msg, pe.Err)
		}
	})
	return p, nil
}

// answer hands a record's outcome to its Publish (which may have stopped
// waiting: the channel is buffered).
func (p *KafkaProducer) answer(m *sarama.ProducerMessage, err error) {
	switch r := m.Metadata.(type) {
	case *produceResult:
		r.done <- err
	case *asyncResult:
		if err != nil {
			p.metrics.produceErrors.WithLabelValues(r.topic).Inc()
			err = fmt.Errorf("mq: kafka publish to %s: %w", r.topic, err)
		} else {
			p.metrics.produced.WithLabelValues(r.topic).Inc()
		}
		r.done(err)
	}
	p.inflight.Done()
}

// admit counts a record about to be handed to the producer as in flight
// (Close waits for it), unless ctx ended or the producer is closed.
func (p *KafkaProducer) admit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.inflight.Add(1)
	return nil
}

func (p *KafkaProducer) getResult() *produceResult {
	if r, ok := p.pending.Get().(*produceResult); ok {
		return r
	}
	return &produceResult{done: make(chan error, 1)}
}

// Publish sends one record and returns when all in-sync replicas have it.
// key and value are copied: the caller may reuse them once Publish returns.
// If ctx ends first Publish returns ctx's error, but the record may still
// be written (the send itself is bounded by ProduceRetries and
// ProduceTimeout).
func (p *KafkaProducer) Publish(ctx context.Context, topic string, key, value []byte) error {
	if err := p.admit(ctx); err != nil {
		return err
	}

	msg := newRecord(topic, key, value)
	r := p.getResult()
	msg.Metadata = r
	// Input is buffered; the send blocks only when the producer is far
	// behind. Every record sent is answered on Successes or Errors
	// (Return.Successes and Return.Errors are set).
	select {
	case p.p.Input() <- msg:
	case <-ctx.Done():
		p.inflight.Done()
		p.pending.Put(r)
		p.metrics.produceErrors.WithLabelValues(topic).Inc()
		return ctx.Err()
	}
	var err error
	select {
	case err = <-r.done:
		p.pending.Put(r)
	case <-ctx.Done():
		// The answer arrives later into r.done, which is dropped.
		p.metrics.produceErrors.WithLabelValues(topic).Inc()
		return ctx.Err()
	}
	if err != nil {
		p.metrics.produceErrors.WithLabelValues(topic).Inc()
		return fmt.Errorf("mq: kafka publish to %s: %w", topic, err)
	}
	p.metrics.produced.WithLabelValues(topic).Inc()
	return nil
}

// newRecord makes a record with one copy of key and value: sarama encodes
// it later, possibly after a canceled Publish returned and its caller
// reused the buffers.
func newRecord(topic string, key, value []byte) *sarama.ProducerMessage {
	buf := make([]byte, len(key)+len(value))
	copy(buf, value)
	copy(buf[len(value):], key)
	msg := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(buf[:len(value):len(value)])}
	if key != nil {
		msg.Key = sarama.ByteEncoder(buf[len(value):])
	}
	return msg
}

// PublishAsync hands one record to the producer and returns without
// waiting for its acknowledgement: done is called exactly once with the
// outcome (nil when all in-sync replicas have it), from the producer's
// result loop — it must not block. Records handed over in order with the
// same key are written in that order (as with Publish). key and value are
// copied. An error return (ctx ended while the producer's input was full,
// or the producer is closed) means the record was not handed over and done
// is not called. Close waits for every record handed over to be answered.
func (p *KafkaProducer) PublishAsync(ctx context.Context, topic string, key, value []byte, done func(error)) error {
	if err := p.admit(ctx); err != nil {
		return err
	}
	msg := newRecord(topic, key, value)
	msg.Metadata = &asyncResult{topic: topic, done: done}
	select {
	case p.p.Input() <- msg:
		return nil
	case <-ctx.Done():
		p.inflight.Done()
		p.metrics.produceErrors.WithLabelValues(topic).Inc()
		return ctx.Err()
	}
}

// Close waits for the records in flight to be answered and closes the
// producer. Publish after Close returns ErrClosed.
func (p *KafkaProducer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inflight.Wait()
	// Every record was answered: shut the producer down and let the result
	// loops see its Successes and Errors channels close.
	p.p.AsyncClose()
	p.results.Wait()
	return nil
}
