package app

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/hubuim/hubuim/internal/testenv"
)

// TestInstrumentRedis runs commands, a failing command, a miss and a
// pipeline against a real Redis and checks what the hook recorded.
func TestInstrumentRedis(t *testing.T) {
	addr := testenv.RedisAddr(t)
	reg := prometheus.NewRegistry()
	cfg := &RedisConfig{Addrs: []string{addr}}
	rdb, err := NewRedis(cfg, "redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	if err := InstrumentRedis(rdb, reg); err != nil {
		t.Fatal(err)
	}
	// A second client in the same process shares the metrics.
	if err := InstrumentRedis(rdb, reg); err != nil {
		t.Fatalf("second InstrumentRedis: %v", err)
	}
	ctx := context.Background()
	key := fmt.Sprintf("hubuim-test-redismetrics:%d:", rand.Uint64())
	t.Cleanup(func() { rdb.Del(context.Background(), key+"s", key+"p") })
	if err := rdb.Set(ctx, key+"s", "not-a-number", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Get(ctx, key+"missing").Err(); err != redis.Nil {
		t.Fatalf("get missing: %v, want redis.Nil", err)
	}
	if err := rdb.Incr(ctx, key+"s").Err(); err == nil {
		t.Fatal("incr of a non-number: no error")
	}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key+"p", "1", time.Minute)
		p.Incr(ctx, key+"s")
		return nil
	}); err == nil {
		t.Fatal("pipeline with a failing incr: no error")
	}

	// Each command was observed twice: both hooks share one histogram. New
	// connections also run their handshake as a pipeline: at least 2 there.
	for cmd, want := range map[string]uint64{"set": 2, "get": 2, "incr": 2} {
		if got := histCount(t, reg, "hubuim_redis_command_duration_seconds", cmd); got != want {
			t.Errorf("duration{command=%q} count = %d, want %d", cmd, got, want)
		}
	}
	for cmd, want := range map[string]uint64{"pipeline": 2} {
		if got := histCount(t, reg, "hubuim_redis_command_duration_seconds", cmd); got < want {
			t.Errorf("duration{command=%q} count = %d, want >= %d", cmd, got, want)
		}
	}
	for cmd, want := range map[string]float64{"get": 0, "set": 0, "incr": 4} {
		if got := counterVal(t, reg, "hubuim_redis_errors_total", cmd); got != want {
			t.Errorf("errors{command=%q} = %v, want %v", cmd, got, want)
		}
	}
}

// TestInstrumentRedisDialError points a client at a closed port.
func TestInstrumentRedisDialError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	reg := prometheus.NewRegistry()
	rdb, err := NewRedis(&RedisConfig{Addrs: []string{addr}, Timeout: time.Second}, "redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	if err := InstrumentRedis(rdb, reg); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping of a closed port: no error")
	}
	if got := counterVal(t, reg, "hubuim_redis_errors_total", "dial"); got < 1 {
		t.Errorf("dial errors = %v, want >= 1", got)
	}
	if got := counterVal(t, reg, "hubuim_redis_errors_total", "ping"); got != 1 {
		t.Errorf("ping errors = %v, want 1", got)
	}
}

func find(tb testing.TB, reg prometheus.Gatherer, name, cmd string) *dto.Metric {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "command" && lp.GetValue() == cmd {
					return m
				}
			}
		}
	}
	return nil
}

func histCount(tb testing.TB, reg prometheus.Gatherer, name, cmd string) uint64 {
	tb.Helper()
	return find(tb, reg, name, cmd).GetHistogram().GetSampleCount()
}

func counterVal(tb testing.TB, reg prometheus.Gatherer, name, cmd string) float64 {
	tb.Helper()
	return find(tb, reg, name, cmd).GetCounter().GetValue()
}
