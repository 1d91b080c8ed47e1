// Package discoverytest is the conformance suite every discovery.Registry
// implementation passes: Run it from the implementation's tests.
package discoverytest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/discovery"
)

// Timeout bounds every wait of the suite for a list.
const Timeout = 10 * time.Second

// Run runs the conformance suite. newRegistry returns a fresh, empty
// Registry for each subtest (for a shared backend: under a fresh prefix);
// the suite closes it.
func Run(t *testing.T, newRegistry func(t testing.TB) discovery.Registry) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, r discovery.Registry)
	}{
		{"RegisterIsSeen", testRegisterIsSeen},
		{"UpdateIsSeen", testUpdateIsSeen},
		{"CloseRemoves", testCloseRemoves},
		{"TwoInstances", testTwoInstances},
		{"WatchAfterRegisterStartsWithCurrentList", testWatchStartsWithCurrent},
		{"ServicesAreSeparate", testServicesAreSeparate},
		{"CancelClosesChannel", testCancelClosesChannel},
		{"RegistryCloseClosesChannel", testRegistryCloseClosesChannel},
		{"InvalidInstance", testInvalidInstance},
		{"UpdateCannotRename", testUpdateCannotRename},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistry(t)
			closed := false
			t.Cleanup(func() {
				if !closed {
					_ = r.Close()
				}
			})
			if tc.name == "RegistryCloseClosesChannel" {
				closed = true
			}
			tc.fn(t, r)
		})
	}
	t.Run("GoroutinesStop", func(t *testing.T) { testGoroutinesStop(t, newRegistry) })
}

// testGoroutinesStop checks that ctx cancel and Close stop everything the
// registry started.
func testGoroutinesStop(t *testing.T, newRegistry func(t testing.TB) discovery.Registry) {
	before := runtime.NumGoroutine()
	r := newRegistry(t)
	register(t, r, Ins(discovery.ServiceComet, "c1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelled, err := r.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	open := watch(t, r, discovery.ServiceComet)
	WaitIDs(t, cancelled, "c1")
	WaitIDs(t, open, "c1")
	cancel()
	WaitClosed(t, cancelled)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	WaitClosed(t, open)
	deadline := time.Now().Add(Timeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ins returns a test instance of service with a gRPC address.
func Ins(service, id string) discovery.Instance {
	return discovery.Instance{
		ID:      id,
		Service: service,
		Region:  "r1",
		Weight:  1,
		Addrs:   map[string]string{discovery.AddrGRPC: "127.0.0.1:1" + id},
	}
}

// IDs returns the IDs of list in order.
func IDs(list []discovery.Instance) []string {
	ids := make([]string, len(list))
	for i, ins := range list {
		ids[i] = ins.ID
	}
	return ids
}

// WaitFor reads lists from ch until ok accepts one, and returns it. It
// fails the test if ch is closed or nothing acceptable comes within
// Timeout.
func WaitFor(tb testing.TB, ch <-chan []discovery.Instance, what string, ok func([]discovery.Instance) bool) []discovery.Instance {
	tb.Helper()
	return WaitForWithin(tb, Timeout, ch, what, ok)
}

// WaitForWithin is WaitFor with a timeout d.
func WaitForWithin(tb testing.TB, d time.Duration, ch <-chan []discovery.Instance, what string, ok func([]discovery.Instance) bool) []discovery.Instance {
	tb.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	var last []discovery.Instance
	seen := false
	for {
		select {
		case list, open := <-ch:
			if !open {
				tb.Fatalf("waiting for %s: channel closed (last list %v)", what, IDs(last))
			}
			last, seen = list, true
			if ok(list) {
				return list
			}
		case <-deadline.C:
			tb.Fatalf("waiting for %s: timed out after %v (last list %v, any received: %v)", what, d, IDs(last), seen)
			return nil
		}
	}
}

// WaitIDs waits for a list with exactly ids (sorted by ID).
func WaitIDs(tb testing.TB, ch <-chan []discovery.Instance, ids ...string) []discovery.Instance {
	tb.Helper()
	if ids == nil {
		ids = []string{}
	}
	return WaitFor(tb, ch, fmt.Sprintf("ids %v", ids), func(l []discovery.Instance) bool {
		return slices.Equal(IDs(l), ids)
	})
}

// WaitClosed waits for ch to be closed, draining lists.
func WaitClosed(tb testing.TB, ch <-chan []discovery.Instance) {
	tb.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-deadline.C:
			tb.Fatalf("channel not closed after %v", Timeout)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

func register(t *testing.T, r discovery.Registry, ins discovery.Instance) discovery.Registration {
	t.Helper()
	reg, err := r.Register(ctxT(t), ins)
	if err != nil {
		t.Fatalf("Register(%s/%s): %v", ins.Service, ins.ID, err)
	}
	return reg
}

func watch(t *testing.T, r discovery.Registry, service string) <-chan []discovery.Instance {
	t.Helper()
	ch, err := r.Watch(ctxT(t), service)
	if err != nil {
		t.Fatalf("Watch(%s): %v", service, err)
	}
	return ch
}

func testRegisterIsSeen(t *testing.T, r discovery.Registry) {
	ch := watch(t, r, discovery.ServiceComet)
	first := WaitFor(t, ch, "first list", func([]discovery.Instance) bool { return true })
	if len(first) != 0 {
		t.Fatalf("first list of an empty registry = %v, want empty", IDs(first))
	}
	want := Ins(discovery.ServiceComet, "c1")
	want.Zone, want.Lat, want.Lon, want.Conns, want.IPs = "z1", 30.5, 114.3, 42, 9
	want.Addrs[discovery.AddrTCP] = "127.0.0.1:3101"
	register(t, r, want)
	got := WaitIDs(t, ch, "c1")[0]
	if got.Service != want.Service || got.Region != want.Region || got.Zone != want.Zone ||
		got.Lat != want.Lat || got.Lon != want.Lon || got.Weight != want.Weight || got.Conns != want.Conns || got.IPs != want.IPs ||
		got.Draining || got.Addrs[discovery.AddrGRPC] != want.Addrs[discovery.AddrGRPC] ||
		got.Addrs[discovery.AddrTCP] != want.Addrs[discovery.AddrTCP] || len(got.Addrs) != len(want.Addrs) {
		t.Fatalf("watched instance = %+v, want %+v", got, want)
	}
}

func testUpdateIsSeen(t *testing.T, r discovery.Registry) {
	ins := Ins(discovery.ServiceComet, "c1")
	reg := register(t, r, ins)
	ch := watch(t, r, discovery.ServiceComet)
	WaitIDs(t, ch, "c1")
	ins.Conns, ins.IPs = 7, 3
	if err := reg.Update(ctxT(t), ins); err != nil {
		t.Fatalf("Update: %v", err)
	}
	WaitFor(t, ch, "conns=7 ips=3", func(l []discovery.Instance) bool { return len(l) == 1 && l[0].Conns == 7 && l[0].IPs == 3 })
	ins.Draining = true
	ins.ID, ins.Service = "", "" // empty means unchanged
	if err := reg.Update(ctxT(t), ins); err != nil {
		t.Fatalf("Update(draining): %v", err)
	}
	got := WaitFor(t, ch, "draining", func(l []discovery.Instance) bool { return len(l) == 1 && l[0].Draining })
	if got[0].ID != "c1" || got[0].Service != discovery.ServiceComet {
		t.Fatalf("after Update with empty ID/Service: %+v", got[0])
	}
}

func testCloseRemoves(t *testing.T, r discovery.Registry) {
	reg := register(t, r, Ins(discovery.ServiceComet, "c1"))
	ch := watch(t, r, discovery.ServiceComet)
	WaitIDs(t, ch, "c1")
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	WaitIDs(t, ch)
	if err := reg.Close(ctxT(t)); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if err := reg.Update(ctxT(t), Ins(discovery.ServiceComet, "c1")); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Update after Close = %v, want ErrClosed", err)
	}
}

func testTwoInstances(t *testing.T, r discovery.Registry) {
	ch := watch(t, r, discovery.ServiceLogic)
	WaitIDs(t, ch)
	r2 := register(t, r, Ins(discovery.ServiceLogic, "l2"))
	WaitIDs(t, ch, "l2")
	r1 := register(t, r, Ins(discovery.ServiceLogic, "l1"))
	WaitIDs(t, ch, "l1", "l2")
	if err := r2.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	WaitIDs(t, ch, "l1")
	if err := r1.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	WaitIDs(t, ch)
}

func testWatchStartsWithCurrent(t *testing.T, r discovery.Registry) {
	register(t, r, Ins(discovery.ServiceComet, "b"))
	register(t, r, Ins(discovery.ServiceComet, "a"))
	ch := watch(t, r, discovery.ServiceComet)
	select {
	case list := <-ch:
		if got := IDs(list); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("first list = %v, want [a b]", got)
		}
	case <-time.After(Timeout):
		t.Fatal("no first list")
	}
}

func testServicesAreSeparate(t *testing.T, r discovery.Registry) {
	register(t, r, Ins("comet2", "x"))
	register(t, r, Ins(discovery.ServiceLogic, "l"))
	register(t, r, Ins(discovery.ServiceComet, "c"))
	ch := watch(t, r, discovery.ServiceComet)
	got := WaitIDs(t, ch, "c")
	if got[0].Service != discovery.ServiceComet {
		t.Fatalf("service = %q", got[0].Service)
	}
	ch2 := watch(t, r, "comet2")
	WaitIDs(t, ch2, "x")
}

func testCancelClosesChannel(t *testing.T, r discovery.Registry) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := r.Watch(ctx, discovery.ServiceComet)
	if err != nil {
		t.Fatal(err)
	}
	WaitIDs(t, ch)
	cancel()
	WaitClosed(t, ch)
	// The registry still works.
	ch2 := watch(t, r, discovery.ServiceComet)
	register(t, r, Ins(discovery.ServiceComet, "c1"))
	WaitIDs(t, ch2, "c1")
}

func testRegistryCloseClosesChannel(t *testing.T, r discovery.Registry) {
	ch := watch(t, r, discovery.ServiceComet)
	WaitIDs(t, ch)
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	WaitClosed(t, ch)
	if _, err := r.Watch(ctxT(t), discovery.ServiceComet); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Watch after Close = %v, want ErrClosed", err)
	}
	if _, err := r.Register(ctxT(t), Ins(discovery.ServiceComet, "c1")); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Register after Close = %v, want ErrClosed", err)
	}
}

func testInvalidInstance(t *testing.T, r discovery.Registry) {
	for _, ins := range []discovery.Instance{
		{Service: discovery.ServiceComet},
		{ID: "x"},
		{ID: "a/b", Service: discovery.ServiceComet},
		{ID: "x", Service: "co/met"},
	} {
		if _, err := r.Register(ctxT(t), ins); !errors.Is(err, discovery.ErrInvalidInstance) {
			t.Errorf("Register(%+v) = %v, want an invalid-instance error", ins, err)
		}
	}
	if _, err := r.Watch(ctxT(t), ""); !errors.Is(err, discovery.ErrInvalidInstance) {
		t.Error("Watch(\"\") succeeded")
	}
}

func testUpdateCannotRename(t *testing.T, r discovery.Registry) {
	reg := register(t, r, Ins(discovery.ServiceComet, "c1"))
	if err := reg.Update(ctxT(t), Ins(discovery.ServiceComet, "c2")); err == nil {
		t.Fatal("Update with another ID succeeded")
	}
	ch := watch(t, r, discovery.ServiceComet)
	WaitIDs(t, ch, "c1")
}
