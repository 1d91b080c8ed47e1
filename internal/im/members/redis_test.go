package members

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

const eventsWait = 5 * time.Second

// TestRedisEvents: a change published by one process drops the cached
// list in another at once (not at the TTL); a subscriber that lost its
// connection drops everything when it subscribes again.
func TestRedisEvents(t *testing.T) {
	prefix := fmt.Sprintf("hubuim-test-members-%d:", rand.Uint64())
	name := "members-events-" + prefix[len("hubuim-test-members-"):len(prefix)-1]
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), ClientName: name})
	t.Cleanup(func() { _ = rdb.Close() })
	loader := &fakeLoader{groups: map[int64][]int64{1: {10, 11}, 2: {20}}}
	c, err := New(Config{TTL: time.Hour}, loader, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	events, err := NewRedisEvents(rdb, prefix, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- events.Run(ctx, c) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	counts := func() map[string]float64 {
		c := map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				c[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
		return c
	}
	// Subscribed once the subscriber handled the confirmation (which drops
	// every list): waiting for the server to count the subscriber let the
	// confirmation, handled late on a loaded machine, drop the list cached
	// below (CI flake).
	waitfor.Until(t, eventsWait, "the subscription", func() bool { return counts()[eventSubscribed] == 1 })

	members := func(g int64) []int64 {
		t.Helper()
		m, err := c.Members(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	members(1)
	members(2)
	loader.set(1, 10) // 11 removed through another process
	if m := members(1); !slices.Equal(m, []int64{10, 11}) {
		t.Fatalf("before the event: %v, want the cached [10 11]", m)
	}
	if err := events.Publish(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, eventsWait, "group 1 reloaded after its event", func() bool { return slices.Equal(members(1), []int64{10}) })
	if n := loader.loads.Load(); n != 3 {
		t.Fatalf("loads = %d, want 3 (groups 1 and 2, then 1 again)", n)
	}

	// Lose the subscription: everything is dropped when it is back.
	loader.set(2, 20, 21)
	killSubscriber(t, rdb, name)
	waitfor.Until(t, eventsWait, "group 2 reloaded after the resubscription", func() bool { return slices.Equal(members(2), []int64{20, 21}) })

	waitfor.Until(t, eventsWait, "the subscription back", func() bool { return counts()[eventSubscribed] == 2 })
	if c := counts(); c[eventPublished] != 1 || c[eventReceived] != 1 || c[eventLost] != 1 {
		t.Fatalf("hubuim_member_events_total = %v, want 1 published, 1 received, 2 subscribed, 1 subscription_lost", c)
	}
}

// killSubscriber closes, server side, the pub/sub connection of the client
// named name (not the other tests' subscribers on the shared Redis).
func killSubscriber(t *testing.T, rdb *redis.Client, name string) {
	t.Helper()
	list, err := rdb.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name="+name+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if err := rdb.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no pub/sub connection named %s in %q", name, list)
}
