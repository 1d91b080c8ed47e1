// Command logic runs the HubuIM logic tier (internal/app, the same code as
// the standalone cmd/hubuim): the Logic gRPC service for comets (connect,
// heartbeat and the IM ops 20-30: send, sync, read marks), the Push and
// Groups gRPC services for business backends, the goim-compatible HTTP
// push API and node list at /goim/, the client IM HTTP API at /im/, and an
// admin server (/metrics, /healthz, /readyz).
//
//	logic -config configs/logic.yaml
//
// Dependencies: Redis (sessions, seq counters, dedup), PostgreSQL
// (messages, groups), Kafka (push and message topics) and etcd (node list,
// registration, the id generator's worker id). Every setting can be
// overridden by HUBUIM_LOGIC_<YAML_PATH> environment variables (e.g.
// HUBUIM_LOGIC_PUSH_SECRET, HUBUIM_LOGIC_REDIS_ADDRS,
// HUBUIM_LOGIC_POSTGRES_DSN). SIGINT or SIGTERM fails readiness,
// deregisters from discovery, stops accepting and finishes in-flight
// requests within shutdown_timeout.
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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

// etcdDialTimeout bounds connecting the id generator's etcd client when
// discovery.dial_timeout is unset.
const etcdDialTimeout = 5 * time.Second

// Errors /readyz reports.
var (
	errStopping = errors.New("shutting down")
	errNoWorker = errors.New("no id generator worker id held")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logic:", err)
		os.Exit(1)
	}
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
type listening func(grpcAddr, httpAddr, adminAddr net.Addr)

// deps are what serve builds before the logic server; close releases them
// newest first.
type deps struct {
	closers []func() error
	log     *slog.Logger
}

func (d *deps) onClose(f func() error) { d.closers = append(d.closers, f) }

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			d.log.Warn("close", "err", err)
		}
	}
	d.closers = nil
}

// serve runs logic until ctx ends, then stops gracefully.
func serve(ctx context.Context, fc logicconf.FileConfig, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, onListen listening) error {
	d := &deps{log: log}
	defer d.close()

	// Configuration errors first, before any connection is made.
	tc, err := fc.TLS.Load()
	if err != nil {
		return err
	}
	fc.Auth.Registerer = reg
	verifier, err := auth.New(fc.Auth, log)
	if err != nil {
		return err
	}
	if c, ok := verifier.(interface{ Close() error }); ok {
		d.onClose(c.Close)
	}

	rdb, err := app.NewRedis(&fc.Redis, "redis")
	if err != nil {
		return err
	}
	d.onClose(rdb.Close)
	if err := app.InstrumentRedis(rdb, reg); err != nil {
		return err
	}
	sessions, err := session.NewRedis(rdb, session.RedisConfig{Prefix: fc.Redis.Prefix})
	if err != nil {
		return err
	}
	seq, err := im.NewRedisSeqCounter(rdb, fc.Redis.Prefix, fc.SeqTTL)
	if err != nil {
		return err
	}
	dedup, err := im.NewRedisDedup(rdb, im.RedisDedupConfig{Prefix: fc.Redis.Prefix, Window: fc.Dedup.Window, ClaimTTL: fc.Dedup.ClaimTTL})
	if err != nil {
		return err
	}
	presence, err := im.NewRedisPresence(rdb, fc.Redis.Prefix)
	if err != nil {
		return err
	}
	st, err := app.OpenPostgres(ctx, fc.Postgres, "postgres", log, reg)
	if err != nil {
		return err
	}
	d.onClose(st.Close)
	producer, err := mq.NewKafkaProducer(fc.Kafka, log, reg)
	if err != nil {
		return err
	}
	d.onClose(producer.Close)

	var registry *discovery.Etcd
	gcfg := fc.IDGen.Generator()
	gcfg.Logger, gcfg.Registerer = log, reg
	if len(fc.Discovery.Endpoints) > 0 {
		fc.Discovery.Registerer = reg
		if registry, err = discovery.NewEtcd(fc.Discovery, log); err != nil {
			return err
		}
		d.onClose(registry.Close)
		leaser, closeEtcd, err := newLeaser(fc, log)
		if err != nil {
			return err
		}
		d.onClose(closeEtcd)
		gcfg.Leaser = leaser
	} else {
		log.Warn("discovery.endpoints is empty: no node list, no registration; idgen.worker_id is used as is",
			"worker_id", fc.IDGen.WorkerID)
	}
	ids, err := idgen.New(gcfg)
	if err != nil {
		return err
	}

	memberEvents, err := members.NewRedisEvents(rdb, fc.Redis.Prefix, log, reg)
	if err != nil {
		return err
	}
	ld := app.LogicDeps{
		Sessions: sessions, Verifier: verifier, Producer: producer, Store: st,
		Seq: seq, Dedup: dedup, IDs: ids, Presence: presence, TLS: tc, Logger: log, Registerer: reg, MemberEvents: memberEvents,
	}
	if registry != nil {
		ld.Watcher, ld.Registrar = registry, registry
	}
	srv, err := app.NewLogic(fc.LogicConfig, ld)
	if err != nil {
		return err
	}

	var stopping atomic.Bool
	adm, err := admin.New(fc.Admin, admin.Deps{Logger: log, Gatherer: gatherer, Ready: func(ctx context.Context) error {
		if stopping.Load() {
			return errStopping
		}
		if _, ok := ids.WorkerID(); !ok {
			return errNoWorker
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		if err := st.Pool().Ping(ctx); err != nil {
			return fmt.Errorf("postgres: %w", err)
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

	// The id generator and the admin server outlive the logic server: ids
	// are needed until the last in-flight send is done, and /readyz
	// reports "shutting down" while it drains.
	idsCtx, stopIDs := context.WithCancel(context.Background())
	defer stopIDs()
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := ids.Run(idsCtx); err != nil {
			log.Error("id generator", "err", err)
		}
	})
	wg.Go(func() {
		if err := adm.Run(adminCtx); err != nil {
			log.Error("admin server", "err", err)
		}
	})
	if onListen != nil {
		onListen(tcpAddr(srv.GRPCAddr()), tcpAddr(srv.HTTPAddr()), adminAddr)
	}
	unwatch := context.AfterFunc(ctx, func() { stopping.Store(true) })
	defer unwatch()
	err = srv.Run(ctx)
	stopping.Store(true)
	stopIDs()
	stopAdmin()
	return err
}

// newLeaser leases the id generator's worker id in etcd over its own
// client (the discovery registry keeps its client private).
func newLeaser(fc logicconf.FileConfig, log *slog.Logger) (*idgen.EtcdLeaser, func() error, error) {
	dial := fc.Discovery.DialTimeout
	if dial == 0 {
		dial = etcdDialTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: fc.Discovery.Endpoints, Username: fc.Discovery.Username, Password: fc.Discovery.Password,
		DialTimeout: dial, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("idgen: etcd client: %w", err)
	}
	l, err := idgen.NewEtcdLeaser(idgen.EtcdConfig{
		Client: cli, Prefix: fc.IDGen.Prefix, TTL: fc.IDGen.TTL, MaxWorkers: fc.IDGen.MaxWorkers, Logger: log,
	})
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	return l, cli.Close, nil
}

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}
