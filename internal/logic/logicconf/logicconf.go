// Package logicconf is the configuration file of the logic service
// (configs/logic.yaml, environment prefix HUBUIM_LOGIC): the listeners,
// TLS, Redis, auth, Kafka and discovery sections around logic.Config. It
// lives outside cmd/logic so that tools (deploy checks) can load the same
// file with the same rules.
package logicconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
	"github.com/hubuim/hubuim/internal/mq"
)

// EnvPrefix prefixes every environment override.
const EnvPrefix = "HUBUIM_LOGIC"

// Defaults of FileConfig (also written in configs/logic.yaml).
const (
	DefaultHTTPAddr        = ":3111"
	DefaultGRPCAddr        = ":3119"
	DefaultAdminAddr       = ":3112"
	DefaultShutdownTimeout = 15 * time.Second
	DefaultRedisTimeout    = time.Second
)

// FileConfig is configs/logic.yaml.
type FileConfig struct {
	ID              string        `yaml:"id"`               // instance id; default hostname
	HTTPAddr        string        `yaml:"http_addr"`        // default :3111
	GRPCAddr        string        `yaml:"grpc_addr"`        // default :3119
	AdvertiseHost   string        `yaml:"advertise_host"`   // host registered in discovery; default hostname
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // default 15s

	TLS       TLSConfig            `yaml:"tls"`
	Admin     admin.Config         `yaml:"admin"` // addr default :3112
	Redis     RedisConfig          `yaml:"redis"`
	Auth      auth.Config          `yaml:"auth"`
	Kafka     mq.KafkaConfig       `yaml:"kafka"`
	Discovery discovery.EtcdConfig `yaml:"discovery"`

	Conn  logic.ConnConfig  `yaml:"conn"`
	Push  logic.PushConfig  `yaml:"push"`
	Nodes logic.NodesConfig `yaml:"nodes"`
}

// Logic is the logic.Config part.
func (c FileConfig) Logic() logic.Config {
	return logic.Config{Conn: c.Conn, Push: c.Push, Nodes: c.Nodes}
}

// RedisConfig is the session store's Redis.
type RedisConfig struct {
	// Addrs: one address = a single server; several (or Cluster) = Redis
	// Cluster. Required.
	Addrs    []string      `yaml:"addrs"`
	Cluster  bool          `yaml:"cluster"`
	Username string        `yaml:"username"`
	Password string        `yaml:"password"`
	DB       int           `yaml:"db"`
	Prefix   string        `yaml:"prefix"`  // key prefix; default "hubuim:"
	Timeout  time.Duration `yaml:"timeout"` // dial/read/write timeout; default 1s
}

// NewClient returns a single-server or cluster client.
func (c RedisConfig) NewClient() redis.UniversalClient {
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
// happen in their constructors (logic.New, auth.New, ...).
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
	if len(fc.Redis.Addrs) == 0 {
		return fc, config.Errorf("redis.addrs", "required")
	}
	if len(fc.Kafka.Brokers) == 0 {
		return fc, config.Errorf("kafka.brokers", "required")
	}
	return fc, nil
}
