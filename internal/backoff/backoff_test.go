package backoff

import (
	"context"
	"testing"
	"time"
)

// TestNextGrowsWithJitterAndResets: each delay is within [cur/2, cur],
// cur doubles up to the maximum, and Reset starts over.
func TestNextGrowsWithJitterAndResets(t *testing.T) {
	b := New(100*time.Millisecond, 400*time.Millisecond)
	for _, cur := range []time.Duration{100, 200, 400, 400} {
		cur *= time.Millisecond
		if d := b.Next(); d < cur/2 || d > cur {
			t.Fatalf("delay %v, want within [%v, %v]", d, cur/2, cur)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("delay after Reset %v, want <= 100ms", d)
	}
}

func TestWaitEndsWithCtx(t *testing.T) {
	b := New(time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Wait(ctx) {
		t.Fatal("Wait returned true for a done ctx")
	}
	if !New(time.Millisecond, time.Millisecond).Wait(context.Background()) {
		t.Fatal("Wait returned false with a live ctx")
	}
}
