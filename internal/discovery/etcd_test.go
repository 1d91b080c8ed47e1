package discovery_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/discovery/discoverytest"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// testTTL is the lease TTL of the etcd tests: etcd's minimum.
const testTTL = 2 * time.Second

// testPrefix returns a prefix no other test uses.
func testPrefix(tb testing.TB) string {
	tb.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return "/hubuim-test/discovery-" + hex.EncodeToString(b[:])
}

// newEtcd returns an etcd Registry with fast test timings; cfg's zero
// fields are filled with those.
func newEtcd(tb testing.TB, cfg discovery.EtcdConfig) *discovery.Etcd {
	tb.Helper()
	if cfg.Endpoints == nil {
		cfg.Endpoints = testenv.EtcdEndpoints(tb)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix(tb)
	}
	if cfg.TTL == 0 {
		cfg.TTL = testTTL
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = 20 * time.Millisecond
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = 50 * time.Millisecond
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 500 * time.Millisecond
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	e, err := discovery.NewEtcd(cfg, nil)
	if err != nil {
		tb.Fatalf("NewEtcd: %v", err)
	}
	return e
}

func TestEtcdConformance(t *testing.T) {
	eps := testenv.EtcdEndpoints(t)
	discoverytest.Run(t, func(tb testing.TB) discovery.Registry {
		return newEtcd(tb, discovery.EtcdConfig{Endpoints: eps})
	})
}

func TestEtcdConfigErrors(t *testing.T) {
	tests := []struct {
		field string
		cfg   discovery.EtcdConfig
	}{
		{"etcd.endpoints", discovery.EtcdConfig{}},
		{"etcd.endpoints[1]", discovery.EtcdConfig{Endpoints: []string{"a:1", ""}}},
		{"etcd.prefix", discovery.EtcdConfig{Endpoints: []string{"a:1"}, Prefix: "nope"}},
		{"etcd.ttl", discovery.EtcdConfig{Endpoints: []string{"a:1"}, TTL: time.Millisecond}},
		{"etcd.coalesce", discovery.EtcdConfig{Endpoints: []string{"a:1"}, Coalesce: -1}},
		{"etcd.retry_max", discovery.EtcdConfig{Endpoints: []string{"a:1"}, RetryMin: time.Second, RetryMax: time.Millisecond}},
	}
	for _, tc := range tests {
		_, err := discovery.NewEtcd(tc.cfg, nil)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("NewEtcd(%+v) = %v, want a FieldError on %s", tc.cfg, err, tc.field)
		}
	}
}

// An unreachable etcd gives Register and Watch an error, not a hang.
func TestEtcdUnreachable(t *testing.T) {
	e := newEtcd(t, discovery.EtcdConfig{Endpoints: []string{freeAddr(t)}, DialTimeout: 200 * time.Millisecond})
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c1")); err == nil {
		t.Fatal("Register against no etcd succeeded")
	}
	if _, err := e.Watch(ctx, discovery.ServiceComet); err == nil {
		t.Fatal("Watch against no etcd succeeded")
	}
}

// A registration whose process dies without revoking disappears from
// watchers within about the TTL.
func TestEtcdProcessDies(t *testing.T) {
	prefix := testPrefix(t)
	dying := newEtcd(t, discovery.EtcdConfig{Prefix: prefix})
	watcher := newEtcd(t, discovery.EtcdConfig{Prefix: prefix})
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := dying.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c1")); err != nil {
		t.Fatal(err)
	}
	ch, err := watcher.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "c1")
	start := time.Now()
	discovery.Crash(dying)
	// etcd checks expiry every 500ms; allow TTL, one check and slack.
	const bound = 2*testTTL + time.Second
	discoverytest.WaitForWithin(t, bound, ch, "expiry", func(l []discovery.Instance) bool { return len(l) == 0 })
	t.Logf("dead registration gone after %v (TTL %v)", time.Since(start).Round(time.Millisecond), testTTL)
}

// Every goroutine stops at ctx cancel and Close.
func TestEtcdGoroutinesStop(t *testing.T) {
	before := runtime.NumGoroutine()
	e := newEtcd(t, discovery.EtcdConfig{Registerer: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(context.Background())
	for _, id := range []string{"a", "b"} {
		if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, id)); err != nil {
			t.Fatal(err)
		}
	}
	var chans []<-chan []discovery.Instance
	for range 3 {
		ch, err := e.Watch(ctx, discovery.ServiceComet)
		if err != nil {
			t.Fatal(err)
		}
		discoverytest.WaitIDs(t, ch, "a", "b")
		chans = append(chans, ch)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	ch, err := e.Watch(wctx, discovery.ServiceLogic)
	if err != nil {
		t.Fatal(err)
	}
	wcancel()
	discoverytest.WaitClosed(t, ch)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for _, ch := range chans {
		discoverytest.WaitClosed(t, ch)
	}
	waitGoroutines(t, before)
}

// waitGoroutines waits until no more than n goroutines run.
func waitGoroutines(tb testing.TB, n int) {
	tb.Helper()
	if !waitfor.Poll(10*time.Second, func() bool { return runtime.NumGoroutine() <= n }) {
		buf := make([]byte, 1<<20)
		tb.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
	}
}

// Metrics: registration state and registration errors.
func TestEtcdMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	prefix := testPrefix(t)
	e := newEtcd(t, discovery.EtcdConfig{Prefix: prefix, Registerer: reg})
	defer e.Close()
	// A second registry in the same process shares the collectors.
	e2 := newEtcd(t, discovery.EtcdConfig{Prefix: prefix, Registerer: reg})
	defer e2.Close()
	ctx := context.Background()
	r, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c2")); err != nil {
		t.Fatal(err)
	}
	if got := gaugeValue(t, reg, "hubuim_discovery_registrations", "registered"); got != 2 {
		t.Fatalf("registered = %v, want 2", got)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gaugeValue(t, reg, "hubuim_discovery_registrations", "registered"); got != 1 {
		t.Fatalf("registered after Close = %v, want 1", got)
	}
}
