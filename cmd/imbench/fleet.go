package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// Fleet defaults.
const (
	defaultDialConcurrency = 64
	defaultHeartbeat       = 30 * time.Second
	heartbeatTick          = 100 * time.Millisecond // heartbeats are spread over ticks
	heartbeatWriteTimeout  = 5 * time.Second
	fdMargin               = 200 // file descriptors kept for everything but connections
)

// fleetConfig opens many raw connections.
type fleetConfig struct {
	Conn        rawConfig
	N           int
	Concurrency int           // concurrent dials (default 64)
	LocalIPs    []net.IP      // source addresses, round robin (default: kernel's choice)
	MidBase     int64         // connection i authenticates as MidBase+i (0: mid 0, server-assigned)
	Heartbeat   time.Duration // default: the AuthReply's heartbeat_ms, else 30s
	OnFrame     func(i int, f protocol.Frame)
	Log         *slog.Logger
}

// fleet is a set of authenticated raw connections with their read loops and
// one heartbeat goroutine.
type fleet struct {
	conns    []*rawConn
	dialErrs atomic.Int64
	readErrs atomic.Int64
	firstErr atomic.Value // string
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// parseIPs parses a comma-separated address list ("" gives nil).
func parseIPs(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	var ips []net.IP
	for _, p := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(p))
		if ip == nil {
			return nil, fmt.Errorf("bad local address %q", p)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// openFleet dials cfg.N connections (bounded by ctx) and starts their read
// loops and the heartbeats. Connections that fail to dial are counted, not
// retried. Close stops everything.
func openFleet(ctx context.Context, cfg fleetConfig) (*fleet, error) {
	if lim := fdLimit(); lim > 0 && cfg.N > lim-fdMargin {
		return nil, fmt.Errorf("%d connections exceed this process's open-files limit %d (minus %d): use -procs or several imbench processes", cfg.N, lim, fdMargin)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = defaultDialConcurrency
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	f := &fleet{conns: make([]*rawConn, cfg.N)}
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	var next atomic.Int64
	var dialWG sync.WaitGroup
	for range min(cfg.Concurrency, cfg.N) {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.N {
					return
				}
				rc := cfg.Conn
				if len(cfg.LocalIPs) > 0 {
					rc.LocalIP = cfg.LocalIPs[i%len(cfg.LocalIPs)]
				}
				if cfg.MidBase > 0 {
					rc.Mid = cfg.MidBase + int64(i)
				}
				c, err := dialRaw(ctx, rc)
				if err != nil {
					f.noteErr(&f.dialErrs, err)
					continue
				}
				f.conns[i] = c
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					err := c.ReadLoop(func(fr protocol.Frame) {
						if cfg.OnFrame != nil {
							cfg.OnFrame(i, fr)
						}
					})
					if err != nil && runCtx.Err() == nil {
						f.noteErr(&f.readErrs, err)
					}
				}()
			}
		}()
	}
	dialWG.Wait()
	hb := cfg.Heartbeat
	if hb <= 0 {
		hb = defaultHeartbeat
		for _, c := range f.conns {
			if c != nil && c.Reply.HeartbeatMS > 0 {
				hb = time.Duration(c.Reply.HeartbeatMS) * time.Millisecond
				break
			}
		}
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.heartbeats(runCtx, hb)
	}()
	return f, nil
}

func (f *fleet) noteErr(ctr *atomic.Int64, err error) {
	if ctr.Add(1) == 1 {
		f.firstErr.CompareAndSwap(nil, err.Error())
	}
}

// FirstErr is the first dial or read error ("" if none).
func (f *fleet) FirstErr() string {
	s, _ := f.firstErr.Load().(string)
	return s
}

// Open is the number of connections that authenticated.
func (f *fleet) Open() int {
	n := 0
	for _, c := range f.conns {
		if c != nil {
			n++
		}
	}
	return n
}

// heartbeats sends every connection a heartbeat once per interval, spread
// evenly over heartbeatTick slices so that they do not all go at once.
func (f *fleet) heartbeats(ctx context.Context, interval time.Duration) {
	ticks := max(int(interval/heartbeatTick), 1)
	per := (len(f.conns) + ticks - 1) / ticks
	t := time.NewTicker(interval / time.Duration(ticks))
	defer t.Stop()
	pos := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for k := 0; k < per && len(f.conns) > 0; k++ {
			if c := f.conns[pos]; c != nil {
				_ = c.Heartbeat(heartbeatWriteTimeout) // a broken connection shows in its read loop
			}
			pos = (pos + 1) % len(f.conns)
		}
	}
}

// Close closes every connection and waits for the goroutines.
func (f *fleet) Close() {
	f.cancel()
	for _, c := range f.conns {
		if c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}
