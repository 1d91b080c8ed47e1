// Package logic is HubuIM's stateless logic tier: it authenticates the
// connections comets forward (Connect), keeps their sessions and the room
// online counts in a session.Store, serves the business push API over gRPC
// and HTTP (publishing push records for job through an mq.Producer), and
// answers the node list clients use to pick a comet.
//
// Services: *Logic implements api/logic.LogicServer (called by comets);
// PushService implements api/logic.PushServer; HTTPHandler serves the
// goim-compatible HTTP API. RegisterGRPC registers both gRPC services.
package logic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

// Defaults of Config. Each is also written in its field's comment.
const (
	DefaultHeartbeat    = 30 * time.Second
	DefaultHeartbeatMax = 3
	DefaultSessionTTL   = 10 * time.Minute
	DefaultOnlineTTL    = 30 * time.Second
	DefaultOnlineCache  = 2 * time.Second
	DefaultExpirySweep  = 5 * time.Second

	DefaultMaxBody    = protocol.DefaultMaxBody
	DefaultMaxTargets = 1000
	DefaultMaxOp      = 1<<16 - 1

	DefaultMaxNodes         = 5
	DefaultNearKM           = 500
	DefaultBackoffBase      = time.Second
	DefaultBackoffMax       = time.Minute
	DefaultBackoffFactor    = 1.6
	DefaultBackoffJitter    = 0.2
	DefaultWatchRetryPeriod = time.Second
)

// defaultAccepts are the ops of goim's sample clients.
var defaultAccepts = []int32{1000, 1001, 1002}

// Config configures Logic. The zero value means every default.
type Config struct {
	Conn  ConnConfig  `yaml:"conn"`
	Push  PushConfig  `yaml:"push"`
	Nodes NodesConfig `yaml:"nodes"`
}

// ConnConfig is about connections and sessions.
type ConnConfig struct {
	// Heartbeat is the interval clients are told to heartbeat at. Default 30s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// HeartbeatMax is how many heartbeats a client may miss before the
	// comet closes it (reported in the node list). Default 3.
	HeartbeatMax int `yaml:"heartbeat_max"`
	// SessionTTL is how long a session lives without a Heartbeat from its
	// comet. Comets must call Heartbeat well within it (comet's
	// logic_heartbeat, default 60s). Default 10m.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// OnlineTTL is how long a comet's room counts live without a
	// RenewOnline. Default 30s.
	OnlineTTL time.Duration `yaml:"online_ttl"`
	// OnlineCache is how long the cluster-wide room counts are cached.
	// Default 2s.
	OnlineCache time.Duration `yaml:"online_cache"`
	// ExpirySweep is how often logic looks for users whose last session
	// expired without a Disconnect (their comet died) to report them
	// offline (Deps.OnUserOffline; presence) and drops the store's
	// records of the rest. Every replica sweeps; each user is reported
	// once. Default 5s (0 too).
	ExpirySweep time.Duration `yaml:"expiry_sweep"`
	// Accepts are the ops a connection accepts when its Auth body names
	// none. Default [1000, 1001, 1002] (goim's sample clients).
	Accepts []int32 `yaml:"accepts"`
}

// PushConfig is about the business push API.
type PushConfig struct {
	// Secret is the bearer token business backends must send
	// ("Authorization: Bearer <secret>", HTTP header or gRPC metadata).
	// Required unless Unauthenticated is set.
	Secret string `yaml:"secret"`
	// Unauthenticated serves the push API without a secret. Development
	// only (the standalone mode, listening on loopback). Default false.
	Unauthenticated bool `yaml:"unauthenticated"`
	// Topic is the push topic. Default mq.TopicPush ("hubuim-push").
	Topic string `yaml:"topic"`
	// MaxBody bounds a pushed message, in bytes; align it with the
	// comets' maximum frame body. Default 16384.
	MaxBody int `yaml:"max_body"`
	// MaxTargets bounds the keys or mids of one push. Default 1000.
	MaxTargets int `yaml:"max_targets"`
	// MaxOp is the highest operation a push may carry (the lowest is
	// protocol.OpBusinessMin, 1000). Default 65535.
	MaxOp int32 `yaml:"max_op"`
}

// NodesConfig is about the node list given to clients.
type NodesConfig struct {
	// Domain is returned as is in the node list. Default "".
	Domain string `yaml:"domain"`
	// Max is the number of nodes returned. Default 5.
	Max int `yaml:"max"`
	// NearKM: comets whose distances to a client given by lat/lon fall in
	// the same NearKM-wide band are equally near. Default 500.
	NearKM float64 `yaml:"near_km"`
	// Regions maps client IP ranges to regions, for clients that send
	// neither a region nor coordinates. The longest match wins. Default none.
	Regions []RegionCIDR `yaml:"regions"`
	// TrustProxy takes the HTTP client address from X-Forwarded-For /
	// X-Real-IP. Enable only behind a proxy that sets them. Default false.
	TrustProxy bool `yaml:"trust_proxy"`
	// Backoff is the reconnect backoff clients are told to use.
	Backoff BackoffConfig `yaml:"backoff"`
}

// RegionCIDR maps one IP range to a region.
type RegionCIDR struct {
	CIDR   string `yaml:"cidr"`
	Region string `yaml:"region"`
}

// BackoffConfig is the client reconnect backoff.
type BackoffConfig struct {
	Base   time.Duration `yaml:"base"`   // first delay. Default 1s.
	Max    time.Duration `yaml:"max"`    // largest delay. Default 1m.
	Factor float64       `yaml:"factor"` // growth per attempt. Default 1.6.
	Jitter float64       `yaml:"jitter"` // random fraction. Default 0.2.
}

func defaultDur(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

// withDefaults fills defaults and validates, naming the wrong field.
func (c Config) withDefaults() (Config, []netip.Prefix, error) {
	cc := &c.Conn
	defaultDur(&cc.Heartbeat, DefaultHeartbeat)
	defaultDur(&cc.SessionTTL, DefaultSessionTTL)
	defaultDur(&cc.OnlineTTL, DefaultOnlineTTL)
	defaultDur(&cc.OnlineCache, DefaultOnlineCache)
	defaultDur(&cc.ExpirySweep, DefaultExpirySweep)
	if cc.HeartbeatMax == 0 {
		cc.HeartbeatMax = DefaultHeartbeatMax
	}
	if len(cc.Accepts) == 0 {
		cc.Accepts = append([]int32(nil), defaultAccepts...)
	}
	p := &c.Push
	if p.Topic == "" {
		p.Topic = mq.TopicPush
	}
	if p.MaxBody == 0 {
		p.MaxBody = DefaultMaxBody
	}
	if p.MaxTargets == 0 {
		p.MaxTargets = DefaultMaxTargets
	}
	if p.MaxOp == 0 {
		p.MaxOp = DefaultMaxOp
	}
	n := &c.Nodes
	if n.Max == 0 {
		n.Max = DefaultMaxNodes
	}
	if n.NearKM == 0 {
		n.NearKM = DefaultNearKM
	}
	b := &n.Backoff
	defaultDur(&b.Base, DefaultBackoffBase)
	defaultDur(&b.Max, DefaultBackoffMax)
	if b.Factor == 0 {
		b.Factor = DefaultBackoffFactor
	}
	if b.Jitter == 0 {
		b.Jitter = DefaultBackoffJitter
	}

	switch {
	case cc.Heartbeat < 0:
		return c, nil, config.Errorf("conn.heartbeat", "must be positive")
	case cc.HeartbeatMax < 0:
		return c, nil, config.Errorf("conn.heartbeat_max", "must be positive")
	case cc.SessionTTL < cc.Heartbeat:
		return c, nil, config.Errorf("conn.session_ttl", "must be at least conn.heartbeat (%v)", cc.Heartbeat)
	case cc.OnlineTTL < 0:
		return c, nil, config.Errorf("conn.online_ttl", "must be positive")
	case cc.OnlineCache < 0:
		return c, nil, config.Errorf("conn.online_cache", "must not be negative")
	case cc.ExpirySweep < 0:
		return c, nil, config.Errorf("conn.expiry_sweep", "must not be negative")
	case len(cc.Accepts) > auth.MaxAccepts:
		return c, nil, config.Errorf("conn.accepts", "at most %d ops", auth.MaxAccepts)
	case p.Secret == "" && !p.Unauthenticated:
		return c, nil, config.Errorf("push.secret", "required (or set push.unauthenticated for development)")
	case p.MaxBody < 0:
		return c, nil, config.Errorf("push.max_body", "must be positive")
	case p.MaxTargets < 0:
		return c, nil, config.Errorf("push.max_targets", "must be positive")
	case p.MaxOp < protocol.OpBusinessMin:
		return c, nil, config.Errorf("push.max_op", "must be at least %d", protocol.OpBusinessMin)
	case n.Max < 0:
		return c, nil, config.Errorf("nodes.max", "must be positive")
	case n.NearKM < 0:
		return c, nil, config.Errorf("nodes.near_km", "must be positive")
	case b.Base < 0 || b.Max < b.Base:
		return c, nil, config.Errorf("nodes.backoff", "need 0 < base <= max")
	case b.Factor < 1:
		return c, nil, config.Errorf("nodes.backoff.factor", "must be at least 1")
	case b.Jitter < 0 || b.Jitter > 1:
		return c, nil, config.Errorf("nodes.backoff.jitter", "must be in [0, 1]")
	}
	for _, op := range cc.Accepts {
		if op < 0 {
			return c, nil, config.Errorf("conn.accepts", "negative op %d", op)
		}
	}
	prefixes := make([]netip.Prefix, len(n.Regions))
	for i, r := range n.Regions {
		pfx, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			return c, nil, config.Errorf(fmt.Sprintf("nodes.regions[%d].cidr", i), "%v", err)
		}
		if r.Region == "" {
			return c, nil, config.Errorf(fmt.Sprintf("nodes.regions[%d].region", i), "empty")
		}
		prefixes[i] = pfx.Masked()
	}
	return c, prefixes, nil
}

// Verifier authenticates a connection's Auth request (internal/auth).
type Verifier interface {
	Verify(ctx context.Context, req *auth.Request) (auth.Identity, error)
}

// ReceiveHandler answers one upstream op a comet forwards through Receive.
// A nil reply sends nothing back to the client. An error is returned to
// the comet as the gRPC status of Receive (use status.Error for a code).
type ReceiveHandler func(ctx context.Context, req *pb.ReceiveReq) (*protocol.Proto, error)

// Deps are Logic's collaborators.
type Deps struct {
	Store    session.Store // required
	Verifier Verifier      // required
	Producer mq.Producer   // required
	// Watcher follows the comets for the node list and online totals;
	// nil serves an empty node list.
	Watcher discovery.Watcher
	// Handlers plug upstream ops (e.g. the IM ops 20-30) into Receive.
	Handlers map[int32]ReceiveHandler
	// OnReplaced, if set, is called by Connect when the device key was
	// owned by another connection (e.g. to kick it with "duplicate
	// login"). It runs on the Connect path: keep it short or hand off.
	OnReplaced func(ctx context.Context, prev session.Session)
	// OnUserOnline and OnUserOffline, if set, are called after a session
	// was recorded that is its user's first live device, or after the
	// user's last live device was removed (presence). The session store
	// decides both atomically with its write, so devices of one user that
	// connect or disconnect at once give one call each. Same rules as
	// OnReplaced. OnUserOffline is also called, from Run, for a user whose
	// last session expired without a Disconnect (conn.expiry_sweep).
	// version orders one user's transitions (greater is later; the store
	// decides it with the transition), whichever logic made them.
	OnUserOnline  func(ctx context.Context, s session.Session, version int64)
	OnUserOffline func(ctx context.Context, s session.Session, version int64)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer registers the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// ObserveCall, if set, records each call served on a ReceiveStream as
	// a unary Receive (pb.Logic_Receive_FullMethodName), the way the gRPC
	// server's interceptor records unary calls (grpcmetrics.Observe).
	ObserveCall func(fullMethod string, start time.Time, err error)
}

// Errors of the core operations. The gRPC and HTTP layers map them to
// status codes.
var (
	// ErrInvalidArgument: the request is malformed or out of bounds.
	ErrInvalidArgument = errors.New("logic: invalid argument")
	// ErrTooLarge: the pushed message is over push.max_body. It wraps
	// ErrInvalidArgument.
	ErrTooLarge = fmt.Errorf("%w: message too large", ErrInvalidArgument)
	// ErrUnavailable: a dependency (session store, queue) failed; retry.
	ErrUnavailable = errors.New("logic: unavailable")
	// ErrUnauthorized: the push API credential is missing or wrong.
	ErrUnauthorized = errors.New("logic: unauthorized")
	// ErrClosed: Run after Close.
	ErrClosed = errors.New("logic: closed")
)

// Logic is the logic tier. Create it with New; it is safe for concurrent
// use.
type Logic struct {
	pb.UnimplementedLogicServer

	cfg      Config
	regions  []netip.Prefix
	store    session.Store
	verifier Verifier
	producer mq.Producer
	watcher  discovery.Watcher
	handlers map[int32]ReceiveHandler
	replaced func(context.Context, session.Session)
	// userOnline and userOffline are Deps.OnUserOnline and OnUserOffline.
	userOnline, userOffline func(context.Context, session.Session, int64)
	log                     *slog.Logger
	m                       *metrics

	online  atomic.Pointer[onlineSnapshot]
	onlineM sync.Mutex // one refresh at a time; never held by readers of a fresh snapshot
	comets  atomic.Pointer[[]discovery.Instance]
	scratch sync.Pool // *pushScratch

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // running Runs
	mu     sync.Mutex     // guards closed and wg.Add against Close
	closed bool

	observe   func(fullMethod string, start time.Time, err error) // Deps.ObserveCall; may be nil
	draining  chan struct{}                                       // closed by Drain
	drainOnce sync.Once
}

// New validates cfg and returns a Logic. Background loops start in Run.
func New(cfg Config, deps Deps) (*Logic, error) {
	cfg, regions, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch {
	case deps.Store == nil:
		return nil, errors.New("logic: Deps.Store is required")
	case deps.Verifier == nil:
		return nil, errors.New("logic: Deps.Verifier is required")
	case deps.Producer == nil:
		return nil, errors.New("logic: Deps.Producer is required")
	}
	for op, h := range deps.Handlers {
		if h == nil {
			return nil, fmt.Errorf("logic: nil ReceiveHandler for op %d", op)
		}
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	handlers := make(map[int32]ReceiveHandler, len(deps.Handlers))
	for op, h := range deps.Handlers {
		handlers[op] = h
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Logic{
		cfg:        cfg,
		regions:    regions,
		store:      deps.Store,
		verifier:   deps.Verifier,
		producer:   deps.Producer,
		watcher:    deps.Watcher,
		handlers:   handlers,
		replaced:   deps.OnReplaced,
		userOnline: deps.OnUserOnline, userOffline: deps.OnUserOffline,
		log:    logger,
		m:      m,
		ctx:    ctx,
		cancel: cancel,

		observe:  deps.ObserveCall,
		draining: make(chan struct{}),
	}
	empty := []discovery.Instance{}
	l.comets.Store(&empty)
	return l, nil
}

// Config returns the effective configuration (defaults filled in).
func (l *Logic) Config() Config { return l.cfg }

// RegisterGRPC registers the Logic and Push services on s.
func (l *Logic) RegisterGRPC(s grpc.ServiceRegistrar) {
	pb.RegisterLogicServer(s, l)
	pb.RegisterPushServer(s, &PushService{l: l})
}

// Run runs the background loops (following the comets) until ctx is done
// or Close is called.
func (l *Logic) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { l.sweepExpired(ctx) })
	if l.watcher != nil {
		l.watchComets(ctx)
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Drain makes the ReceiveStreams refuse the calls they read from now on
// (the comets send them to another logic) and ask their comets to close
// them; each ends once its comet did and its calls in flight are
// answered. Call it before stopping the gRPC server, whose graceful stop
// waits for every stream to end.
func (l *Logic) Drain() {
	l.drainOnce.Do(func() { close(l.draining) })
}

// Close stops Run and waits for it. It does not close the Deps.
func (l *Logic) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return nil
}
