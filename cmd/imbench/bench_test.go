package main

import (
	"testing"
	"time"
)

// Hot paths of a run: every delivery is recorded and counted.

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 37 * time.Microsecond
			h.Record(d % time.Second)
		}
	})
}

func BenchmarkTrackerOnFrame(b *testing.B) {
	tr := newTracker(1000, 1024, 1)
	f := frameOf(1000, stampedBody(64, 7))
	b.ReportAllocs()
	for b.Loop() {
		tr.onFrame(0, f)
	}
}

func FuzzTrackerOnFrame(f *testing.F) {
	f.Add(int32(1000), stampedBody(16, 3))
	f.Add(int32(1000), []byte{1, 2})
	f.Add(int32(1000), stampedBody(16, 1<<63))
	f.Fuzz(func(t *testing.T, op int32, body []byte) {
		tr := newTracker(1000, 8, 1)
		tr.onFrame(0, frameOf(op, body))
		if tr.total.Load()+tr.bad.Load() > 1 {
			t.Fatal("one frame counted twice")
		}
		miss, dup := tr.missingDup(8)
		if miss+dup < 7 {
			t.Fatalf("missing %d dup %d after one frame", miss, dup)
		}
	})
}
