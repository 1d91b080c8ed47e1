// Package idgen issues 64-bit, time-ordered, unique message ids
// (Snowflake-style) across logic replicas.
//
// Layout of an id, most significant bit first:
//
//	bit  63      0 (ids are positive int64)
//	bits 62..22  milliseconds since Config.Epoch (41 bits, ~69 years)
//	bits 21..12  worker id (10 bits, 0..1023), unique per live replica
//	bits 11..0   sequence within the millisecond (12 bits, 4096 ids/ms)
//
// Uniqueness rests on two things: one worker id is held by at most one live
// generator (a WorkerLeaser: fixed for the standalone mode, an etcd lease in
// the distributed mode), and a generator never issues an id at or below its
// last one (a clock that steps back is waited out if the step is small, and
// refused otherwise). Ids of different workers are ordered by time to the
// precision of the replicas' clock agreement.
package idgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/config"
)

// Bit layout.
const (
	TimeBits     = 41
	WorkerBits   = 10
	SequenceBits = 12

	MaxWorkerID = 1<<WorkerBits - 1
	maxSequence = 1<<SequenceBits - 1
	maxTime     = 1<<TimeBits - 1
	workerShift = SequenceBits
	timeShift   = SequenceBits + WorkerBits
)

// DefaultEpoch is the default zero of the id timestamp: 2025-01-01 UTC.
var DefaultEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Defaults of Config.
const (
	DefaultMaxClockBackward = 5 * time.Millisecond
	DefaultMaxClockSkew     = 500 * time.Millisecond
	DefaultRetryInterval    = time.Second
	releaseTimeout          = 5 * time.Second
	noWorker                = -1
)

// Errors of Next; compare with errors.Is.
var (
	// ErrNoWorker: the generator holds no worker id (Run has not acquired
	// one yet, or the lease was lost and not re-acquired).
	ErrNoWorker = errors.New("idgen: no worker id held")
	// ErrClockBackwards: the clock went back further than MaxClockBackward
	// (or before the epoch); issuing an id could duplicate one.
	ErrClockBackwards = errors.New("idgen: clock moved backwards")
	// ErrTimeOverflow: the timestamp no longer fits in TimeBits.
	ErrTimeOverflow = errors.New("idgen: timestamp overflows the id")
)

// Clock is the time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	Sleep(d time.Duration)
}

type systemClock struct{}

func (systemClock) Now() time.Time        { return time.Now() }
func (systemClock) Sleep(d time.Duration) { time.Sleep(d) }

// Config configures a Generator.
type Config struct {
	// WorkerID is the fixed worker id used when Leaser is nil, 0..MaxWorkerID.
	// Default 0.
	WorkerID int64 `yaml:"worker_id"`
	// Leaser leases the worker id; Run acquires it and re-acquires it after
	// a loss. Default nil: WorkerID, usable at once without Run.
	Leaser WorkerLeaser `yaml:"-"`
	// Epoch is the zero of the timestamp; every replica must use the same.
	// Default DefaultEpoch.
	Epoch time.Time `yaml:"epoch"`
	// MaxClockBackward is the largest clock step back that Next waits out;
	// larger steps make Next fail with ErrClockBackwards. Default 5ms.
	MaxClockBackward time.Duration `yaml:"max_clock_backward"`
	// RetryInterval is the wait between failed worker id acquisitions.
	// Default 1s.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// MaxClockSkew bounds how far the clocks of two replicas may differ. A
	// leased worker id may have been given back by another replica a
	// moment ago, whose clock can be ahead: Run uses a newly acquired id
	// only after this long, so its ids cannot repeat the last ones of the
	// previous holder (same worker, same millisecond, sequence from 0).
	// Default 500ms; negative: no wait (one replica only, tests).
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// Clock. Default the system clock.
	Clock Clock `yaml:"-"`
	// Registerer registers the generator's metrics. Default nil: none.
	Registerer prometheus.Registerer `yaml:"-"`
	// Logger. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Generator issues ids. It is safe for concurrent use.
type Generator struct {
	cfg     Config
	epochMs int64
	backMs  int64
	log     *slog.Logger

	mu     sync.Mutex
	worker int64 // noWorker when none is held
	lastMs int64 // ms since epoch of the last id
	seq    int64 // sequence of the last id

	backwards prometheus.Counter
	lost      prometheus.Counter
	workerG   prometheus.Gauge
}

// New returns a generator. With a Leaser it issues ids only while Run holds
// a worker id; without one it uses cfg.WorkerID at once.
func New(cfg Config) (*Generator, error) {
	if cfg.Leaser == nil && (cfg.WorkerID < 0 || cfg.WorkerID > MaxWorkerID) {
		return nil, config.Errorf("worker_id", "%d outside 0..%d", cfg.WorkerID, MaxWorkerID)
	}
	if cfg.Epoch.IsZero() {
		cfg.Epoch = DefaultEpoch
	}
	if cfg.MaxClockBackward < 0 {
		return nil, config.Errorf("max_clock_backward", "must be >= 0")
	}
	if cfg.MaxClockBackward == 0 {
		cfg.MaxClockBackward = DefaultMaxClockBackward
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Generator{
		cfg:     cfg,
		epochMs: cfg.Epoch.UnixMilli(),
		backMs:  cfg.MaxClockBackward.Milliseconds(),
		log:     cfg.Logger,
		worker:  noWorker,
		lastMs:  -1,
		backwards: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_idgen_clock_backwards_total",
			Help: "Times the clock was seen going backwards (waited out or refused).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hubuim_idgen_worker_lost_total",
			Help: "Times the worker id lease was lost.",
		}),
		workerG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_idgen_worker_id",
			Help: "Worker id held by the generator, -1 when none.",
		}),
	}
	if cfg.Leaser == nil {
		g.worker = cfg.WorkerID
	}
	g.workerG.Set(float64(g.worker))
	if r := cfg.Registerer; r != nil {
		for _, c := range []prometheus.Collector{g.backwards, g.lost, g.workerG} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("idgen: metrics: %w", err)
			}
		}
	}
	return g, nil
}

// WorkerID returns the worker id held, and false when none is.
func (g *Generator) WorkerID() (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.worker, g.worker != noWorker
}

func (g *Generator) setWorker(id int64) {
	g.mu.Lock()
	g.worker = id
	g.mu.Unlock()
	g.workerG.Set(float64(id))
}

func (g *Generator) nowMs() int64 { return g.cfg.Clock.Now().UnixMilli() - g.epochMs }

// Next returns a new id, greater than every id this generator issued before.
func (g *Generator) Next() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.worker == noWorker {
		return 0, ErrNoWorker
	}
	now := g.nowMs()
	if now < g.lastMs {
		g.backwards.Inc()
		// Wait out a small step back; the loop re-checks because the clock
		// may step again while we sleep.
		for now < g.lastMs {
			if g.lastMs-now > g.backMs {
				return 0, fmt.Errorf("%w: by %dms (limit %s)", ErrClockBackwards, g.lastMs-now, g.cfg.MaxClockBackward)
			}
			g.cfg.Clock.Sleep(time.Duration(g.lastMs-now) * time.Millisecond)
			now = g.nowMs()
		}
	}
	if now < 0 {
		return 0, fmt.Errorf("%w: before the epoch %s", ErrClockBackwards, g.cfg.Epoch)
	}
	if now == g.lastMs {
		if g.seq == maxSequence {
			// This millisecond is used up: wait for the next one.
			for now <= g.lastMs {
				if g.lastMs-now > g.backMs {
					return 0, fmt.Errorf("%w: by %dms (limit %s)", ErrClockBackwards, g.lastMs-now, g.cfg.MaxClockBackward)
				}
				g.cfg.Clock.Sleep(time.Duration(g.lastMs-now+1) * time.Millisecond / 2)
				now = g.nowMs()
			}
			g.seq = 0
		} else {
			g.seq++
		}
	} else {
		g.seq = 0
	}
	if now > maxTime {
		return 0, ErrTimeOverflow
	}
	g.lastMs = now
	return now<<timeShift | g.worker<<workerShift | g.seq, nil
}

// Parts are the fields of an id.
type Parts struct {
	Time     time.Time
	WorkerID int64
	Sequence int64
}

// Decompose splits id into its fields, with the timestamp relative to epoch
// (the zero time means DefaultEpoch).
func Decompose(id int64, epoch time.Time) Parts {
	if epoch.IsZero() {
		epoch = DefaultEpoch
	}
	return Parts{
		Time:     epoch.Add(time.Duration(id>>timeShift) * time.Millisecond),
		WorkerID: id >> workerShift & MaxWorkerID,
		Sequence: id & maxSequence,
	}
}

// Run keeps a worker id while ctx lives: it acquires one from the Leaser,
// stops issuing ids as soon as the lease is lost, and re-acquires. On return
// (ctx done) it releases the worker id. Without a Leaser it just waits for
// ctx. Run returns nil when ctx ends.
func (g *Generator) Run(ctx context.Context) error {
	if g.cfg.Leaser == nil {
		<-ctx.Done()
		return nil
	}
	for {
		id, lost, err := g.cfg.Leaser.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			g.log.Warn("idgen: acquire worker id failed", "err", err, "retry_in", g.cfg.RetryInterval)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(g.cfg.RetryInterval):
			}
			continue
		}
		g.log.Info("idgen: worker id acquired", "worker_id", id, "usable_in", max(g.cfg.MaxClockSkew, 0))
		if !g.waitSkew(ctx, lost) {
			if ctx.Err() != nil {
				g.release(ctx, id)
				return nil
			}
			g.lost.Inc()
			g.log.Warn("idgen: worker id lease lost before use", "worker_id", id)
			continue
		}
		g.setWorker(id)
		select {
		case <-lost:
			g.setWorker(noWorker)
			g.lost.Inc()
			g.log.Warn("idgen: worker id lease lost; not issuing ids until re-acquired", "worker_id", id)
		case <-ctx.Done():
			g.setWorker(noWorker)
			g.release(ctx, id)
			return nil
		}
	}
}

// waitSkew waits MaxClockSkew after an acquisition; false if the lease was
// lost or ctx ended first.
func (g *Generator) waitSkew(ctx context.Context, lost <-chan struct{}) bool {
	if g.cfg.MaxClockSkew <= 0 {
		return true
	}
	t := time.NewTimer(g.cfg.MaxClockSkew)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-lost:
		return false
	case <-ctx.Done():
		return false
	}
}

func (g *Generator) release(ctx context.Context, id int64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	err := g.cfg.Leaser.Release(rctx)
	cancel()
	if err != nil {
		g.log.Warn("idgen: release worker id", "worker_id", id, "err", err)
	}
}
