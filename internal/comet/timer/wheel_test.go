package timer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type counter struct {
	e Entry
	n atomic.Int32
}

func (c *counter) Expire() { c.n.Add(1) }

func newCounter() *counter {
	c := &counter{}
	c.e.Init(c)
	return c
}

func mustWheel(tb testing.TB, cfg Config) *Wheel {
	tb.Helper()
	w, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{Tick: -1}); err == nil {
		t.Fatal("negative tick accepted")
	}
	if _, err := New(Config{Slots: -1}); err == nil {
		t.Fatal("negative slots accepted")
	}
}

func TestFiresAtDeadline(t *testing.T) {
	w := mustWheel(t, Config{Tick: time.Second, Slots: 8})
	c := newCounter()
	w.Set(&c.e, 3*time.Second)
	for i := 0; i < 2; i++ {
		w.Advance()
		if c.n.Load() != 0 {
			t.Fatalf("fired after %d ticks", i+1)
		}
	}
	w.Advance()
	if c.n.Load() != 1 {
		t.Fatalf("fired %d times after 3 ticks, want 1", c.n.Load())
	}
	for i := 0; i < 20; i++ {
		w.Advance()
	}
	if c.n.Load() != 1 || w.Len() != 0 {
		t.Fatalf("fired %d times, len %d", c.n.Load(), w.Len())
	}
}

func TestRoundsLongerThanWheel(t *testing.T) {
	w := mustWheel(t, Config{Tick: time.Second, Slots: 4})
	c := newCounter()
	w.Set(&c.e, 10*time.Second)
	for i := 1; i <= 10; i++ {
		w.Advance()
		want := int32(0)
		if i == 10 {
			want = 1
		}
		if c.n.Load() != want {
			t.Fatalf("tick %d: fired %d", i, c.n.Load())
		}
	}
}

func TestResetAndRemove(t *testing.T) {
	w := mustWheel(t, Config{Tick: time.Second, Slots: 16})
	a, b := newCounter(), newCounter()
	w.Set(&a.e, 2*time.Second)
	w.Set(&b.e, 2*time.Second)
	w.Advance()
	w.Set(&a.e, 5*time.Second) // reset: now fires at tick 6
	w.Remove(&b.e)
	w.Remove(&b.e) // no-op
	for i := 2; i <= 5; i++ {
		w.Advance()
	}
	if a.n.Load() != 0 || b.n.Load() != 0 {
		t.Fatalf("a=%d b=%d before deadline", a.n.Load(), b.n.Load())
	}
	w.Advance()
	if a.n.Load() != 1 || b.n.Load() != 0 {
		t.Fatalf("a=%d b=%d", a.n.Load(), b.n.Load())
	}
}

func TestExpireAll(t *testing.T) {
	w := mustWheel(t, Config{})
	cs := make([]*counter, 100)
	for i := range cs {
		cs[i] = newCounter()
		w.Set(&cs[i].e, time.Duration(i+1)*time.Minute)
	}
	w.ExpireAll()
	for i, c := range cs {
		if c.n.Load() != 1 {
			t.Fatalf("entry %d fired %d times", i, c.n.Load())
		}
	}
	if w.Len() != 0 {
		t.Fatalf("len %d", w.Len())
	}
}

func TestRunFiresAndStops(t *testing.T) {
	w := mustWheel(t, Config{Tick: time.Millisecond, Slots: 64})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx) }()
	c := newCounter()
	w.Set(&c.e, 5*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for c.n.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("entry never fired")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
}

// Expire may call Set/Remove on the wheel (the lock is not held).
type reentrant struct {
	e Entry
	w *Wheel
	n int
}

func (r *reentrant) Expire() {
	r.n++
	if r.n < 3 {
		r.w.Set(&r.e, time.Second)
	}
}

func TestExpireMayReschedule(t *testing.T) {
	w := mustWheel(t, Config{Tick: time.Second, Slots: 8})
	r := &reentrant{w: w}
	r.e.Init(r)
	w.Set(&r.e, time.Second)
	for i := 0; i < 10; i++ {
		w.Advance()
	}
	if r.n != 3 {
		t.Fatalf("fired %d times, want 3", r.n)
	}
}

func BenchmarkSetRemove(b *testing.B) {
	w := mustWheel(b, Config{})
	cs := make([]*counter, 1024)
	for i := range cs {
		cs[i] = newCounter()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := cs[i&1023]
		w.Set(&c.e, 90*time.Second)
		if i&1 == 1 {
			w.Remove(&c.e)
		}
	}
}

func BenchmarkAdvance(b *testing.B) {
	w := mustWheel(b, Config{Tick: time.Second, Slots: 4096})
	cs := make([]*counter, 15000)
	for i := range cs {
		cs[i] = newCounter()
		w.Set(&cs[i].e, time.Duration(1+i%4000)*time.Second)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Advance()
	}
}
