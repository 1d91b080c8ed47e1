package logic

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the result label.
const (
	resultOK           = "ok"
	resultBadRequest   = "bad_request"
	resultUnauthorized = "unauthenticated"
	resultDenied       = "denied"
	resultUnavailable  = "unavailable"
	resultError        = "error"
	resultNotOwner     = "not_owner"
	resultHandled      = "handled"
	resultUnhandled    = "unhandled"
)

// Phases of a push (label values of push_phase_seconds) and the buckets:
// 0.1 ms doubling to 1.6 s.
const (
	phaseLookup          = "lookup"
	phasePublish         = "publish"
	pushPhaseFirstBucket = 100e-6
	pushPhaseBuckets     = 15
)

type metrics struct {
	connect      *prometheus.CounterVec // result
	disconnect   *prometheus.CounterVec // result
	heartbeat    *prometheus.CounterVec // result
	renewOnline  *prometheus.CounterVec // result
	receive      *prometheus.CounterVec // result
	push         *prometheus.CounterVec // kind, result
	pushRecords  *prometheus.CounterVec // type
	pushMissed   prometheus.Counter
	pushPhase    *prometheus.HistogramVec // phase
	pushLookup   prometheus.Observer      // pushPhase{phase="lookup"}
	pushPublish  prometheus.Observer      // pushPhase{phase="publish"}
	onlineLoads  *prometheus.CounterVec   // result
	nodeRequests prometheus.Counter
	comets       prometheus.Gauge
	expirySweeps *prometheus.CounterVec // result
	expiredUsers prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hubuim", Subsystem: "logic", Name: name, Help: help}, labels)
	}
	m := &metrics{
		connect:     counter("connect_total", "Connect calls by result.", "result"),
		disconnect:  counter("disconnect_total", "Disconnect calls by result (not_owner: the session belonged to a newer connection).", "result"),
		heartbeat:   counter("heartbeat_total", "Heartbeat calls by result (not_owner: the key belongs to a newer connection).", "result"),
		renewOnline: counter("renew_online_total", "RenewOnline calls by result.", "result"),
		receive:     counter("receive_total", "Receive calls by result (unhandled: no handler for the op).", "result"),
		push:        counter("push_requests_total", "Business push requests by kind and result.", "kind", "result"),
		pushRecords: counter("push_records_total", "Records published to the push topic by type.", "type"),
		pushMissed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hubuim", Subsystem: "logic",
			Name: "push_offline_targets_total", Help: "Keys of pushes by key or user that were not online."}),
		pushPhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hubuim", Subsystem: "logic",
			Name: "push_phase_seconds", Help: "Time of the phases of a business push: lookup (the targets' sessions in the store), publish (until the push topic acknowledged the record(s)).",
			Buckets: prometheus.ExponentialBuckets(pushPhaseFirstBucket, 2, pushPhaseBuckets)}, []string{"phase"}),
		onlineLoads: counter("online_loads_total", "Loads of the cluster-wide room counts from the store by result.", "result"),
		nodeRequests: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hubuim", Subsystem: "logic",
			Name: "node_list_requests_total", Help: "Node list requests."}),
		comets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hubuim", Subsystem: "logic",
			Name: "comets", Help: "Comets currently known from discovery."}),
		expirySweeps: counter("expiry_sweeps_total", "Sweeps for users whose last session expired without a Disconnect, by result.", "result"),
		expiredUsers: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hubuim", Subsystem: "logic",
			Name: "expired_users_total", Help: "Users reported offline because their last session expired without a Disconnect (their comet died)."}),
	}
	m.pushLookup = m.pushPhase.WithLabelValues(phaseLookup)
	m.pushPublish = m.pushPhase.WithLabelValues(phasePublish)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connect, m.disconnect, m.heartbeat, m.renewOnline, m.receive,
		m.push, m.pushRecords, m.pushMissed, m.pushPhase, m.onlineLoads, m.nodeRequests, m.comets,
		m.expirySweeps, m.expiredUsers} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("logic: metrics already registered (one Logic per Registerer)")
			}
			return nil, err
		}
	}
	return m, nil
}
