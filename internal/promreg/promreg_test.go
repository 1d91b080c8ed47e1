package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "hubuim_test_total", Help: "test"}
	a, err := Shared(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Shared(reg, prometheus.NewCounter(opts))
	if err != nil || b != a {
		t.Fatalf("second registration = %v, %v; want the first collector", b, err)
	}
	// Same name, other type: an error, not a silent mix-up.
	if _, err := Shared(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "hubuim_test_total", Help: "test"})); err == nil {
		t.Fatal("a gauge under a counter's name was accepted")
	}
}
