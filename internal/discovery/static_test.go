package discovery_test

import (
	"context"
	"testing"

	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/discovery/discoverytest"
)

func TestStaticConformance(t *testing.T) {
	discoverytest.Run(t, func(testing.TB) discovery.Registry { return discovery.NewStatic() })
}

func TestStaticSetAndInitial(t *testing.T) {
	s := discovery.NewStatic(discoverytest.Ins("logic", "a"), discoverytest.Ins("comet", "c"))
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, "logic")
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitIDs(t, ch, "a")
	s.Set("logic", []discovery.Instance{discoverytest.Ins("whatever", "x"), discoverytest.Ins("", "y")})
	got := discoverytest.WaitIDs(t, ch, "x", "y")
	for _, ins := range got {
		if ins.Service != "logic" {
			t.Fatalf("Set instance service = %q, want logic", ins.Service)
		}
	}
	s.Set("logic", nil)
	discoverytest.WaitIDs(t, ch)

	// A watcher's list is its own copy.
	ch2, err := s.Watch(ctx, "comet")
	if err != nil {
		t.Fatal(err)
	}
	l := discoverytest.WaitIDs(t, ch2, "c")
	l[0].Addrs[discovery.AddrGRPC] = "mutated"
	ch3, err := s.Watch(ctx, "comet")
	if err != nil {
		t.Fatal(err)
	}
	if got := discoverytest.WaitIDs(t, ch3, "c")[0].Addrs[discovery.AddrGRPC]; got == "mutated" {
		t.Fatal("watcher mutation leaked into the registry")
	}
}

// A watcher that never reads does not block registrations, and then reads
// only the latest list.
func TestStaticSlowWatcher(t *testing.T) {
	s := discovery.NewStatic()
	defer s.Close()
	ch, err := s.Watch(context.Background(), "comet")
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		if _, err := s.Register(context.Background(), discoverytest.Ins("comet", string(rune('a'+i%26))+string(rune('a'+i/26)))); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(<-ch); got != n {
		t.Fatalf("pending list has %d instances, want the latest (%d)", got, n)
	}
}
