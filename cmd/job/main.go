// Command job runs the HubuIM Job tier: it consumes the push and message
// topics in a Kafka consumer group and fans goim pushes and stored IM
// messages out to the comets over gRPC (devices from the Redis sessions,
// group members from the PostgreSQL store).
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
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/logic/session"
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

	rdb, err := app.NewRedis(&cfg.Redis, "redis")
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := app.InstrumentRedis(rdb, reg); err != nil {
		return err
	}
	sessions, err := session.NewRedis(rdb, session.RedisConfig{Prefix: cfg.Redis.Prefix})
	if err != nil {
		return err
	}
	st, err := app.OpenPostgres(ctx, cfg.Postgres, "postgres", log, reg)
	if err != nil {
		return err
	}
	defer st.Close()
	var producer mq.Producer
	if cfg.Notify.Topic != "" {
		p, err := mq.NewKafkaProducer(cfg.Kafka, log, reg)
		if err != nil {
			return err
		}
		defer p.Close()
		producer = p
	}
	notifier, err := app.NewNotifier(cfg.Notify, producer)
	if err != nil {
		return err
	}
	cons, err := mq.NewKafkaConsumer(cfg.Kafka, app.JobTopics, cfg.Group, log, reg)
	if err != nil {
		return err
	}
	defer cons.Close()

	memberEvents, err := members.NewRedisEvents(rdb, cfg.Redis.Prefix, log, reg)
	if err != nil {
		return err
	}
	j, err := app.NewJob(cfg.Job, app.JobDeps{
		Consumer: cons, Watcher: watcher, Devices: sessions, Members: st, Notifier: notifier, Logger: log, Registerer: reg,
		MemberEvents: memberEvents,
	})
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
	return j.Run(ctx)
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
