package discovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/discovery/discoverytest"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// A watch that falls behind a compaction lists again and goes on.
// Compaction is global to an etcd, so this runs on a throwaway one.
func TestEtcdWatchAfterCompaction(t *testing.T) {
	proc := startEtcdProc(t)
	metrics := prometheus.NewRegistry()
	cfg := discovery.EtcdConfig{Endpoints: []string{proc.client}, Prefix: testPrefix(t), Registerer: metrics}
	e := newEtcd(t, cfg)
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c1")); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{proc.client}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Put(ctx, "/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ch, err := discovery.WatchFrom(ctx, e, discovery.ServiceComet, 1)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "c1")
	waitfor.Until(t, discoverytest.Timeout, "the compaction to be counted as a watch error", func() bool {
		return gaugeValue(t, metrics, "hubuim_discovery_watch_errors_total", "") >= 1
	})
	if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "c2")); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "c1", "c2")
}

// A burst of changes is coalesced: each list sent follows a quiet window,
// so a burst of n registrations gives far fewer than n lists.
func TestEtcdWatchCoalesces(t *testing.T) {
	const coalesce = 300 * time.Millisecond
	e := newEtcd(t, discovery.EtcdConfig{Coalesce: coalesce})
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch)
	const n = 30
	start := time.Now()
	lists := make(chan int, 1)
	go func() {
		count := 0
		for l := range ch {
			count++
			if len(l) == n {
				break
			}
		}
		lists <- count
	}()
	for i := range n {
		if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, fmt.Sprintf("c%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var count int
	select {
	case count = <-lists:
	case <-time.After(discoverytest.Timeout):
		t.Fatal("never saw all registrations")
	}
	elapsed := time.Since(start)
	// One list per coalesce window at most, plus the last.
	if limit := int(elapsed/coalesce) + 1; count > limit {
		t.Fatalf("%d lists for %d registrations in %v, want at most %d", count, n, elapsed, limit)
	}
	t.Logf("%d registrations in %v gave %d lists", n, elapsed.Round(time.Millisecond), count)
}

// A value that is not an Instance is skipped and counted, and the key is
// used once it is fixed.
func TestEtcdWatchSkipsBadValue(t *testing.T) {
	metrics := prometheus.NewRegistry()
	prefix := testPrefix(t)
	e := newEtcd(t, discovery.EtcdConfig{Prefix: prefix, Registerer: metrics})
	defer e.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: testenv.EtcdEndpoints(t), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := prefix + "/" + discovery.ServiceComet + "/bad"
	defer cli.Delete(context.Background(), key)
	if _, err := cli.Put(ctx, key, "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Register(ctx, discoverytest.Ins(discovery.ServiceComet, "good")); err != nil {
		t.Fatal(err)
	}
	ch, err := e.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "good")
	if got := gaugeValue(t, metrics, "hubuim_discovery_watch_errors_total", ""); got != 1 {
		t.Fatalf("watch_errors_total = %v, want 1", got)
	}
	// Without id and service in the value, the key names them.
	if _, err := cli.Put(ctx, key, `{"addrs":{"grpc":"127.0.0.1:1"}}`); err != nil {
		t.Fatal(err)
	}
	got := discoverytest.WaitIDs(t, ch, "bad", "good")
	if got[0].Service != discovery.ServiceComet {
		t.Fatalf("service = %q", got[0].Service)
	}
}
