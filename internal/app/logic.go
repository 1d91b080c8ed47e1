// Package app composes HubuIM's tiers into runnable servers. Each of
// cmd/comet, cmd/logic, cmd/job and the standalone cmd/hubuim builds its
// dependencies (real Redis, Kafka, etcd and PostgreSQL, or their in-process
// twins) and hands them to the same constructors here, so the modes differ
// only in configuration.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/grpcmetrics"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of LogicConfig.
const (
	DefaultLogicHTTPAddr   = ":3111"
	DefaultLogicGRPCAddr   = ":3119"
	DefaultShutdownTimeout = 15 * time.Second
	httpReadTimeout        = 10 * time.Second
	httpIdleTimeout        = 60 * time.Second
	// grpcStreamWorkers long-lived goroutines serve logic's gRPC calls
	// (grpc.NumStreamWorkers), so that a handler runs on a stack already
	// grown instead of growing a fresh goroutine's (~5-6% of logic's CPU
	// in imbench chat, under 1% with them); with all of them busy a call
	// gets a fresh goroutine (grpc-go's default). Receive handlers wait for
	// Redis, the store and Kafka, so the calls in flight are the message
	// rate times that latency, not a number of CPUs (imbench chat keeps
	// ~225 in flight). Not many more: grpc-go hands calls to the workers
	// in turn (longest idle first), and a worker idle through a GC cycle
	// has its stack halved and regrows it (512 left ~3-5% in newstack).
	grpcStreamWorkers = 256
)

// LogicConfig is the part of logic's configuration app needs besides the
// logic and IM packages' own.
type LogicConfig struct {
	ID              string        `yaml:"id"`               // instance id; default hostname
	HTTPAddr        string        `yaml:"http_addr"`        // default :3111
	GRPCAddr        string        `yaml:"grpc_addr"`        // default :3119
	AdvertiseHost   string        `yaml:"advertise_host"`   // host registered in discovery; default hostname
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // default 15s

	Conn  logic.ConnConfig  `yaml:"conn"`
	Push  logic.PushConfig  `yaml:"push"`
	Nodes logic.NodesConfig `yaml:"nodes"`
	IM    im.Config         `yaml:"im"`
	// SeqJump is how far past the stored max a lost seq counter restarts.
	// Default im.DefaultSeqJump.
	SeqJump int64 `yaml:"seq_jump"`
}

func (c *LogicConfig) fill() {
	if c.ID == "" {
		c.ID = hostname()
	}
	if c.AdvertiseHost == "" {
		c.AdvertiseHost = hostname()
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultLogicHTTPAddr
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultLogicGRPCAddr
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
}

// LogicDeps are logic's collaborators; the mode decides their kind.
type LogicDeps struct {
	Sessions session.Store
	Verifier auth.Verifier
	Producer mq.Producer // push and message topics
	Store    store.Store
	Seq      im.SeqCounter
	Dedup    im.DedupStore
	IDs      im.IDGen
	// Presence keeps presence subscriptions; nil turns presence off.
	Presence im.PresenceStore
	// Watcher follows the comets (node list); Registrar registers this
	// logic. Either may be nil.
	Watcher   discovery.Watcher
	Registrar discovery.Registrar
	// TLS secures the gRPC and HTTP listeners (with ClientCAs and
	// RequireAndVerifyClientCert: mutual TLS). Nil: plaintext.
	TLS    *tls.Config
	Logger *slog.Logger
	// Registerer registers metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// MemberEvents shares group membership changes with the other logic
	// replicas and the jobs (members.RedisEvents); nil: their member
	// caches see this logic's changes within their TTL.
	MemberEvents MemberEvents
}

// MemberEvents publishes group membership changes and applies the ones
// published by other processes to member caches.
type MemberEvents interface {
	Publish(ctx context.Context, groupID int64) error
	Run(ctx context.Context, caches ...*members.Cache) error
}

// LogicServer is a running logic: the Logic, Push and Groups gRPC services,
// the goim HTTP API and the client IM HTTP API.
type LogicServer struct {
	cfg   LogicConfig
	deps  LogicDeps
	log   *slog.Logger
	logic *logic.Logic
	im    *im.Service
	// The gRPC server is built in Run: its stream workers
	// (grpc.NumStreamWorkers) start in grpc.NewServer and stop with it.
	grpcOpts     []grpc.ServerOption
	registerGRPC func(*grpc.Server)
	http         *http.Server

	gl, hl net.Listener
}

// NewLogic builds a logic server; Start binds its listeners.
func NewLogic(cfg LogicConfig, deps LogicDeps) (*LogicServer, error) {
	cfg.fill()
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Store == nil || deps.Seq == nil || deps.Dedup == nil || deps.IDs == nil {
		return nil, errors.New("app: logic needs a message store, a seq counter, a dedup store and an id generator")
	}
	imMetrics, err := im.NewMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	seq, err := im.NewSeqAllocator(deps.Seq, deps.Store, im.SeqAllocatorConfig{Jump: cfg.SeqJump, OnJump: imMetrics.OnSeqJump})
	if err != nil {
		return nil, err
	}
	imDeps := im.Deps{
		Seq: seq, Dedup: deps.Dedup, Store: deps.Store, IDs: deps.IDs, Producer: deps.Producer,
		Metrics: imMetrics, Logger: deps.Logger,
	}
	if deps.MemberEvents != nil {
		imDeps.MemberEvents = deps.MemberEvents
	}
	svc, err := im.NewService(cfg.IM, imDeps)
	if err != nil {
		return nil, err
	}
	groups, err := im.NewGroups(deps.Store, svc)
	if err != nil {
		return nil, err
	}
	var presence *im.Presence
	if deps.Presence != nil {
		if presence, err = im.NewPresence(deps.Presence, deps.Sessions, svc, 0); err != nil {
			return nil, err
		}
	}
	handlers := make(map[int32]logic.ReceiveHandler, len(im.Ops))
	for _, op := range im.Ops {
		handlers[op] = func(ctx context.Context, req *logicpb.ReceiveReq) (*protocol.Proto, error) {
			return svc.Handle(ctx, req.Mid, req.Key, req.Proto)
		}
	}
	gm, err := grpcmetrics.NewServer(deps.Registerer)
	if err != nil {
		return nil, err
	}
	ldeps := logic.Deps{
		Store: deps.Sessions, Verifier: deps.Verifier, Producer: deps.Producer, Watcher: deps.Watcher,
		Handlers: handlers, Logger: deps.Logger, Registerer: deps.Registerer, ObserveCall: gm.Observe,
	}
	if presence != nil {
		ldeps.OnUserOnline, ldeps.OnUserOffline = presence.UserOnline, presence.UserOffline
	}
	l, err := logic.New(logic.Config{Conn: cfg.Conn, Push: cfg.Push, Nodes: cfg.Nodes}, ldeps)
	if err != nil {
		return nil, err
	}
	gopts := []grpc.ServerOption{
		grpc.UnaryInterceptor(gm.UnaryServerInterceptor()),
		grpc.NumStreamWorkers(grpcStreamWorkers),
	}
	if deps.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(deps.TLS)))
	}
	groupsSrv := im.NewGroupsServer(groups)
	register := func(gs *grpc.Server) {
		l.RegisterGRPC(gs)
		logicpb.RegisterGroupsServer(gs, groupsSrv)
	}

	mux := http.NewServeMux()
	mux.Handle("/goim/", l.HTTPHandler())
	mux.Handle("/im/", im.ClientHandler(svc, groups, presence, im.VerifierAuth(deps.Verifier)))
	hs := &http.Server{
		Handler: mux, ReadHeaderTimeout: httpReadTimeout, ReadTimeout: httpReadTimeout, IdleTimeout: httpIdleTimeout,
		ErrorLog: slog.NewLogLogger(deps.Logger.Handler(), slog.LevelWarn),
	}
	return &LogicServer{cfg: cfg, deps: deps, log: deps.Logger, logic: l, im: svc, grpcOpts: gopts, registerGRPC: register, http: hs}, nil
}

// Logic returns the logic core (tests, readiness).
func (s *LogicServer) Logic() *logic.Logic { return s.logic }

// MemberLister is the member lookup of the IM service: its member cache
// (which this logic's group changes invalidate at once) or, with the cache
// off, the store. A job in the same process uses it.
func (s *LogicServer) MemberLister() im.MemberLister {
	if c := s.im.MemberCache(); c != nil {
		return c
	}
	return s.deps.Store
}

// Start binds the gRPC and HTTP listeners (the HTTP one speaks TLS when
// LogicDeps.TLS is set).
func (s *LogicServer) Start() error {
	gl, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("logic: listen grpc_addr %s: %w", s.cfg.GRPCAddr, err)
	}
	hl, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("logic: listen http_addr %s: %w", s.cfg.HTTPAddr, err)
	}
	if s.deps.TLS != nil {
		hl = tls.NewListener(hl, s.deps.TLS)
	}
	s.gl, s.hl = gl, hl
	return nil
}

// GRPCAddr and HTTPAddr are the bound addresses (after Start).
func (s *LogicServer) GRPCAddr() string { return s.gl.Addr().String() }

// HTTPAddr is the bound HTTP address (after Start).
func (s *LogicServer) HTTPAddr() string { return s.hl.Addr().String() }

// Run serves until ctx ends, then stops gracefully within the shutdown
// timeout: it leaves discovery, fails health checks and finishes in-flight
// requests. Start must have been called.
func (s *LogicServer) Run(ctx context.Context) error {
	if s.gl == nil {
		return errors.New("app: logic Run before Start")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gs := grpc.NewServer(s.grpcOpts...)
	s.registerGRPC(gs)
	health := discovery.RegisterHealth(gs)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() { errc <- s.logic.Run(ctx) })
	// The member events outlive ctx until the gRPC server has stopped: the
	// calls it drains still read the member cache.
	ectx, stopEvents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEvents()
	if c := s.im.MemberCache(); c != nil && s.deps.MemberEvents != nil {
		wg.Go(func() {
			if err := s.deps.MemberEvents.Run(ectx, c); err != nil {
				errc <- fmt.Errorf("logic member events: %w", err)
			}
		})
	}
	wg.Go(func() {
		if err := gs.Serve(s.gl); err != nil {
			errc <- fmt.Errorf("logic grpc: %w", err)
		}
	})
	wg.Go(func() {
		if err := s.http.Serve(s.hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("logic http: %w", err)
		}
	})
	s.log.Info("logic serving", "id", s.cfg.ID, "grpc", s.GRPCAddr(), "http", s.HTTPAddr())
	reg := s.register(ctx)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("logic stopping after an error", "err", runErr)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer scancel()
	health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if reg != nil {
		if err := reg.Close(sctx); err != nil {
			s.log.Warn("logic: deregister", "err", err)
		}
	}
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("logic: http shutdown", "err", err)
	}
	s.logic.Drain()
	stopGRPC(sctx, gs)
	stopEvents()
	_ = s.logic.Close()
	wg.Wait()
	s.log.Info("logic stopped")
	return runErr
}

func (s *LogicServer) register(ctx context.Context) discovery.Registration {
	if s.deps.Registrar == nil {
		return nil
	}
	reg, err := s.deps.Registrar.Register(ctx, discovery.Instance{
		ID: s.cfg.ID, Service: discovery.ServiceLogic,
		Addrs: map[string]string{
			discovery.AddrGRPC: advertise(s.cfg.AdvertiseHost, s.GRPCAddr()),
			discovery.AddrHTTP: advertise(s.cfg.AdvertiseHost, s.HTTPAddr()),
		},
	})
	if err != nil {
		s.log.Error("logic: register in discovery", "err", err)
		return nil
	}
	return reg
}

// stopGRPC finishes in-flight RPCs, forcing the rest at ctx's deadline.
func stopGRPC(ctx context.Context, gs *grpc.Server) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		gs.Stop()
		<-done
	}
}

// advertise joins host with the port of a bound address; an empty or
// wildcard host keeps the bound host.
func advertise(host, bound string) string {
	bh, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if host == "" || strings.HasPrefix(host, "0.0.0.0") || host == "::" {
		host = bh
	}
	return net.JoinHostPort(host, port)
}
