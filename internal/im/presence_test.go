package im

import (
	"context"
	"testing"
	"time"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// mutableDevices is a DeviceLookup whose devices the test changes.
type mutableDevices map[int64][]session.Device

func (m mutableDevices) Devices(_ context.Context, mids []int64) (map[int64][]session.Device, error) {
	out := map[int64][]session.Device{}
	for _, id := range mids {
		if d := m[id]; len(d) > 0 {
			out[id] = d
		}
	}
	return out, nil
}

func TestPresenceFirstAndLastDevice(t *testing.T) {
	h := newHarness(t, Config{})
	devs := mutableDevices{}
	store := NewMemoryPresence()
	p, err := NewPresence(store, devs, h.svc, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	phone := session.Session{Mid: 6, Key: "phone", Platform: "ios"}

	// Nobody subscribed: nothing published.
	devs[6] = []session.Device{{Key: "phone"}}
	p.UserOnline(ctx, phone, 10)
	if h.prod.count() != 0 {
		t.Fatal("published presence nobody asked for")
	}
	st, err := p.Subscribe(ctx, 5, []int64{6, 7})
	if err != nil || len(st) != 2 || !st[0].Online || st[1].Online {
		t.Fatalf("subscribe status = %+v, %v", st, err)
	}
	// Whether a device is the first or the last is the session store's
	// call (logic invokes the hooks only then): each hook publishes.
	devs[6] = nil
	p.UserOffline(ctx, phone, 11)
	if h.prod.count() != 1 {
		t.Fatalf("published %d events, want the one offline", h.prod.count())
	}
	ev := h.prod.events[0]
	if ev.Kind != logicpb.MsgEvent_PRESENCE || ev.Presence.User != 6 || ev.Presence.Online || ev.Presence.Version != 11 || len(ev.Users) != 1 || ev.Users[0] != 5 {
		t.Fatalf("event = %v", ev)
	}
	if h.prod.keys[0] != "presence:6" {
		t.Fatalf("key = %q", h.prod.keys[0])
	}
	if _, err := p.Subscribe(ctx, 5, nil); err == nil {
		t.Fatal("empty subscribe accepted")
	}
	if err := p.Unsubscribe(ctx, 5, []int64{6}); err != nil {
		t.Fatal(err)
	}
	if subs, _ := store.Subscribers(ctx, 6); len(subs) != 0 {
		t.Fatalf("after unsubscribe: %v", subs)
	}
}

func TestMemoryPresenceExpiry(t *testing.T) {
	s := NewMemoryPresence()
	now := time.Unix(100, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	s.Subscribe(ctx, 1, []int64{9}, time.Minute)
	if subs, _ := s.Subscribers(ctx, 9); len(subs) != 1 {
		t.Fatalf("subs = %v", subs)
	}
	now = now.Add(2 * time.Minute)
	if subs, _ := s.Subscribers(ctx, 9); len(subs) != 0 {
		t.Fatalf("expired subscription still there: %v", subs)
	}
}
