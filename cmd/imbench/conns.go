package main

import (
	"context"
	"flag"
	"fmt"
	"time"
)

// conns defaults.
const (
	defaultConnsN    = 1000
	defaultConnsHold = 10 * time.Second
	settleTime       = 3 * time.Second // after the last dial, before measuring
	defaultWarmup    = 50
)

// The server's RSS includes memory its runtime keeps after earlier load:
// measure against a freshly started server for a meaningful figure.

// connsResult is the JSON result of `imbench conns`.
type connsResult struct {
	Scenario       string  `json:"scenario"`
	Transport      string  `json:"transport"`
	Requested      int     `json:"requested"`
	Open           int     `json:"open"`
	OpenAfterHold  int     `json:"open_after_hold"`
	DialErrors     int64   `json:"dial_errors"`
	ReadErrors     int64   `json:"read_errors"`
	FirstError     string  `json:"first_error,omitempty"`
	DialSeconds    float64 `json:"dial_seconds"`
	ConnsPerSecond float64 `json:"conns_per_second"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSAfter       int64   `json:"rss_after_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`
	BytesPerConn   float64 `json:"bytes_per_conn"`
}

func runConns(ctx context.Context, args []string, c *common) error {
	fs := flag.NewFlagSet("conns", flag.ContinueOnError)
	n := fs.Int("n", defaultConnsN, "connections")
	hold := fs.Duration("hold", defaultConnsHold, "how long the connections are held idle")
	pid := fs.Int("pid", 0, "server pid: read its RSS from /proc/<pid>/status (0: use -metrics)")
	metrics := fs.String("metrics", defaultMetricsURL, "server metrics URL (process_resident_memory_bytes)")
	room := fs.String("room", "", "room joined at Auth (empty: none)")
	hb := fs.Duration("heartbeat", 0, "heartbeat interval (0: the server's heartbeat_ms, else 30s)")
	warm := fs.Int("warmup", defaultWarmup, "connections opened and closed before the baseline (pools, buffers)")
	ctx, cancel, err := c.parse(ctx, fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *n <= 0 || *hold < 0 {
		return fmt.Errorf("-n must be positive and -hold not negative")
	}
	ips, err := parseIPs(c.localIPs)
	if err != nil {
		return err
	}
	res := connsResult{Scenario: "conns", Transport: c.transport, Requested: *n}
	if *warm > 0 {
		wf, err := openFleet(ctx, fleetConfig{Conn: c.rawConfig(*room, nil), N: *warm, Concurrency: c.dialConc, MidBase: c.midBase + int64(*n), Log: c.log})
		if err != nil {
			return err
		}
		wf.Close()
		sleepCtx(ctx, settleTime)
	}
	if res.RSSBefore, err = serverRSS(ctx, *pid, *metrics); err != nil {
		return fmt.Errorf("server memory before: %w", err)
	}
	start := time.Now()
	fl, err := openFleet(ctx, fleetConfig{
		Conn: c.rawConfig(*room, nil), N: *n, Concurrency: c.dialConc, LocalIPs: ips,
		MidBase: c.midBase, Heartbeat: *hb, Log: c.log,
	})
	if err != nil {
		return err
	}
	defer fl.Close()
	res.DialSeconds = time.Since(start).Seconds()
	res.Open = fl.Open()
	res.ConnsPerSecond = rate(int64(res.Open), time.Since(start))
	sleepCtx(ctx, settleTime)
	if res.RSSAfter, err = serverRSS(ctx, *pid, *metrics); err != nil {
		return fmt.Errorf("server memory after: %w", err)
	}
	if res.Open > 0 {
		res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(res.Open)
	}
	sleepCtx(ctx, *hold)
	res.RSSEnd, _ = serverRSS(ctx, *pid, *metrics)
	res.DialErrors, res.ReadErrors = fl.dialErrs.Load(), fl.readErrs.Load()
	res.OpenAfterHold = res.Open - int(res.ReadErrors)
	res.FirstError = fl.FirstErr()
	human := []string{
		fmt.Sprintf("conns: %s %d/%d open in %.1fs (%.0f/s), dial errors %d, dropped during hold %d",
			c.transport, res.Open, *n, res.DialSeconds, res.ConnsPerSecond, res.DialErrors, res.ReadErrors),
		fmt.Sprintf("server RSS: before %.1f MiB, after %.1f MiB, end of hold %.1f MiB => %.1f KiB per connection",
			float64(res.RSSBefore)/(1<<20), float64(res.RSSAfter)/(1<<20), float64(res.RSSEnd)/(1<<20), res.BytesPerConn/kib),
	}
	if res.FirstError != "" {
		human = append(human, "first error: "+res.FirstError)
	}
	if err := report(c.out, c.jsonOut, human, res); err != nil {
		return err
	}
	if res.Open < *n || res.ReadErrors > 0 {
		return errFailed
	}
	return nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
