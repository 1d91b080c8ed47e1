package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/logic/session/sessiontest"
)

func TestMemoryConformance(t *testing.T) {
	sessiontest.Run(t, func(*testing.T) session.Store { return session.NewMemory() })
}

// BenchmarkMemoryExpiredUsers is one standalone sweep over n live users
// (none to report): the time the store's lock is held every
// conn.expiry_sweep.
func BenchmarkMemoryExpiredUsers(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := session.NewMemory()
			ctx := context.Background()
			for i := range n {
				s := session.Session{Key: fmt.Sprint("k", i), Mid: int64(i + 1), Server: "comet-1", ConnID: fmt.Sprint("c", i)}
				if _, err := m.Add(ctx, s, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if users, _, err := m.ExpiredUsers(ctx, 256); err != nil || len(users) != 0 {
					b.Fatal(users, err)
				}
			}
		})
	}
}
