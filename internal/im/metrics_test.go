package im

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubuim/hubuim/api/protocol"
)

func TestMetricsCountsSendsByStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.observeSend(protocol.Status_STATUS_OK, time.Millisecond)
	m.observeSend(protocol.Status_STATUS_OK, time.Millisecond)
	m.observeSend(protocol.Status_STATUS_UNAVAILABLE, 0)
	m.observeSend(protocol.Status(99), 0) // unknown to this build: its own label
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "hubuim_im_sends_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
		}
	}
	for status, want := range map[string]float64{"STATUS_OK": 2, "STATUS_UNAVAILABLE": 1, "STATUS_INTERNAL": 0, "99": 1} {
		if v, ok := got[status]; !ok || v != want {
			t.Errorf("sends{status=%q} = %v (present %v), want %v", status, v, ok, want)
		}
	}
}

// BenchmarkObserveSend: counting a send is allocation-free.
func BenchmarkObserveSend(b *testing.B) {
	m, err := NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.observeSend(protocol.Status_STATUS_OK, time.Millisecond)
	}
}
