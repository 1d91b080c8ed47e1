package members

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/store"
)

// fakeLoader serves groups and counts its loads; block, when set, holds
// every load until it is closed.
type fakeLoader struct {
	mu     sync.Mutex
	groups map[int64][]int64
	err    error
	loads  atomic.Int64
	block  chan struct{}
	inLoad chan struct{} // receives once per load that started, if set
}

func (f *fakeLoader) Members(ctx context.Context, g int64) ([]int64, error) {
	f.loads.Add(1)
	if f.inLoad != nil {
		f.inLoad <- struct{}{}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	m, ok := f.groups[g]
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]int64(nil), m...), nil
}

func (f *fakeLoader) set(g int64, m ...int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[g] = m
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newCache(tb testing.TB, cfg Config, l *fakeLoader) (*Cache, *fakeClock) {
	tb.Helper()
	c, err := New(cfg, l, nil)
	if err != nil {
		tb.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c.now = clk.now
	return c, clk
}

func isMember(tb testing.TB, c *Cache, g, u int64) bool {
	tb.Helper()
	ok, err := c.IsMember(context.Background(), g, u)
	if err != nil {
		tb.Fatalf("IsMember(%d, %d): %v", g, u, err)
	}
	return ok
}

func TestHitsDoNotLoad(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {2, 5, 9}}}
	c, _ := newCache(t, Config{}, l)
	for i := 0; i < 10; i++ {
		if !isMember(t, c, 1, 5) || isMember(t, c, 1, 4) {
			t.Fatal("wrong membership")
		}
	}
	if n := l.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 20 lookups of one group, want 1", n)
	}
	m, err := c.Members(context.Background(), 1)
	if err != nil || len(m) != 3 || l.loads.Load() != 1 {
		t.Fatalf("Members = %v, %v after %d loads", m, err, l.loads.Load())
	}
}

func TestTTLExpiryReloads(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {2, 5}}}
	c, clk := newCache(t, Config{TTL: time.Second}, l)
	if !isMember(t, c, 1, 5) {
		t.Fatal("5 is a member")
	}
	l.set(1, 2) // removed through another process
	clk.advance(time.Second - time.Millisecond)
	if !isMember(t, c, 1, 5) {
		t.Fatal("within the TTL the cached list answers")
	}
	clk.advance(time.Millisecond)
	if isMember(t, c, 1, 5) {
		t.Fatal("after the TTL the removal must be seen")
	}
	if n := l.loads.Load(); n != 2 {
		t.Fatalf("%d loads, want 2", n)
	}
}

func TestInvalidateTakesEffectAtOnce(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {2, 5}}}
	c, _ := newCache(t, Config{TTL: time.Hour}, l)
	if !isMember(t, c, 1, 5) {
		t.Fatal("5 is a member")
	}
	l.set(1, 2)
	c.Invalidate(1)
	if isMember(t, c, 1, 5) {
		t.Fatal("a removal through this process must be seen at once")
	}
}

// A load that read the store before a change and ends after the change's
// Invalidate must not be cached: it would hide the change for a TTL.
func TestInvalidateDuringLoadIsNotHidden(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {2, 5}}, block: make(chan struct{}), inLoad: make(chan struct{}, 4)}
	c, _ := newCache(t, Config{TTL: time.Hour}, l)
	done := make(chan bool)
	go func() {
		ok, _ := c.IsMember(context.Background(), 1, 5)
		done <- ok
	}()
	<-l.inLoad // the load is in flight; pretend it read {2, 5}
	l.mu.Lock()
	old := l.groups[1]
	l.mu.Unlock()
	l.set(1, 2)
	c.Invalidate(1)
	l.set(1, old...) // the in-flight load returns what it read before the change
	close(l.block)
	if !<-done {
		t.Fatal("the concurrent caller sees the list read before the change")
	}
	l.set(1, 2)
	l.inLoad = nil
	if isMember(t, c, 1, 5) {
		t.Fatal("the stale load was cached")
	}
}

func TestConcurrentMissesShareOneLoad(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {2, 5}}, block: make(chan struct{}), inLoad: make(chan struct{}, 64)}
	c, _ := newCache(t, Config{}, l)
	const callers = 32
	waiting := make(chan struct{}, callers)
	c.onWait = func() { waiting <- struct{}{} }
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := c.IsMember(context.Background(), 1, 5); !ok || err != nil {
				bad.Add(1)
			}
		}()
	}
	<-l.inLoad
	for i := 0; i < callers-1; i++ {
		<-waiting
	}
	close(l.block)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d callers got a wrong answer", bad.Load())
	}
	if n := l.loads.Load(); n != 1 {
		t.Fatalf("%d loads for %d concurrent misses, want 1", n, callers)
	}
}

// A caller waiting on another caller's load loads again when that
// caller's context ends, instead of failing with someone else's error.
func TestWaiterSurvivesLoaderCancel(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {5}}, block: make(chan struct{}), inLoad: make(chan struct{}, 4)}
	c, _ := newCache(t, Config{}, l)
	waiting := make(chan struct{}, 4)
	c.onWait = func() { waiting <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := c.Members(ctx, 1)
		first <- err
	}()
	<-l.inLoad
	second := make(chan error, 1)
	go func() {
		ok, err := c.IsMember(context.Background(), 1, 5)
		if err == nil && !ok {
			err = errors.New("not a member")
		}
		second <- err
	}()
	<-waiting
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want its own cancellation", err)
	}
	<-l.inLoad // the second caller loads again
	close(l.block)
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v, want a load of its own", err)
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {5}}, err: errors.New("store down")}
	c, _ := newCache(t, Config{}, l)
	if _, err := c.IsMember(context.Background(), 1, 5); err == nil {
		t.Fatal("the store error must be returned")
	}
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
	if !isMember(t, c, 1, 5) {
		t.Fatal("after the store recovered the member is found")
	}
	if _, err := c.Members(context.Background(), 2); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown group: %v, want store.ErrNotFound", err)
	}
	l.set(2, 7) // created through another process
	if !isMember(t, c, 2, 7) {
		t.Fatal("a not-found answer was cached")
	}
	if n := l.loads.Load(); n != 4 {
		t.Fatalf("%d loads, want 4", n)
	}
}

func TestEvictionBounds(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{}}
	for g := int64(1); g <= 20; g++ {
		l.set(g, 1, 2, 3)
	}
	l.set(99, make([]int64, 11)...) // over max_members alone
	c, _ := newCache(t, Config{MaxGroups: 4, MaxMembers: 10}, l)
	ctx := context.Background()
	for g := int64(1); g <= 20; g++ {
		if _, err := c.Members(ctx, g); err != nil {
			t.Fatal(err)
		}
		if groups, members := c.Len(); groups > 4 || members > 10 {
			t.Fatalf("after group %d: %d groups, %d members cached; bounds 4 groups, 10 members", g, groups, members)
		}
	}
	// Least recently used goes first: 18 is used again, 19 is evicted next.
	if _, err := c.Members(ctx, 18); err != nil {
		t.Fatal(err)
	}
	loads := l.loads.Load()
	c.Members(ctx, 101) // group 101 does not exist: not cached, nothing evicted
	c.Members(ctx, 99)  // too large: returned, not cached
	if groups, members := c.Len(); groups != 3 || members != 9 {
		t.Fatalf("%d groups, %d members cached, want 3 and 9", groups, members)
	}
	l.set(21, 1, 2, 3)
	c.Members(ctx, 21) // evicts 19, the least recently used
	c.Members(ctx, 18)
	c.Members(ctx, 20)
	if n := l.loads.Load() - loads; n != 3 {
		t.Fatalf("%d loads, want 3 (101, 99, 21)", n)
	}
	c.Members(ctx, 19)
	if n := l.loads.Load() - loads; n != 4 {
		t.Fatal("19 was not the one evicted")
	}
}

func TestConfig(t *testing.T) {
	l := &fakeLoader{}
	if _, err := New(Config{TTL: -1}, l, nil); !errors.Is(err, ErrDisabled) {
		t.Fatalf("negative ttl: %v, want ErrDisabled", err)
	}
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{MaxGroups: -1}, "max_groups"},
		{Config{MaxMembers: -1}, "max_members"},
	} {
		_, err := New(tc.cfg, l, nil)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a field error on %s", tc.cfg, err, tc.field)
		}
	}
	c, err := New(Config{}, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Config(); got.TTL != DefaultTTL || got.MaxGroups != DefaultMaxGroups || got.MaxMembers != DefaultMaxMembers {
		t.Fatalf("defaults = %+v", got)
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Fatal("a nil loader must be refused")
	}
}

func TestUnsortedLoadIsSorted(t *testing.T) {
	l := &fakeLoader{groups: map[int64][]int64{1: {9, 2, 5}}}
	c, _ := newCache(t, Config{}, l)
	for _, u := range []int64{2, 5, 9} {
		if !isMember(t, c, 1, u) {
			t.Fatalf("%d is a member", u)
		}
	}
}

func BenchmarkIsMemberHit(b *testing.B) {
	m := make([]int64, 500)
	for i := range m {
		m[i] = int64(i * 2)
	}
	l := &fakeLoader{groups: map[int64][]int64{1: m}}
	c, err := New(Config{TTL: time.Hour}, l, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ok, err := c.IsMember(ctx, 1, 400); !ok || err != nil {
				b.Fatal("not a member")
			}
		}
	})
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "logic")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg, "fanout"); err != nil {
		t.Fatalf("a second cache in the same registry: %v", err)
	}
	l := &fakeLoader{groups: map[int64][]int64{1: {5}}}
	c, err := New(Config{}, l, m)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		isMember(t, c, 1, 5)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			key := ""
			for _, lp := range mt.GetLabel() {
				key += lp.GetName() + "=" + lp.GetValue() + " "
			}
			got[f.GetName()+" "+key] = mt.GetCounter().GetValue()
		}
	}
	const name = "hubuim_member_cache_lookups_total cache=logic "
	if got[name+"result=hit "] != 2 || got[name+"result=load "] != 1 {
		t.Fatalf("metrics %v; want 2 logic hits and 1 load", got)
	}
}
