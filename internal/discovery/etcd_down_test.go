package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/discovery/discoverytest"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// etcd goes down for longer than the TTL: watchers keep the last list
// (never an empty one), the registration notices its lease is lost, and
// when etcd is back it is registered again with the latest data and the
// watchers follow changes again.
func TestEtcdDownAndBack(t *testing.T) {
	proc := startEtcdProc(t)
	metrics := prometheus.NewRegistry()
	cfg := discovery.EtcdConfig{Endpoints: []string{proc.client}, Prefix: testPrefix(t), Registerer: metrics}
	registrar := newEtcd(t, cfg)
	defer registrar.Close()
	watcher := newEtcd(t, cfg)
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ins := discoverytest.Ins(discovery.ServiceComet, "c1")
	ins.Conns = 1
	reg, err := registrar.Register(ctx, ins)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := watcher.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "c1")

	proc.kill()
	// The client gives a lease up after a whole TTL without renewal.
	// Between two looks at the gauge, the watcher is drained for a while:
	// it must not send an empty list meanwhile.
	lost := waitfor.Poll(4*testTTL, func() bool {
		if gaugeValue(t, metrics, "hubuim_discovery_registrations", "lost") == 1 {
			return true
		}
		select {
		case list, ok := <-ch:
			if !ok || len(list) == 0 {
				t.Fatalf("watcher got %v (open %v) while etcd is down, want the last list kept", discoverytest.IDs(list), ok)
			}
		case <-time.After(20 * time.Millisecond):
		}
		return false
	})
	if !lost {
		t.Fatal("registration not marked lost while etcd is down")
	}
	ins.Conns = 5
	if err := reg.Update(ctx, ins); !errors.Is(err, discovery.ErrLeaseLost) {
		t.Fatalf("Update while lost = %v, want ErrLeaseLost", err)
	}
	// Still nothing empty for a while longer (past the old lease's TTL).
	quiet := time.After(testTTL)
wait:
	for {
		select {
		case list, ok := <-ch:
			if !ok || len(list) == 0 {
				t.Fatalf("watcher got %v (open %v) while etcd is down", discoverytest.IDs(list), ok)
			}
		case <-quiet:
			break wait
		}
	}

	restarted := time.Now()
	proc.start(t)
	// Re-registered with the latest data. (The restarted etcd gives the
	// old lease a fresh TTL; if re-registration took longer than that, the
	// key would really be gone for a moment, so an empty list is not an
	// error here.)
	discoverytest.WaitForWithin(t, 20*time.Second, ch, "re-registered instance with conns=5", func(l []discovery.Instance) bool {
		return len(l) == 1 && l[0].Conns == 5
	})
	t.Logf("re-registration seen %v after etcd restart", time.Since(restarted).Round(time.Millisecond))
	if got := gaugeValue(t, metrics, "hubuim_discovery_reregistrations_total", ""); got < 1 {
		t.Fatalf("reregistrations_total = %v, want >= 1", got)
	}
	if got := gaugeValue(t, metrics, "hubuim_discovery_registrations", "registered"); got != 1 {
		t.Fatalf("registered = %v, want 1", got)
	}
	if got := gaugeValue(t, metrics, "hubuim_discovery_registrations", "lost"); got != 0 {
		t.Fatalf("lost = %v, want 0", got)
	}

	// Updates and removals flow again, and the old lease expiring later
	// does not remove the new registration.
	ins.Conns = 9
	if err := reg.Update(ctx, ins); err != nil {
		t.Fatalf("Update after recovery: %v", err)
	}
	discoverytest.WaitFor(t, ch, "conns=9", func(l []discovery.Instance) bool { return len(l) == 1 && l[0].Conns == 9 })
	oldLeaseGone := time.After(2*testTTL + time.Second)
	for done := false; !done; {
		select {
		case list := <-ch:
			if len(list) != 1 {
				t.Fatalf("list changed to %v after recovery", discoverytest.IDs(list))
			}
		case <-oldLeaseGone:
			done = true
		}
	}
	if err := reg.Close(ctx); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch)
}

// A watcher whose etcd restarts while nothing is registered recovers and
// sees new registrations.
func TestEtcdWatchSurvivesRestart(t *testing.T) {
	proc := startEtcdProc(t)
	cfg := discovery.EtcdConfig{Endpoints: []string{proc.client}, Prefix: testPrefix(t)}
	watcher := newEtcd(t, cfg)
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := watcher.Watch(ctx, discovery.ServiceLogic)
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch)
	proc.kill()
	proc.start(t)
	registrar := newEtcd(t, cfg)
	defer registrar.Close()
	if _, err := registrar.Register(ctx, discoverytest.Ins(discovery.ServiceLogic, "l1")); err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitForWithin(t, 20*time.Second, ch, "l1 after restart", func(l []discovery.Instance) bool { return len(l) == 1 })
}
