package session_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

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
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	prefix := randomPrefix(t)
	cleanupPrefix(t, c, prefix)
	t.Cleanup(func() { _ = c.Close() })
	s, err := session.NewRedis(c, session.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRedisConformance(t *testing.T) {
	sessiontest.Run(t, func(t *testing.T) session.Store { return newRedisStore(t) })
}
