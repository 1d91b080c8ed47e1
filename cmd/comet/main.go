// Command comet runs the HubuIM edge tier (internal/app, the same code as
// the standalone cmd/hubuim): client connections over TCP and WebSocket
// (optionally TLS), the gRPC Comet API for job and logic, its registration
// in etcd discovery (addresses, live load, draining flag) and an admin
// server (/metrics, /healthz, /readyz).
//
//	comet -config configs/comet.yaml
//
// With discovery configured and logic_target "hubuim:///logic", comet
// finds the logics in etcd and balances over them round robin. Every
// setting can be overridden by HUBUIM_COMET_<YAML_PATH> environment
// variables (e.g. HUBUIM_COMET_ADVERTISE_HOST). SIGINT or SIGTERM fails
// readiness, marks the comet draining in discovery, then drains its clients
// within drain_timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/app/cometconf"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/grpcmetrics"
)

// roundRobin balances the calls to logic over every resolved logic.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Errors /readyz reports.
var (
	errDraining  = errors.New("draining")
	errNotServed = errors.New("logic is not serving")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "comet:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "YAML config file (empty: defaults and environment only)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "comet")
	fc, err := cometconf.Load(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, fc, log, prometheus.DefaultRegisterer, prometheus.DefaultGatherer, nil)
}

// listening reports the bound addresses once serving (tests use ":0").
type listening func(addrs comet.Addrs, adminAddr net.Addr)

// serve runs the comet until ctx ends, then drains it.
func serve(ctx context.Context, fc cometconf.FileConfig, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, onListen listening) error {
	var registry *discovery.Etcd
	if len(fc.Discovery.Endpoints) > 0 {
		fc.Discovery.Registerer = reg
		var err error
		if registry, err = discovery.NewEtcd(fc.Discovery, log); err != nil {
			return err
		}
		defer registry.Close()
	} else {
		log.Warn("discovery.endpoints is empty: this comet is not registered (no node list entry, no job fan-out through etcd)")
	}

	tc, err := fc.LogicTLS.Load()
	if err != nil {
		return err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if tc != nil {
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(tc))
	}
	if fc.UsesDiscovery() {
		// cometconf.Load guarantees discovery is configured here.
		opts = append(opts, grpc.WithResolvers(discovery.NewResolverBuilder(registry, log)), grpc.WithDefaultServiceConfig(roundRobin))
	}
	gm, err := grpcmetrics.NewClient(reg)
	if err != nil {
		return err
	}
	opts = append(opts, grpc.WithUnaryInterceptor(gm.UnaryClientInterceptor()))
	cc, err := grpc.NewClient(fc.LogicTarget, opts...)
	if err != nil {
		return fmt.Errorf("logic client %q: %w", fc.LogicTarget, err)
	}
	defer cc.Close()

	cd := app.CometDeps{Logic: logicpb.NewLogicClient(cc), Logger: log, Registerer: reg, ObserveLogicCall: gm.Observe}
	if registry != nil {
		cd.Registrar = registry
	}
	srv, err := app.NewComet(fc.CometConfig, cd)
	if err != nil {
		return err
	}
	var stopping atomic.Bool
	health := healthpb.NewHealthClient(cc)
	adm, err := admin.New(fc.Admin, admin.Deps{Logger: log, Gatherer: gatherer, Ready: func(ctx context.Context) error {
		if stopping.Load() || srv.Server().Draining() {
			return errDraining
		}
		rep, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("logic: %w", err)
		}
		if rep.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%w: %s", errNotServed, rep.Status)
		}
		return nil
	}})
	if err != nil {
		return err
	}
	adminAddr, err := adm.Listen()
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		_ = adm.Shutdown(context.Background())
		return err
	}

	// The admin server outlives the comet so that /readyz answers 503
	// while it drains.
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := adm.Run(adminCtx); err != nil {
			log.Error("admin server", "err", err)
		}
	})
	if onListen != nil {
		onListen(srv.Server().Addrs(), adminAddr)
	}
	unwatch := context.AfterFunc(ctx, func() { stopping.Store(true) })
	defer unwatch()
	err = srv.Run(ctx)
	stopAdmin()
	return err
}
