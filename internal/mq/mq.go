// Package mq is the message queue between logic and job: a Producer that
// publishes keyed records to a topic and a Consumer that delivers them to a
// handler in a consumer group, committing a record only after the handler
// returned without error, or, for a handler that deferred it
// (Message.Defer), after the handler acknowledged it (Ack.Done).
// Implementations: Kafka through sarama, and an in-process queue for the
// standalone mode and tests.
package mq

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
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

	tracker  *tracker // nil for a Message not delivered by a Consumer
	seq      uint64   // m's delivery number in tracker
	deferred bool     // Defer was called
}

// Defer makes m's handling asynchronous: when the handler returns nil, m is
// not committed until the returned Ack's Done is called. Records of a
// partition are still handed to the handler in order, but may be
// acknowledged in any order; the consumer commits a partition only up to
// the first record not acknowledged yet, and holds at most MaxUnacked
// (Kafka) or MemoryConfig.MaxUnacked records per partition from the first
// unacknowledged one on (it waits for acknowledgements before delivering
// more). A record not acknowledged when its partition is
// taken away (rebalance, Run ends, crash) is delivered again; a later Done
// is then ignored. If the handler returns an error, the Ack is void and
// the record is delivered again, as for any handler error.
//
// On a Message a Consumer did not deliver (one built by hand), Defer
// returns an Ack whose Done does nothing.
func (m *Message) Defer() Ack {
	m.deferred = true
	return Ack{t: m.tracker, seq: m.seq}
}

// CanDefer reports whether acknowledging m later means anything: true for
// a record a Consumer delivered, false for a Message built by hand (whose
// handler must finish its work before returning).
func (m *Message) CanDefer() bool { return m.tracker != nil }

// Ack acknowledges one deferred Message; see Message.Defer. The zero Ack
// acknowledges nothing. It is a small value: copy it freely.
type Ack struct {
	t   *tracker
	seq uint64
}

// Done acknowledges the record: it may be committed once every record of
// its partition before it is acknowledged too. It is safe to call from
// any goroutine, more than once (later calls do nothing), and after the
// partition was taken away (it does nothing then).
func (a Ack) Done() {
	if a.t != nil {
		a.t.done(a.seq)
	}
}

// MaxUnacked is how many deferred, unacknowledged records a consumer holds
// per partition before it stops delivering that partition's records.
const MaxUnacked = 4096

// trackerInitialSlots is the tracker ring's first size; it doubles up to
// its maximum as unacknowledged records pile up.
const trackerInitialSlots = 16

// tracker follows the records of one partition that were delivered during
// one claim and are not committed yet: a ring of their offsets, in delivery
// order, with a done flag each. When the records at the ring's head are
// done they leave it, and commit is called with the offset after the last
// of them: every record below it is acknowledged. Memory is bounded by the
// maximum size given to newTracker; the consumer waits (waitSpace) when it
// is reached. After close, nothing is committed any more.
//
// Lock order: tracker.mu, then whatever commit takes.
type tracker struct {
	max     int
	commit  func(next int64) // called with mu held
	unacked prometheus.Gauge // records in the ring; nil: not reported
	space   chan struct{}    // a token after a full ring frees a slot

	mu      sync.Mutex
	ring    []trackSlot
	head    int    // index of the oldest record
	n       int    // records in the ring
	headSeq uint64 // delivery number of ring[head]
	closed  bool
}

type trackSlot struct {
	off  int64
	done bool
}

func newTracker(maxUnacked int, unacked prometheus.Gauge, commit func(next int64)) *tracker {
	return &tracker{max: maxUnacked, commit: commit, unacked: unacked, space: make(chan struct{}, 1),
		ring: make([]trackSlot, min(trackerInitialSlots, maxUnacked))}
}

// report sets the unacked gauge; t.mu held.
func (t *tracker) report() {
	if t.unacked != nil {
		t.unacked.Set(float64(t.n))
	}
}

// waitSpace waits until the ring has room for one more record; false if
// ctx ended first.
func (t *tracker) waitSpace(ctx context.Context) bool {
	for {
		t.mu.Lock()
		full := t.n >= t.max
		t.mu.Unlock()
		if !full {
			return true
		}
		select {
		case <-t.space:
		case <-ctx.Done():
			return false
		}
	}
}

// add records the delivery of the record at off and returns its delivery
// number. The caller made sure there is room (waitSpace); offsets grow.
func (t *tracker) add(off int64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == len(t.ring) {
		grown := make([]trackSlot, min(2*len(t.ring), t.max))
		for i := range t.n {
			grown[i] = t.ring[(t.head+i)%len(t.ring)]
		}
		t.ring, t.head = grown, 0
	}
	t.ring[(t.head+t.n)%len(t.ring)] = trackSlot{off: off}
	t.n++
	t.report()
	return t.headSeq + uint64(t.n) - 1
}

// done acknowledges the record delivered as seq and commits the run of
// acknowledged records at the head, if any.
func (t *tracker) done(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || seq < t.headSeq || seq-t.headSeq >= uint64(t.n) {
		return // void, or acknowledged and committed already
	}
	t.ring[(t.head+int(seq-t.headSeq))%len(t.ring)].done = true
	wasFull := t.n >= t.max
	next := int64(-1)
	for t.n > 0 && t.ring[t.head].done {
		next = t.ring[t.head].off + 1
		t.head = (t.head + 1) % len(t.ring)
		t.n--
		t.headSeq++
	}
	if next < 0 {
		return
	}
	t.report()
	t.commit(next)
	if wasFull {
		select {
		case t.space <- struct{}{}:
		default:
		}
	}
}

// pending is the number of delivered records not committed yet.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// close voids every outstanding Ack: nothing is committed after it
// returns.
func (t *tracker) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// Producer publishes records.
type Producer interface {
	// Publish returns after the record is acknowledged by the queue.
	Publish(ctx context.Context, topic string, key, value []byte) error
	Close() error
}

// Handler processes one record. Returning nil commits it, unless the
// handler called m.Defer (then it is committed once acknowledged);
// returning an error stops the consumer's session for that partition so
// the record is delivered again, after a backoff. ctx ends when the
// partition is taken away (rebalance) or the consumer stops; a handler
// blocked on it should return its error, and the record is then delivered
// again. m is valid only until the handler returns (keep its Ack, not m).
type Handler func(ctx context.Context, m *Message) error

// Consumer delivers records of its topics to a handler.
type Consumer interface {
	// Run consumes until ctx is done (it returns nil) or Close is called
	// (it returns ErrClosed). Records of one partition are handled one at a
	// time, in order. Delivery is at least once: a record is committed only
	// after h returned nil for it, so a crash re-delivers and never loses.
	// A deferred record (Message.Defer) is committed once acknowledged
	// and every record before it in its partition is committed.
	// One Run at a time per Consumer (ErrRunning otherwise).
	Run(ctx context.Context, h Handler) error
	Close() error
}
