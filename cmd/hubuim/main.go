// Command hubuim runs HubuIM standalone: comet, logic and job in one
// process, with in-process twins of Redis (sessions, seq, dedup), Kafka (the
// queue), etcd (discovery) and an embedded message store in a data
// directory. Nothing to install but Go:
//
//	go run ./cmd/hubuim            # or: make run
//
// It listens on goim's ports: clients on TCP :3101 and WebSocket :3102/sub;
// the push API, client HTTP API and node list on 127.0.0.1:3111 (HTTP) and
// 127.0.0.1:3119 (gRPC); metrics and health on 127.0.0.1:3900. Auth is
// insecure by default (the mid in the Auth body is trusted): development
// only. Try it with cmd/imctl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// dedupSweepEvery is how often expired dedup entries are dropped.
const dedupSweepEvery = time.Minute

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hubuim:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "YAML config file (empty: the built-in standalone defaults)")
	dataDir := flag.String("data", "", "data directory (default hubuim-data under the working directory)")
	flag.Parse()
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log)
}

// serve runs the three tiers until ctx ends.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	st, err := store.OpenBolt(store.BoltConfig{Dir: dir, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()

	cfg.Queue.Logger, cfg.Queue.Registerer = log, reg
	queue, err := mq.NewMemory(cfg.Queue)
	if err != nil {
		return err
	}
	defer queue.Close()
	registry := discovery.NewStatic()
	defer registry.Close()
	sessions := session.NewMemory()
	dedup := im.NewMemoryDedup(0, 0)
	ids, err := idgen.New(idgen.Config{WorkerID: 0, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	cfg.Auth.Registerer = reg
	verifier, err := auth.New(cfg.Auth, log)
	if err != nil {
		return err
	}

	logicSrv, err := app.NewLogic(cfg.Logic, app.LogicDeps{
		Sessions: sessions, Verifier: verifier, Producer: queue, Store: st,
		Seq: im.NewMemorySeqCounter(), Dedup: dedup, IDs: ids,
		Watcher: registry, Registrar: registry, Logger: log.With("service", "logic"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	if err := logicSrv.Start(); err != nil {
		return err
	}
	cc, err := grpc.NewClient(logicSrv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	cometSrv, err := app.NewComet(cfg.Comet, app.CometDeps{
		Logic: logicpb.NewLogicClient(cc), Registrar: registry, Logger: log.With("service", "comet"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	if err := cometSrv.Start(); err != nil {
		return err
	}
	consumer := queue.Consumer("job", app.JobTopics...)
	defer consumer.Close()
	jobSrv, err := app.NewJob(app.JobConfig{Config: cfg.Job, Fanout: cfg.Fanout}, app.JobDeps{
		Consumer: consumer, Watcher: registry, Devices: sessions, Members: st,
		Logger: log.With("service", "job"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	adm, err := admin.New(cfg.Admin, admin.Deps{Gatherer: reg, Logger: log, Ready: func(context.Context) error {
		if cometSrv.Server().Draining() {
			return errors.New("draining")
		}
		return nil
	}})
	if err != nil {
		return err
	}

	printBanner(log, cfg, dir, cometSrv, logicSrv)

	// Stop order: comet drains its clients first (their Disconnects still
	// reach logic), then job and logic.
	cometCtx, stopComet := context.WithCancel(context.Background())
	defer stopComet()
	restCtx, stopRest := context.WithCancel(context.Background())
	defer stopRest()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() { errc <- cometSrv.Run(cometCtx) })
	var rest sync.WaitGroup
	rest.Go(func() { errc <- logicSrv.Run(restCtx) })
	rest.Go(func() { errc <- jobSrv.Run(restCtx) })
	rest.Go(func() { errc <- adm.Run(restCtx) })
	rest.Go(func() {
		t := time.NewTicker(dedupSweepEvery)
		defer t.Stop()
		for {
			select {
			case <-restCtx.Done():
				return
			case <-t.C:
				dedup.Sweep()
			}
		}
	})

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("stopping after an error", "err", runErr)
	}
	stopComet()
	wg.Wait()
	stopRest()
	rest.Wait()
	return runErr
}

func printBanner(log *slog.Logger, cfg Config, dir string, c *app.CometServer, l *app.LogicServer) {
	a := c.Server().Addrs()
	log.Info("HubuIM standalone is up",
		"tcp", a.TCP, "websocket", a.WS+"/sub", "comet_grpc", a.GRPC,
		"http_api", "http://"+l.HTTPAddr(), "logic_grpc", l.GRPCAddr(),
		"admin", cfg.Admin.Addr, "data", dir)
	if cfg.Auth.Mode == auth.ModeInsecure {
		log.Warn("auth is insecure: the mid in the Auth body is trusted (development only)")
	}
	log.Info("try it: go run ./cmd/imctl listen -mid 2   and in another terminal:   go run ./cmd/imctl send -mid 1 -to 2 hello")
}
