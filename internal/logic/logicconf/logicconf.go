// Package logicconf is the configuration file of the logic service
// (configs/logic.yaml, environment prefix HUBUIM_LOGIC): app.LogicConfig
// (listeners, conn, push, nodes, im, seq_jump) inline, plus the sections
// naming logic's dependencies: TLS, admin, Redis, PostgreSQL, auth, Kafka,
// etcd discovery, the id generator and the dedup window. It lives outside
// cmd/logic so that tools (deploy checks) load the same file with the same
// rules.
package logicconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"time"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/idgen"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// EnvPrefix prefixes every environment override.
const EnvPrefix = "HUBUIM_LOGIC"

// Defaults of FileConfig (also written in configs/logic.yaml).
const (
	DefaultHTTPAddr        = app.DefaultLogicHTTPAddr
	DefaultGRPCAddr        = app.DefaultLogicGRPCAddr
	DefaultAdminAddr       = admin.LogicAddr
	DefaultShutdownTimeout = app.DefaultShutdownTimeout
	DefaultRedisTimeout    = app.DefaultRedisTimeout
	DefaultAuthMode        = auth.ModeJWT
)

// FileConfig is configs/logic.yaml.
type FileConfig struct {
	// LogicConfig: id, http_addr, grpc_addr, advertise_host,
	// shutdown_timeout, conn, push, nodes, im, seq_jump.
	app.LogicConfig `yaml:",inline"`

	TLS   TLSConfig    `yaml:"tls"`
	Admin admin.Config `yaml:"admin"` // addr default admin.LogicAddr (":3911")
	// Redis holds the sessions, the seq counters and the dedup entries
	// (one client, one key prefix). Required.
	Redis app.RedisConfig `yaml:"redis"`
	// Postgres is the message store. dsn is required.
	Postgres store.PostgresConfig `yaml:"postgres"`
	// Auth verifies connections and /im/ API calls. Mode default "jwt".
	Auth auth.Config `yaml:"auth"`
	// Kafka publishes the push topic and the IM message topic. Required.
	Kafka mq.KafkaConfig `yaml:"kafka"`
	// Discovery: etcd for the node list, logic's registration and the
	// id generator's worker id lease. Empty endpoints: none of them
	// (idgen.worker_id is used as is).
	Discovery discovery.EtcdConfig `yaml:"discovery"`
	IDGen     IDGenConfig          `yaml:"idgen"`
	Dedup     DedupConfig          `yaml:"dedup"`
	// SeqTTL is how long an idle conversation's seq counter stays in
	// Redis. Default im.DefaultSeqTTL (168h).
	SeqTTL time.Duration `yaml:"seq_ttl"`
}

// IDGenConfig configures message id generation.
type IDGenConfig struct {
	// WorkerID is the fixed worker id (0..1023) used when discovery has no
	// endpoints; every logic replica must then be given its own. Default 0.
	WorkerID int64 `yaml:"worker_id"`
	// Prefix of the worker id lease keys in etcd
	// (<prefix>/idgen/worker/<n>). Default "/hubuim".
	Prefix string `yaml:"prefix"`
	// TTL of the worker id lease. Default 10s.
	TTL time.Duration `yaml:"ttl"`
	// MaxWorkers limits the lease to ids 0..max_workers-1. Default 1024.
	MaxWorkers int64 `yaml:"max_workers"`
	// MaxClockBackward is the largest clock step back that is waited out.
	// Default 5ms.
	MaxClockBackward time.Duration `yaml:"max_clock_backward"`
	// RetryInterval between failed lease attempts. Default 1s.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// MaxClockSkew bounds the clock difference between logic replicas: a
	// worker id taken over from another replica is used only after this
	// long (idgen.Config.MaxClockSkew). Default 500ms.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// Generator is the idgen.Config part (Leaser, Logger, Registerer unset).
func (c IDGenConfig) Generator() idgen.Config {
	return idgen.Config{WorkerID: c.WorkerID, MaxClockBackward: c.MaxClockBackward, RetryInterval: c.RetryInterval, MaxClockSkew: c.MaxClockSkew}
}

// DedupConfig is the client message id dedup in Redis.
type DedupConfig struct {
	// Window is how long a client message id is remembered. Default 24h.
	Window time.Duration `yaml:"window"`
	// ClaimTTL bounds a send in progress holding its id. Default 10s.
	ClaimTTL time.Duration `yaml:"claim_ttl"`
}

// TLSConfig secures the gRPC and HTTP listeners (not the admin port).
type TLSConfig struct {
	// CertFile and KeyFile: the server certificate; empty = plaintext.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile turns on mutual TLS: every client (comets and business
	// backends alike) must present a certificate signed by this CA.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Load returns the server TLS configuration, nil when TLS is off.
func (c TLSConfig) Load() (*tls.Config, error) {
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

// Load reads the file at path (empty: defaults and environment only),
// applies HUBUIM_LOGIC_* overrides, fills the defaults of this level and
// checks the required fields. The sections' own defaults and validation
// happen in their constructors (app.NewLogic, auth.New, ...).
func Load(path string) (FileConfig, error) {
	var fc FileConfig
	if err := config.Load(path, EnvPrefix, &fc); err != nil {
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
		fc.HTTPAddr = DefaultHTTPAddr
	}
	if fc.GRPCAddr == "" {
		fc.GRPCAddr = DefaultGRPCAddr
	}
	if fc.Admin.Addr == "" {
		fc.Admin.Addr = DefaultAdminAddr
	}
	if fc.ShutdownTimeout == 0 {
		fc.ShutdownTimeout = DefaultShutdownTimeout
	}
	if fc.Redis.Timeout == 0 {
		fc.Redis.Timeout = DefaultRedisTimeout
	}
	if fc.Redis.Prefix == "" {
		fc.Redis.Prefix = app.DefaultRedisPrefix
	}
	if fc.Auth.Mode == "" {
		fc.Auth.Mode = DefaultAuthMode
	}
	if fc.IDGen.WorkerID < 0 || fc.IDGen.WorkerID > idgen.MaxWorkerID {
		return fc, config.Errorf("idgen.worker_id", "%d outside 0..%d", fc.IDGen.WorkerID, idgen.MaxWorkerID)
	}
	if fc.SeqTTL < 0 {
		return fc, config.Errorf("seq_ttl", "must not be negative")
	}
	if len(fc.Redis.Addrs) == 0 {
		return fc, config.Errorf("redis.addrs", "required")
	}
	if len(fc.Kafka.Brokers) == 0 {
		return fc, config.Errorf("kafka.brokers", "required")
	}
	if fc.Postgres.DSN == "" {
		return fc, config.Errorf("postgres.dsn", "required")
	}
	return fc, nil
}
