package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// room defaults.
const (
	defaultRoomN     = 1000
	defaultRoomRate  = 10
	defaultRoomCount = 100
	defaultRoomDur   = 30 * time.Second
	defaultBodySize  = 64
	defaultQuiet     = 5 * time.Second // drain: give up after this long without a delivery
	defaultWorkers   = 64
	roomJoinWait     = 3 * time.Second // logic learns the room's members through RenewOnline; comet knows at Auth
)

// roomResult is the JSON result of `imbench room`.
type roomResult struct {
	Scenario    string         `json:"scenario"`
	Transport   string         `json:"transport"`
	Members     int            `json:"members"`
	Rate        float64        `json:"target_rate"`
	Pushed      int64          `json:"pushed"`
	PushLate    int64          `json:"pushes_late"`
	PushErrors  int64          `json:"push_errors"`
	PushLatency LatencySummary `json:"push_accept_latency"`
	Delivery    deliveryResult `json:"delivery"`
	FirstError  string         `json:"first_error,omitempty"`
}

func runRoom(ctx context.Context, args []string, c *common) error {
	fs := flag.NewFlagSet("room", flag.ContinueOnError)
	n := fs.Int("n", defaultRoomN, "room members (connections)")
	rt := fs.Float64("rate", defaultRoomRate, "room pushes per second")
	count := fs.Int64("count", defaultRoomCount, "room pushes at most")
	dur := fs.Duration("duration", defaultRoomDur, "push phase at most")
	size := fs.Int("size", defaultBodySize, "push body bytes (>= 16)")
	roomID := fs.String("room", "bench://imbench", "room id type://id")
	op := fs.Int("op", defaultBusinessOp, "push operation")
	workers := fs.Int("workers", defaultWorkers, "concurrent HTTP pushes")
	secret := fs.String("secret", "", "push secret (Bearer), when logic requires one")
	ctx, cancel, err := c.parse(ctx, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	typ, id, ok := strings.Cut(*roomID, "://")
	if !ok || typ == "" || id == "" {
		return fmt.Errorf("-room %q: want type://id", *roomID)
	}
	if *n <= 0 || *count <= 0 || *dur <= 0 {
		return fmt.Errorf("-n, -count and -duration must be positive")
	}
	ips, err := parseIPs(c.localIPs)
	if err != nil {
		return err
	}
	tr := newTracker(int32(*op), *count, *n)
	fl, err := openFleet(ctx, fleetConfig{
		Conn: c.rawConfig(*roomID, []int32{int32(*op)}), N: *n, Concurrency: c.dialConc, LocalIPs: ips,
		MidBase: c.midBase, OnFrame: tr.onFrame, Log: c.log,
	})
	if err != nil {
		return err
	}
	defer fl.Close()
	if fl.Open() < *n {
		return fmt.Errorf("only %d of %d members connected: %s", fl.Open(), *n, fl.FirstErr())
	}
	sleepCtx(ctx, roomJoinWait)
	p := newHTTPPusher(c.httpURL, *secret)
	q := url.Values{"operation": {opString(int32(*op))}, "type": {typ}, "room": {id}}
	start := time.Now()
	pr := pace(ctx, *rt, *count, *dur, *workers, func(ctx context.Context, i int64) {
		p.post(ctx, "/goim/push/room", q, stampedBody(*size, uint64(i)))
	})
	tr.drain(ctx, pr.Issued, defaultQuiet)
	res := roomResult{
		Scenario: "room", Transport: c.transport, Members: *n, Rate: *rt, Pushed: pr.Issued, PushLate: pr.Late,
		PushErrors: p.errs.Load(), PushLatency: p.lat.Summary(), Delivery: tr.result(pr.Issued, start), FirstError: p.firstErr(),
	}
	human := []string{
		fmt.Sprintf("room: %d %s members, %d pushes in %.1fs (target %.0f/s, %d late), push errors %d",
			*n, c.transport, pr.Issued, pr.Elapsed.Seconds(), *rt, pr.Late, res.PushErrors),
		"push accept: " + res.PushLatency.String(),
		"delivery: " + res.Delivery.String(),
	}
	return c.reportPushes(human, res, res.FirstError, res.Delivery, res.PushErrors)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
