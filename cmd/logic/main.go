// Command logic runs the HubuIM logic tier: the Logic gRPC service for
// comets, the business push API over gRPC and HTTP (goim-compatible), and
// the node list for clients.
//
//	logic -config configs/logic.yaml
//
// Every setting can be overridden by HUBUIM_LOGIC_<YAML_PATH> environment
// variables (e.g. HUBUIM_LOGIC_PUSH_SECRET, HUBUIM_LOGIC_REDIS_ADDRS).
// SIGINT or SIGTERM deregisters from discovery, stops accepting and
// finishes in-flight requests within shutdown_timeout.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/logic/session"
	"github.com/hubuim/hubuim/internal/mq"
)

// envPrefix prefixes every environment override.
const envPrefix = "HUBUIM_LOGIC"

// Defaults of fileConfig (also written in configs/logic.yaml).
const (
	defaultHTTPAddr        = ":3111"
	defaultGRPCAddr        = ":3119"
	defaultAdminAddr       = ":3112"
	defaultShutdownTimeout = 15 * time.Second
	defaultReadTimeout     = 10 * time.Second
	defaultRedisTimeout    = time.Second
)

// fileConfig is configs/logic.yaml.
type fileConfig struct {
	ID              string        `yaml:"id"`               // instance id; default hostname
	HTTPAddr        string        `yaml:"http_addr"`        // default :3111
	GRPCAddr        string        `yaml:"grpc_addr"`        // default :3119
	AdvertiseHost   string        `yaml:"advertise_host"`   // host registered in discovery; default hostname
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // default 15s

	TLS       tlsConfig            `yaml:"tls"`
	Admin     admin.Config         `yaml:"admin"`
	Redis     redisConfig          `yaml:"redis"`
	Auth      auth.Config          `yaml:"auth"`
	Kafka     mq.KafkaConfig       `yaml:"kafka"`
	Discovery discovery.EtcdConfig `yaml:"discovery"`

	Conn  logic.ConnConfig  `yaml:"conn"`
	Push  logic.PushConfig  `yaml:"push"`
	Nodes logic.NodesConfig `yaml:"nodes"`
}

type redisConfig struct {
	// Addrs: one address = a single server; several or Cluster = Redis
	// Cluster. Required.
	Addrs    []string      `yaml:"addrs"`
	Cluster  bool          `yaml:"cluster"`
	Username string        `yaml:"username"`
	Password string        `yaml:"password"`
	DB       int           `yaml:"db"`
	Prefix   string        `yaml:"prefix"`  // key prefix; default "hubuim:"
	Timeout  time.Duration `yaml:"timeout"` // dial/read/write timeout; default 1s
}

// tlsConfig secures the gRPC and HTTP listeners (not the admin port).
type tlsConfig struct {
	// CertFile and KeyFile: the server certificate; empty = plaintext.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile turns on mutual TLS: every client (comets and business
	// backends alike) must present a certificate signed by this CA.
	ClientCAFile string `yaml:"client_ca_file"`
}

// load returns nil when TLS is off.
func (c tlsConfig) load() (*tls.Config, error) {
	if c.CertFile == "" && c.KeyFile == "" {
		if c.ClientCAFile != "" {
			return nil, config.Errorf("tls.client_ca_file", "needs tls.cert_file and tls.key_file")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, config.Errorf("tls.cert_file", "%v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, config.Errorf("tls.client_ca_file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, config.Errorf("tls.client_ca_file", "no PEM certificate found")
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logic:", err)
		os.Exit(1)
	}
}

func loadConfig(path string) (fileConfig, error) {
	var fc fileConfig
	if err := config.Load(path, envPrefix, &fc); err != nil {
		return fc, err
	}
	host, _ := os.Hostname()
	if fc.ID == "" {
		fc.ID = host
	}
	if fc.AdvertiseHost == "" {
		fc.AdvertiseHost = host
	}
	if fc.HTTPAddr == "" {
		fc.HTTPAddr = defaultHTTPAddr
	}
	if fc.GRPCAddr == "" {
		fc.GRPCAddr = defaultGRPCAddr
	}
	if fc.Admin.Addr == "" {
		fc.Admin.Addr = defaultAdminAddr
	}
	if fc.ShutdownTimeout == 0 {
		fc.ShutdownTimeout = defaultShutdownTimeout
	}
	if fc.Redis.Timeout == 0 {
		fc.Redis.Timeout = defaultRedisTimeout
	}
	if len(fc.Redis.Addrs) == 0 {
		return fc, config.Errorf("redis.addrs", "required")
	}
	if len(fc.Kafka.Brokers) == 0 {
		return fc, config.Errorf("kafka.brokers", "required")
	}
	return fc, nil
}

func newRedis(c redisConfig) redis.UniversalClient {
	if c.Cluster || len(c.Addrs) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password,
			DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout,
		})
	}
	return redis.NewClient(&redis.Options{
		Addr: c.Addrs[0], Username: c.Username, Password: c.Password, DB: c.DB,
		DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout,
	})
}

// newProducer builds the push-topic producer.
func newProducer(c mq.KafkaConfig, log *slog.Logger, reg prometheus.Registerer) (mq.Producer, error) {
	return mq.NewKafkaProducer(c, log, reg)
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}

func run() error {
	path := flag.String("config", "", "YAML config file (empty: defaults and environment only)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "logic")
	fc, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, fc, log, prometheus.DefaultRegisterer, prometheus.DefaultGatherer, nil)
}

// listening reports the bound addresses once serving (tests use ":0").
type listening func(grpcAddr, httpAddr net.Addr)

// serve runs logic until ctx ends, then stops gracefully.
func serve(ctx context.Context, fc fileConfig, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, onListen listening) error {
	var err error

	rdb := newRedis(fc.Redis)
	defer rdb.Close()
	store, err := session.NewRedis(rdb, session.RedisConfig{Prefix: fc.Redis.Prefix})
	if err != nil {
		return config.Errorf("redis.prefix", "%v", err)
	}
	fc.Auth.Registerer = reg
	verifier, err := auth.New(fc.Auth, log)
	if err != nil {
		return err
	}
	producer, err := newProducer(fc.Kafka, log, reg)
	if err != nil {
		return err
	}
	defer producer.Close()

	var watcher discovery.Watcher
	var registry *discovery.Etcd
	if len(fc.Discovery.Endpoints) > 0 {
		fc.Discovery.Registerer = reg
		if registry, err = discovery.NewEtcd(fc.Discovery, log); err != nil {
			return err
		}
		defer registry.Close()
		watcher = registry
	} else {
		log.Warn("discovery.endpoints is empty: no node list, no registration")
	}

	l, err := logic.New(logic.Config{Conn: fc.Conn, Push: fc.Push, Nodes: fc.Nodes}, logic.Deps{
		Store: store, Verifier: verifier, Producer: producer, Watcher: watcher, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer l.Close()

	tc, err := fc.TLS.load()
	if err != nil {
		return err
	}
	var gopts []grpc.ServerOption
	if tc != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(gopts...)
	l.RegisterGRPC(gs)
	health := discovery.RegisterHealth(gs)
	gl, err := net.Listen("tcp", fc.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen grpc_addr %s: %w", fc.GRPCAddr, err)
	}
	hs := &http.Server{Addr: fc.HTTPAddr, Handler: l.HTTPHandler(), ReadHeaderTimeout: defaultReadTimeout, ReadTimeout: defaultReadTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	hl, err := net.Listen("tcp", fc.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen http_addr %s: %w", fc.HTTPAddr, err)
	}
	if tc != nil {
		hl = tls.NewListener(hl, tc)
	}
	adm, err := admin.New(fc.Admin, admin.Deps{Logger: log, Gatherer: gatherer, Ready: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() { errc <- l.Run(ctx) })
	wg.Go(func() { errc <- adm.Run(ctx) })
	wg.Go(func() {
		if err := gs.Serve(gl); err != nil {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	})
	wg.Go(func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	log.Info("logic serving", "id", fc.ID, "grpc", gl.Addr().String(), "http", hl.Addr().String())
	if onListen != nil {
		onListen(gl.Addr(), hl.Addr())
	}

	var registration discovery.Registration
	if registry != nil {
		registration, err = registry.Register(ctx, discovery.Instance{
			ID: fc.ID, Service: discovery.ServiceLogic,
			Addrs: map[string]string{
				discovery.AddrGRPC: net.JoinHostPort(fc.AdvertiseHost, portOf(fc.GRPCAddr)),
				discovery.AddrHTTP: net.JoinHostPort(fc.AdvertiseHost, portOf(fc.HTTPAddr)),
			},
		})
		if err != nil {
			log.Error("register in discovery", "err", err)
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("logic stopping after an error", "err", runErr)
	}
	stop()

	// Graceful stop: leave discovery, fail health checks, finish in-flight
	// requests, then force whatever is left at the deadline.
	sctx, cancel := context.WithTimeout(context.Background(), fc.ShutdownTimeout)
	defer cancel()
	health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if registration != nil {
		if err := registration.Close(sctx); err != nil {
			log.Warn("deregister", "err", err)
		}
	}
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		gs.Stop()
	}
	_ = l.Close()
	wg.Wait()
	log.Info("logic stopped")
	return runErr
}
