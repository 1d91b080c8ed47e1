package mq

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestTrackerCommitsAcknowledgedPrefix acknowledges records in random
// order, with gaps in the offsets (compacted or transactional topics), and
// checks every commit against the acknowledged prefix.
func TestTrackerCommitsAcknowledgedPrefix(t *testing.T) {
	const n, maxUnacked = 2000, 64
	rng := rand.New(rand.NewPCG(1, 2))
	var commits []int64
	tr := newTracker(maxUnacked, nil, func(next int64) { commits = append(commits, next) })
	offs := make([]int64, 0, n)
	acked := make(map[uint64]bool)
	var pending []uint64
	off := int64(100)
	for len(offs) < n || len(pending) > 0 {
		if len(offs) < n && tr.pending() < maxUnacked && rng.IntN(2) == 0 {
			off += 1 + int64(rng.IntN(3))
			seq := tr.add(off)
			if seq != uint64(len(offs)) {
				t.Fatalf("seq %d, want %d", seq, len(offs))
			}
			offs = append(offs, off)
			pending = append(pending, seq)
			continue
		}
		if len(pending) == 0 {
			continue
		}
		i := rng.IntN(len(pending))
		seq := pending[i]
		pending = append(pending[:i], pending[i+1:]...)
		before := len(commits)
		tr.done(seq)
		tr.done(seq) // twice: nothing more
		acked[seq] = true
		// The prefix of acknowledged records.
		var prefix uint64
		for acked[prefix] {
			prefix++
		}
		if prefix == 0 {
			if len(commits) != 0 {
				t.Fatalf("committed %v with record 0 unacknowledged", commits)
			}
			continue
		}
		want := offs[prefix-1] + 1
		if got := commits[len(commits)-1]; got != want {
			t.Fatalf("after ack of %d: committed %d, want %d (prefix %d)", seq, got, want, prefix)
		}
		if len(commits) > before+1 {
			t.Fatalf("one ack committed %d times", len(commits)-before)
		}
		if tr.pending() != len(offs)-int(prefix) {
			t.Fatalf("pending %d, want %d", tr.pending(), len(offs)-int(prefix))
		}
	}
	if got, want := commits[len(commits)-1], offs[n-1]+1; got != want {
		t.Fatalf("final commit %d, want %d", got, want)
	}
	for i := 1; i < len(commits); i++ {
		if commits[i] <= commits[i-1] {
			t.Fatalf("commits not increasing: %v", commits[i-1:i+1])
		}
	}
	if len(tr.ring) > maxUnacked {
		t.Fatalf("ring grew to %d slots, max %d", len(tr.ring), maxUnacked)
	}
}

func TestTrackerClosedAndStaleAcks(t *testing.T) {
	var commits []int64
	tr := newTracker(4, nil, func(next int64) { commits = append(commits, next) })
	s0, s1 := tr.add(0), tr.add(1)
	tr.done(s1 + 10) // never delivered
	tr.done(s1)
	if len(commits) != 0 {
		t.Fatalf("committed %v before record 0 was acknowledged", commits)
	}
	tr.close()
	tr.done(s0)
	if len(commits) != 0 {
		t.Fatalf("committed %v after close", commits)
	}
}

func TestTrackerWaitSpace(t *testing.T) {
	tr := newTracker(2, nil, func(int64) {})
	s0 := tr.add(0)
	tr.add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if tr.waitSpace(ctx) {
		t.Fatal("waitSpace on a full ring returned true")
	}
	res := make(chan bool, 1)
	go func() { res <- tr.waitSpace(context.Background()) }()
	tr.done(s0)
	select {
	case ok := <-res:
		if !ok {
			t.Fatal("waitSpace = false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitSpace did not return after an ack freed a slot")
	}
}

// BenchmarkTrackerSync is the consumer's per-record cost for a handler
// that does not defer: add, then done at once.
func BenchmarkTrackerSync(b *testing.B) {
	var last int64
	tr := newTracker(MaxUnacked, nil, func(next int64) { last = next })
	b.ReportAllocs()
	for i := range b.N {
		tr.done(tr.add(int64(i)))
	}
	if last != int64(b.N) {
		b.Fatalf("committed %d, want %d", last, b.N)
	}
}

// BenchmarkTrackerDeferred acknowledges records in batches of 32, in
// reverse order (the room batcher's pattern, worst case).
func BenchmarkTrackerDeferred(b *testing.B) {
	const batch = 32
	var last int64
	tr := newTracker(MaxUnacked, nil, func(next int64) { last = next })
	var seqs [batch]uint64
	b.ReportAllocs()
	for i := range b.N {
		seqs[i%batch] = tr.add(int64(i))
		if i%batch == batch-1 {
			for j := batch - 1; j >= 0; j-- {
				tr.done(seqs[j])
			}
		}
	}
	b.StopTimer()
	if want := int64(b.N - b.N%batch); last != want && b.N >= batch {
		b.Fatalf("committed %d, want %d", last, want)
	}
}
