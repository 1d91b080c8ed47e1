package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// tracker counts deliveries of stamped messages 0..count-1, each expected
// `want` times, and their latency from the stamp.
type tracker struct {
	op      int32
	want    int32
	counts  []atomic.Int32
	lat     Histogram
	total   atomic.Int64
	bad     atomic.Int64 // undecodable or out-of-range bodies
	lastRcv atomic.Int64 // unix nanos of the latest delivery
}

func newTracker(op int32, count int64, want int) *tracker {
	return &tracker{op: op, want: int32(want), counts: make([]atomic.Int32, count)}
}

// onFrame is a fleet's OnFrame: frames with the tracked op are counted.
func (t *tracker) onFrame(_ int, f protocol.Frame) {
	if f.Op != t.op {
		return
	}
	now := time.Now()
	sent, seq, err := readStamp(f.Body)
	if err != nil || seq >= uint64(len(t.counts)) {
		t.bad.Add(1)
		return
	}
	t.counts[seq].Add(1)
	t.lat.Record(now.Sub(sent))
	t.total.Add(1)
	t.lastRcv.Store(now.UnixNano())
}

// missing and duplicates over the first issued messages.
func (t *tracker) missingDup(issued int64) (missing, dup int64) {
	for i := range min(issued, int64(len(t.counts))) {
		c := t.counts[i].Load()
		if c < t.want {
			missing += int64(t.want - c)
		} else {
			dup += int64(c - t.want)
		}
	}
	return missing, dup
}

// drain waits until every expected delivery of issued messages arrived, or
// nothing arrived for quiet, or ctx ends.
func (t *tracker) drain(ctx context.Context, issued int64, quiet time.Duration) {
	const poll = 20 * time.Millisecond
	want := issued * int64(t.want)
	last, lastChange := t.total.Load(), time.Now()
	for ctx.Err() == nil && t.total.Load() < want {
		sleepCtx(ctx, poll)
		if n := t.total.Load(); n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > quiet {
			return
		}
	}
}

// deliveryResult is the JSON form of a tracker.
type deliveryResult struct {
	Expected   int64          `json:"expected"`
	Delivered  int64          `json:"delivered"`
	Missing    int64          `json:"missing"`
	Duplicates int64          `json:"duplicates"`
	Bad        int64          `json:"bad_bodies"`
	PerSecond  float64        `json:"delivered_per_second"`
	Latency    LatencySummary `json:"latency"`
}

func (t *tracker) result(issued int64, start time.Time) deliveryResult {
	miss, dup := t.missingDup(issued)
	r := deliveryResult{
		Expected: issued * int64(t.want), Delivered: t.total.Load(), Missing: miss, Duplicates: dup,
		Bad: t.bad.Load(), Latency: t.lat.Summary(),
	}
	if last := t.lastRcv.Load(); last > 0 {
		r.PerSecond = rate(r.Delivered, time.Unix(0, last).Sub(start))
	}
	return r
}

func (r deliveryResult) String() string {
	return fmt.Sprintf("delivered %d/%d (%.0f/s), missing %d, duplicates %d, bad %d; latency %s",
		r.Delivered, r.Expected, r.PerSecond, r.Missing, r.Duplicates, r.Bad, r.Latency)
}

// reportPushes prints a push scenario's result (human lines, plus the
// first push error) and fails the run when a push failed or a delivery is
// missing.
func (c *common) reportPushes(human []string, doc any, firstErr string, d deliveryResult, pushErrors int64) error {
	if firstErr != "" {
		human = append(human, "first push error: "+firstErr)
	}
	if err := report(c.out, c.jsonOut, human, doc); err != nil {
		return err
	}
	if d.Missing > 0 || pushErrors > 0 {
		return errFailed
	}
	return nil
}

// httpPusher posts to logic's goim push API.
type httpPusher struct {
	client *http.Client
	base   string
	secret string // sent as "Authorization: Bearer <secret>" when set
	lat    Histogram
	errs   atomic.Int64
	first  atomic.Value // string
}

// Pusher HTTP settings: enough idle connections for the workers.
const (
	pushTimeout     = 10 * time.Second
	pushIdlePerHost = 512
)

func newHTTPPusher(base, secret string) *httpPusher {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = pushIdlePerHost
	tr.MaxIdleConns = pushIdlePerHost
	return &httpPusher{client: &http.Client{Transport: tr, Timeout: pushTimeout}, base: base, secret: secret}
}

// post sends one push; path is e.g. "/goim/push/room", q its query.
func (p *httpPusher) post(ctx context.Context, path string, q url.Values, body []byte) {
	start := time.Now()
	err := p.do(ctx, path, q, body)
	if err != nil {
		if p.errs.Add(1) == 1 {
			p.first.CompareAndSwap(nil, err.Error())
		}
		return
	}
	p.lat.Record(time.Since(start))
}

func (p *httpPusher) do(ctx context.Context, path string, q url.Values, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path+"?"+q.Encode(), bytesReader(body))
	if err != nil {
		return err
	}
	if p.secret != "" {
		req.Header.Set("Authorization", "Bearer "+p.secret)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	const maxErrBody = 512
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrBody))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, msg)
	}
	return nil
}

func (p *httpPusher) firstErr() string {
	s, _ := p.first.Load().(string)
	return s
}

func opString(op int32) string { return strconv.Itoa(int(op)) }
