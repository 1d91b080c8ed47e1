package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/logic/session/sessiontest"
)

func TestRedisDownAndRecovery(t *testing.T) {
	srv := sessiontest.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{
		Addr:        srv.Addr(),
		DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond,
		MaxRetries:  -1, // fail fast: the caller decides
	})
	defer c.Close()
	st, err := session.NewRedis(c, session.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := session.Session{Key: "k", Mid: 1, Server: "comet", ConnID: "c"}
	if _, err := st.Add(ctx, s, time.Minute); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	checks := map[string]func() error{
		"Add":           func() error { _, err := st.Add(ctx, s, time.Minute); return err },
		"Heartbeat":     func() error { _, err := st.Heartbeat(ctx, s, time.Minute); return err },
		"Remove":        func() error { _, err := st.Remove(ctx, s); return err },
		"Servers":       func() error { _, err := st.Servers(ctx, []string{"k"}); return err },
		"Devices":       func() error { _, err := st.Devices(ctx, []int64{1}); return err },
		"SetRoomCounts": func() error { return st.SetRoomCounts(ctx, "comet", map[string]int32{"a://b": 1}, time.Minute) },
		"RoomCounts":    func() error { _, err := st.RoomCounts(ctx); return err },
	}
	for name, fn := range checks {
		start := time.Now()
		err := fn()
		if !errors.Is(err, session.ErrUnavailable) {
			t.Fatalf("%s with Redis down: err = %v, want ErrUnavailable", name, err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("%s took %v to fail", name, el)
		}
	}

	srv.Start() // same port, empty data set
	sessiontest.Eventually(t, 10*time.Second, "store to recover", func() bool {
		_, err := st.Heartbeat(ctx, s, time.Minute)
		return err == nil
	})
	// The heartbeat re-created what the restart lost.
	got, err := st.Servers(ctx, []string{"k"})
	if err != nil || got[0] != "comet" {
		t.Fatalf("Servers after recovery = %v, %v", got, err)
	}
	devs, err := st.Devices(ctx, []int64{1})
	if err != nil || len(devs[1]) != 1 {
		t.Fatalf("Devices after recovery = %v, %v", devs, err)
	}
}
