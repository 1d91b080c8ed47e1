// Package jobconf is the configuration file of the job service
// (configs/job.yaml, environment prefix HUBUIM_JOB). It is importable so
// that tools (deploy checks) load the same file with the same rules as
// cmd/job.
package jobconf

import (
	"fmt"
	"net"
	"strings"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// EnvPrefix prefixes the environment overrides (HUBUIM_JOB_KAFKA_BROKERS…).
const EnvPrefix = "HUBUIM_JOB"

// Defaults of the process configuration.
const (
	DefaultBroker        = "127.0.0.1:9092"
	DefaultGroup         = "hubuim-job"
	DiscoveryStatic      = "static"
	DiscoveryEtcd        = "etcd"
	DefaultDiscoveryType = DiscoveryStatic
)

// Config is the job process configuration (configs/job.yaml).
type Config struct {
	// Kafka is the queue; brokers default to ["127.0.0.1:9092"].
	Kafka mq.KafkaConfig `yaml:"kafka"`
	// Group is the Kafka consumer group. Default "hubuim-job".
	Group string `yaml:"group"`
	// Discovery finds the comets.
	Discovery DiscoveryConfig `yaml:"discovery"`
	// Job tunes the fan-out of goim pushes and IM messages.
	Job app.JobConfig `yaml:"job"`
	// Redis holds the sessions (which comet each device is on). Required.
	Redis app.RedisConfig `yaml:"redis"`
	// Postgres is the message store (group members). Required.
	Postgres store.PostgresConfig `yaml:"postgres"`
	// Notify hands messages for offline users to a webhook and/or a topic.
	Notify app.NotifyConfig `yaml:"notify"`
	// Admin serves /metrics, /healthz, /readyz. Addr defaults to ":3921".
	Admin admin.Config `yaml:"admin"`
}

// DiscoveryConfig selects how comets are found.
type DiscoveryConfig struct {
	// Type is "static" (default: the Comets list) or "etcd".
	Type string `yaml:"type"`
	// Comets are "id=host:port" (the comet's gRPC address), for "static".
	Comets []string `yaml:"comets"`
	// Etcd configures the "etcd" type.
	Etcd discovery.EtcdConfig `yaml:"etcd"`
}

// Load reads path (may be empty) and the environment, fills the
// defaults and validates what New functions do not.
func Load(path string) (Config, error) {
	var cfg Config
	if err := config.Load(path, EnvPrefix, &cfg); err != nil {
		return cfg, err
	}
	if len(cfg.Kafka.Brokers) == 0 {
		cfg.Kafka.Brokers = []string{DefaultBroker}
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Admin.Addr == "" {
		cfg.Admin.Addr = admin.JobAddr
	}
	if cfg.Discovery.Type == "" {
		cfg.Discovery.Type = DefaultDiscoveryType
	}
	switch cfg.Discovery.Type {
	case DiscoveryStatic:
		if _, err := StaticComets(cfg.Discovery.Comets); err != nil {
			return cfg, err
		}
	case DiscoveryEtcd:
	default:
		return cfg, config.Errorf("discovery.type", "%q is neither %q nor %q", cfg.Discovery.Type, DiscoveryStatic, DiscoveryEtcd)
	}
	return cfg, nil
}

// StaticComets parses "id=host:port" entries.
func StaticComets(list []string) ([]discovery.Instance, error) {
	out := make([]discovery.Instance, 0, len(list))
	seen := map[string]bool{}
	for i, s := range list {
		id, addr, ok := strings.Cut(strings.TrimSpace(s), "=")
		field := fmt.Sprintf("discovery.comets[%d]", i)
		if !ok || id == "" {
			return nil, config.Errorf(field, "%q is not id=host:port", s)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, config.Errorf(field, "%q: %v", s, err)
		}
		if seen[id] {
			return nil, config.Errorf(field, "comet id %q listed twice", id)
		}
		seen[id] = true
		out = append(out, discovery.Instance{ID: id, Service: discovery.ServiceComet, Addrs: map[string]string{discovery.AddrGRPC: addr}})
	}
	return out, nil
}
