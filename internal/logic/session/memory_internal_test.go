package session

import (
	"context"
	"testing"
	"time"
)

// The in-memory expiry index holds one entry per user however often its
// devices heartbeat (each heartbeat moves the user to a later second), and
// a sweep over live users looks at due seconds only.
func TestMemoryExpiryIndexOneEntryPerUser(t *testing.T) {
	m := NewMemory()
	clock := time.Unix(1_000_000, 0)
	m.now = func() time.Time { return clock }
	ctx := context.Background()
	phone := Session{Key: "phone", Mid: 1, Server: "comet-1", ConnID: "p"}
	web := Session{Key: "web", Mid: 1, Server: "comet-1", ConnID: "w"}
	for _, s := range []Session{phone, web} {
		if _, err := m.Add(ctx, s, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		clock = clock.Add(7 * time.Second)
		for _, s := range []Session{phone, web} {
			if _, err := m.Heartbeat(ctx, s, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if users, _, err := m.ExpiredUsers(ctx, 10); err != nil || len(users) != 0 {
			t.Fatalf("live user reported: %v, %v", users, err)
		}
	}
	entries := 0
	for _, set := range m.expiring {
		entries += len(set)
	}
	if entries != 1 || len(m.indexedAt) != 1 {
		t.Fatalf("%d index entries over %d seconds, %d users indexed; want 1", entries, len(m.expiring), len(m.indexedAt))
	}
	clock = clock.Add(2 * time.Minute) // both devices expire
	users, more, err := m.ExpiredUsers(ctx, 10)
	if err != nil || more || len(users) != 1 || users[0].Mid != 1 {
		t.Fatalf("ExpiredUsers = %+v, %v, %v; want user 1", users, more, err)
	}
	if len(m.expiring) != 0 || len(m.indexedAt) != 0 {
		t.Fatalf("index not emptied: %v %v", m.expiring, m.indexedAt)
	}
}
