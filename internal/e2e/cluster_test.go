// Package e2e runs HubuIM in its distributed mode inside one test process:
// real Redis, etcd and PostgreSQL (from scripts/testenv.sh), the in-process
// Kafka-protocol broker, and logics, comets and a job composed exactly as
// cmd/logic, cmd/comet and cmd/job compose them (internal/app), each on its
// own loopback ports, talking over real gRPC, Kafka and etcd.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	logicpb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/comet"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/pkg/client"
)

const (
	// jwtSecret signs the test users' tokens (HS256 needs 32 bytes).
	jwtSecret   = "e2e-secret-0123456789abcdef012345"
	pushSecret  = "e2e-push-secret"
	waitTimeout = 20 * time.Second
	etcdTTL     = 2 * time.Second
)

func logger() *slog.Logger {
	if os.Getenv("HUBUIM_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func randomID(tb testing.TB) string {
	tb.Helper()
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// cluster is the shared infrastructure of one test and the nodes on it.
type cluster struct {
	t          *testing.T
	id         string
	redisAddr  string
	etcd       []string
	kafka      []string
	postgres   store.PostgresConfig
	log        *slog.Logger
	etcdPrefix string
	redisPfx   string

	mu     sync.Mutex
	logics []*logicNode
	comets map[string]*cometNode
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	id := randomID(t)
	c := &cluster{
		t: t, id: id,
		redisAddr:  testenv.RedisAddr(t),
		etcd:       testenv.EtcdEndpoints(t),
		kafka:      testenv.Kafka(t, 4, mq.TopicPush, mq.TopicMessage),
		postgres:   store.PostgresConfig{DSN: testenv.PostgresDSN(t), Schema: "e2e_" + id},
		log:        logger(),
		etcdPrefix: "/e2e-" + id,
		redisPfx:   "e2e:" + id + ":",
		comets:     map[string]*cometNode{},
	}
	return c
}

func (c *cluster) kafkaConfig() mq.KafkaConfig {
	return mq.KafkaConfig{
		Brokers: c.kafka, SessionTimeout: 2 * time.Second, HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout: 2 * time.Second, AutoCommitInterval: 100 * time.Millisecond,
	}
}

func (c *cluster) registry() *discovery.Etcd {
	c.t.Helper()
	r, err := discovery.NewEtcd(discovery.EtcdConfig{Endpoints: c.etcd, Prefix: c.etcdPrefix, TTL: etcdTTL, Coalesce: 20 * time.Millisecond}, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { r.Close() })
	return r
}

// redisClient returns a client of addr (the shared Redis unless a test
// runs its own).
func (c *cluster) redisClient(addr string) redis.UniversalClient {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	c.t.Cleanup(func() { rdb.Close() })
	return rdb
}

func (c *cluster) sessions(rdb redis.UniversalClient) *session.Redis {
	c.t.Helper()
	s, err := session.NewRedis(rdb, session.RedisConfig{Prefix: c.redisPfx})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *cluster) store() *store.Postgres {
	c.t.Helper()
	st, err := app.OpenPostgres(context.Background(), c.postgres, "postgres", c.log, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { st.Close() })
	return st
}

// run starts fn in the background; the returned stop cancels it and waits.
func (c *cluster) run(fn func(ctx context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				c.t.Logf("stopped with: %v", err)
			}
		})
	}
	c.t.Cleanup(stop)
	return stop
}

type logicNode struct {
	srv  *app.LogicServer
	stop func()
}

// addLogic starts a logic using Redis at redisAddr.
func (c *cluster) addLogic(redisAddr string) *logicNode {
	c.t.Helper()
	rdb := c.redisClient(redisAddr)
	seq, err := im.NewRedisSeqCounter(rdb, c.redisPfx, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	dedup, err := im.NewRedisDedup(rdb, im.RedisDedupConfig{Prefix: c.redisPfx})
	if err != nil {
		c.t.Fatal(err)
	}
	producer, err := mq.NewKafkaProducer(c.kafkaConfig(), c.log, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { producer.Close() })
	presence, err := im.NewRedisPresence(rdb, c.redisPfx)
	if err != nil {
		c.t.Fatal(err)
	}
	verifier, err := auth.New(auth.Config{Mode: auth.ModeJWT, JWT: auth.JWTConfig{Secret: jwtSecret}}, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	etcdCli, err := clientv3.New(clientv3.Config{Endpoints: c.etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { etcdCli.Close() })
	leaser, err := idgen.NewEtcdLeaser(idgen.EtcdConfig{Client: etcdCli, Prefix: c.etcdPrefix, TTL: etcdTTL, Logger: c.log})
	if err != nil {
		c.t.Fatal(err)
	}
	ids, err := idgen.New(idgen.Config{Leaser: leaser, Logger: c.log})
	if err != nil {
		c.t.Fatal(err)
	}
	stopIDs := c.run(ids.Run)
	waitFor(c.t, "a worker id", func() bool { _, ok := ids.WorkerID(); return ok })

	reg := c.registry()
	var cfg app.LogicConfig
	c.mu.Lock()
	cfg.ID = "logic-" + string(rune('a'+len(c.logics)))
	c.mu.Unlock()
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.AdvertiseHost = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Push.Secret = pushSecret
	cfg.Conn.OnlineCache = 100 * time.Millisecond
	cfg.IM.SettleTime = 5 * time.Second // a store attempt gets a third; the rest absorbs overrunning commits under -race
	srv, err := app.NewLogic(cfg, app.LogicDeps{
		Sessions: c.sessions(rdb), Verifier: verifier, Producer: producer, Store: c.store(),
		Seq: seq, Dedup: dedup, IDs: ids, Presence: presence, Watcher: reg, Registrar: reg, Logger: c.log.With("node", cfg.ID),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		c.t.Fatal(err)
	}
	stopSrv := c.run(srv.Run)
	n := &logicNode{srv: srv, stop: func() { stopSrv(); stopIDs() }}
	c.mu.Lock()
	c.logics = append(c.logics, n)
	c.mu.Unlock()
	return n
}

type cometNode struct {
	srv  *app.CometServer
	stop func()
	tcp  string
}

// addComet starts a comet that finds logic through etcd. tcpAddr may name
// a fixed port (to restart a comet where its clients expect it).
func (c *cluster) addComet(id, tcpAddr string) *cometNode {
	c.t.Helper()
	reg := c.registry()
	cc, err := grpc.NewClient("hubuim:///"+discovery.ServiceLogic,
		grpc.WithResolvers(discovery.NewResolverBuilder(reg, c.log)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	cfg := app.CometConfig{
		Config: comet.Config{
			ID: id, TCPAddr: tcpAddr, GRPCAddr: "127.0.0.1:0", DrainTimeout: 5 * time.Second,
			OnlineInterval: 200 * time.Millisecond, LogicHeartbeat: 300 * time.Millisecond,
		},
		AdvertiseHost: "127.0.0.1", RegisterInterval: 200 * time.Millisecond,
	}
	srv, err := app.NewComet(cfg, app.CometDeps{Logic: logicpb.NewLogicClient(cc), Registrar: reg, Logger: c.log.With("node", id)})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		c.t.Fatal(err)
	}
	n := &cometNode{srv: srv, stop: c.run(srv.Run), tcp: srv.Server().Addrs().TCP}
	c.mu.Lock()
	c.comets[id] = n
	c.mu.Unlock()
	return n
}

// addJob starts a job consuming both topics.
func (c *cluster) addJob() func() {
	c.t.Helper()
	cons, err := mq.NewKafkaConsumer(c.kafkaConfig(), app.JobTopics, "job-"+c.id, c.log, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cons.Close() })
	j, err := app.NewJob(app.JobConfig{}, app.JobDeps{
		Consumer: cons, Watcher: c.registry(), Devices: c.sessions(c.redisClient(c.redisAddr)), Members: c.store(),
		Logger: c.log.With("node", "job"),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return c.run(j.Run)
}

// dial connects user mid to the comets at addrs (tried in order).
func (c *cluster) dial(mid int64, room string, addrs ...string) *client.Client {
	c.t.Helper()
	return c.dialWith(mid, room, nil, addrs...)
}

// dialIM connects an IM device with known cursors. Its heartbeats are
// frequent so that lost sessions are re-created quickly.
func (c *cluster) dialIM(mid int64, cursors map[string]int64, addrs ...string) *client.Client {
	c.t.Helper()
	return c.dialWith(mid, "", cursors, addrs...)
}

func (c *cluster) dialWith(mid int64, room string, cursors map[string]int64, addrs ...string) *client.Client {
	c.t.Helper()
	tok, err := auth.SignHS256([]byte(jwtSecret), mid, "", time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	cl, err := client.New(client.Config{
		Addrs: addrs, Mid: mid, Token: tok, RoomID: room, Accepts: []int32{testOp}, Cursors: cursors,
		SendTimeout: time.Second, MaxResends: 60, BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		HeartbeatMin: 200 * time.Millisecond, HeartbeatMax: 400 * time.Millisecond, HeartbeatStep: 100 * time.Millisecond,
		HeartbeatTimeout: 5 * time.Second, EventBuffer: 8192, AckInterval: 100 * time.Millisecond,
		Logger: c.log.With("client", mid),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		c.t.Fatalf("mid %d connect to %v: %v", mid, addrs, err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	waitForWithin(tb, waitTimeout, what, cond)
}

func waitForWithin(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostPort(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return "127.0.0.1:" + port
}
