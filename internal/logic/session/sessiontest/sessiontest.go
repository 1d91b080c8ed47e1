// Package sessiontest is the conformance suite every session.Store must
// pass. Run it from the implementation's tests:
//
//	sessiontest.Run(t, func(t *testing.T) session.Store { return newStore(t) })
//
// newStore must return an empty store, isolated from other tests (for Redis:
// a random key prefix). Some cases wait for real TTL expiry (about 2 s).
package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
)

// Timings of the expiry cases.
const (
	shortTTL   = time.Second
	longTTL    = time.Minute
	expiryWait = 5 * time.Second // generous: a loaded CI machine
)

// Run runs every conformance case as a subtest.
func Run(t *testing.T, newStore func(t *testing.T) session.Store) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s session.Store)
	}{
		{"AddLookup", testAddLookup},
		{"MultiDevice", testMultiDevice},
		{"ReplaceAndConditionalRemove", testReplace},
		{"RemoveRace", testRemoveRace},
		{"Expiry", testExpiry},
		{"HeartbeatRenews", testHeartbeatRenews},
		{"HeartbeatRecreates", testHeartbeatRecreates},
		{"HeartbeatNotOwner", testHeartbeatNotOwner},
		{"RoomCounts", testRoomCounts},
		{"RoomCountsExpiry", testRoomCountsExpiry},
		{"ManyRooms", testManyRooms},
		{"Invalid", testInvalid},
		{"OddKeys", testOddKeys},
		{"FirstAndLastDevice", testFirstAndLast},
		{"FirstAndLastConcurrent", testFirstAndLastConcurrent},
		{"HeartbeatAfterRemove", testHeartbeatAfterRemove},
		{"ExpiredUsers", testExpiredUsers},
		{"ExpiredUsersOnce", testExpiredUsersOnce},
		{"ExpiredUsersBacklog", testExpiredUsersBacklog},
		{"HeartbeatAfterExpiryReport", testHeartbeatAfterExpiryReport},
		{"RemoveBetweenHeartbeatHalves", testRemoveBetweenHeartbeatHalves},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newStore(t))
		})
	}
}

// Eventually polls cond until it returns true or the wait elapses.
func Eventually(tb testing.TB, wait time.Duration, what string, cond func() bool) {
	tb.Helper()
	waitfor.Until(tb, wait, what, cond)
}

func ctx(tb testing.TB) context.Context {
	tb.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return c
}

func add(t *testing.T, s session.Store, ss session.Session, ttl time.Duration) (session.Session, bool) {
	t.Helper()
	res, err := s.Add(ctx(t), ss, ttl)
	if err != nil {
		t.Fatalf("Add(%+v): %v", ss, err)
	}
	return res.Prev, res.Replaced
}

func server(t testing.TB, s session.Store, key string) string {
	t.Helper()
	got, err := s.Servers(ctx(t), []string{key})
	if err != nil {
		t.Fatalf("Servers: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("Servers returned %d entries for 1 key", len(got))
	}
	return got[0]
}

func devices(t testing.TB, s session.Store, mid int64) []session.Device {
	t.Helper()
	m, err := s.Devices(ctx(t), []int64{mid})
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	d := m[mid]
	sort.Slice(d, func(i, j int) bool { return d[i].Key < d[j].Key })
	return d
}

func rooms(t testing.TB, s session.Store) map[string]int32 {
	t.Helper()
	m, err := s.RoomCounts(ctx(t))
	if err != nil {
		t.Fatalf("RoomCounts: %v", err)
	}
	return m
}

// beat is Heartbeat reporting whether s owns the key.
func beat(st session.Store, c context.Context, s session.Session, ttl time.Duration) (bool, error) {
	res, err := st.Heartbeat(c, s, ttl)
	return res.Owner, err
}

func sess(key string, mid int64, server, conn string) session.Session {
	return session.Session{Key: key, Mid: mid, Server: server, ConnID: conn, Platform: "web"}
}

func testAddLookup(t *testing.T, s session.Store) {
	a := sess("dev-a", 1, "comet-1", "c1")
	if _, replaced := add(t, s, a, longTTL); replaced {
		t.Fatal("first Add reported a replaced session")
	}
	got, err := s.Servers(ctx(t), []string{"missing", "dev-a", "missing2"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"", "comet-1", ""}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Servers = %q, want %q", got, want)
	}
	d := devices(t, s, 1)
	if len(d) != 1 || d[0] != (session.Device{Key: "dev-a", Server: "comet-1", ConnID: "c1", Platform: "web"}) {
		t.Fatalf("Devices(1) = %+v", d)
	}
	if d := devices(t, s, 2); len(d) != 0 {
		t.Fatalf("Devices(2) = %+v, want none", d)
	}
	// Re-adding the same connection is not a replacement.
	if _, replaced := add(t, s, a, longTTL); replaced {
		t.Fatal("re-Add of the same connection reported a replacement")
	}
	if got, err := s.Servers(ctx(t), nil); err != nil || len(got) != 0 {
		t.Fatalf("Servers(nil) = %v, %v", got, err)
	}
}

func testMultiDevice(t *testing.T, s session.Store) {
	add(t, s, session.Session{Key: "k1", Mid: 7, Server: "c1", ConnID: "1", Platform: "ios"}, longTTL)
	add(t, s, session.Session{Key: "k2", Mid: 7, Server: "c2", ConnID: "2", Platform: "android"}, longTTL)
	add(t, s, session.Session{Key: "k3", Mid: 7, Server: "c1", ConnID: "3", Platform: "web"}, longTTL)
	add(t, s, session.Session{Key: "k4", Mid: 8, Server: "c2", ConnID: "4", Platform: "web"}, longTTL)
	want := []session.Device{
		{Key: "k1", Server: "c1", ConnID: "1", Platform: "ios"},
		{Key: "k2", Server: "c2", ConnID: "2", Platform: "android"},
		{Key: "k3", Server: "c1", ConnID: "3", Platform: "web"},
	}
	if got := devices(t, s, 7); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Devices(7) = %+v, want %+v", got, want)
	}
	m, err := s.Devices(ctx(t), []int64{7, 8, 9})
	if err != nil {
		t.Fatal(err)
	}
	if len(m[7]) != 3 || len(m[8]) != 1 || len(m[9]) != 0 {
		t.Fatalf("Devices(7,8,9) = %+v", m)
	}
	if res, err := s.Remove(ctx(t), session.Session{Key: "k2", Mid: 7, Server: "c2", ConnID: "2"}); err != nil || !res.Removed {
		t.Fatalf("Remove(k2) = %+v, %v", res, err)
	}
	if got := devices(t, s, 7); len(got) != 2 || got[0].Key != "k1" || got[1].Key != "k3" {
		t.Fatalf("Devices(7) after removing k2 = %+v", got)
	}
}

func testReplace(t *testing.T, s session.Store) {
	old := sess("dev", 5, "comet-1", "old")
	add(t, s, old, longTTL)
	nw := sess("dev", 5, "comet-2", "new")
	prev, replaced := add(t, s, nw, longTTL)
	if !replaced || prev.Server != "comet-1" || prev.ConnID != "old" || prev.Mid != 5 {
		t.Fatalf("Add(new) = %+v, %v; want the old session replaced", prev, replaced)
	}
	// The old connection's late Disconnect must not touch the new route.
	res, err := s.Remove(ctx(t), old)
	if err != nil || res.Removed || res.Last {
		t.Fatalf("Remove(old) = %+v, %v; want nothing removed", res, err)
	}
	if got := server(t, s, "dev"); got != "comet-2" {
		t.Fatalf("after late Remove(old): server = %q, want comet-2", got)
	}
	if d := devices(t, s, 5); len(d) != 1 || d[0].ConnID != "new" {
		t.Fatalf("after late Remove(old): devices = %+v", d)
	}
	// Same comet, other connection: still not the owner.
	if res, _ := s.Remove(ctx(t), sess("dev", 5, "comet-2", "other")); res.Removed || res.Last {
		t.Fatal("Remove by another conn id on the same comet removed the route")
	}
	res, err = s.Remove(ctx(t), nw)
	if err != nil || !res.Removed || !res.Last {
		t.Fatalf("Remove(new) = %+v, %v; want removed, the last device", res, err)
	}
	if got := server(t, s, "dev"); got != "" {
		t.Fatalf("after Remove(new): server = %q", got)
	}
	if d := devices(t, s, 5); len(d) != 0 {
		t.Fatalf("after Remove(new): devices = %+v", d)
	}
	if res, _ := s.Remove(ctx(t), nw); res.Removed || res.Last {
		t.Fatal("second Remove reported removed")
	}
}

// testRemoveRace: each reconnect races with the previous connection's
// Disconnect. Whatever the interleaving, the last connection keeps its
// route.
func testRemoveRace(t *testing.T, s session.Store) {
	const rounds = 40
	var wg sync.WaitGroup
	errs := make(chan error, rounds)
	for i := 1; i <= rounds; i++ {
		cur := sess("racy", 9, fmt.Sprintf("comet-%d", i%3), fmt.Sprintf("conn-%d", i))
		if i > 1 {
			prev := sess("racy", 9, fmt.Sprintf("comet-%d", (i-1)%3), fmt.Sprintf("conn-%d", i-1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Remove(context.Background(), prev); err != nil {
					errs <- err
				}
			}()
		}
		add(t, s, cur, longTTL)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Remove: %v", err)
	}
	last := fmt.Sprintf("conn-%d", rounds)
	if got := server(t, s, "racy"); got != fmt.Sprintf("comet-%d", rounds%3) {
		t.Fatalf("route server = %q after the race", got)
	}
	d := devices(t, s, 9)
	if len(d) != 1 || d[0].ConnID != last {
		t.Fatalf("devices after the race = %+v, want only %s", d, last)
	}
}

func testExpiry(t *testing.T, s session.Store) {
	add(t, s, sess("short", 11, "comet-1", "c"), shortTTL)
	add(t, s, sess("long", 11, "comet-1", "d"), longTTL)
	if got := server(t, s, "short"); got != "comet-1" {
		t.Fatalf("right after Add: server = %q", got)
	}
	Eventually(t, expiryWait, "route to expire", func() bool { return server(t, s, "short") == "" })
	Eventually(t, expiryWait, "device entry to expire", func() bool {
		d := devices(t, s, 11)
		return len(d) == 1 && d[0].Key == "long"
	})
	if got := server(t, s, "long"); got != "comet-1" {
		t.Fatalf("long-lived route gone: %q", got)
	}
}

func testHeartbeatRenews(t *testing.T, s session.Store) {
	// Heartbeats every ttl/8 keep the session alive for twice its TTL
	// (the margin tolerates a loaded machine).
	const ttl = 2 * shortTTL
	a := sess("beat", 12, "comet-1", "c")
	add(t, s, a, ttl)
	end := time.Now().Add(2 * ttl)
	for time.Now().Before(end) {
		owner, err := beat(s, ctx(t), a, ttl)
		if err != nil || !owner {
			t.Fatalf("Heartbeat = %v, %v", owner, err)
		}
		if got := server(t, s, "beat"); got != "comet-1" {
			t.Fatalf("route lost while heartbeating: %q", got)
		}
		if d := devices(t, s, 12); len(d) != 1 {
			t.Fatalf("device lost while heartbeating: %+v", d)
		}
		time.Sleep(ttl / 8)
	}
	Eventually(t, expiryWait, "route to expire after heartbeats stop", func() bool { return server(t, s, "beat") == "" })
}

func testHeartbeatRecreates(t *testing.T, s session.Store) {
	a := sess("lost", 13, "comet-1", "c")
	add(t, s, a, shortTTL)
	// The keys are gone (expired here; e.g. Redis restarted); the next
	// heartbeat restores them.
	Eventually(t, expiryWait, "session to expire", func() bool {
		return server(t, s, "lost") == "" && len(devices(t, s, 13)) == 0
	})
	owner, err := beat(s, ctx(t), a, longTTL)
	if err != nil || !owner {
		t.Fatalf("Heartbeat = %v, %v", owner, err)
	}
	if got := server(t, s, "lost"); got != "comet-1" {
		t.Fatalf("server after re-create = %q", got)
	}
	if d := devices(t, s, 13); len(d) != 1 || d[0].ConnID != "c" || d[0].Platform != "web" {
		t.Fatalf("devices after re-create = %+v", d)
	}
}

func testHeartbeatNotOwner(t *testing.T, s session.Store) {
	nw := sess("dup", 14, "comet-2", "new")
	add(t, s, nw, longTTL)
	owner, err := beat(s, ctx(t), sess("dup", 14, "comet-1", "old"), longTTL)
	if err != nil || owner {
		t.Fatalf("Heartbeat(old) = %v, %v; want false", owner, err)
	}
	if got := server(t, s, "dup"); got != "comet-2" {
		t.Fatalf("server after old heartbeat = %q", got)
	}
	if d := devices(t, s, 14); len(d) != 1 || d[0].ConnID != "new" {
		t.Fatalf("devices after old heartbeat = %+v", d)
	}
}

func testRoomCounts(t *testing.T, s session.Store) {
	if m := rooms(t, s); len(m) != 0 {
		t.Fatalf("empty store has counts %v", m)
	}
	if err := s.SetRoomCounts(ctx(t), "c1", map[string]int32{"live://1": 2, "live://2": 3, "live://0": 0}, longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoomCounts(ctx(t), "c2", map[string]int32{"live://1": 5}, longTTL); err != nil {
		t.Fatal(err)
	}
	if got, want := rooms(t, s), map[string]int32{"live://1": 7, "live://2": 3}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RoomCounts = %v, want %v", got, want)
	}
	// A renewal replaces the comet's previous counts.
	if err := s.SetRoomCounts(ctx(t), "c1", map[string]int32{"live://2": 1}, longTTL); err != nil {
		t.Fatal(err)
	}
	if got, want := rooms(t, s), map[string]int32{"live://1": 5, "live://2": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RoomCounts after replace = %v, want %v", got, want)
	}
	if err := s.SetRoomCounts(ctx(t), "c2", nil, longTTL); err != nil {
		t.Fatal(err)
	}
	if got, want := rooms(t, s), map[string]int32{"live://2": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RoomCounts after emptying c2 = %v, want %v", got, want)
	}
}

func testRoomCountsExpiry(t *testing.T, s session.Store) {
	if err := s.SetRoomCounts(ctx(t), "alive", map[string]int32{"r://a": 1}, longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoomCounts(ctx(t), "dead", map[string]int32{"r://a": 4, "r://b": 2}, shortTTL); err != nil {
		t.Fatal(err)
	}
	if got := rooms(t, s); got["r://a"] != 5 || got["r://b"] != 2 {
		t.Fatalf("RoomCounts = %v", got)
	}
	start := time.Now()
	Eventually(t, expiryWait, "dead comet's counts to vanish", func() bool {
		got := rooms(t, s)
		return got["r://a"] == 1 && len(got) == 1
	})
	if el := time.Since(start); el < shortTTL/2 {
		t.Fatalf("counts vanished after %v, before their TTL", el)
	}
}

func testManyRooms(t *testing.T, s session.Store) {
	const n = 3000
	counts := make(map[string]int32, n)
	for i := range n {
		counts[fmt.Sprintf("chat://%d", i)] = int32(i%7 + 1)
	}
	if err := s.SetRoomCounts(ctx(t), "big", counts, longTTL); err != nil {
		t.Fatal(err)
	}
	got := rooms(t, s)
	if len(got) != n {
		t.Fatalf("got %d rooms, want %d", len(got), n)
	}
	for r, c := range counts {
		if got[r] != c {
			t.Fatalf("room %s = %d, want %d", r, got[r], c)
		}
	}
}

func testInvalid(t *testing.T, s session.Store) {
	c := ctx(t)
	if _, err := s.Add(c, sess("", 1, "c", "x"), longTTL); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("Add(empty key) err = %v", err)
	}
	if _, err := s.Add(c, sess("k", 1, "", "x"), longTTL); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("Add(empty server) err = %v", err)
	}
	if _, err := s.Add(c, sess("k", 1, "c", "x"), 0); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("Add(ttl 0) err = %v", err)
	}
	if _, err := beat(s, c, sess("", 1, "c", "x"), longTTL); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("Heartbeat(empty key) err = %v", err)
	}
	if _, err := s.Remove(c, sess("", 1, "c", "x")); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("Remove(empty key) err = %v", err)
	}
	if err := s.SetRoomCounts(c, "", nil, longTTL); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("SetRoomCounts(empty server) err = %v", err)
	}
}

func testOddKeys(t *testing.T, s session.Store) {
	for i, k := range []string{"{tag}", "a}b{c", "key with spaces", "ключ", "a:b:c", "*"} {
		conn := fmt.Sprintf("conn-%d", i)
		add(t, s, sess(k, 20, "comet-x", conn), longTTL)
		if got := server(t, s, k); got != "comet-x" {
			t.Fatalf("server(%q) = %q", k, got)
		}
	}
	if d := devices(t, s, 20); len(d) != 6 {
		t.Fatalf("devices = %+v, want 6", d)
	}
	if got := server(t, s, "{tag"); got != "" {
		t.Fatalf("a prefix of a key matched: %q", got)
	}
}

// testFirstAndLast: Add reports a user's first live device, Remove its
// last; a reconnect of the same device is neither.
func testFirstAndLast(t *testing.T, s session.Store) {
	c := ctx(t)
	step := func(what string, got, want bool, err error) {
		t.Helper()
		if err != nil || got != want {
			t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
		}
	}
	var last int64 // each transition's version is greater than the one before
	later := func(what string, v int64) {
		t.Helper()
		if v <= last {
			t.Fatalf("%s: version %d, want > %d", what, v, last)
		}
		last = v
	}
	phone, web := sess("phone", 21, "comet-1", "p"), sess("web", 21, "comet-2", "w")
	res, err := s.Add(c, phone, longTTL)
	step("Add(phone) first", res.First, true, err)
	later("Add(phone)", res.Version)
	res, err = s.Add(c, web, longTTL)
	step("Add(web) first", res.First, false, err)
	again := sess("phone", 21, "comet-2", "p2") // the phone reconnects elsewhere
	res, err = s.Add(c, again, longTTL)
	step("Add(phone again) first", res.First, false, err)
	rm, err := s.Remove(c, phone) // the old connection's late Disconnect
	step("Remove(old phone) last", rm.Last, false, err)
	rm, err = s.Remove(c, again)
	step("Remove(phone) last", rm.Last, false, err)
	rm, err = s.Remove(c, web)
	step("Remove(web) last", rm.Last, true, err)
	later("Remove(web)", rm.Version)
	res, err = s.Add(c, web, longTTL)
	step("Add(web) after all gone first", res.First, true, err)
	later("Add(web) again", res.Version)
}

// testFirstAndLastConcurrent: devices of one user connecting at once give
// exactly one first, disconnecting at once exactly one last (found by
// review: a device count read after the write gave none or two).
func testFirstAndLastConcurrent(t *testing.T, s session.Store) {
	const devices, rounds = 6, 5
	for round := range rounds {
		all := make([]session.Session, devices)
		for i := range all {
			all[i] = sess(fmt.Sprintf("d%d-%d", round, i), 22, fmt.Sprintf("comet-%d", i%2), fmt.Sprint("c", i))
		}
		var firsts, lasts atomic.Int32
		var wg sync.WaitGroup
		for _, d := range all {
			wg.Go(func() {
				res, err := s.Add(context.Background(), d, longTTL)
				if err != nil {
					t.Error(err)
				}
				if res.First {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		for _, d := range all {
			wg.Go(func() {
				res, err := s.Remove(context.Background(), d)
				if err != nil {
					t.Error(err)
				}
				if res.Last {
					lasts.Add(1)
				}
			})
		}
		wg.Wait()
		if firsts.Load() != 1 || lasts.Load() != 1 {
			t.Fatalf("round %d: %d firsts and %d lasts, want one each", round, firsts.Load(), lasts.Load())
		}
	}
}

// testHeartbeatAfterRemove: a Heartbeat that was in flight when its
// connection's Disconnect removed the session does not bring it back (it
// used to: a ghost device until the TTL). Another connection of the key
// still can.
func testHeartbeatAfterRemove(t *testing.T, s session.Store) {
	c := ctx(t)
	a := sess("gone", 41, "comet-1", "c")
	add(t, s, a, longTTL)
	if res, err := s.Remove(c, a); err != nil || !res.Removed {
		t.Fatalf("Remove = %+v, %v", res, err)
	}
	owner, err := beat(s, c, a, longTTL)
	if err != nil || owner {
		t.Fatalf("Heartbeat after Remove = %v, %v; want false", owner, err)
	}
	if got := server(t, s, "gone"); got != "" {
		t.Fatalf("route back after a late heartbeat: %q", got)
	}
	if d := devices(t, s, 41); len(d) != 0 {
		t.Fatalf("device back after a late heartbeat: %+v", d)
	}
	// A Remove of a session already gone also keeps its late heartbeat out.
	b := sess("never", 41, "comet-1", "d")
	if res, err := s.Remove(c, b); err != nil || res.Removed || res.Last {
		t.Fatalf("Remove(absent) = %+v, %v", res, err)
	}
	if owner, err := beat(s, c, b, longTTL); err != nil || owner {
		t.Fatalf("Heartbeat after Remove(absent) = %v, %v; want false", owner, err)
	}
	// The device connects again: a new connection owns the key.
	a2 := sess("gone", 41, "comet-2", "c2")
	if res, err := s.Add(c, a2, longTTL); err != nil || res.Replaced || !res.First {
		t.Fatalf("Add(new connection) = %+v, %v", res, err)
	}
	if owner, err := beat(s, c, a2, longTTL); err != nil || !owner {
		t.Fatalf("Heartbeat(new connection) = %v, %v", owner, err)
	}
	if owner, err := beat(s, c, a, longTTL); err != nil || owner {
		t.Fatalf("Heartbeat(old connection) = %v, %v; want false", owner, err)
	}
	if got := server(t, s, "gone"); got != "comet-2" {
		t.Fatalf("server = %q, want comet-2", got)
	}
	// A connection's Disconnect after a reconnect elsewhere changes nothing.
	if res, err := s.Remove(c, a); err != nil || res.Removed || res.Last {
		t.Fatalf("late Remove(old) = %+v, %v", res, err)
	}
	if got := server(t, s, "gone"); got != "comet-2" {
		t.Fatalf("server after late Remove = %q, want comet-2", got)
	}
}

// expiredMids calls ExpiredUsers until the users in want were reported
// (or expiryWait passed) plus once more, and returns every report.
func expiredMids(t *testing.T, s session.Store, want ...int64) map[int64][]session.Expired {
	t.Helper()
	got := map[int64][]session.Expired{}
	done := func() bool {
		for _, m := range want {
			if len(got[m]) == 0 {
				return false
			}
		}
		return true
	}
	call := func() {
		users, _, err := s.ExpiredUsers(ctx(t), 100)
		if err != nil {
			t.Fatalf("ExpiredUsers: %v", err)
		}
		for _, u := range users {
			got[u.Mid] = append(got[u.Mid], u)
		}
	}
	Eventually(t, expiryWait, fmt.Sprintf("users %v reported", want), func() bool {
		call()
		return done()
	})
	call()
	return got
}

// testExpiredUsers: a user whose devices all expired without a Remove is
// reported once, with its device; not a user whose last device was
// removed, one still live, or one that came back before the report.
func testExpiredUsers(t *testing.T, s session.Store) {
	c := ctx(t)
	if _, _, err := s.ExpiredUsers(c, 0); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("ExpiredUsers(0) = %v, want ErrInvalid", err)
	}
	crashed := []session.Session{sess("p31", 31, "comet-1", "a"), sess("w31", 31, "comet-2", "b")}
	online, err := s.Add(c, crashed[0], shortTTL)
	if err != nil || !online.First || online.Version == 0 {
		t.Fatalf("Add = %+v, %v; want first with a version", online, err)
	}
	add(t, s, crashed[1], shortTTL)
	removed := sess("p32", 32, "comet-1", "c")
	add(t, s, removed, shortTTL)
	if res, err := s.Remove(c, removed); err != nil || !res.Last {
		t.Fatalf("Remove = %+v, %v", res, err)
	}
	add(t, s, sess("p33", 33, "comet-1", "d"), longTTL)
	add(t, s, sess("p34", 34, "comet-1", "e"), shortTTL)
	Eventually(t, expiryWait, "devices to expire", func() bool {
		return len(devices(t, s, 31)) == 0 && len(devices(t, s, 34)) == 0
	})
	if res, err := s.Add(c, sess("w34", 34, "comet-2", "f"), longTTL); err != nil || !res.First {
		t.Fatalf("Add after expiry = %+v, %v; want first", res, err)
	}

	got := expiredMids(t, s, 31)
	if len(got) != 1 || len(got[31]) != 1 {
		t.Fatalf("reported %v, want user 31 once", got)
	}
	u := got[31][0]
	if (u.Key != "p31" || u.ConnID != "a" || u.Server != "comet-1") && (u.Key != "w31" || u.ConnID != "b" || u.Server != "comet-2") {
		t.Fatalf("reported device %+v is not one of user 31's", u)
	}
	if u.Platform != "web" {
		t.Fatalf("platform %q", u.Platform)
	}
	if u.Version <= online.Version {
		t.Fatalf("offline version %d not after the online version %d", u.Version, online.Version)
	}
	// Reported users are forgotten: a new device is its user's first.
	if res, err := s.Add(c, crashed[0], longTTL); err != nil || !res.First {
		t.Fatalf("Add after the report = %+v, %v; want first", res, err)
	}
}

// testExpiredUsersOnce: callers sweeping at once (several logics) report
// each expired user once in all.
func testExpiredUsersOnce(t *testing.T, s session.Store) {
	const users, callers = 20, 4
	for i := range users {
		add(t, s, sess(fmt.Sprint("k", i), int64(50+i), "comet-1", fmt.Sprint("c", i)), shortTTL)
	}
	Eventually(t, expiryWait, "devices to expire", func() bool { return len(devices(t, s, 50+users-1)) == 0 })
	var mu sync.Mutex
	seen := map[int64]int{}
	deadline := time.Now().Add(expiryWait)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				got, _, err := s.ExpiredUsers(context.Background(), 3)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, u := range got {
					seen[u.Mid]++
				}
				n := len(seen)
				mu.Unlock()
				if n == users {
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range users {
		if n := seen[int64(50+i)]; n != 1 {
			t.Errorf("user %d reported %d times, want once", 50+i, n)
		}
	}
}

// testExpiredUsersBacklog: candidates that need no report (users that
// disconnected) do not stop a caller that loops while more is set from
// reaching the user that does (found by review: a sweep stopped after one
// batch of non-reports, and a crashed comet's users behind them were
// never reached).
func testExpiredUsersBacklog(t *testing.T, s session.Store) {
	c := ctx(t)
	const gone = 40
	for i := range gone {
		a := sess(fmt.Sprint("g", i), int64(100+i), "comet-1", fmt.Sprint("c", i))
		add(t, s, a, shortTTL)
		if _, err := s.Remove(c, a); err != nil {
			t.Fatal(err)
		}
	}
	add(t, s, sess("crashed", 200, "comet-2", "x"), shortTTL)
	Eventually(t, expiryWait, "the device to expire", func() bool { return len(devices(t, s, 200)) == 0 })
	var got []int64
	for round := 0; ; round++ {
		if round > 2*gone {
			t.Fatal("more never cleared")
		}
		users, more, err := s.ExpiredUsers(c, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			got = append(got, u.Mid)
		}
		if !more {
			break
		}
	}
	if !slices.Equal(got, []int64{200}) {
		t.Fatalf("reported %v, want [200]", got)
	}
}

// testHeartbeatAfterExpiryReport: a device whose session expired and was
// reported offline and that heartbeats again (its comet lost the store
// for longer than the TTL) comes back as its user's first device: its
// online must be published (found by review: presence then showed it
// offline until it reconnected).
func testHeartbeatAfterExpiryReport(t *testing.T, s session.Store) {
	c := ctx(t)
	a := sess("back", 61, "comet-1", "c")
	add(t, s, a, shortTTL)
	Eventually(t, expiryWait, "the device to expire", func() bool { return len(devices(t, s, 61)) == 0 })
	got := expiredMids(t, s, 61)
	if len(got[61]) != 1 {
		t.Fatalf("reported %v", got)
	}
	res, err := s.Heartbeat(c, a, longTTL)
	if err != nil || !res.Owner || !res.First || res.Version <= got[61][0].Version {
		t.Fatalf("Heartbeat after the report = %+v, %v; want owner, first, version > %d", res, err, got[61][0].Version)
	}
	if res, err := s.Heartbeat(c, a, longTTL); err != nil || !res.Owner || res.First {
		t.Fatalf("next Heartbeat = %+v, %v; want owner, not first", res, err)
	}
}

// testRemoveBetweenHeartbeatHalves: a Heartbeat renews the route, then
// the user entry; a Remove that runs between the two must not see the
// device come back (found by review: a ghost device until the TTL, the
// next device not reported first, and a second offline at its expiry).
// Redis only: Memory does both halves under one lock.
func testRemoveBetweenHeartbeatHalves(t *testing.T, s session.Store) {
	split, ok := s.(interface {
		HeartbeatUser(ctx context.Context, s session.Session, ttl time.Duration) (session.HeartbeatResult, error)
	})
	if !ok {
		t.Skip("the store's Heartbeat is atomic")
	}
	c := ctx(t)
	a := sess("race", 71, "comet-1", "c")
	add(t, s, a, longTTL)
	rm, err := s.Remove(c, a) // ran after the Heartbeat's route half
	if err != nil || !rm.Last {
		t.Fatalf("Remove = %+v, %v", rm, err)
	}
	if _, err := split.HeartbeatUser(c, a, longTTL); err != nil { // the Heartbeat's user half
		t.Fatal(err)
	}
	if d := devices(t, s, 71); len(d) != 0 {
		t.Fatalf("removed device back: %+v", d)
	}
	res, err := s.Add(c, sess("other", 71, "comet-1", "d"), longTTL)
	if err != nil || !res.First {
		t.Fatalf("next device Add = %+v, %v; want first", res, err)
	}

	// Two devices: the last one's Remove keeps the other's tombstone
	// (found by a second review: it deleted the whole hash).
	da, db := sess("ta", 72, "comet-1", "a"), sess("tb", 72, "comet-1", "b")
	add(t, s, da, longTTL)
	add(t, s, db, longTTL)
	if rm, err := s.Remove(c, da); err != nil || rm.Last {
		t.Fatalf("Remove(a) = %+v, %v; want not last", rm, err)
	}
	if rm, err := s.Remove(c, db); err != nil || !rm.Last {
		t.Fatalf("Remove(b) = %+v, %v; want last", rm, err)
	}
	if hb, err := split.HeartbeatUser(c, da, longTTL); err != nil || hb.First {
		t.Fatalf("a's late user half = %+v, %v; want nothing written", hb, err)
	}
	if d := devices(t, s, 72); len(d) != 0 {
		t.Fatalf("removed device back: %+v", d)
	}
}
