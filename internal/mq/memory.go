package mq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
)

// Memory defaults, see MemoryConfig.
const (
	DefaultMemoryPartitions   = 8
	DefaultMemoryMaxRecords   = 10000
	DefaultMemoryRetryBackoff = 100 * time.Millisecond
	DefaultMemoryMaxBackoff   = 5 * time.Second
)

// ErrFull is returned (wrapped with the context's error) by Memory.Publish
// when a partition stayed full until ctx ended.
var ErrFull = errors.New("mq: partition full")

// MemoryConfig configures the in-process queue. The zero value is usable.
type MemoryConfig struct {
	// Partitions per topic. Default 8.
	Partitions int `yaml:"partitions"`
	// MaxRecords is how many records a partition holds. When it is full,
	// records every consumer group of the topic has committed are dropped;
	// if none can be, Publish blocks until a group commits or ctx ends.
	// A topic no group consumes yet keeps everything. Default 10000.
	MaxRecords int `yaml:"max_records"`
	// RetryBackoff is the first wait before a record whose handler failed
	// is delivered again; it doubles up to MaxRetryBackoff. Default 100ms.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxRetryBackoff caps RetryBackoff. Default 5s.
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"`
	// MaxUnacked is how many deferred records (Message.Defer) a partition
	// may have unacknowledged before its delivery waits. Default
	// MaxUnacked (4096).
	MaxUnacked int `yaml:"max_unacked"`

	// Logger; nil means slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Registerer for the metrics; nil means not registered.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Memory is an in-process queue with Kafka's semantics: topics split in
// partitions by key hash, consumer groups that share partitions among their
// running consumers, per-group committed offsets, at-least-once delivery
// (a record whose handler failed is delivered again, after a backoff, with
// every record after the last committed one), deferred acknowledgements
// (Message.Defer). Nothing survives the process.
//
// Lock order: Memory.mu only; handlers run without it.
type Memory struct {
	cfg     MemoryConfig
	log     *slog.Logger
	metrics *metrics
	rr      atomic.Uint32 // partition of records without a key

	mu     sync.Mutex
	topics map[string]*memTopic
	groups map[string]*memGroup
	closed bool
	done   chan struct{}
}

var _ Producer = (*Memory)(nil)

type memTopic struct {
	name   string
	parts  []*memPartition
	groups map[*memGroup]struct{} // groups consuming this topic
}

type memPartition struct {
	base    int64    // offset of recs[0]
	recs    []memRec // retained records
	changed chan struct{}
	waiters int // goroutines waiting on changed
}

type memRec struct{ key, value []byte }

type tp struct {
	topic     string
	partition int32
}

type memGroup struct {
	name      string
	committed map[tp]int64         // next offset to handle after a restart: all below are acknowledged
	owner     map[tp]chan struct{} // one token per partition: held by the consumer handling it
	members   []*MemoryConsumer
	gen       uint64
	rebalance chan struct{} // closed and replaced on every membership change
}

// NewMemory returns an empty queue; topics are created on first use.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	setDefault(&cfg.Partitions, DefaultMemoryPartitions)
	setDefault(&cfg.MaxRecords, DefaultMemoryMaxRecords)
	setDefault(&cfg.RetryBackoff, DefaultMemoryRetryBackoff)
	setDefault(&cfg.MaxRetryBackoff, DefaultMemoryMaxBackoff)
	setDefault(&cfg.MaxUnacked, MaxUnacked)
	switch {
	case cfg.Partitions < 0:
		return nil, config.Errorf("partitions", "must be positive")
	case cfg.MaxRecords < 0:
		return nil, config.Errorf("max_records", "must be positive")
	case cfg.MaxUnacked < 0:
		return nil, config.Errorf("max_unacked", "must be positive")
	case cfg.RetryBackoff < 0:
		return nil, config.Errorf("retry_backoff", "must not be negative")
	case cfg.MaxRetryBackoff < cfg.RetryBackoff:
		return nil, config.Errorf("max_retry_backoff", "%s is below retry_backoff %s", cfg.MaxRetryBackoff, cfg.RetryBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Memory{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "mq.memory"),
		metrics: newMetrics("memory", cfg.Registerer),
		topics:  make(map[string]*memTopic),
		groups:  make(map[string]*memGroup),
		done:    make(chan struct{}),
	}, nil
}

// topic returns the named topic, creating it. Memory.mu must be held.
func (m *Memory) topic(name string) *memTopic {
	t := m.topics[name]
	if t == nil {
		t = &memTopic{name: name, parts: make([]*memPartition, m.cfg.Partitions), groups: make(map[*memGroup]struct{})}
		for i := range t.parts {
			t.parts[i] = &memPartition{changed: make(chan struct{})}
		}
		m.topics[name] = t
	}
	return t
}

func (m *Memory) partitionOf(key []byte) int32 {
	if key == nil {
		return int32(m.rr.Add(1) % uint32(m.cfg.Partitions))
	}
	h := fnv.New32a()
	_, _ = h.Write(key)
	return int32(h.Sum32() % uint32(m.cfg.Partitions))
}

// signal wakes everything waiting on p. Memory.mu must be held.
func (p *memPartition) signal() {
	if p.waiters > 0 {
		close(p.changed)
		p.changed = make(chan struct{})
		p.waiters = 0
	}
}

// Publish appends a record. It blocks while the partition is full (see
// MaxRecords) and returns an error wrapping ErrFull and ctx's error if ctx
// ends first, or ErrClosed after Close. key and value are copied.
func (m *Memory) Publish(ctx context.Context, topic string, key, value []byte) error {
	part := m.partitionOf(key)
	rec := memRec{value: append([]byte(nil), value...)}
	if key != nil {
		rec.key = append([]byte{}, key...)
	}
	m.mu.Lock()
	for {
		if m.closed {
			m.mu.Unlock()
			m.metrics.produceErrors.WithLabelValues(topic).Inc()
			return ErrClosed
		}
		t := m.topic(topic)
		p := t.parts[part]
		if len(p.recs) >= m.cfg.MaxRecords {
			m.trim(t, part)
		}
		if len(p.recs) < m.cfg.MaxRecords {
			p.recs = append(p.recs, rec)
			p.signal()
			m.mu.Unlock()
			m.metrics.produced.WithLabelValues(topic).Inc()
			return nil
		}
		changed := p.changed
		p.waiters++
		m.mu.Unlock()
		select {
		case <-changed:
		case <-m.done:
		case <-ctx.Done():
			m.metrics.produceErrors.WithLabelValues(topic).Inc()
			return fmt.Errorf("%w: %s/%d: %w", ErrFull, topic, part, ctx.Err())
		}
		m.mu.Lock()
	}
}

// trim drops the records of a partition that every group of the topic has
// committed. Memory.mu must be held.
func (m *Memory) trim(t *memTopic, part int32) {
	if len(t.groups) == 0 {
		return
	}
	p := t.parts[part]
	low := p.base + int64(len(p.recs))
	for g := range t.groups {
		low = min(low, g.committed[tp{t.name, part}])
	}
	if n := int(low - p.base); n > 0 {
		clear(p.recs[:n]) // let the records be collected
		p.recs = append(p.recs[:0], p.recs[n:]...)
		p.base = low
	}
}

// Consumer returns a consumer of topics in group. Consumers of one group
// share the partitions while they run; a group that never committed starts
// at the oldest retained record.
func (m *Memory) Consumer(group string, topics ...string) Consumer {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[group]
	if g == nil {
		g = &memGroup{name: group, committed: make(map[tp]int64), owner: make(map[tp]chan struct{}), rebalance: make(chan struct{})}
		m.groups[group] = g
	}
	for _, name := range topics {
		t := m.topic(name)
		if _, ok := t.groups[g]; !ok {
			t.groups[g] = struct{}{}
			for i, p := range t.parts {
				k := tp{name, int32(i)}
				g.committed[k] = p.base
				g.owner[k] = make(chan struct{}, 1)
			}
		}
	}
	return &MemoryConsumer{m: m, g: g, topics: append([]string(nil), topics...), closed: make(chan struct{})}
}

// Close makes Publish and Run return ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	return nil
}

// MemoryConsumer is one member of a consumer group of a Memory queue.
type MemoryConsumer struct {
	m      *Memory
	g      *memGroup
	topics []string

	running   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{}
}

var _ Consumer = (*MemoryConsumer)(nil)

// Run joins the group and handles the partitions assigned to this member,
// one goroutine per partition, until ctx is done (nil), Close is called or
// the queue is closed (ErrClosed).
func (c *MemoryConsumer) Run(ctx context.Context, h Handler) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	m, g := c.m, c.g

	m.mu.Lock()
	if m.closed || c.isClosed() {
		m.mu.Unlock()
		return ErrClosed
	}
	g.members = append(g.members, c)
	g.changeMembers()
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		for i, x := range g.members {
			if x == c {
				g.members = append(g.members[:i], g.members[i+1:]...)
				break
			}
		}
		g.changeMembers()
		m.mu.Unlock()
	}()

	for {
		m.mu.Lock()
		claims := g.assignment(c)
		rebalance := g.rebalance
		m.mu.Unlock()

		genCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, k := range claims {
			wg.Go(func() { c.consume(genCtx, k, h) })
		}
		var err error
		select {
		case <-rebalance:
		case <-ctx.Done():
		case <-c.closed:
			err = ErrClosed
		case <-m.done:
			err = ErrClosed
		}
		cancel()
		wg.Wait()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// changeMembers starts a new generation. Memory.mu must be held.
func (g *memGroup) changeMembers() {
	g.gen++
	close(g.rebalance)
	g.rebalance = make(chan struct{})
}

// assignment is c's share of the group's partitions: the partitions of
// each topic, sorted, dealt round-robin over the members consuming that
// topic in join order. Memory.mu must be held.
func (g *memGroup) assignment(c *MemoryConsumer) []tp {
	var all []tp
	for k := range g.committed {
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].topic != all[j].topic {
			return all[i].topic < all[j].topic
		}
		return all[i].partition < all[j].partition
	})
	var mine []tp
	idx := make(map[string]int)
	for _, k := range all {
		var owners []*MemoryConsumer
		for _, mem := range g.members {
			if mem.consumes(k.topic) {
				owners = append(owners, mem)
			}
		}
		if len(owners) == 0 {
			continue
		}
		if owners[idx[k.topic]%len(owners)] == c {
			mine = append(mine, k)
		}
		idx[k.topic]++
	}
	return mine
}

func (c *MemoryConsumer) consumes(topic string) bool {
	for _, t := range c.topics {
		if t == topic {
			return true
		}
	}
	return false
}

// consume handles partition k until ctx ends. The partition's token makes
// sure a previous owner has stopped before this one starts.
func (c *MemoryConsumer) consume(ctx context.Context, k tp, h Handler) {
	m, g := c.m, c.g
	m.mu.Lock()
	token := g.owner[k]
	p := m.topics[k.topic].parts[k.partition]
	m.mu.Unlock()
	select {
	case token <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-token }()

	partition := strconv.FormatInt(int64(k.partition), 10)
	consumed := m.metrics.consumed.WithLabelValues(k.topic, g.name)
	lag := m.metrics.lag.WithLabelValues(k.topic, partition, g.name)
	defer m.metrics.lag.DeleteLabelValues(k.topic, partition, g.name)
	unacked := m.metrics.unacked.WithLabelValues(k.topic, partition, g.name)
	defer m.metrics.unacked.DeleteLabelValues(k.topic, partition, g.name)
	backoff := m.cfg.RetryBackoff
	for {
		off, handled, err := c.claim(ctx, k, p, h, consumed, lag, unacked)
		if err == nil {
			return
		}
		if handled {
			backoff = m.cfg.RetryBackoff
		}
		m.log.Warn("handler failed; records from the last committed one will be redelivered", "group", g.name,
			"topic", k.topic, "partition", k.partition, "offset", off, "retry_in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, m.cfg.MaxRetryBackoff)
	}
}

// claim delivers partition k from its committed offset until ctx ends
// (nil) or the handler fails at off (its error; handled tells whether a
// record was handled before). Records are committed through a tracker,
// which claim closes before it returns: an acknowledgement that comes
// later is void, and the records it covers are delivered again.
func (c *MemoryConsumer) claim(ctx context.Context, k tp, p *memPartition, h Handler,
	consumed prometheus.Counter, lag, unacked prometheus.Gauge) (off int64, handled bool, err error) {
	m, g := c.m, c.g
	tr := newTracker(m.cfg.MaxUnacked, unacked, func(next int64) {
		m.mu.Lock()
		g.committed[k] = next
		lag.Set(float64(p.base + int64(len(p.recs)) - next))
		p.signal() // a blocked publisher may now trim
		m.mu.Unlock()
	})
	defer tr.close()
	m.mu.Lock()
	off = g.committed[k]
	m.mu.Unlock()
	var msg Message
	for {
		if !tr.waitSpace(ctx) {
			return off, handled, nil
		}
		m.mu.Lock()
		if off < p.base { // cannot happen: trim keeps what any group needs
			off = p.base
		}
		end := p.base + int64(len(p.recs))
		if off >= end {
			changed := p.changed
			p.waiters++
			m.mu.Unlock()
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return off, handled, nil
			}
		}
		rec := p.recs[off-p.base]
		m.mu.Unlock()

		msg = Message{Topic: k.topic, Partition: k.partition, Offset: off, Key: rec.key, Value: rec.value,
			tracker: tr, seq: tr.add(off)}
		if err := h(ctx, &msg); err != nil {
			m.metrics.handlerErrors.WithLabelValues(k.topic, g.name).Inc()
			if ctx.Err() != nil {
				return off, handled, nil
			}
			return off, handled, err
		}
		handled = true
		consumed.Inc()
		if !msg.deferred {
			tr.done(msg.seq)
		}
		off++
	}
}

func (c *MemoryConsumer) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Close stops this consumer's Run (it returns ErrClosed) and makes later
// Runs return ErrClosed.
func (c *MemoryConsumer) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
