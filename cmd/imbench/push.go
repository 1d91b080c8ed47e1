package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	logicpb "github.com/hubuim/hubuim/api/logic"
)

// push defaults.
const (
	defaultPushN     = 1000
	defaultPushRate  = 1000
	defaultPushCount = 10000
	defaultPushDur   = 30 * time.Second
	onlineWait       = 2 * time.Second // sessions are written to Redis/memory at Connect; a little slack
)

// pushResult is the JSON result of `imbench push`.
type pushResult struct {
	Scenario    string         `json:"scenario"`
	API         string         `json:"api"`
	Target      string         `json:"target"`
	Conns       int            `json:"conns"`
	PerPush     int            `json:"targets_per_push"`
	Rate        float64        `json:"target_rate"`
	Pushed      int64          `json:"pushed"`
	PushRate    float64        `json:"pushes_per_second"`
	PushLate    int64          `json:"pushes_late"`
	PushErrors  int64          `json:"push_errors"`
	PushLatency LatencySummary `json:"push_accept_latency"`
	Delivery    deliveryResult `json:"delivery"`
	FirstError  string         `json:"first_error,omitempty"`
}

func runPush(ctx context.Context, args []string, c *common) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	n := fs.Int("n", defaultPushN, "receiving connections (one per user)")
	rt := fs.Float64("rate", defaultPushRate, "pushes per second")
	count := fs.Int64("count", defaultPushCount, "pushes at most")
	dur := fs.Duration("duration", defaultPushDur, "push phase at most")
	size := fs.Int("size", defaultBodySize, "push body bytes (>= 16)")
	target := fs.String("target", "mids", "push by mids or keys")
	per := fs.Int("per-push", 1, "targets per push")
	api := fs.String("api", "http", "http or grpc")
	grpcAddr := fs.String("grpc", defaultGRPC, "logic gRPC address (Push service)")
	secret := fs.String("secret", "", "push secret (Bearer), when logic requires one")
	op := fs.Int("op", defaultBusinessOp, "push operation")
	workers := fs.Int("workers", defaultWorkers, "concurrent pushes")
	ctx, cancel, err := c.parse(ctx, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *n <= 0 || *count <= 0 || *dur <= 0 || *per <= 0 || *per > *n {
		return fmt.Errorf("-n, -count, -duration must be positive and 0 < -per-push <= -n")
	}
	if *target != "mids" && *target != "keys" {
		return fmt.Errorf("-target %q: want mids or keys", *target)
	}
	ips, err := parseIPs(c.localIPs)
	if err != nil {
		return err
	}
	tr := newTracker(int32(*op), *count, *per)
	fl, err := openFleet(ctx, fleetConfig{
		Conn: c.rawConfig("", []int32{int32(*op)}), N: *n, Concurrency: c.dialConc, LocalIPs: ips,
		MidBase: c.midBase, OnFrame: tr.onFrame, Log: c.log,
	})
	if err != nil {
		return err
	}
	defer fl.Close()
	if fl.Open() < *n {
		return fmt.Errorf("only %d of %d connected: %s", fl.Open(), *n, fl.FirstErr())
	}
	keys := make([]string, *n)
	for i, rc := range fl.conns {
		keys[i] = rc.Reply.Key
	}
	sleepCtx(ctx, onlineWait)

	// targets of push i: connections i*per .. i*per+per-1 (mod n).
	mids := func(i int64) []int64 {
		out := make([]int64, *per)
		for k := range out {
			out[k] = c.midBase + (i*int64(*per)+int64(k))%int64(*n)
		}
		return out
	}
	keysOf := func(i int64) []string {
		out := make([]string, *per)
		for k := range out {
			out[k] = keys[(i*int64(*per)+int64(k))%int64(*n)]
		}
		return out
	}
	p := newHTTPPusher(c.httpURL, *secret)
	var send func(ctx context.Context, i int64)
	switch *api {
	case "http":
		send = func(ctx context.Context, i int64) {
			q := url.Values{"operation": {opString(int32(*op))}}
			if *target == "mids" {
				ss := make([]string, 0, *per)
				for _, m := range mids(i) {
					ss = append(ss, strconv.FormatInt(m, 10))
				}
				q.Set("mids", strings.Join(ss, ","))
			} else {
				q.Set("keys", strings.Join(keysOf(i), ","))
			}
			p.post(ctx, "/goim/push/"+*target, q, stampedBody(*size, uint64(i)))
		}
	case "grpc":
		cc, err := grpc.NewClient(*grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		pc := logicpb.NewPushClient(cc)
		if *secret != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*secret)
		}
		send = func(ctx context.Context, i int64) {
			start := time.Now()
			var err error
			body := stampedBody(*size, uint64(i))
			if *target == "mids" {
				_, err = pc.PushMids(ctx, &logicpb.PushMidsReq{Op: int32(*op), Mids: mids(i), Msg: body})
			} else {
				_, err = pc.PushKeys(ctx, &logicpb.PushKeysReq{Op: int32(*op), Keys: keysOf(i), Msg: body})
			}
			if err != nil {
				if p.errs.Add(1) == 1 {
					p.first.CompareAndSwap(nil, err.Error())
				}
				return
			}
			p.lat.Record(time.Since(start))
		}
	default:
		return fmt.Errorf("-api %q: want http or grpc", *api)
	}
	start := time.Now()
	pr := pace(ctx, *rt, *count, *dur, *workers, send)
	tr.drain(ctx, pr.Issued, defaultQuiet)
	res := pushResult{
		Scenario: "push", API: *api, Target: *target, Conns: *n, PerPush: *per, Rate: *rt,
		Pushed: pr.Issued, PushRate: rate(pr.Issued, pr.Elapsed), PushLate: pr.Late,
		PushErrors: p.errs.Load(), PushLatency: p.lat.Summary(), Delivery: tr.result(pr.Issued, start), FirstError: p.firstErr(),
	}
	human := []string{
		fmt.Sprintf("push: %s by %s, %d pushes to %d conns (%d targets each) in %.1fs = %.0f/s (target %.0f/s, %d late), errors %d",
			*api, *target, pr.Issued, *n, *per, pr.Elapsed.Seconds(), res.PushRate, *rt, pr.Late, res.PushErrors),
		"push accept: " + res.PushLatency.String(),
		"delivery: " + res.Delivery.String(),
	}
	return c.reportPushes(human, res, res.FirstError, res.Delivery, res.PushErrors)
}
