// Command comet runs the HubuIM edge tier: client connections over TCP and
// WebSocket (optionally TLS) and the gRPC Comet API for job and logic.
//
//	comet -config configs/comet.yaml
//
// Every setting can be overridden by HUBUIM_COMET_<YAML_KEY> environment
// variables. SIGINT or SIGTERM drains the comet within drain_timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/comet"
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

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := comet.LoadConfig(*path)
	if err != nil {
		return err
	}
	// The target may be a plain address or a resolver URL such as
	// "hubuim:///logic" once the discovery resolver is registered.
	cc, err := grpc.NewClient(cfg.LogicTarget, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("logic client %q: %w", cfg.LogicTarget, err)
	}
	defer cc.Close()

	srv, err := comet.New(cfg, comet.Deps{
		Logic:      logic.NewLogicClient(cc),
		Logger:     log,
		Registerer: prometheus.DefaultRegisterer, // served by the admin endpoint (wired by internal/admin)
		OnDraining: func() { log.Info("draining") },
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Run(ctx)
}
