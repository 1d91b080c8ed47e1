package logic_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
)

// slowStore makes every device lookup take a while, so that concurrent
// pushes overlap and share lookups; it counts the lookups and the mids.
type slowStore struct {
	session.Store
	delay   time.Duration
	lookups atomic.Int64
	fail    atomic.Bool
}

func (s *slowStore) Devices(ctx context.Context, mids []int64) (map[int64][]session.Device, error) {
	s.lookups.Add(1)
	time.Sleep(s.delay)
	if s.fail.Load() {
		return nil, fmt.Errorf("%w: test outage", session.ErrUnavailable)
	}
	return s.Store.Devices(ctx, mids)
}

// TestHTTPPushMidsConcurrent: many concurrent pushes by mid through the
// HTTP API share store lookups, and each still publishes exactly its own
// user's device keys; a store outage fails every push of a shared lookup
// with 503.
func TestHTTPPushMidsConcurrent(t *testing.T) {
	const (
		users  = 50
		pushes = 400
	)
	mem := session.NewMemory()
	ctx := context.Background()
	for mid := range int64(users) {
		for d := range 2 {
			s := session.Session{Key: fmt.Sprintf("u%d-d%d", mid, d), Mid: mid, Server: fmt.Sprintf("comet-%d", d), ConnID: "c"}
			if _, err := mem.Add(ctx, s, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	store := &slowStore{Store: mem, delay: 5 * time.Millisecond}
	producer := &fakeProducer{}
	l, err := logic.New(logic.Config{Push: logic.PushConfig{Secret: testSecret}},
		logic.Deps{Store: store, Verifier: fakeVerifier{}, Producer: producer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	h := l.HTTPHandler()
	push := func(mid int64, body string) int {
		r := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/goim/push/mids?operation=1000&mids=%d", mid), bytes.NewReader([]byte(body)))
		r.Header.Set("Authorization", "Bearer "+testSecret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}

	var wg sync.WaitGroup
	codes := make(chan int, pushes)
	for i := range pushes {
		wg.Go(func() { codes <- push(int64(i%users), fmt.Sprintf("m%d", i%users)) })
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("status %d", c)
		}
	}
	if n := store.lookups.Load(); n >= pushes {
		t.Fatalf("%d lookups for %d concurrent pushes: none shared", n, pushes)
	}
	recs := producer.take()
	if len(recs) != 2*pushes {
		t.Fatalf("%d records, want %d (one per comet per push)", len(recs), 2*pushes)
	}
	for _, r := range recs {
		var mid int64
		if _, err := fmt.Sscanf(string(r.msg.Msg), "m%d", &mid); err != nil {
			t.Fatal(err)
		}
		want := []string{fmt.Sprintf("u%d-d%s", mid, r.msg.Server[len("comet-"):])}
		if !slices.Equal(sortedKeys(r), want) {
			t.Fatalf("push to user %d on %s carried keys %v, want %v", mid, r.msg.Server, r.msg.Keys, want)
		}
	}

	store.fail.Store(true)
	codes = make(chan int, pushes)
	for i := range pushes / 4 {
		wg.Go(func() { codes <- push(int64(i%users), "x") })
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusServiceUnavailable {
			t.Fatalf("store down: status %d, want 503", c)
		}
	}
	if n := len(producer.take()); n != 0 {
		t.Fatalf("store down: %d records published", n)
	}
}
