// Package apptest builds HubuIM tiers for tests that compose processes:
// the command tests (cmd/logic, cmd/comet) and the distributed end-to-end
// tests (internal/e2e). An Env holds the real test services (Redis, etcd,
// PostgreSQL from internal/testenv, plus an in-process Kafka broker) with
// unique key prefixes and schema; StartLogic, StartComet and StartJob run
// tiers on it, each on its own loopback ports, composed through
// internal/app exactly like the commands compose them, and Dial connects
// SDK clients to the comets.
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
	"sync/atomic"
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
	"github.com/hubuim/hubuim/internal/im/members"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/testenv"
	"github.com/hubuim/hubuim/internal/testenv/waitfor"
	"github.com/hubuim/hubuim/pkg/client"
)

// Test settings.
const (
	// JWTSecret signs the test users' tokens (HS256 needs 32 bytes).
	JWTSecret = "apptest-secret-0123456789abcdef01"
	// PushSecret authenticates the push API.
	PushSecret = "apptest-push-secret"
	// WaitTimeout bounds every wait of these helpers.
	WaitTimeout = 30 * time.Second

	etcdTTL           = 2 * time.Second
	pollEvery         = 20 * time.Millisecond
	idLen             = 5
	readyTimeout      = 5 * time.Second
	defaultPartitions = 1
)

// The Env's clients.
const (
	redisTimeout    = time.Second
	redisMaxRetries = 1 // a stopped Redis (restart tests) fails fast
	etcdDialTimeout = 5 * time.Second
)

// The logics' settings.
const (
	shutdownTimeout = 5 * time.Second
	// settleTime: a store attempt gets a third; the rest absorbs
	// overrunning commits under -race.
	settleTime  = 5 * time.Second
	onlineCache = 100 * time.Millisecond // room counts seen soon
)

// The comets' settings: short intervals, so that tests see changes soon.
const (
	drainTimeout     = 5 * time.Second
	registerInterval = 200 * time.Millisecond
	onlineInterval   = 200 * time.Millisecond
	logicHeartbeat   = 300 * time.Millisecond
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

	logics         atomic.Int64  // logics started, for their ids
	memberCacheTTL time.Duration // MemberCacheTTL
}

type envOptions struct {
	partitions     int32
	redisAddr      string
	memberCacheTTL time.Duration
}

// EnvOption changes a default of NewEnv.
type EnvOption func(*envOptions)

// KafkaPartitions sets the partitions of the push and message topics
// (default 1).
func KafkaPartitions(n int32) EnvOption { return func(o *envOptions) { o.partitions = n } }

// MemberCacheTTL sets the logics' group member cache TTL (default the
// im default, 2 s).
func MemberCacheTTL(d time.Duration) EnvOption {
	return func(o *envOptions) { o.memberCacheTTL = d }
}

// RedisAt uses the Redis at addr (e.g. a testenv.StartRedis of the test,
// to restart it) instead of the shared one.
func RedisAt(addr string) EnvOption { return func(o *envOptions) { o.redisAddr = addr } }

// NewEnv reads the test services (skipping locally when unset) and starts
// a Kafka broker with the push and message topics.
func NewEnv(tb testing.TB, opts ...EnvOption) *Env {
	tb.Helper()
	o := envOptions{partitions: defaultPartitions}
	for _, opt := range opts {
		opt(&o)
	}
	if o.redisAddr == "" {
		o.redisAddr = testenv.RedisAddr(tb)
	}
	var b [idLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	return &Env{
		ID:          id,
		RedisAddr:   o.redisAddr,
		RedisPrefix: "apptest:" + id + ":",
		Etcd:        testenv.EtcdEndpoints(tb),
		EtcdPrefix:  "/apptest-" + id,
		Kafka:       testenv.Kafka(tb, o.partitions, mq.TopicPush, mq.TopicMessage),
		Postgres:    store.PostgresConfig{DSN: testenv.PostgresDSN(tb), Schema: "apptest_" + id},
		Log:         Logger(),

		memberCacheTTL: o.memberCacheTTL,
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
	rdb := redis.NewClient(&redis.Options{
		Addr: e.RedisAddr, DialTimeout: redisTimeout, ReadTimeout: redisTimeout, WriteTimeout: redisTimeout, MaxRetries: redisMaxRetries,
	})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// memberEvents returns the group membership change events of the Env's
// logics and jobs.
func (e *Env) memberEvents(tb testing.TB) *members.RedisEvents {
	tb.Helper()
	ev, err := members.NewRedisEvents(e.redis(tb), e.RedisPrefix, e.Log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

// Sessions returns the session store the Env's logics and job share.
func (e *Env) Sessions(tb testing.TB) *session.Redis {
	tb.Helper()
	s, err := session.NewRedis(e.redis(tb), session.RedisConfig{Prefix: e.RedisPrefix})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Store opens the Env's PostgreSQL schema (migrated), closed at cleanup.
func (e *Env) Store(tb testing.TB) *store.Postgres {
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

// StartJob runs a job consuming both topics that finds the comets in
// etcd; stop stops it and waits (also at cleanup).
func (e *Env) StartJob(tb testing.TB) (stop func()) {
	tb.Helper()
	cons, err := mq.NewKafkaConsumer(e.KafkaConfig(), app.JobTopics, "job-"+e.ID, e.Log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cons.Close() })
	j, err := app.NewJob(app.JobConfig{}, app.JobDeps{
		Consumer: cons, Watcher: e.Registry(tb), Devices: e.Sessions(tb), Members: e.Store(tb),
		MemberEvents: e.memberEvents(tb), Logger: e.Log.With("node", "job"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return Run(tb, j.Run)
}

// Logic is a running logic.
type Logic struct {
	*app.LogicServer
	// Stop stops it and waits (also at cleanup).
	Stop func()
}

// StartLogic runs a logic registered in etcd (JWT auth with JWTSecret,
// push API with PushSecret, presence on), on the Env's Redis; each gets
// its own id.
func (e *Env) StartLogic(tb testing.TB) *Logic {
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
	presence, err := im.NewRedisPresence(rdb, e.RedisPrefix)
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
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Etcd, DialTimeout: etcdDialTimeout, Logger: zap.NewNop()})
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
	cfg.ID = fmt.Sprintf("logic-%s-%d", e.ID, e.logics.Add(1))
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.AdvertiseHost = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	cfg.ShutdownTimeout = shutdownTimeout
	cfg.Push.Secret = PushSecret
	cfg.Conn.OnlineCache = onlineCache
	cfg.IM.SettleTime = settleTime
	cfg.IM.MemberCache.TTL = e.memberCacheTTL
	srv, err := app.NewLogic(cfg, app.LogicDeps{
		Sessions: e.Sessions(tb), Verifier: verifier, Producer: producer, Store: e.Store(tb),
		Seq: seq, Dedup: dedup, IDs: ids, Presence: presence, Watcher: reg, Registrar: reg, Logger: e.Log.With("node", cfg.ID),
		MemberEvents: e.memberEvents(tb),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	stopSrv := Run(tb, srv.Run)
	var once sync.Once
	stop := func() { once.Do(func() { stopSrv(); stopIDs() }) }
	tb.Cleanup(stop)
	return &Logic{LogicServer: srv, Stop: stop}
}

// Comet is a running comet.
type Comet struct {
	*app.CometServer
	// ID is the comet's server id.
	ID string
	// TCP is the address its clients dial.
	TCP string
	// Stop drains it and waits (also at cleanup).
	Stop func()

	env *Env
}

type cometOptions struct {
	tcpAddr string
}

// CometOption changes a default of StartComet.
type CometOption func(*cometOptions)

// CometTCPAddr makes the comet listen for clients at addr (default
// 127.0.0.1:0).
func CometTCPAddr(addr string) CometOption { return func(o *cometOptions) { o.tcpAddr = addr } }

// StartComet runs a comet that finds logic through etcd and registers
// there.
func (e *Env) StartComet(tb testing.TB, id string, opts ...CometOption) *Comet {
	tb.Helper()
	o := cometOptions{tcpAddr: "127.0.0.1:0"}
	for _, opt := range opts {
		opt(&o)
	}
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
		Config: comet.Config{
			ID: id, TCPAddr: o.tcpAddr, GRPCAddr: "127.0.0.1:0", DrainTimeout: drainTimeout,
			OnlineInterval: onlineInterval, LogicHeartbeat: logicHeartbeat,
		},
		AdvertiseHost: "127.0.0.1", RegisterInterval: registerInterval,
	}, app.CometDeps{Logic: logicpb.NewLogicClient(cc), Registrar: reg, Logger: e.Log.With("node", id)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	return &Comet{CometServer: srv, ID: id, TCP: srv.Server().Addrs().TCP, Stop: Run(tb, srv.Run), env: e}
}

// Restart stops the comet and starts another with its id at its TCP
// address, where its clients expect it.
func (c *Comet) Restart(tb testing.TB) *Comet {
	tb.Helper()
	c.Stop()
	return c.env.StartComet(tb, c.ID, CometTCPAddr(c.TCP))
}

// DialOption changes a default of Dial.
type DialOption func(*client.Config)

// Room enters the room (e.g. "live://1") at connect.
func Room(id string) DialOption { return func(c *client.Config) { c.RoomID = id } }

// Cursors starts the client's sync from known per-conversation cursors.
func Cursors(cursors map[string]int64) DialOption {
	return func(c *client.Config) { c.Cursors = cursors }
}

// Accepts subscribes the client to push operations.
func Accepts(ops ...int32) DialOption { return func(c *client.Config) { c.Accepts = ops } }

// Fallback adds comet addresses tried after the first one.
func Fallback(addrs ...string) DialOption {
	return func(c *client.Config) { c.Addrs = append(c.Addrs, addrs...) }
}

// Dial connects user mid (token signed with JWTSecret) to the comet at
// addr. Its heartbeats are frequent and its resends many, so that a lost
// session is re-created quickly and a send outlives a restart.
func Dial(tb testing.TB, mid int64, addr string, opts ...DialOption) *client.Client {
	tb.Helper()
	tok, err := auth.SignHS256([]byte(JWTSecret), mid, "", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := client.Config{
		Addrs: []string{addr}, Mid: mid, Token: tok,
		SendTimeout: time.Second, MaxResends: 60, BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		HeartbeatMin: 200 * time.Millisecond, HeartbeatMax: 400 * time.Millisecond, HeartbeatStep: 100 * time.Millisecond,
		HeartbeatTimeout: 5 * time.Second, EventBuffer: 8192, AckInterval: 100 * time.Millisecond,
		Logger: Logger().With("client", mid),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	cl, err := client.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		tb.Fatalf("mid %d connect to %v: %v", mid, cfg.Addrs, err)
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

// Eventually polls cond until it holds (true) or d passes (false).
func Eventually(d time.Duration, cond func() bool) bool {
	return waitfor.Poll(d, cond)
}

// WaitFor polls cond until it holds or WaitTimeout passes.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	WaitForWithin(tb, WaitTimeout, what, cond)
}

// WaitForWithin polls cond until it holds or d passes.
func WaitForWithin(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Eventually(d, cond) {
		tb.Fatalf("timed out waiting for %s", what)
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
