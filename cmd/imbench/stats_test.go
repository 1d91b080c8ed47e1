package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBucketBoundsAreContiguous(t *testing.T) {
	prevUpper := int64(-1)
	for b := range histBuckets - 1 {
		up := int64(bucketUpper(b))
		if up <= prevUpper {
			t.Fatalf("bucket %d upper %d not above previous %d", b, up, prevUpper)
		}
		// the first value of the bucket and its upper bound map back to it
		if got := bucketOf(uint64(prevUpper + 1)); got != b {
			t.Fatalf("bucketOf(%d) = %d, want %d", prevUpper+1, got, b)
		}
		if got := bucketOf(uint64(up)); got != b {
			t.Fatalf("bucketOf(upper %d) = %d, want %d", up, got, b)
		}
		prevUpper = up
	}
	if got := bucketOf(math.MaxUint64); got != histBuckets-1 {
		t.Fatalf("huge value in bucket %d, want last %d", got, histBuckets-1)
	}
}

func TestHistogramQuantilesMatchExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]time.Duration, 20000)
	for i := range vals {
		// log-uniform between 1µs and 10s
		v := time.Duration(math.Exp(rng.Float64()*math.Log(1e7))) * time.Microsecond
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	maxRel := 1.0 / histSub
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.Quantile(q)
		if got < exact.Truncate(time.Microsecond) {
			t.Errorf("q%.3f = %v below exact %v", q, got, exact)
		}
		if rel := float64(got-exact) / float64(exact); rel > maxRel+1e-9 && got-exact > time.Microsecond {
			t.Errorf("q%.3f = %v, exact %v: relative error %.4f > %.4f", q, got, exact, rel, maxRel)
		}
	}
	if h.Max() != vals[len(vals)-1].Truncate(time.Microsecond) {
		t.Errorf("max %v, want %v", h.Max(), vals[len(vals)-1])
	}
	if h.Min() != vals[0].Truncate(time.Microsecond) {
		t.Errorf("min %v, want %v", h.Min(), vals[0])
	}
	if h.Count() != int64(len(vals)) {
		t.Errorf("count %d", h.Count())
	}
}

func TestHistogramEdgeCases(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram not all zero")
	}
	h.Record(-time.Second) // clock skew
	h.Record(3 * time.Millisecond)
	if h.Min() != 0 {
		t.Errorf("negative not recorded as 0: min %v", h.Min())
	}
	if got := h.Quantile(1); got != 3*time.Millisecond {
		t.Errorf("p100 = %v, want exact max 3ms", got)
	}
	if got := h.Quantile(-1); got != 0 {
		t.Errorf("q<0 = %v", got)
	}
	if got := h.Quantile(2); got != 3*time.Millisecond {
		t.Errorf("q>1 = %v", got)
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	const workers, per = 8, 1000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				h.Record(time.Duration(w*per+i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if h.Count() != workers*per {
		t.Fatalf("count %d", h.Count())
	}
	if h.Max() != (workers*per-1)*time.Microsecond || h.Min() != 0 {
		t.Fatalf("min %v max %v", h.Min(), h.Max())
	}
}

func TestSummaryJSON(t *testing.T) {
	var h Histogram
	h.Record(1500 * time.Microsecond)
	var buf bytes.Buffer
	if err := report(&buf, true, []string{"line"}, h.Summary()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !bytes.HasPrefix(buf.Bytes(), []byte("line\n")) {
		t.Fatalf("human line missing: %q", out)
	}
	var s LatencySummary
	if err := json.Unmarshal(buf.Bytes()[len("line\n"):], &s); err != nil {
		t.Fatal(err)
	}
	if s.Count != 1 || s.MaxMS != 1.5 {
		t.Fatalf("summary %+v", s)
	}
}

func TestStampRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	b := make([]byte, 20)
	putStamp(b, at, 42)
	got, seq, err := readStamp(b)
	if err != nil || !got.Equal(at) || seq != 42 {
		t.Fatalf("readStamp = %v %d %v", got, seq, err)
	}
	if _, _, err := readStamp(b[:stampLen-1]); err == nil {
		t.Fatal("short body accepted")
	}
	if len(stampedBody(1, 0)) != stampLen {
		t.Fatal("stampedBody shorter than the stamp")
	}
}

func TestPaceStopsAtCount(t *testing.T) {
	var calls atomic.Int64
	seen := make([]atomic.Bool, 50)
	r := pace(context.Background(), 0, 50, time.Minute, 4, func(_ context.Context, i int64) {
		calls.Add(1)
		if seen[i].Swap(true) {
			t.Errorf("index %d issued twice", i)
		}
	})
	if r.Issued != 50 || calls.Load() != 50 {
		t.Fatalf("issued %d, calls %d, want 50", r.Issued, calls.Load())
	}
}

func TestPaceStopsAtDuration(t *testing.T) {
	// 10/s for a very large count: the duration must end it.
	const d = 300 * time.Millisecond
	start := time.Now()
	r := pace(context.Background(), 10, 1<<40, d, 2, func(context.Context, int64) {})
	if el := time.Since(start); el > 10*d {
		t.Fatalf("pace ran %v with a %v bound", el, d)
	}
	if r.Issued < 1 || r.Issued > 10 {
		t.Fatalf("issued %d at 10/s in %v", r.Issued, d)
	}
}

func TestPaceRejectsUnbounded(t *testing.T) {
	if r := pace(context.Background(), 1, 0, time.Second, 1, func(context.Context, int64) { t.Error("called") }); r.Issued != 0 {
		t.Fatal("issued with count 0")
	}
	if r := pace(context.Background(), 1, 1, 0, 1, func(context.Context, int64) { t.Error("called") }); r.Issued != 0 {
		t.Fatal("issued with duration 0")
	}
}

func TestTrackerCountsMissingAndDuplicates(t *testing.T) {
	tr := newTracker(1000, 3, 2)
	body := func(seq uint64) []byte { return stampedBody(stampLen, seq) }
	for _, seq := range []uint64{0, 0, 0, 1} { // msg 0 three times (1 dup), msg 1 once (1 missing), msg 2 never (2 missing)
		tr.onFrame(0, frameOf(1000, body(seq)))
	}
	tr.onFrame(0, frameOf(1001, body(2)))   // other op: ignored
	tr.onFrame(0, frameOf(1000, []byte{1})) // bad
	tr.onFrame(0, frameOf(1000, body(99)))  // out of range: bad
	miss, dup := tr.missingDup(3)
	if miss != 3 || dup != 1 {
		t.Fatalf("missing %d dup %d, want 3 and 1", miss, dup)
	}
	if tr.bad.Load() != 2 || tr.total.Load() != 4 {
		t.Fatalf("bad %d total %d", tr.bad.Load(), tr.total.Load())
	}
}

func TestParseIPs(t *testing.T) {
	ips, err := parseIPs("127.0.0.2, 127.0.0.3")
	if err != nil || len(ips) != 2 || ips[1].String() != "127.0.0.3" {
		t.Fatalf("%v %v", ips, err)
	}
	if _, err := parseIPs("127.0.0.2,nope"); err == nil {
		t.Fatal("bad address accepted")
	}
}

// The calls issued are exactly 0..Issued-1, also when the duration ends
// while workers hold reserved indices: the trackers count missing messages
// over that range, so a hole there is a false loss.
func TestPaceIssuesAPrefix(t *testing.T) {
	for round := range 200 {
		const count = 1 << 20
		var mu sync.Mutex
		called := map[int64]bool{}
		r := pace(context.Background(), 20000, count, 3*time.Millisecond, 16, func(_ context.Context, i int64) {
			mu.Lock()
			called[i] = true
			mu.Unlock()
		})
		if int64(len(called)) != r.Issued {
			t.Fatalf("round %d: %d calls, Issued %d", round, len(called), r.Issued)
		}
		for i := range r.Issued {
			if !called[i] {
				t.Fatalf("round %d: index %d of %d issued never called", round, i, r.Issued)
			}
		}
	}
}
