package mq

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue metrics shared by every implementation. The
// "backend" label tells kafka from memory when both run in one process.
type metrics struct {
	produced      *prometheus.CounterVec // topic
	produceErrors *prometheus.CounterVec // topic
	consumed      *prometheus.CounterVec // topic, group
	handlerErrors *prometheus.CounterVec // topic, group
	lag           *prometheus.GaugeVec   // topic, partition, group
	unacked       *prometheus.GaugeVec   // topic, partition, group
}

func newMetrics(backend string, reg prometheus.Registerer) *metrics {
	constLabels := prometheus.Labels{"backend": backend}
	m := &metrics{
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_mq_produced_records_total", Help: "Records acknowledged by the queue.", ConstLabels: constLabels,
		}, []string{"topic"}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_mq_produce_errors_total", Help: "Records the queue did not acknowledge.", ConstLabels: constLabels,
		}, []string{"topic"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_mq_consumed_records_total", Help: "Records handled without error (committed once acknowledged, see Message.Defer).", ConstLabels: constLabels,
		}, []string{"topic", "group"}),
		handlerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_mq_handler_errors_total", Help: "Handler errors; each one causes a redelivery.", ConstLabels: constLabels,
		}, []string{"topic", "group"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hubuim_mq_consumer_lag_records", Help: "Records after the last handled one, per claimed partition.", ConstLabels: constLabels,
		}, []string{"topic", "partition", "group"}),
		unacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hubuim_mq_consumer_unacked_records", Help: "Records handed to the handler but not committable yet (deferred and not acknowledged, or after one that is), per claimed partition.", ConstLabels: constLabels,
		}, []string{"topic", "partition", "group"}),
	}
	if reg == nil {
		return m
	}
	m.produced = register(reg, m.produced)
	m.produceErrors = register(reg, m.produceErrors)
	m.consumed = register(reg, m.consumed)
	m.handlerErrors = register(reg, m.handlerErrors)
	m.lag = register(reg, m.lag)
	m.unacked = register(reg, m.unacked)
	return m
}

// register registers c, or returns the identical collector already
// registered (a producer and a consumer of one process share the metrics).
// A conflicting registration keeps c unregistered rather than failing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
