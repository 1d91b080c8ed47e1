package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/hubuim/hubuim/internal/config"
)

// Defaults of EtcdConfig.
const (
	DefaultEtcdPrefix         = "/hubuim/discovery"
	DefaultEtcdTTL            = 10 * time.Second
	DefaultEtcdDialTimeout    = 5 * time.Second
	DefaultEtcdRequestTimeout = 5 * time.Second
	DefaultEtcdCoalesce       = 100 * time.Millisecond
	DefaultEtcdRetryMin       = 250 * time.Millisecond
	DefaultEtcdRetryMax       = 5 * time.Second

	// MinEtcdTTL is the smallest lease TTL accepted: etcd grants TTLs in
	// whole seconds and enforces its own minimum (about 2 s) anyway.
	MinEtcdTTL = time.Second
)

// Errors of the etcd Registry.
var (
	// ErrLeaseLost is returned by Update while the registration's lease
	// is lost; the registration is published again automatically.
	ErrLeaseLost = errors.New("discovery: lease lost, re-registering")
)

// EtcdConfig configures the etcd Registry. The zero value of each field
// means its default; Endpoints is required.
type EtcdConfig struct {
	// Endpoints of the etcd cluster, e.g. ["127.0.0.1:2379"]. Required.
	Endpoints []string `yaml:"endpoints"`
	// Username and Password for etcd authentication; empty = none.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Prefix of every key; default "/hubuim/discovery". Keys are
	// <Prefix>/<service>/<id>.
	Prefix string `yaml:"prefix"`
	// TTL of a registration's lease; default 10s, at least 1s (whole
	// seconds; etcd enforces its own minimum of about 2s). A process that
	// dies disappears from watchers after about TTL.
	TTL time.Duration `yaml:"ttl"`
	// DialTimeout bounds connection establishment; default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds Register, the first list of a Watch and each
	// request made in the background (re-registration, re-listing,
	// revocation at Close); default 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// Coalesce is how long a watcher waits after the first change of a
	// burst before it sends the new list; default 100ms.
	Coalesce time.Duration `yaml:"coalesce"`
	// RetryMin and RetryMax bound the exponential backoff (with jitter)
	// between retries of a lost registration or a failed watch; defaults
	// 250ms and 5s.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`

	// Registerer receives the metrics; nil = not registered.
	Registerer prometheus.Registerer `yaml:"-"`
}

func (c *EtcdConfig) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultEtcdPrefix
	}
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	if c.TTL == 0 {
		c.TTL = DefaultEtcdTTL
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultEtcdDialTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultEtcdRequestTimeout
	}
	if c.Coalesce == 0 {
		c.Coalesce = DefaultEtcdCoalesce
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultEtcdRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultEtcdRetryMax
	}
}

// Validate checks a config whose defaults have been filled.
func (c *EtcdConfig) validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return config.Errorf("etcd.endpoints", "at least one endpoint is required")
	case c.Prefix == "" || !strings.HasPrefix(c.Prefix, "/"):
		return config.Errorf("etcd.prefix", "must start with / and not be only /, got %q", c.Prefix)
	case c.TTL < MinEtcdTTL:
		return config.Errorf("etcd.ttl", "must be at least %v, got %v", MinEtcdTTL, c.TTL)
	case c.DialTimeout < 0:
		return config.Errorf("etcd.dial_timeout", "must not be negative, got %v", c.DialTimeout)
	case c.RequestTimeout < 0:
		return config.Errorf("etcd.request_timeout", "must not be negative, got %v", c.RequestTimeout)
	case c.Coalesce < 0:
		return config.Errorf("etcd.coalesce", "must not be negative, got %v", c.Coalesce)
	case c.RetryMin < 0:
		return config.Errorf("etcd.retry_min", "must not be negative, got %v", c.RetryMin)
	case c.RetryMax < c.RetryMin:
		return config.Errorf("etcd.retry_max", "must be at least retry_min (%v), got %v", c.RetryMin, c.RetryMax)
	}
	for i, ep := range c.Endpoints {
		if ep == "" {
			return config.Errorf(fmt.Sprintf("etcd.endpoints[%d]", i), "empty endpoint")
		}
	}
	return nil
}

// Etcd is the etcd Registry: each registration is a key
// <prefix>/<service>/<id> holding the JSON Instance, attached to a lease of
// its own kept alive in the background; watchers list and watch the
// <prefix>/<service>/ range.
type Etcd struct {
	cfg     EtcdConfig
	log     *slog.Logger
	cli     *clientv3.Client
	metrics *metrics

	ctx    context.Context // done at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	regs   map[*etcdRegistration]struct{}
}

var _ Registry = (*Etcd)(nil)

// NewEtcd returns an etcd Registry. It does not wait for etcd to be
// reachable: Register and Watch report a connection failure.
func NewEtcd(cfg EtcdConfig, logger *slog.Logger) (*Etcd, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		Username:    cfg.Username,
		Password:    cfg.Password,
		DialTimeout: cfg.DialTimeout,
		// The client's own zap logs are dropped: this package logs the
		// events that matter (lost lease, watch errors) with slog.
		Logger: zap.NewNop(),
		// Reconnect to a restarted etcd within RetryMax instead of gRPC's
		// default backoff of up to 2 minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay:  cfg.RetryMin,
				Multiplier: grpcbackoff.DefaultConfig.Multiplier,
				Jitter:     grpcbackoff.DefaultConfig.Jitter,
				MaxDelay:   cfg.RetryMax,
			},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("discovery: etcd client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Etcd{
		cfg:     cfg,
		log:     logger.With("component", "discovery"),
		cli:     cli,
		metrics: m,
		ctx:     ctx,
		cancel:  cancel,
		regs:    make(map[*etcdRegistration]struct{}),
	}, nil
}

func (e *Etcd) key(service, id string) string {
	return e.cfg.Prefix + "/" + service + "/" + id
}

func (e *Etcd) servicePrefix(service string) string {
	return e.cfg.Prefix + "/" + service + "/"
}

// checkName rejects names that would break the key layout.
func checkName(what, s string) error {
	if s == "" || strings.Contains(s, "/") {
		return fmt.Errorf("%w: %s %q must be non-empty and contain no '/'", ErrInvalidInstance, what, s)
	}
	return nil
}

func checkInstance(ins Instance) error {
	if err := checkName("service", ins.Service); err != nil {
		return err
	}
	return checkName("id", ins.ID)
}

// Register publishes ins under a new lease and keeps it alive until the
// Registration is closed. It fails if etcd does not answer within ctx and
// RequestTimeout.
// Once registered, a lost lease (etcd unreachable for longer than the TTL)
// is re-registered automatically with the latest instance data.
func (e *Etcd) Register(ctx context.Context, ins Instance) (Registration, error) {
	if err := checkInstance(ins); err != nil {
		return nil, err
	}
	val, err := json.Marshal(ins)
	if err != nil {
		return nil, fmt.Errorf("discovery: encode instance: %w", err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	e.mu.Unlock()

	key := e.key(ins.Service, ins.ID)
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	lease, err := e.grantAndPut(rctx, key, val)
	cancel()
	if err != nil {
		e.metrics.regErrors.WithLabelValues(ins.Service).Inc()
		return nil, err
	}
	r := newEtcdRegistration(e, key, ins, val, lease)

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.revoke(lease)
		return nil, ErrClosed
	}
	e.regs[r] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	e.metrics.setState(ins.Service, "", stateRegistered)
	go func() {
		defer e.wg.Done()
		r.run()
	}()
	return r, nil
}

// grantAndPut creates a lease and puts key=val attached to it.
func (e *Etcd) grantAndPut(ctx context.Context, key string, val []byte) (clientv3.LeaseID, error) {
	ttlSeconds := int64((e.cfg.TTL + time.Second - 1) / time.Second)
	g, err := e.cli.Grant(ctx, ttlSeconds)
	if err != nil {
		return 0, fmt.Errorf("discovery: etcd grant lease: %w", err)
	}
	if _, err := e.cli.Put(ctx, key, string(val), clientv3.WithLease(g.ID)); err != nil {
		e.revoke(g.ID)
		return 0, fmt.Errorf("discovery: etcd put %s: %w", key, err)
	}
	return g.ID, nil
}

// revoke revokes lease in the background context (bounded by
// RequestTimeout), deleting its keys. Errors are ignored: the lease expires
// on its own after the TTL.
func (e *Etcd) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
	defer cancel()
	_, _ = e.cli.Revoke(ctx, lease)
}

func (e *Etcd) forget(r *etcdRegistration) {
	e.mu.Lock()
	delete(e.regs, r)
	e.mu.Unlock()
}

// Close closes every open registration (revoking its lease, so that
// watchers see it gone at once), stops every watcher (their channels are
// closed) and closes the etcd client.
func (e *Etcd) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.closed = true
	regs := make([]*etcdRegistration, 0, len(e.regs))
	for r := range e.regs {
		regs = append(regs, r)
	}
	e.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
	defer cancel()
	for _, r := range regs {
		_ = r.Close(ctx)
	}
	e.cancel()
	e.wg.Wait()
	return e.cli.Close()
}

// crash stops everything without revoking any lease, as a process that
// dies would: its registrations expire after the TTL. For tests.
func (e *Etcd) crash() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	_ = e.cli.Close()
}
