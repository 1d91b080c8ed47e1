package idgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hubuim/hubuim/internal/config"
)

// EtcdConfig configures an EtcdLeaser.
type EtcdConfig struct {
	// Client is the etcd client. Required; the leaser does not close it.
	Client *clientv3.Client `yaml:"-"`
	// Prefix is the key prefix; worker ids are the keys
	// <Prefix>/idgen/worker/<n>. Default "/hubuim".
	Prefix string `yaml:"prefix"`
	// TTL of the lease. A crashed holder's id is free again after it.
	// Default 10s; etcd rounds it up to whole seconds and enforces its own
	// minimum (about 2s with default settings).
	TTL time.Duration `yaml:"ttl"`
	// MaxWorkers limits the ids tried to 0..MaxWorkers-1. Default
	// MaxWorkerID+1 (all of them).
	MaxWorkers int64 `yaml:"max_workers"`
	// Value is stored in the key to say who holds it. Default
	// "<hostname>:<pid>".
	Value string `yaml:"value"`
	// Logger. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Defaults of EtcdConfig.
const (
	DefaultEtcdPrefix = "/hubuim"
	DefaultEtcdTTL    = 10 * time.Second
	// keepAlivesPerTTL is how many keep-alives are sent per TTL.
	keepAlivesPerTTL = 3
	// safetyDivisor: lost is closed TTL/safetyDivisor before the lease could
	// have expired on the server (measured from the last keep-alive sent
	// that succeeded), so no other process can hold the id while this one
	// still issues ids.
	safetyDivisor = 4
)

// ErrNoFreeWorker is returned by Acquire when every worker id is held.
var ErrNoFreeWorker = errors.New("idgen: no free worker id")

// EtcdLeaser leases worker ids in etcd (Acquire and Release are meant to be
// called from one goroutine, Generator.Run): the key of the id is created only if
// absent (a transaction comparing its create revision with 0), attached to a
// lease kept alive while the id is held.
type EtcdLeaser struct {
	cfg EtcdConfig
	log *slog.Logger

	mu        sync.Mutex
	lease     clientv3.LeaseID
	id        int64
	lost      chan struct{}
	stop      context.CancelFunc
	wg        sync.WaitGroup
	held      bool
	acquiring bool
	closed    bool // lost is closed
}

var _ WorkerLeaser = (*EtcdLeaser)(nil)

// NewEtcdLeaser returns a leaser; it does not contact etcd until Acquire.
func NewEtcdLeaser(cfg EtcdConfig) (*EtcdLeaser, error) {
	if cfg.Client == nil {
		return nil, errors.New("idgen: etcd client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	cfg.Prefix = strings.TrimRight(cfg.Prefix, "/")
	if cfg.TTL < 0 {
		return nil, config.Errorf("ttl", "must be >= 0")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultEtcdTTL
	}
	if cfg.MaxWorkers < 0 || cfg.MaxWorkers > MaxWorkerID+1 {
		return nil, config.Errorf("max_workers", "must be 0..%d", MaxWorkerID+1)
	}
	if cfg.MaxWorkers == 0 {
		cfg.MaxWorkers = MaxWorkerID + 1
	}
	if cfg.Value == "" {
		host, _ := os.Hostname()
		cfg.Value = host + ":" + strconv.Itoa(os.Getpid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &EtcdLeaser{cfg: cfg, log: cfg.Logger}, nil
}

func (l *EtcdLeaser) keyPrefix() string { return l.cfg.Prefix + "/idgen/worker/" }

// Key returns the etcd key of worker id n.
func (l *EtcdLeaser) Key(n int64) string { return l.keyPrefix() + strconv.FormatInt(n, 10) }

// ttlSeconds rounds the TTL up to whole seconds.
func (l *EtcdLeaser) ttlSeconds() int64 {
	return int64((l.cfg.TTL + time.Second - 1) / time.Second)
}

// Acquire implements WorkerLeaser: the lowest free id is taken. No lock is
// held during the etcd calls.
func (l *EtcdLeaser) Acquire(ctx context.Context) (int64, <-chan struct{}, error) {
	l.mu.Lock()
	if l.held || l.acquiring {
		l.mu.Unlock()
		return 0, nil, ErrHeld
	}
	l.acquiring = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.acquiring = false
		l.mu.Unlock()
	}()
	l.wg.Wait() // the previous keep-alive loop has finished

	cli := l.cfg.Client
	sent := time.Now()
	grant, err := cli.Grant(ctx, l.ttlSeconds())
	if err != nil {
		return 0, nil, fmt.Errorf("idgen: etcd grant: %w", err)
	}
	ttl := time.Duration(grant.TTL) * time.Second
	id, err := l.claim(ctx, grant.ID)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.TTL)
		_, _ = cli.Revoke(rctx, grant.ID)
		cancel()
		return 0, nil, err
	}
	kctx, stop := context.WithCancel(context.Background())
	lost := make(chan struct{})
	l.mu.Lock()
	l.lease, l.id, l.held, l.closed = grant.ID, id, true, false
	l.lost, l.stop = lost, stop
	l.wg.Add(1)
	l.mu.Unlock()
	go l.keepAlive(kctx, grant.ID, lost, sent.Add(ttl), ttl)
	return id, lost, nil
}

// claim takes the lowest free worker id for lease.
func (l *EtcdLeaser) claim(ctx context.Context, lease clientv3.LeaseID) (int64, error) {
	cli := l.cfg.Client
	resp, err := cli.Get(ctx, l.keyPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, fmt.Errorf("idgen: etcd get: %w", err)
	}
	used := make(map[int64]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if n, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), l.keyPrefix()), 10, 64); err == nil {
			used[n] = true
		}
	}
	for n := range l.cfg.MaxWorkers {
		if used[n] {
			continue
		}
		key := l.Key(n)
		txn, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, l.cfg.Value, clientv3.WithLease(lease))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("idgen: etcd txn: %w", err)
		}
		if txn.Succeeded {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w among %d", ErrNoFreeWorker, l.cfg.MaxWorkers)
}

// keepAlive renews the lease until ctx ends. It closes lost when the lease
// is gone, or when no renewal succeeded in time: validUntil is when the
// lease could expire at the earliest (time the last successful renewal was
// sent + TTL), and lost is closed a safety margin before it.
func (l *EtcdLeaser) keepAlive(ctx context.Context, lease clientv3.LeaseID, lost chan struct{}, validUntil time.Time, ttl time.Duration) {
	defer l.wg.Done()
	interval := ttl / keepAlivesPerTTL
	margin := ttl / safetyDivisor
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		deadline := validUntil.Add(-margin)
		wait := min(interval, time.Until(deadline))
		if wait <= 0 {
			l.lose(ctx, lease, ttl, "no successful keep-alive in time")
			return
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if time.Now().After(deadline) {
			l.lose(ctx, lease, ttl, "no successful keep-alive in time")
			return
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, time.Until(deadline))
		resp, err := l.cfg.Client.KeepAliveOnce(rctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && resp.TTL > 0:
			validUntil = sent.Add(time.Duration(resp.TTL) * time.Second)
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			l.lose(ctx, lease, ttl, "lease expired")
			return
		default:
			l.log.Warn("idgen: etcd keep-alive failed", "err", err, "lost_in", time.Until(deadline))
		}
	}
}

// lose closes lost (the generator stops at once) and revokes the lease so
// the key goes away if the lease was in fact still alive.
func (l *EtcdLeaser) lose(ctx context.Context, lease clientv3.LeaseID, ttl time.Duration, why string) {
	l.mu.Lock()
	if l.lease == lease && l.held {
		l.held = false
		if !l.closed {
			l.closed = true
			close(l.lost)
		}
	}
	l.mu.Unlock()
	l.log.Warn("idgen: worker id lost", "reason", why)
	// Best effort: past the TTL the lease is gone anyway.
	rctx, cancel := context.WithTimeout(ctx, ttl)
	_, _ = l.cfg.Client.Revoke(rctx, lease)
	cancel()
}

// Release implements WorkerLeaser: it stops the keep-alive, closes lost and
// revokes the lease, which deletes the key.
func (l *EtcdLeaser) Release(ctx context.Context) error {
	l.mu.Lock()
	if !l.held {
		// Lost already (or never held): just stop a keep-alive loop that
		// may still be revoking.
		stop := l.stop
		l.mu.Unlock()
		if stop != nil {
			stop()
		}
		l.wg.Wait()
		return nil
	}
	l.held = false
	if !l.closed {
		l.closed = true
		close(l.lost)
	}
	lease, stop := l.lease, l.stop
	l.mu.Unlock()
	stop()
	l.wg.Wait()
	if _, err := l.cfg.Client.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("idgen: etcd revoke: %w", err)
	}
	return nil
}
