package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/hubuim/hubuim/internal/store"
)

// TestPostgresSetDeliveredConcurrent: concurrent marks (coalesced into
// shared statements) end at the highest seq per device and conversation.
func TestPostgresSetDeliveredConcurrent(t *testing.T) {
	s := openPostgres(t)
	ctx := context.Background()
	const workers, perWorker, users = 16, 50, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				user := int64(i%users + 1)
				dev := fmt.Sprint("dev", w%2)
				// Seqs go up and down: the mark only rises.
				seq := int64(w*perWorker + i)
				if i%3 == 0 {
					seq = 1
				}
				if err := s.SetDelivered(ctx, user, dev, store.SingleConvID(user, 100), seq); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := map[string]int64{}
	for w := range workers {
		for i := range perWorker {
			if i%3 == 0 {
				continue
			}
			k := fmt.Sprint(i%users+1, "/dev", w%2)
			want[k] = max(want[k], int64(w*perWorker+i))
		}
	}
	for user := int64(1); user <= users; user++ {
		for _, dev := range []string{"dev0", "dev1"} {
			marks, err := s.Delivered(ctx, user, dev)
			if err != nil {
				t.Fatal(err)
			}
			if got, w := marks[store.SingleConvID(user, 100)], want[fmt.Sprint(user, "/", dev)]; got != w {
				t.Errorf("user %d %s: delivered %d, want %d", user, dev, got, w)
			}
		}
	}
}
