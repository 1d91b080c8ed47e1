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
	"github.com/hubuim/hubuim/internal/grpcmetrics"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/job"
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
	s, err := start(cfg, log)
	if err != nil {
		return err
	}
	defer s.close()
	printBanner(log, cfg, s.dir, s.comet, s.logic)
	return s.run(ctx)
}

// standalone is the three tiers and their in-process dependencies.
type standalone struct {
	dir    string
	log    *slog.Logger
	comet  *app.CometServer
	logic  *app.LogicServer
	job    *app.JobServer
	admin  *admin.Server
	dedup  *im.MemoryDedup
	closer []func() error
}

// start builds everything and binds every listener.
func start(cfg Config, log *slog.Logger) (_ *standalone, err error) {
	if cfg.Notify.Topic != "" { // loadConfig refuses it; a Config built in code too
		return nil, errors.New("hubuim: notify.topic needs Kafka (the distributed mode); use notify.webhook_url")
	}
	s := &standalone{log: log}
	defer func() {
		if err != nil {
			s.close() // s, not the result: a failed start returns nil
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if s.dir, err = filepath.Abs(cfg.DataDir); err != nil {
		return nil, err
	}
	st, err := store.OpenBolt(store.BoltConfig{Dir: s.dir, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, st.Close)
	cfg.Queue.Logger, cfg.Queue.Registerer = log, reg
	queue, err := mq.NewMemory(cfg.Queue)
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, queue.Close)
	registry := discovery.NewStatic()
	s.closer = append(s.closer, registry.Close)
	sessions := session.NewMemory()
	s.dedup = im.NewMemoryDedup(0, 0)
	ids, err := idgen.New(idgen.Config{WorkerID: 0, Registerer: reg, Logger: log})
	if err != nil {
		return nil, err
	}
	cfg.Auth.Registerer = reg
	verifier, err := auth.New(cfg.Auth, log)
	if err != nil {
		return nil, err
	}

	s.logic, err = app.NewLogic(cfg.Logic, app.LogicDeps{
		Sessions: sessions, Verifier: verifier, Producer: queue, Store: st,
		Seq: im.NewMemorySeqCounter(), Dedup: s.dedup, IDs: ids, Presence: im.NewMemoryPresence(),
		Watcher: registry, Registrar: registry, Logger: log.With("service", "logic"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	if err := s.logic.Start(); err != nil {
		return nil, err
	}
	grpcClientMetrics, err := grpcmetrics.NewClient(reg)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(s.logic.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(grpcClientMetrics.UnaryClientInterceptor()))
	if err != nil {
		return nil, err
	}
	s.closer = append(s.closer, cc.Close)
	s.comet, err = app.NewComet(cfg.Comet, app.CometDeps{
		Logic: logicpb.NewLogicClient(cc), Registrar: registry, Logger: log.With("service", "comet"), Registerer: reg,
		ObserveLogicCall: grpcClientMetrics.Observe,
	})
	if err != nil {
		return nil, err
	}
	if err := s.comet.Start(); err != nil {
		return nil, err
	}
	consumer := queue.Consumer("job", app.JobTopics...)
	s.closer = append(s.closer, consumer.Close)
	notifier, err := app.NewNotifier(cfg.Notify, nil)
	if err != nil {
		return nil, err
	}
	s.job, err = app.NewJob(app.JobConfig{Config: cfg.Job, Fanout: cfg.Fanout}, app.JobDeps{
		// Logic's member cache: its group changes reach the fan-out at once.
		Consumer: consumer, Watcher: registry, Devices: sessions, Members: s.logic.MemberLister(), Notifier: notifier,
		// The comet is in this process: call its API directly, no gRPC.
		Dial:   job.LocalDial(s.comet.Server().Config().ID, s.comet.Server().API(), nil),
		Logger: log.With("service", "job"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	s.admin, err = admin.New(cfg.Admin, admin.Deps{Gatherer: reg, Logger: log, Ready: func(context.Context) error {
		if s.comet.Server().Draining() {
			return errors.New("draining")
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	if _, err := s.admin.Listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// run serves until ctx ends. The comet drains its clients first (their
// Disconnects still reach logic), then job and logic stop.
func (s *standalone) run(ctx context.Context) error {
	cometCtx, stopComet := context.WithCancel(context.Background())
	defer stopComet()
	restCtx, stopRest := context.WithCancel(context.Background())
	defer stopRest()
	errc := make(chan error, 5)
	var cometWG, rest sync.WaitGroup
	cometWG.Go(func() { errc <- s.comet.Run(cometCtx) })
	rest.Go(func() { errc <- s.logic.Run(restCtx) })
	rest.Go(func() { errc <- s.job.Run(restCtx) })
	rest.Go(func() { errc <- s.admin.Run(restCtx) })
	rest.Go(func() {
		t := time.NewTicker(dedupSweepEvery)
		defer t.Stop()
		for {
			select {
			case <-restCtx.Done():
				return
			case <-t.C:
				s.dedup.Sweep()
			}
		}
	})
	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down")
	case runErr = <-errc:
		s.log.Error("stopping after an error", "err", runErr)
	}
	stopComet()
	cometWG.Wait()
	stopRest()
	rest.Wait()
	return runErr
}

// close releases the dependencies, newest first.
func (s *standalone) close() {
	for i := len(s.closer) - 1; i >= 0; i-- {
		if err := s.closer[i](); err != nil {
			s.log.Warn("close", "err", err)
		}
	}
	s.closer = nil
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
