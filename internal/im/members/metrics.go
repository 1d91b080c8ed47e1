package members

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts the lookups of one cache. A nil *Metrics records nothing.
type Metrics struct {
	hits, loads, shared prometheus.Counter
}

// NewMetrics creates the metrics of the cache named cache ("logic",
// "fanout": a const label, so the caches of one process can share reg)
// and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer, cache string) (*Metrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "hubuim_member_cache_lookups_total",
		Help:        "Group member list lookups by result: hit (fresh entry), load (read from the store), shared (waited for another caller's load).",
		ConstLabels: prometheus.Labels{"cache": cache},
	}, []string{"result"})
	m := &Metrics{hits: lookups.WithLabelValues("hit"), loads: lookups.WithLabelValues("load"), shared: lookups.WithLabelValues("shared")}
	if reg != nil {
		if err := reg.Register(lookups); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) hit() {
	if m != nil {
		m.hits.Inc()
	}
}

func (m *Metrics) load() {
	if m != nil {
		m.loads.Inc()
	}
}

func (m *Metrics) wait() {
	if m != nil {
		m.shared.Inc()
	}
}
