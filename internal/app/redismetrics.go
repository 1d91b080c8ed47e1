package app

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/promreg"
)

// Command label values that are not Redis commands.
const (
	redisPipelineLabel = "pipeline" // the duration of a whole pipeline or transaction
	redisDialLabel     = "dial"     // a failed connection attempt
)

// InstrumentRedis adds a hook to rdb recording
// hubuim_redis_command_duration_seconds{command} and
// hubuim_redis_errors_total{command} (redis.Nil is not an error) on reg. A
// nil reg does nothing; clients of one process share the metrics.
func InstrumentRedis(rdb redis.UniversalClient, reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	h := &redisHook{
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hubuim_redis_command_duration_seconds",
			Help:    "Redis command latency by command (pipelines as command=\"pipeline\").",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs .. ~6.5s
		}, []string{"command"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_redis_errors_total",
			Help: "Failed Redis commands by command (redis.Nil excluded; command=\"dial\": failed connects).",
		}, []string{"command"}),
	}
	var err error
	if h.dur, err = promreg.Shared(reg, h.dur); err != nil {
		return err
	}
	if h.errs, err = promreg.Shared(reg, h.errs); err != nil {
		return err
	}
	rdb.AddHook(h)
	return nil
}

type redisHook struct {
	dur  *prometheus.HistogramVec
	errs *prometheus.CounterVec
}

func (h *redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.errs.WithLabelValues(redisDialLabel).Inc()
		}
		return c, err
	}
}

func (h *redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		name := cmd.Name()
		h.dur.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if isRedisErr(err) {
			h.errs.WithLabelValues(name).Inc()
		}
		return err
	}
}

func (h *redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.dur.WithLabelValues(redisPipelineLabel).Observe(time.Since(start).Seconds())
		for _, cmd := range cmds {
			if isRedisErr(cmd.Err()) {
				h.errs.WithLabelValues(cmd.Name()).Inc()
			}
		}
		return err
	}
}

func isRedisErr(err error) bool { return err != nil && !errors.Is(err, redis.Nil) }
