package session_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/logic/session/sessiontest"
	"github.com/hubuim/hubuim/internal/testenv"
)

// randomPrefix isolates a test's keys on the shared Redis.
func randomPrefix(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "hubuimtest:" + hex.EncodeToString(b) + ":"
}

// cleanupPrefix deletes every key under prefix when the test ends.
func cleanupPrefix(tb testing.TB, c *redis.Client, prefix string) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
}

func newRedisStore(t *testing.T) *session.Redis {
	t.Helper()
	s, _, _ := newRedisStoreRaw(t)
	return s
}

// newRedisStoreRaw is newRedisStore with its client and key prefix, for
// tests that write keys behind the store's back.
func newRedisStoreRaw(t *testing.T) (*session.Redis, *redis.Client, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	prefix := randomPrefix(t)
	cleanupPrefix(t, c, prefix)
	t.Cleanup(func() { _ = c.Close() })
	s, err := session.NewRedis(c, session.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, prefix
}

func TestRedisConformance(t *testing.T) {
	sessiontest.Run(t, func(t *testing.T) session.Store { return newRedisStore(t) })
}

// A user whose sweep fails (here: its key holds a string) does not cost
// the other users of the call their reports: their entries were already
// deleted by their own scripts (found by review: the first failed reply
// ended the call and dropped the rest).
func TestRedisExpiredUsersFailedUserSparesOthers(t *testing.T) {
	s, c, prefix := newRedisStoreRaw(t)
	ctx := context.Background()
	const broken, ok = 600, 616 // one index shard (mod 16)
	if err := c.Set(ctx, prefix+"u:{600}", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, prefix+"x:{8}", redis.Z{Score: 1, Member: broken}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, session.Session{Key: "k", Mid: ok, Server: "comet-1", ConnID: "c", Platform: "web"}, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	users, _, err := s.ExpiredUsers(ctx, 10)
	if err == nil {
		t.Fatal("no error for the broken user")
	}
	if len(users) != 1 || users[0].Mid != ok {
		t.Fatalf("reported %+v, want user %d despite the broken one", users, ok)
	}
	if users, _, _ = s.ExpiredUsers(ctx, 10); len(users) != 0 {
		t.Fatalf("reported again: %+v", users)
	}
}
