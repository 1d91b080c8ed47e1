package discovery

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the etcd Registry.
type metrics struct {
	// registrations counts this process's registrations by service and
	// state ("registered": the lease is held; "lost": re-registering).
	registrations *prometheus.GaugeVec
	// reregistrations counts lost leases published again.
	reregistrations *prometheus.CounterVec
	// regErrors counts failed registration attempts (initial and retries).
	regErrors *prometheus.CounterVec
	// watchErrors counts watch failures (broken or compacted watch, failed
	// list, undecodable value), each followed by a re-list.
	watchErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		registrations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hubuim_discovery_registrations",
			Help: "Registrations of this process by service and state (registered, lost).",
		}, []string{"service", "state"}),
		reregistrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_discovery_reregistrations_total",
			Help: "Registrations published again after their lease was lost.",
		}, []string{"service"}),
		regErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_discovery_registration_errors_total",
			Help: "Failed attempts to register or re-register an instance.",
		}, []string{"service"}),
		watchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_discovery_watch_errors_total",
			Help: "Watch failures (broken or compacted watch, failed list, bad value) by watched service.",
		}, []string{"service"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.registrations, err = register(reg, m.registrations); err != nil {
		return nil, err
	}
	if m.reregistrations, err = register(reg, m.reregistrations); err != nil {
		return nil, err
	}
	if m.regErrors, err = register(reg, m.regErrors); err != nil {
		return nil, err
	}
	if m.watchErrors, err = register(reg, m.watchErrors); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same description (several registries in one process share them).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("discovery: register metrics: %w", err)
}

// setState moves one registration of service from state from to state to;
// an empty state is none.
func (m *metrics) setState(service, from, to string) {
	if from != "" {
		m.registrations.WithLabelValues(service, from).Dec()
	}
	if to != "" {
		m.registrations.WithLabelValues(service, to).Inc()
	}
}
