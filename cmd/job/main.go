// Command job runs the HubuIM Job tier: it consumes the push topic in a
// Kafka consumer group and fans the pushes out to the comets over gRPC.
//
//	job -config configs/job.yaml
//
// Every scalar setting can be overridden by HUBUIM_JOB_<YAML PATH> (e.g.
// HUBUIM_JOB_KAFKA_BROKERS=k1:9092,k2:9092). SIGINT or SIGTERM stops
// consuming (committing what was handed off), flushes room batches and lets
// the comet queues drain within job.drain_timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/job"
	"github.com/hubuim/hubuim/internal/mq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "job:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "YAML config file (empty: defaults and environment only)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log, prometheus.DefaultRegisterer, prometheus.DefaultGatherer)
}

// serve runs the job until ctx ends, then stops gracefully.
func serve(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) error {
	watcher, closeWatcher, err := newWatcher(cfg, log, reg)
	if err != nil {
		return err
	}
	defer closeWatcher()

	cons, err := mq.NewKafkaConsumer(cfg.Kafka, []string{mq.TopicPush}, cfg.Group, log, reg)
	if err != nil {
		return err
	}
	defer cons.Close()

	j, err := job.New(cfg.Job, job.Deps{Consumer: cons, Watcher: watcher, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	adm, err := admin.New(cfg.Admin, admin.Deps{Logger: log, Gatherer: gatherer})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()
	wg.Go(func() {
		if err := adm.Run(adminCtx); err != nil {
			log.Error("admin server", "err", err)
		}
	})

	log.Info("job started", "brokers", cfg.Kafka.Brokers, "group", cfg.Group, "discovery", cfg.Discovery.Type)
	runErr := j.Run(ctx)
	if err := j.Close(); err != nil {
		log.Error("job close", "err", err)
	}
	log.Info("job stopped")
	if errors.Is(runErr, job.ErrClosed) {
		runErr = nil
	}
	return runErr
}

// newWatcher builds the comet watcher the configuration asks for.
func newWatcher(cfg Config, log *slog.Logger, reg prometheus.Registerer) (discovery.Watcher, func(), error) {
	switch cfg.Discovery.Type {
	case DiscoveryEtcd:
		ecfg := cfg.Discovery.Etcd
		ecfg.Registerer = reg
		e, err := discovery.NewEtcd(ecfg, log)
		if err != nil {
			return nil, nil, err
		}
		return e, func() { _ = e.Close() }, nil
	default:
		list, err := staticComets(cfg.Discovery.Comets)
		if err != nil {
			return nil, nil, err
		}
		s := discovery.NewStatic(list...)
		return s, func() { _ = s.Close() }, nil
	}
}
