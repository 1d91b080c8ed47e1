package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/im"
	"github.com/hubuim/hubuim/internal/mq"
	"github.com/hubuim/hubuim/internal/store"
)

// Defaults of the infrastructure configs.
const (
	DefaultRedisTimeout = time.Second
	DefaultRedisPrefix  = "hubuim:"
	DefaultNotifyTopic  = "hubuim-notify"
)

// RedisConfig is a Redis connection (sessions, seq counters, dedup).
type RedisConfig struct {
	// Addrs: one address is a single server; several (or Cluster) is a
	// Redis Cluster. Required.
	Addrs    []string      `yaml:"addrs"`
	Cluster  bool          `yaml:"cluster"`
	Username string        `yaml:"username"`
	Password string        `yaml:"password"`
	DB       int           `yaml:"db"`
	Prefix   string        `yaml:"prefix"`  // key prefix; default "hubuim:"
	Timeout  time.Duration `yaml:"timeout"` // dial/read/write timeout; default 1s
}

// NewRedis opens a Redis client; field is the config path for errors.
func NewRedis(c *RedisConfig, field string) (redis.UniversalClient, error) {
	if len(c.Addrs) == 0 {
		return nil, config.Errorf(field+".addrs", "required")
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultRedisTimeout
	}
	if c.Prefix == "" {
		c.Prefix = DefaultRedisPrefix
	}
	if c.Cluster || len(c.Addrs) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password,
			DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: c.Addrs[0], Username: c.Username, Password: c.Password, DB: c.DB,
		DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout,
	}), nil
}

// OpenPostgres opens the PostgreSQL message store (and migrates it unless
// c.SkipMigrate); field is the config path for errors.
func OpenPostgres(ctx context.Context, c store.PostgresConfig, field string, log *slog.Logger, reg prometheus.Registerer) (*store.Postgres, error) {
	if c.DSN == "" {
		return nil, config.Errorf(field+".dsn", "required")
	}
	c.Logger, c.Registerer = log, reg
	return store.NewPostgres(ctx, c)
}

// NotifyConfig chooses where notifications for offline users go; both may
// be set, neither means none.
type NotifyConfig struct {
	// WebhookURL receives POSTs of {"notifications":[...]}.
	WebhookURL    string        `yaml:"webhook_url"`
	WebhookSecret string        `yaml:"webhook_secret"` // sent as a bearer token
	Timeout       time.Duration `yaml:"timeout"`        // default im.DefaultWebhookTimeout
	// Topic publishes one JSON record per notification (keyed by user).
	// Empty: no topic; "default" means "hubuim-notify".
	Topic string `yaml:"topic"`
}

// NewNotifier builds the notifier c asks for (nil when none).
func NewNotifier(c NotifyConfig, p mq.Producer) (im.Notifier, error) {
	var out im.MultiNotifier
	if c.WebhookURL != "" {
		w, err := im.NewWebhookNotifier(c.WebhookURL, c.WebhookSecret, c.Timeout)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if c.Topic != "" {
		if p == nil {
			return nil, errors.New("app: a notification topic needs a producer")
		}
		topic := c.Topic
		if topic == "default" {
			topic = DefaultNotifyTopic
		}
		t, err := im.NewTopicNotifier(p, topic)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	switch len(out) {
	case 0:
		return nil, nil
	case 1:
		return out[0], nil
	}
	return out, nil
}
