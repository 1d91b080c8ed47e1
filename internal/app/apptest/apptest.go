// Package apptest builds HubuIM tiers for process-wiring tests of the
// commands (cmd/logic, cmd/comet): a shared Env on the real test services
// (Redis, etcd, PostgreSQL from internal/testenv, plus an in-process Kafka
// broker) with unique key prefixes and schema, and the tiers a command
// under test needs around it, composed through internal/app exactly like
// the commands compose them.
package apptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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

// Test settings.
const (
	// JWTSecret signs the test users' tokens (HS256 needs 32 bytes).
	JWTSecret = "apptest-secret-0123456789abcdef01"
	// PushSecret authenticates the push API.
	PushSecret = "apptest-push-secret"
	// WaitTimeout bounds every wait of these helpers.
	WaitTimeout  = 30 * time.Second
	etcdTTL      = 2 * time.Second
	pollEvery    = 20 * time.Millisecond
	idLen        = 5
	readyTimeout = 5 * time.Second
)

// Env is the infrastructure of one test, isolated by unique prefixes.
type Env struct {
	ID          string
	RedisAddr   string
	RedisPrefix string
	Etcd        []string
	EtcdPrefix  string
	Kafka       []string
	Postgres    store.PostgresConfig
	Log         *slog.Logger
}

// NewEnv reads the test services (skipping locally when unset) and starts
// a Kafka broker with the push and message topics.
func NewEnv(tb testing.TB) *Env {
	tb.Helper()
	var b [idLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	return &Env{
		ID:          id,
		RedisAddr:   testenv.RedisAddr(tb),
		RedisPrefix: "apptest:" + id + ":",
		Etcd:        testenv.EtcdEndpoints(tb),
		EtcdPrefix:  "/apptest-" + id,
		Kafka:       testenv.Kafka(tb, 1, mq.TopicPush, mq.TopicMessage),
		Postgres:    store.PostgresConfig{DSN: testenv.PostgresDSN(tb), Schema: "apptest_" + id},
		Log:         Logger(),
	}
}

// Logger discards unless HUBUIM_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("HUBUIM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// DiscoveryPrefix is the etcd prefix of the discovery records.
func (e *Env) DiscoveryPrefix() string { return e.EtcdPrefix + "/discovery" }

// KafkaConfig has short group timings for tests.
func (e *Env) KafkaConfig() mq.KafkaConfig {
	return mq.KafkaConfig{
		Brokers: e.Kafka, SessionTimeout: 2 * time.Second, HeartbeatInterval: 300 * time.Millisecond,
		RebalanceTimeout: 2 * time.Second, AutoCommitInterval: 100 * time.Millisecond,
	}
}

// Registry returns an etcd registry on the Env's discovery prefix.
func (e *Env) Registry(tb testing.TB) *discovery.Etcd {
	tb.Helper()
	r, err := discovery.NewEtcd(discovery.EtcdConfig{Endpoints: e.Etcd, Prefix: e.DiscoveryPrefix(), TTL: etcdTTL, Coalesce: pollEvery}, e.Log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

func (e *Env) redis(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.RedisAddr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

func (e *Env) sessions(tb testing.TB, rdb redis.UniversalClient) *session.Redis {
	tb.Helper()
	s, err := session.NewRedis(rdb, session.RedisConfig{Prefix: e.RedisPrefix})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (e *Env) store(tb testing.TB) *store.Postgres {
	tb.Helper()
	st, err := app.OpenPostgres(context.Background(), e.Postgres, "postgres", e.Log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// Run starts fn in the background; the returned stop cancels it and
// waits (also at cleanup).
func Run(tb testing.TB, fn func(ctx context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Logf("stopped with: %v", err)
				}
			case <-time.After(WaitTimeout):
				tb.Error("did not stop")
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// StartJob runs a job that finds the comets in etcd.
func (e *Env) StartJob(tb testing.TB) {
	tb.Helper()
	cons, err := mq.NewKafkaConsumer(e.KafkaConfig(), app.JobTopics, "job-"+e.ID, e.Log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cons.Close() })
	j, err := app.NewJob(app.JobConfig{}, app.JobDeps{
		Consumer: cons, Watcher: e.Registry(tb), Devices: e.sessions(tb, e.redis(tb)), Members: e.store(tb),
		Logger: e.Log.With("node", "job"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	Run(tb, j.Run)
}

// StartLogic runs a logic registered in etcd (JWT auth with JWTSecret).
func (e *Env) StartLogic(tb testing.TB) *app.LogicServer {
	tb.Helper()
	rdb := e.redis(tb)
	seq, err := im.NewRedisSeqCounter(rdb, e.RedisPrefix, 0)
	if err != nil {
		tb.Fatal(err)
	}
	dedup, err := im.NewRedisDedup(rdb, im.RedisDedupConfig{Prefix: e.RedisPrefix})
	if err != nil {
		tb.Fatal(err)
	}
	producer, err := mq.NewKafkaProducer(e.KafkaConfig(), e.Log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { producer.Close() })
	verifier, err := auth.New(auth.Config{Mode: auth.ModeJWT, JWT: auth.JWTConfig{Secret: JWTSecret}}, e.Log)
	if err != nil {
		tb.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	leaser, err := idgen.NewEtcdLeaser(idgen.EtcdConfig{Client: cli, Prefix: e.EtcdPrefix, TTL: etcdTTL, Logger: e.Log})
	if err != nil {
		tb.Fatal(err)
	}
	ids, err := idgen.New(idgen.Config{Leaser: leaser, Logger: e.Log})
	if err != nil {
		tb.Fatal(err)
	}
	stopIDs := Run(tb, ids.Run)
	WaitFor(tb, "a worker id", func() bool { _, ok := ids.WorkerID(); return ok })
	reg := e.Registry(tb)
	var cfg app.LogicConfig
	cfg.ID = "logic-" + e.ID
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.AdvertiseHost = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Push.Secret = PushSecret
	srv, err := app.NewLogic(cfg, app.LogicDeps{
		Sessions: e.sessions(tb, rdb), Verifier: verifier, Producer: producer, Store: e.store(tb),
		Seq: seq, Dedup: dedup, IDs: ids, Watcher: reg, Registrar: reg, Logger: e.Log.With("node", cfg.ID),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	stopSrv := Run(tb, srv.Run)
	tb.Cleanup(func() { stopSrv(); stopIDs() })
	return srv
}

// StartComet runs a comet that finds logic through etcd and registers
// there; it returns the comet's TCP address.
func (e *Env) StartComet(tb testing.TB, id string) string {
	tb.Helper()
	reg := e.Registry(tb)
	cc, err := grpc.NewClient(discovery.Scheme+":///"+discovery.ServiceLogic,
		grpc.WithResolvers(discovery.NewResolverBuilder(reg, e.Log)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	srv, err := app.NewComet(app.CometConfig{
		Config:        comet.Config{ID: id, TCPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", DrainTimeout: 5 * time.Second},
		AdvertiseHost: "127.0.0.1", RegisterInterval: 200 * time.Millisecond,
	}, app.CometDeps{Logic: logicpb.NewLogicClient(cc), Registrar: reg, Logger: e.Log.With("node", id)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	Run(tb, srv.Run)
	return srv.Server().Addrs().TCP
}

// Dial connects user mid (token signed with JWTSecret) to the comet at
// addr.
func Dial(tb testing.TB, mid int64, addr string) *client.Client {
	tb.Helper()
	tok, err := auth.SignHS256([]byte(JWTSecret), mid, "", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	cl, err := client.New(client.Config{
		Addrs: []string{addr}, Mid: mid, Token: tok, SendTimeout: 2 * time.Second, MaxResends: 10,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		tb.Fatalf("mid %d connect to %s: %v", mid, addr, err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// SendAndReceive sends a 1:1 message from one client to the other and
// waits for the recipient to receive it.
func SendAndReceive(tb testing.TB, from, to *client.Client) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	payload := []byte(fmt.Sprintf("hello %d from %d", to.Mid(), from.Mid()))
	ack, err := from.Send(ctx, client.User(to.Mid()), 0, payload)
	if err != nil {
		tb.Fatalf("send: %v", err)
	}
	if ack.Seq <= 0 || ack.MsgId == 0 {
		tb.Fatalf("ack = %v", ack)
	}
	for {
		select {
		case ev := <-to.Events():
			m, ok := ev.(client.Message)
			if !ok || m.Sender != from.Mid() {
				continue
			}
			if string(m.Payload) != string(payload) || m.Seq != ack.Seq || m.MsgId != ack.MsgId {
				tb.Fatalf("received %v, sent %q acked %v", m.Msg, payload, ack)
			}
			return
		case <-ctx.Done():
			tb.Fatal("message not received")
		}
	}
}

// WaitFor polls cond until it holds or WaitTimeout passes.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pollEvery)
	}
}

// ReadyStatus is the HTTP status of GET http://<adminAddr>/readyz (0 when
// the request fails).
func ReadyStatus(adminAddr string) int {
	c := &http.Client{Timeout: readyTimeout}
	resp, err := c.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// WaitReady polls /readyz until it answers 200.
func WaitReady(tb testing.TB, adminAddr string) {
	tb.Helper()
	WaitFor(tb, "/readyz 200 at "+adminAddr, func() bool { return ReadyStatus(adminAddr) == http.StatusOK })
}
