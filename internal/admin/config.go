package admin

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/hubuim/hubuim/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Default admin addresses of the services (README.md, "Ports"). A service
// sets its own default in its config before calling New; an empty Addr
// falls back to DefaultAddr, the standalone process's address.
const (
	DefaultAddr = ":3900"
	CometAddr   = ":3901"
	LogicAddr   = ":3911"
	JobAddr     = ":3921"
)

// Defaults of the Config fields.
const (
	DefaultReadyTimeout      = 2 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultShutdownTimeout   = 5 * time.Second
)

// Config configures the admin HTTP server. The zero value is usable.
type Config struct {
	// Addr is the listen address, host:port. Default DefaultAddr (":3900");
	// ":0" picks a free port (see Server.Listen).
	Addr string `yaml:"addr"`
	// Pprof serves /debug/pprof/* when true. Default false: profiles expose
	// internals and cost CPU, so they are switched on deliberately.
	Pprof bool `yaml:"pprof"`
	// ReadyTimeout bounds one readiness check. Default 2s.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 5s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds the graceful stop when Run's context ends.
	// Default 5s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Deps are what the admin server reports on.
type Deps struct {
	// Gatherer is served on /metrics. Nil means prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Ready reports whether the service can take traffic; a non-nil error
	// makes /readyz answer 503 with the error's text. Nil means always
	// ready. It is called with a context bounded by Config.ReadyTimeout.
	Ready func(ctx context.Context) error
	// Logger receives start, stop and serve errors. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
}

func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return config.Errorf("admin.addr", "%q is not host:port: %v", c.Addr, err)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"admin.ready_timeout", c.ReadyTimeout},
		{"admin.read_header_timeout", c.ReadHeaderTimeout},
		{"admin.idle_timeout", c.IdleTimeout},
		{"admin.shutdown_timeout", c.ShutdownTimeout},
	} {
		if d.v < 0 {
			return config.Errorf(d.field, "must not be negative, got %v", d.v)
		}
	}
	return nil
}
