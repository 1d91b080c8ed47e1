package job

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Push kinds (label "type").
const (
	kindPush      = "push"
	kindRoom      = "room"
	kindBroadcast = "broadcast"
)

// Drop reasons (label "reason").
const (
	ReasonQueueFull    = "queue_full"    // a comet queue stayed full past EnqueueTimeout
	ReasonCometRemoved = "comet_removed" // discovery dropped the comet with pushes pending
	ReasonUnknownComet = "unknown_comet" // PUSH to a comet discovery does not list
	ReasonNoComets     = "no_comets"     // a room push or broadcast while discovery lists no comet
	ReasonRejected     = "rejected"      // the comet answered with a non-retryable error
	ReasonShutdown     = "shutdown"      // still queued when Close's drain timeout passed
	ReasonBadRecord    = "bad_record"    // the record did not decode or has an unknown type
	ReasonUnknownTopic = "unknown_topic" // a record of a topic job has no handler for
)

var dropReasons = []string{ReasonQueueFull, ReasonCometRemoved, ReasonUnknownComet, ReasonNoComets, ReasonRejected, ReasonShutdown, ReasonBadRecord, ReasonUnknownTopic}

// RPC methods (label "method").
const (
	methodPushMsg       = "PushMsg"
	methodPushMsgs      = "PushMsgs"
	methodBroadcastRoom = "BroadcastRoom"
	methodBroadcast     = "Broadcast"
)

// dropLogInterval is the most often drops of one reason are logged; each
// line carries the count since the previous one.
const dropLogInterval = time.Second

type metrics struct {
	pushes      *prometheus.CounterVec
	dropped     map[string]prometheus.Counter
	droppedVec  *prometheus.CounterVec
	batchSize   prometheus.Histogram
	pushBatch   prometheus.Histogram
	rpcDuration *prometheus.HistogramVec
	rpcErrors   *prometheus.CounterVec
	comets      prometheus.Gauge
	queueDepth  *prometheus.Desc

	pushByKind map[string]prometheus.Counter
	rpcObs     map[string]prometheus.Observer // by method
	rpcErrs    map[string]prometheus.Counter  // by method
	dropLogs   map[string]*dropLog
}

type dropLog struct {
	pending atomic.Int64
	last    atomic.Int64 // unix nanos of the last log line
}

func newMetrics() *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_job_pushes_total", Help: "Push records consumed, by type.",
		}, []string{"type"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hubuim_job_room_batch_messages", Help: "Pushes per room batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		pushBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hubuim_job_push_batch_messages", Help: "Pushes per call to a comet (PushMsg is 1, PushMsgs more).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hubuim_job_comet_rpc_duration_seconds", Help: "Latency of gRPC calls to comets.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}, []string{"method"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubuim_job_comet_rpc_errors_total", Help: "Failed gRPC calls to comets (each retry counts).",
		}, []string{"method"}),
		comets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hubuim_job_comets", Help: "Comets job currently pushes to.",
		}),
		queueDepth: prometheus.NewDesc("hubuim_job_comet_queue_depth",
			"Pushes queued for a comet, over all its workers.", []string{"comet"}, nil),
		pushByKind: make(map[string]prometheus.Counter),
		dropped:    make(map[string]prometheus.Counter),
		dropLogs:   make(map[string]*dropLog),
	}
	for _, k := range []string{kindPush, kindRoom, kindBroadcast} {
		m.pushByKind[k] = m.pushes.WithLabelValues(k)
	}
	m.rpcObs = make(map[string]prometheus.Observer)
	m.rpcErrs = make(map[string]prometheus.Counter)
	for _, meth := range []string{methodPushMsg, methodPushMsgs, methodBroadcastRoom, methodBroadcast} {
		m.rpcObs[meth] = m.rpcDuration.WithLabelValues(meth)
		m.rpcErrs[meth] = m.rpcErrors.WithLabelValues(meth)
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hubuim_job_dropped_pushes_total", Help: "Pushes (per comet) job gave up on, by reason.",
	}, []string{"reason"})
	for _, r := range dropReasons {
		m.dropped[r] = dropped.WithLabelValues(r)
		m.dropLogs[r] = &dropLog{}
	}
	m.droppedVec = dropped
	return m
}

// register registers the metrics and extra (the queue depth collector).
func (m *metrics) register(reg prometheus.Registerer, extra prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.pushes, m.droppedVec, m.batchSize, m.pushBatch, m.rpcDuration, m.rpcErrors, m.comets, extra} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// drop counts n pushes dropped for reason and logs it, at most once per
// dropLogInterval per reason (never per message).
func (m *metrics) drop(log *slog.Logger, reason, comet string, n int) {
	m.dropped[reason].Add(float64(n))
	dl := m.dropLogs[reason]
	dl.pending.Add(int64(n))
	now := time.Now().UnixNano()
	last := dl.last.Load()
	if now-last < int64(dropLogInterval) || !dl.last.CompareAndSwap(last, now) {
		return
	}
	if comet == "" {
		log.Warn("pushes dropped", "reason", reason, "count", dl.pending.Swap(0))
		return
	}
	log.Warn("pushes dropped", "reason", reason, "comet", comet, "count", dl.pending.Swap(0))
}
