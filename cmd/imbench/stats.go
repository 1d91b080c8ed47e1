package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram geometry: values are recorded in microseconds in log-linear
// buckets, histSub sub-buckets per power of two (relative error below
// 1/histSub), up to 2^histMaxExp µs (about 19 hours). Recording is lock-free
// and allocation-free, so many goroutines share one Histogram.
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxExp  = 36
	histBuckets = (histMaxExp + 1) * histSub
)

// Histogram is a concurrent latency histogram with bounded memory.
type Histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	sum    atomic.Int64 // µs
	max    atomic.Int64 // µs
	min    atomic.Int64 // µs + 1 (0: none recorded)
}

// bucketOf maps a value in µs to its bucket. Values below histSub have a
// bucket each; above, the top histSubBits+1 bits select the bucket.
func bucketOf(us uint64) int {
	if us < histSub {
		return int(us)
	}
	exp := bits.Len64(us) - histSubBits - 1 // shift that keeps histSubBits+1 bits
	if exp > histMaxExp-1 {
		return histBuckets - 1
	}
	mant := int(us>>uint(exp)) - histSub // in [0, histSub)
	return (exp+1)*histSub + mant
}

// bucketUpper is the largest value (µs) that falls into bucket b.
func bucketUpper(b int) uint64 {
	if b < histSub {
		return uint64(b)
	}
	exp := b/histSub - 1
	mant := uint64(b%histSub + histSub)
	return (mant+1)<<uint(exp) - 1
}

// Record adds one latency. Negative durations (clock skew between the
// timestamp writer and the reader) count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[bucketOf(uint64(us))].Add(1)
	h.n.Add(1)
	h.sum.Add(us)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && us+1 >= m) || h.min.CompareAndSwap(m, us+1) {
			break
		}
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.n.Load() }

// Quantile returns the value at quantile q in [0, 1]: the upper bound of the
// bucket holding it, capped at the exact maximum. Zero when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	q = math.Min(math.Max(q, 0), 1)
	rank := int64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	maxUS := h.max.Load()
	var seen int64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			v := int64(bucketUpper(b))
			if v > maxUS {
				v = maxUS
			}
			return time.Duration(v) * time.Microsecond
		}
	}
	return time.Duration(maxUS) * time.Microsecond
}

// Max is the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() time.Duration {
	m := h.min.Load()
	if m == 0 {
		return 0
	}
	return time.Duration(m-1) * time.Microsecond
}

// Mean is the average recorded value.
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load()/n) * time.Microsecond
}

// LatencySummary is the JSON form of a histogram, in milliseconds.
type LatencySummary struct {
	Count  int64   `json:"count"`
	MinMS  float64 `json:"min_ms"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Percentiles reported by every summary.
const (
	q50  = 0.50
	q90  = 0.90
	q99  = 0.99
	q999 = 0.999
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// Summary snapshots the histogram.
func (h *Histogram) Summary() LatencySummary {
	return LatencySummary{
		Count: h.Count(), MinMS: ms(h.Min()), MeanMS: ms(h.Mean()),
		P50MS: ms(h.Quantile(q50)), P90MS: ms(h.Quantile(q90)), P99MS: ms(h.Quantile(q99)),
		P999MS: ms(h.Quantile(q999)), MaxMS: ms(h.Max()),
	}
}

func (s LatencySummary) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms p99.9=%.2fms max=%.2fms mean=%.2fms",
		s.Count, s.P50MS, s.P90MS, s.P99MS, s.P999MS, s.MaxMS, s.MeanMS)
}

// rate is count per second over d (0 when d is not positive).
func rate(count int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(count) / d.Seconds()
}

// report prints a scenario's result: the human lines, then the JSON
// document when asJSON.
func report(w io.Writer, asJSON bool, human []string, doc any) error {
	for _, l := range human {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	if !asJSON {
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
