// Command logic runs the HubuIM logic tier: the Logic gRPC service for
// comets, the business push API over gRPC and HTTP (goim-compatible), and
// the node list for clients.
//
//	logic -config configs/logic.yaml
//
// Every setting can be overridden by HUBUIM_LOGIC_<YAML_PATH> environment
// variables (e.g. HUBUIM_LOGIC_PUSH_SECRET, HUBUIM_LOGIC_REDIS_ADDRS).
// SIGINT or SIGTERM deregisters from discovery, stops accepting and
// finishes in-flight requests within shutdown_timeout.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logic:", err)
		os.Exit(1)
	}
}

// httpReadTimeout bounds reading one HTTP request.
const httpReadTimeout = 10 * time.Second

// newProducer builds the push-topic producer.
func newProducer(c mq.KafkaConfig, log *slog.Logger, reg prometheus.Registerer) (mq.Producer, error) {
	return mq.NewKafkaProducer(c, log, reg)
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}

func run() error {
	path := flag.String("config", "", "YAML config file (empty: defaults and environment only)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "logic")
	fc, err := logicconf.Load(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, fc, log, prometheus.DefaultRegisterer, prometheus.DefaultGatherer, nil)
}

// listening reports the bound addresses once serving (tests use ":0").
type listening func(grpcAddr, httpAddr net.Addr)

// serve runs logic until ctx ends, then stops gracefully.
func serve(ctx context.Context, fc logicconf.FileConfig, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, onListen listening) error {
	var err error

	rdb := fc.Redis.NewClient()
	defer rdb.Close()
	store, err := session.NewRedis(rdb, session.RedisConfig{Prefix: fc.Redis.Prefix})
	if err != nil {
		return config.Errorf("redis.prefix", "%v", err)
	}
	fc.Auth.Registerer = reg
	verifier, err := auth.New(fc.Auth, log)
	if err != nil {
		return err
	}
	producer, err := newProducer(fc.Kafka, log, reg)
	if err != nil {
		return err
	}
	defer producer.Close()

	var watcher discovery.Watcher
	var registry *discovery.Etcd
	if len(fc.Discovery.Endpoints) > 0 {
		fc.Discovery.Registerer = reg
		if registry, err = discovery.NewEtcd(fc.Discovery, log); err != nil {
			return err
		}
		defer registry.Close()
		watcher = registry
	} else {
		log.Warn("discovery.endpoints is empty: no node list, no registration")
	}

	l, err := logic.New(fc.Logic(), logic.Deps{
		Store: store, Verifier: verifier, Producer: producer, Watcher: watcher, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer l.Close()

	tc, err := fc.TLS.Load()
	if err != nil {
		return err
	}
	var gopts []grpc.ServerOption
	if tc != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(gopts...)
	l.RegisterGRPC(gs)
	health := discovery.RegisterHealth(gs)
	gl, err := net.Listen("tcp", fc.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen grpc_addr %s: %w", fc.GRPCAddr, err)
	}
	hs := &http.Server{Addr: fc.HTTPAddr, Handler: l.HTTPHandler(), ReadHeaderTimeout: httpReadTimeout, ReadTimeout: httpReadTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	hl, err := net.Listen("tcp", fc.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen http_addr %s: %w", fc.HTTPAddr, err)
	}
	if tc != nil {
		hl = tls.NewListener(hl, tc)
	}
	adm, err := admin.New(fc.Admin, admin.Deps{Logger: log, Gatherer: gatherer, Ready: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() { errc <- l.Run(ctx) })
	wg.Go(func() { errc <- adm.Run(ctx) })
	wg.Go(func() {
		if err := gs.Serve(gl); err != nil {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	})
	wg.Go(func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	log.Info("logic serving", "id", fc.ID, "grpc", gl.Addr().String(), "http", hl.Addr().String())
	if onListen != nil {
		onListen(gl.Addr(), hl.Addr())
	}

	var registration discovery.Registration
	if registry != nil {
		registration, err = registry.Register(ctx, discovery.Instance{
			ID: fc.ID, Service: discovery.ServiceLogic,
			Addrs: map[string]string{
				discovery.AddrGRPC: net.JoinHostPort(fc.AdvertiseHost, portOf(fc.GRPCAddr)),
				discovery.AddrHTTP: net.JoinHostPort(fc.AdvertiseHost, portOf(fc.HTTPAddr)),
			},
		})
		if err != nil {
			log.Error("register in discovery", "err", err)
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("logic stopping after an error", "err", runErr)
	}
	stop()

	// Graceful stop: leave discovery, fail health checks, finish in-flight
	// requests, then force whatever is left at the deadline.
	sctx, cancel := context.WithTimeout(context.Background(), fc.ShutdownTimeout)
	defer cancel()
	health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if registration != nil {
		if err := registration.Close(sctx); err != nil {
			log.Warn("deregister", "err", err)
		}
	}
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		gs.Stop()
	}
	_ = l.Close()
	wg.Wait()
	log.Info("logic stopped")
	return runErr
}
