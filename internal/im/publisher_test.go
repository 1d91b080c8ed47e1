package im

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/mq"
)

// fakeSyncProducer only has Publish (waits for the acknowledgement).
type fakeSyncProducer struct {
	err   error
	mu    sync.Mutex
	calls int
}

func (p *fakeSyncProducer) Publish(context.Context, string, []byte, []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	return p.err
}

func (p *fakeSyncProducer) Close() error { return nil }

// fakeAsyncProducer also hands records over: their callbacks wait in
// pending until answer.
type fakeAsyncProducer struct {
	fakeSyncProducer
	handErr error // returned by PublishAsync (not handed over)
	mu      sync.Mutex
	keys    []string
	pending []func(error)
}

func (p *fakeAsyncProducer) PublishAsync(_ context.Context, _ string, key, _ []byte, done func(error)) error {
	if p.handErr != nil {
		return p.handErr
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, string(key))
	p.pending = append(p.pending, done)
	return nil
}

// answer calls the oldest pending callback with err.
func (p *fakeAsyncProducer) answer(t *testing.T, err error) {
	t.Helper()
	p.mu.Lock()
	if len(p.pending) == 0 {
		p.mu.Unlock()
		t.Fatal("no record pending")
	}
	done := p.pending[0]
	p.pending = p.pending[1:]
	p.mu.Unlock()
	done(err)
}

func newTestPublisher(t *testing.T, p mq.Producer, maxInFlight int) (*eventPublisher, *Metrics) {
	t.Helper()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return newEventPublisher(p, "msg", maxInFlight, m, slog.New(slog.DiscardHandler)), m
}

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

var testEvent = &logicpb.MsgEvent{Kind: logicpb.MsgEvent_MESSAGE}

// A producer that cannot hand records over is waited for, and its
// failures are counted.
func TestEventPublisherSync(t *testing.T) {
	p := &fakeSyncProducer{}
	e, m := newTestPublisher(t, p, 1)
	e.publish(t.Context(), "c1", testEvent)
	p.err = errors.New("broker down")
	e.publish(t.Context(), "c1", testEvent)
	if p.calls != 2 || value(t, m.publishFailure) != 1 {
		t.Fatalf("calls %d, failures %v; want 2 and 1", p.calls, value(t, m.publishFailure))
	}
}

// An asynchronous producer: publish returns before the acknowledgement, in
// order; a failed answer or hand-over is counted; beyond maxInFlight
// unanswered events publish waits for an answer, or gives up with its
// context.
func TestEventPublisherAsync(t *testing.T) {
	p := &fakeAsyncProducer{}
	e, m := newTestPublisher(t, p, 2)
	e.publish(t.Context(), "c1", testEvent)
	e.publish(t.Context(), "c2", testEvent)
	if len(p.keys) != 2 || p.keys[0] != "c1" || p.keys[1] != "c2" || p.calls != 0 {
		t.Fatalf("handed over %v (and %d waiting publishes), want [c1 c2] and none", p.keys, p.calls)
	}

	// Full: a third publish waits until an answer frees a slot.
	third := make(chan struct{})
	go func() {
		defer close(third)
		e.publish(context.Background(), "c3", testEvent)
	}()
	select {
	case <-third:
		t.Fatal("publish beyond maxInFlight did not wait")
	case <-time.After(20 * time.Millisecond):
	}
	p.answer(t, errors.New("record lost"))
	<-third
	if got := value(t, m.publishFailure); got != 1 {
		t.Fatalf("failures %v after a failed answer, want 1", got)
	}

	// Full again: a publish whose context ends gives up, counted.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.publish(ctx, "c4", testEvent)
	if len(p.keys) != 3 || value(t, m.publishFailure) != 2 {
		t.Fatalf("after a canceled publish: handed over %v, failures %v", p.keys, value(t, m.publishFailure))
	}

	// A record that cannot be handed over frees its slot.
	p.answer(t, nil)
	p.answer(t, nil)
	p.handErr = mq.ErrClosed
	for range 3 {
		e.publish(t.Context(), "c5", testEvent)
	}
	if got := value(t, m.publishFailure); got != 5 || len(e.slots) != 0 {
		t.Fatalf("failures %v, slots taken %d; want 5 and 0", got, len(e.slots))
	}
}
