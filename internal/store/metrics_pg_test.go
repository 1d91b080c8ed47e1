package store_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/internal/store"
)

// TestPostgresPoolMetrics holds a pool connection and finds it in the pool
// gauges.
func TestPostgresPoolMetrics(t *testing.T) {
	dsn, schema := pgSchema(t)
	reg := prometheus.NewRegistry()
	s, err := store.NewPostgres(context.Background(), store.PostgresConfig{DSN: dsn, Schema: schema, MaxConns: 3, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := s.Pool().Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := gauges(t, reg)
	c.Release()
	if got["hubuim_store_pool_acquired_connections"] != 1 {
		t.Errorf("acquired = %v, want 1", got["hubuim_store_pool_acquired_connections"])
	}
	if got["hubuim_store_pool_max_connections"] != 3 {
		t.Errorf("max = %v, want 3", got["hubuim_store_pool_max_connections"])
	}
	if got["hubuim_store_pool_connections"] < 1 {
		t.Errorf("total = %v, want >= 1", got["hubuim_store_pool_connections"])
	}
	if after := gauges(t, reg); after["hubuim_store_pool_acquired_connections"] != 0 || after["hubuim_store_pool_idle_connections"] < 1 {
		t.Errorf("after release: acquired %v idle %v, want 0 and >= 1",
			after["hubuim_store_pool_acquired_connections"], after["hubuim_store_pool_idle_connections"])
	}
}

func gauges(tb testing.TB, reg prometheus.Gatherer) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}
