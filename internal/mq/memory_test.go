package mq_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/mq/mqtest"
)

const memTestTimeout = 10 * time.Second

func newMemoryBackend(t *testing.T) *mqtest.Backend {
	m, err := mq.NewMemory(mq.MemoryConfig{Partitions: 4, RetryBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &mqtest.Backend{
		Producer: m,
		NewConsumer: func(tb testing.TB, group string) mq.Consumer {
			c := m.Consumer(group, "t")
			tb.Cleanup(func() { _ = c.Close() })
			return c
		},
		Topic:      "t",
		Partitions: 4,
		Kill:       func() { _ = m.Close() },
		Timeout:    memTestTimeout,
	}
}

func TestMemoryConformance(t *testing.T) { mqtest.Run(t, newMemoryBackend) }

func TestMemoryFullBlocksThenTrims(t *testing.T) {
	const max = 4
	m, err := mq.NewMemory(mq.MemoryConfig{Partitions: 1, MaxRecords: max})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Consumer("g", "t") // the group exists but has handled nothing
	defer c.Close()
	for i := range max {
		if err := m.Publish(context.Background(), "t", []byte("k"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Publish(ctx, "t", []byte("k"), []byte{max}); !errors.Is(err, mq.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish on a full partition = %v, want ErrFull and DeadlineExceeded", err)
	}

	// A blocked publisher proceeds once the group commits.
	res := make(chan error, 1)
	go func() { res <- m.Publish(context.Background(), "t", []byte("k"), []byte{max}) }()
	var got atomic.Int32
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		_ = c.Run(runCtx, func(_ context.Context, msg *mq.Message) error {
			if int(msg.Value[0]) != int(got.Load()) {
				return fmt.Errorf("got %d, want %d", msg.Value[0], got.Load())
			}
			got.Add(1)
			return nil
		})
	}()
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(memTestTimeout):
		t.Fatal("publisher stayed blocked after the group committed")
	}
	mqtest.Eventually(t, memTestTimeout, func() bool { return got.Load() == max+1 }, "handled %d of %d", got.Load(), max+1)
}

func TestMemoryConfigErrors(t *testing.T) {
	for _, cfg := range []mq.MemoryConfig{{Partitions: -1}, {MaxRecords: -1}, {MaxUnacked: -1}, {RetryBackoff: time.Second, MaxRetryBackoff: time.Millisecond}} {
		var fe *config.FieldError
		if _, err := mq.NewMemory(cfg); !errors.As(err, &fe) {
			t.Errorf("NewMemory(%+v) = %v, want a FieldError", cfg, err)
		}
	}
}

func BenchmarkMemoryPublishConsume(b *testing.B) {
	m, err := mq.NewMemory(mq.MemoryConfig{Partitions: 8, MaxRecords: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	c := m.Consumer("g", "t")
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, func(context.Context, *mq.Message) error { n.Add(1); return nil }) }()
	key, val := []byte("device-1"), make([]byte, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := m.Publish(ctx, "t", key, val); err != nil {
			b.Fatal(err)
		}
	}
	for n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
}

func TestMetricsShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := mq.NewMemory(mq.MemoryConfig{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// A second component on the same registry reuses the collectors.
	m2, err := mq.NewMemory(mq.MemoryConfig{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	for range 3 {
		if err := m.Publish(context.Background(), "t", []byte("k"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m2.Publish(context.Background(), "t", []byte("k"), nil); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "hubuim_mq_produced_records_total" {
			if got := mf.GetMetric()[0].GetCounter().GetValue(); got != 4 {
				t.Fatalf("produced = %v, want 4", got)
			}
			return
		}
	}
	t.Fatal("hubuim_mq_produced_records_total not registered")
}

// TestMemoryMaxUnacked: a partition with MaxUnacked deferred records
// waits for an acknowledgement before delivering more.
func TestMemoryMaxUnacked(t *testing.T) {
	const maxUnacked, n = 2, 5
	reg := prometheus.NewRegistry()
	m, err := mq.NewMemory(mq.MemoryConfig{Partitions: 1, MaxUnacked: maxUnacked, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Consumer("g", "t")
	defer c.Close()
	for i := range n {
		if err := m.Publish(context.Background(), "t", []byte("k"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	acks := make(chan mq.Ack, n)
	ctx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() {
		runDone <- c.Run(ctx, func(_ context.Context, msg *mq.Message) error {
			acks <- msg.Defer()
			return nil
		})
	}()
	defer func() { stop(); <-runDone }()
	var held []mq.Ack
	for range maxUnacked {
		select {
		case a := <-acks:
			held = append(held, a)
		case <-time.After(memTestTimeout):
			t.Fatalf("only %d records delivered, want %d", len(held), maxUnacked)
		}
	}
	select {
	case <-acks:
		t.Fatalf("record %d delivered with %d unacknowledged (MaxUnacked %d)", maxUnacked, maxUnacked, maxUnacked)
	case <-time.After(50 * time.Millisecond):
	}
	if got := gaugeValue(t, reg, "hubuim_mq_consumer_unacked_records"); got != maxUnacked {
		t.Fatalf("unacked gauge = %v, want %d", got, maxUnacked)
	}
	held[1].Done() // out of order: frees no slot, record 0 is still pending
	select {
	case <-acks:
		t.Fatal("an ack after the first unacknowledged record freed a slot")
	case <-time.After(50 * time.Millisecond):
	}
	held[0].Done()
	for i := maxUnacked; i < n; i++ {
		select {
		case a := <-acks:
			a.Done()
		case <-time.After(memTestTimeout):
			t.Fatalf("record %d not delivered after the acks", i)
		}
	}
}

// gaugeValue is the value of the single series of a gauge in reg.
func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("no single series of %s", name)
	return 0
}
